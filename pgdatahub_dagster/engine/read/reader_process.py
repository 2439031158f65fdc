"""Workbooks are read in a child process whose memory is capped.

calamine holds the sheet it reads in memory whole, and a small file can ask for any amount:
ods cells repeated thousands of times, an xls or xlsb sheet, an xlsx sheet that holds more
than the dimension it declares. ``sheet_size`` catches what can be seen before reading; all
the rest meets the reader process's ``RLIMIT_DATA`` (``ReadLimits.max_read_memory_bytes``),
which Rust's and Polars' allocators obey alike. (``RLIMIT_AS`` cannot serve: it counts the
address space Polars' threads reserve, 850 MB before a single cell is read.) An allocation
over the limit aborts the reader, or raises ``MemoryError`` in it: either way that file fails
alone, naming the limit, and the next file gets a fresh reader.

One reader serves the whole process. It starts as the first workbook's import begins
(``start_reader``, from the importer), or at the first read, imports Python's
Polars and fastexcel once (not once per file) and takes one file at a time over a pipe; it
writes the sheet to an Arrow IPC file, which the parent reads back. It is started by
``subprocess`` (a fork followed at once by an exec), never forked as it is: this process
runs Polars threads, which a bare fork would copy in the middle of whatever they do.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import itertools
import json
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

import polars as pl

import pgdatahub_dagster
from pgdatahub_dagster.engine.errors import (
    FileImportError,
    LimitExceededError,
    SheetNotFoundError,
    SystemFaultError,
    UnreadableFileError,
)
from pgdatahub_dagster.engine.read.limits import out_of_read_memory, readable_size
from pgdatahub_dagster.engine.read.table import RawTable
from pgdatahub_dagster.engine.read.workbook import LoadedSheet, load_sheet
from pgdatahub_dagster.engine.settings import ReadLimits

log = logging.getLogger(__name__)

# The errors a read may end with, by the name the reader sends.
_FILE_ERRORS: dict[str, type[FileImportError]] = {
    kind.__name__: kind for kind in (UnreadableFileError, SheetNotFoundError, LimitExceededError)
}
# What Rust's allocation error handler prints before it aborts the process.
_ALLOCATION_FAILED = re.compile(rb"memory allocation of (\d+) bytes failed")
# A thread's stack counts against the limit too: Polars panics when it cannot start one.
_NO_THREAD = "can't spawn worker thread"
_STDERR_TAIL_BYTES = 16 * 1024
_PACKAGE_ROOT = Path(pgdatahub_dagster.__file__).resolve().parents[1]


def read_workbook(
    path: Path,
    source_file: str,
    sheet: str | None,
    default_sheet: str | None,
    header_row: int | None,
    limits: ReadLimits,
) -> RawTable:
    """The chosen sheet of the workbook at ``path``, read by the workbook reader, as one
    batch: the sheet is in memory whole anyway, and every row decides its columns' types."""
    request = {
        "path": str(path),
        "source_file": source_file,
        "sheet": sheet,
        "default_sheet": default_sheet,
        "header_row": header_row,
        "limits": asdict(limits),
    }
    with _lock:
        loaded = _reader().read(request, source_file, limits)
    return RawTable(loaded.headers, iter([loaded.frame]), loaded.sheet)


class _Reader:
    """The parent's end of one reader process."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.directory = Path(tempfile.mkdtemp(prefix="pgdatahub-reader-"))
        self._outputs = itertools.count()
        self._stderr = (self.directory / "stderr").open("w+b")
        environment = {
            **os.environ,
            # The reader imports this package from where this process did.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH")])),
            # A Rust backtrace says nothing to a user; the abort message before it does.
            "RUST_BACKTRACE": "0",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-c", f"from {__name__} import serve; serve()", str(self.directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=environment,
        )
        self._ready = False
        self.closed = False

    def read(self, request: dict[str, Any], source_file: str, limits: ReadLimits) -> LoadedSheet:
        """Ask for one sheet. The file's faults raise its ``FileImportError``; a reader that
        died, or is to retire, is closed, and the next read starts another."""
        output = self.directory / f"sheet-{next(self._outputs)}.arrow"
        try:
            reply = self._ask({**request, "output": str(output)})
            if reply is None:
                crash = self._crash(source_file, limits)
                self.close()
                raise crash
            try:
                return self._result(reply, output, source_file, limits)
            finally:
                if reply["retire"]:
                    self.close()
        finally:
            output.unlink(missing_ok=True)

    def _result(
        self, reply: dict[str, Any], output: Path, source_file: str, limits: ReadLimits
    ) -> LoadedSheet:
        if "failed" in reply:
            raise _FILE_ERRORS[reply["failed"]](source_file, reply["reason"])
        if "out_of_memory" in reply:
            raise out_of_read_memory(source_file, limits, "Python found no memory left")
        if "unexpected" in reply:
            # Possibly a bug worth reporting: the reader's traceback goes to the log.
            log.warning("the workbook reader failed on %s:\n%s", source_file, reply["traceback"])
            raise UnreadableFileError(source_file, f"the workbook reader failed: {reply['unexpected']}")
        return LoadedSheet(reply["headers"], pl.read_ipc(output), reply["sheet"])

    def _ask(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """The reader's reply; ``None`` when it died first."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        self.wait_ready()
        try:
            stdin.write(json.dumps(request).encode() + b"\n")
            stdin.flush()
            line = stdout.readline()
        except BrokenPipeError:
            return None
        except BaseException:
            # Interrupted (Ctrl-C, a run terminated): its reply would answer the next request.
            self.process.kill()
            self.close()
            raise
        return json.loads(line) if line else None

    def wait_ready(self) -> None:
        """Return once the reader has started (imported its libraries)."""
        if not self._ready:
            assert self.process.stdout is not None
            if not self.process.stdout.readline():
                raise SystemFaultError(f"the workbook reader could not start: {self._stderr_tail().decode()}")
            self._ready = True

    def _stderr_tail(self) -> bytes:
        self._stderr.flush()
        size = self._stderr.seek(0, os.SEEK_END)
        self._stderr.seek(max(0, size - _STDERR_TAIL_BYTES))
        return self._stderr.read().strip()

    def _crash(self, source_file: str, limits: ReadLimits) -> FileImportError:
        """Why the reader died reading ``source_file``, from its exit and its last words."""
        returncode = self.process.wait()
        last_words = self._stderr_tail()
        allocation = _ALLOCATION_FAILED.search(last_words)
        if allocation:
            asked = readable_size(int(allocation.group(1)))
            return out_of_read_memory(source_file, limits, f"it asked for {asked} more")
        if b"MemoryError" in last_words or _NO_THREAD.encode() in last_words:
            return out_of_read_memory(source_file, limits, "Python found no memory left")
        if returncode == -signal.SIGKILL:
            # The OOM killer's signal, when the machine has less memory than the limit allows.
            killed = "the reader was killed, as the system does when memory runs out"
            return out_of_read_memory(source_file, limits, killed)
        how = f"signal {_signal_name(-returncode)}" if returncode < 0 else f"exit code {returncode}"
        log.warning(
            "the workbook reader died on %s (%s): %s", source_file, how, last_words.decode("utf-8", "replace")
        )
        return UnreadableFileError(
            source_file,
            f"the workbook reader crashed on it ({how}): the workbook is corrupt or uses features "
            "the reader does not support",
        )

    def close(self) -> None:
        """The reader ends when its requests do, and takes its folder with it."""
        self.closed = True
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._stderr.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


