"""Workbooks are read in a child process whose memory is capped (``reader_process``): a small
workbook that unpacks to a huge sheet no check can see before reading fails alone, naming
the memory limit, and the files after it import. The limit is set small through the
environment, as a user sets it, so that each bomb hits it within a second or two."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from pgdatahub_dagster.engine.errors import FileImportError
from pgdatahub_dagster.engine.read import open_table, reader_process
from pgdatahub_dagster.engine.settings import ReadLimits
from pgdatahub_dagster_tests.engine.test_importer import query, run_import, statuses
from pgdatahub_dagster_tests.files import write_xlsx
from pgdatahub_dagster_tests.hostile_workbooks import lying_dimension_xlsx, ods_repeat_bomb, xlsb_sheet

LIMIT_MB = 256
# What the reader says when its allocator refused it memory: proof the limit was hit, and
# not some check before reading.
_OUT_OF_MEMORY = (
    f"reading it takes more than the {LIMIT_MB} MB of memory the workbook reader may use (it asked for "
)


def _claims_a_huge_stream(calamine_fixtures: Path) -> bytes:
    """date.xls, its directory claiming a Workbook stream of 4 GB in a 6 KB file (what the
    whole-file check of the directory used to catch)."""
    data = bytearray((calamine_fixtures / "date.xls").read_bytes())
    sector_bytes = 1 << struct.unpack_from("<H", data, 0x1E)[0]
    directory = (struct.unpack_from("<I", data, 0x30)[0] + 1) * sector_bytes
    for entry in range(directory, directory + sector_bytes, 128):
        if data[entry : entry + 16] == "Workbook".encode("utf-16-le"):
            struct.pack_into("<I", data, entry + 0x78, 0xF0000000)
            return bytes(data)
    raise AssertionError("date.xls has no Workbook stream")


def test_workbooks_that_unpack_past_the_memory_limit_fail_alone(
    warehouse_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calamine_fixtures: Path
) -> None:
    monkeypatch.setenv("PGDATAHUB_MAX_READ_MEMORY_MB", str(LIMIT_MB))
    root = tmp_path / "inbox"
    root.mkdir()
    # An 820-byte ods of 20 million cells (two repeat counts), a 400 KB xlsb of 3 million,
    # and an xlsx of 3 million cells declaring A1:B2 (within the cell limit, so trusted).
    ods_repeat_bomb(root / "01-repeats.ods", rows=20_000, columns=1_000)
    (root / "02-good.csv").write_text("id,name\n2,file 2\n")
    xlsb_sheet(root / "03-huge.xlsb", rows=3_000, columns=1_000)
    write_xlsx(root / "04-good.xlsx", {"Sheet1": [["id", "name"], [4, "file 4"]]})
    lying_dimension_xlsx(root / "05-lying.xlsx", rows=3_000, columns=1_000)
    (root / "06-stream.xls").write_bytes(_claims_a_huge_stream(calamine_fixtures))
    # Small workbooks of the same kinds, read by the reader started after the failures.
    ods_repeat_bomb(root / "07-small.ods", rows=3, columns=2)
    xlsb_sheet(root / "08-small.xlsb", rows=2, columns=2)
    lying_dimension_xlsx(root / "09-small.xlsx", rows=4, columns=1)

    results = run_import(warehouse_url, root)

    failed = {"01-repeats.ods", "03-huge.xlsb", "05-lying.xlsx", "06-stream.xls"}
    assert statuses(results) == {
        result.record.source_file: "failed" if result.record.source_file in failed else "success"
        for result in results
    }
    assert len(results) == 9
    errors = dict(query(warehouse_url, "SELECT source_file, error FROM etl_imports WHERE status = 'failed'"))
    for name in ("01-repeats.ods", "03-huge.xlsb", "05-lying.xlsx"):
        assert errors[name].startswith(f"{name}: {_OUT_OF_MEMORY}"), errors[name]
        assert "set PGDATAHUB_MAX_READ_MEMORY_MB to raise it" in errors[name]
    assert errors["06-stream.xls"].startswith("06-stream.xls: the workbook is corrupt"), errors[
        "06-stream.xls"
    ]
    counts = dict(query(warehouse_url, "SELECT source_file, COUNT(*) FROM inbox GROUP BY source_file"))
    assert counts == {
        "02-good.csv": 1,
        "04-good.xlsx": 1,
        "07-small.ods": 1,
        "08-small.xlsb": 1,
        "09-small.xlsx": 1,
    }


def test_the_reader_runs_under_the_configured_limit_and_the_caller_does_not(tmp_path: Path) -> None:
    """The cap is the reader process's own ``RLIMIT_DATA``, set from the limits of each
    read; the importing process is not capped."""
    book = write_xlsx(tmp_path / "book.xlsx", {"Sheet1": [["id"], [1]]})
    for megabytes in (700, 900):
        with open_table(book, book.name, limits=ReadLimits(max_read_memory_bytes=megabytes * 2**20)) as table:
            assert table.headers == ["id"]
        reader = reader_process._shared
        assert reader is not None and not reader.closed
        limits = Path(f"/proc/{reader.process.pid}/limits").read_text()
        soft = next(line for line in limits.splitlines() if line.startswith("Max data size")).split()[3]
        assert int(soft) == megabytes * 2**20
    ours = Path(f"/proc/{os.getpid()}/limits").read_text()
    assert (
        next(line for line in ours.splitlines() if line.startswith("Max data size")).split()[3] == "unlimited"
    )


def test_a_reader_past_half_its_limit_after_a_sheet_makes_way_for_a_fresh_one(tmp_path: Path) -> None:
    """Memory the allocators keep after a sheet would count against the next file: a reader
    holding more than half its limit ends after its reply. Polars and fastexcel alone take
    about 100 MB, so with a limit of 180 MB every read ends its reader."""
    book = write_xlsx(tmp_path / "book.xlsx", {"Sheet1": [["id"], [1], [2]]})
    pids = []
    for _ in range(2):
        with open_table(book, book.name, limits=ReadLimits(max_read_memory_bytes=180 * 2**20)) as table:
            assert pl.concat(list(table.batches))["c0"].to_list() == [1, 2]
        reader = reader_process._shared
        assert reader is not None and reader.closed and reader.process.returncode == 0
        pids.append(reader.process.pid)
    assert pids[0] != pids[1]


def _running_reader(tmp_path: Path) -> reader_process._Reader:
    """The process's reader, started and ready (a small workbook read)."""
    book = write_xlsx(tmp_path / "warm-up.xlsx", {"Sheet1": [["id"], [1]]})
    with open_table(book, book.name) as table:
        assert table.headers == ["id"]
    reader = reader_process._shared
    assert reader is not None and not reader.closed
    return reader