_lock = threading.Lock()
_shared: _Reader | None = None


def _reader() -> _Reader:
    """The process's reader, started at the first workbook, and again after one ended. A
    reader that died between files (killed from outside) is replaced before it is asked, so
    no file is blamed for it. A process forked from this one starts its own: the pipes it
    inherited belong to its parent's reader."""
    global _shared
    if _shared is not None and _shared.owner != os.getpid():
        _shared = None  # the parent's reader, left to the parent
    if _shared is not None and not _shared.closed and _shared.process.poll() is not None:
        _shared.close()
    if _shared is None or _shared.closed:
        _shared = _Reader()
    return _shared


def start_reader(*, wait: bool = False) -> None:
    """Start the process's reader now rather than at its first read, so that its start-up (an
    interpreter importing Polars and fastexcel, about a second) overlaps other work; with
    ``wait``, return once it is ready. Nothing to do while a read holds the reader."""
    if not _lock.acquire(blocking=False):
        return
    try:
        reader = _reader()
        if wait:
            reader.wait_ready()
    finally:
        _lock.release()


@atexit.register
def _close_reader() -> None:
    with _lock:
        if _shared is not None and not _shared.closed and _shared.owner == os.getpid():
            _shared.close()


# -- the reader's side ---------------------------------------------------------------------


def serve() -> None:
    """The reader's loop: one JSON request a line on stdin, one JSON reply a line, until stdin
    closes (the parent is done, or gone)."""
    directory = Path(sys.argv[1])
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # what a library prints goes to stderr, not among the replies
    # Ctrl-C in a terminal reaches the whole process group: the parent stops the run.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _start_threads()
    _send(replies, {"ready": True})
    for line in sys.stdin:
        reply = _answer(json.loads(line))
        _send(replies, reply)
        if reply["retire"]:
            return  # the parent reads the sheet, then removes the folder
    # The parent closed the pipe: done, or gone (killed) without removing the folder.
    shutil.rmtree(directory, ignore_errors=True)


def _start_threads() -> None:
    """Polars starts its thread pools at first use: start them before the memory limit is
    set, so that their stacks are not refused later, and count in the reader's own memory
    from the start."""
    buffer = io.BytesIO()
    pl.DataFrame({"a": [1]}).rename({"a": "b"}).write_ipc(buffer)
    pl.read_ipc(buffer.getvalue()).sum()


def _send(replies: IO[str], reply: dict[str, Any]) -> None:
    replies.write(json.dumps(reply) + "\n")
    replies.flush()


def _answer(request: dict[str, Any]) -> dict[str, Any]:
    limits = ReadLimits(**request["limits"])
    _cap_memory(limits.max_read_memory_bytes)
    reply: dict[str, Any]
    try:
        loaded = load_sheet(
            Path(request["path"]),
            request["source_file"],
            request["sheet"],
            request["default_sheet"],
            request["header_row"],
            limits,
        )
        loaded.frame.write_ipc(request["output"], compression="uncompressed")
        reply = {"headers": loaded.headers, "sheet": loaded.sheet}
    except FileImportError as error:
        reply = {"failed": type(error).__name__, "reason": error.reason}
    except MemoryError:
        reply = {"out_of_memory": True}
    except BaseException as error:
        # pyo3's PanicException is a BaseException: a Rust panic, in Polars for instance.
        if not isinstance(error, Exception) and type(error).__name__ != "PanicException":
            raise
        if _NO_THREAD in str(error):
            reply = {"out_of_memory": True}
        else:
            reply = {"unexpected": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    # Memory the allocators keep after a large sheet would count against the next file.
    reply["retire"] = "out_of_memory" in reply or _data_bytes() > limits.max_read_memory_bytes // 2
    return reply


def _cap_memory(limit: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    soft = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def _data_bytes() -> int:
    """What ``RLIMIT_DATA`` counts of this process now (Linux's VmData)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