@pytest.mark.parametrize(
    ("kill", "reason"),
    [
        # The OOM killer's signal, when the machine runs out of memory before the limit.
        (signal.SIGKILL, "(the reader was killed, as the system does when memory runs out; set "),
        (signal.SIGSEGV, "the workbook reader crashed on it (signal SIGSEGV): the workbook is corrupt"),
    ],
)
def test_a_reader_that_dies_in_a_read_fails_that_file_and_the_next_gets_a_new_one(
    tmp_path: Path, kill: signal.Signals, reason: str
) -> None:
    """A named pipe as the workbook holds the reader in its read (it waits for a writer),
    so the reader is killed exactly while it reads that file."""
    reader = _running_reader(tmp_path)
    fifo = tmp_path / "held.xlsx"
    os.mkfifo(fifo)
    failures: list[BaseException] = []

    def read() -> None:
        try:
            with open_table(fifo, fifo.name):
                pass
        except BaseException as error:
            failures.append(error)

    reading = threading.Thread(target=read)
    reading.start()
    while True:  # until the reader has opened the pipe: the request is in its hands
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:
            time.sleep(0.01)
    os.kill(reader.process.pid, kill)
    reading.join(timeout=30)
    os.close(writer)
    [failure] = failures
    assert isinstance(failure, FileImportError) and str(failure).startswith("held.xlsx: ")
    assert reason in str(failure), failure
    assert reader.closed
    assert _running_reader(tmp_path) is not reader


def test_a_reader_killed_between_files_blames_no_file(tmp_path: Path) -> None:
    reader = _running_reader(tmp_path)
    reader.process.kill()
    reader.process.wait()
    assert _running_reader(tmp_path) is not reader


_READ_THEN_DIE = """
import os, signal, sys
from pathlib import Path
from pgdatahub_dagster_tests.files import write_xlsx
from pgdatahub_dagster.engine.read import open_table, reader_process
book = write_xlsx(Path(sys.argv[1]), {"Sheet1": [["id"], [1]]})
with open_table(book, book.name):
    pass
print(reader_process._shared.process.pid, reader_process._shared.directory, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_a_reader_whose_process_is_killed_ends_and_removes_its_folder(tmp_path: Path) -> None:
    """``kill -9`` of a run leaves no reader behind: it sees its requests end."""
    done = subprocess.run(
        [sys.executable, "-c", _READ_THEN_DIE, str(tmp_path / "book.xlsx")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[4],
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    pid, folder = done.stdout.split()
    deadline = time.monotonic() + 30
    while _running(int(pid)):
        assert time.monotonic() < deadline, "the reader outlived its process"
        time.sleep(0.05)
    assert not Path(folder).exists()
