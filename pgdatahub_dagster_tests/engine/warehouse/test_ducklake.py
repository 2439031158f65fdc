"""DuckLake with its catalog in PostgreSQL, where several processes write one lake at once,
its data in a folder or on S3 (moto's server, started by the tests): a subset of the
warehouse tests, and two concurrent import processes that must end exactly as one
sequential import."""

from __future__ import annotations

import logging
import multiprocessing
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pgdatahub_dagster.engine.errors import ConfigError, DataRefusedError, WarehouseError
from pgdatahub_dagster.engine.importer import Importer
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.sources import LocalFolderSource
from pgdatahub_dagster.engine.warehouse import LEDGER_TABLE, connect
from pgdatahub_dagster_tests.conftest import S3_SECRET_KEY
from pgdatahub_dagster_tests.engine import test_importer, test_ownership, test_revert
from pgdatahub_dagster_tests.exact_sync import assert_ledger_consistent, assert_tables_equal, import_tree
from pgdatahub_dagster_tests.files import write_csv


def lake_url(catalog_url: str, data: Path | str) -> str:
    """The DuckLake URL of a lake whose catalog is the PostgreSQL database ``catalog_url``
    and whose data is in the folder (or under the ``s3://`` prefix) ``data``."""
    separator = "&" if "?" in catalog_url else "?"
    return f"ducklake+{catalog_url}{separator}data={data}/"


@pytest.fixture
def lake_on_postgres(make_database: Callable[[str], str], tmp_path: Path) -> str:
    return lake_url(make_database("catalog"), tmp_path / "lake-data")


@pytest.fixture(params=["folder", "s3"])
def lake_on_postgres_and_data(request: pytest.FixtureRequest, make_database: Callable[[str], str]) -> str:
    """A lake with its catalog in PostgreSQL and its data in a folder or on S3."""
    if request.param == "folder":
        return str(request.getfixturevalue("lake_on_postgres"))
    bucket: str = request.getfixturevalue("s3_bucket")
    return lake_url(make_database("catalog"), f"{bucket}/lake")


@pytest.mark.parametrize(
    "scenario",
    [
        test_importer.test_messy_folder_gives_one_row_per_business,
        test_importer.test_a_failing_file_rolls_back_completely_and_others_continue,
        test_importer.test_schema_evolves_by_widening_and_every_change_is_audited,
        test_ownership.test_editing_one_file_keeps_the_rows_another_file_holds,
        test_ownership.test_revert_gives_up_only_the_rows_nobody_else_holds,
        test_revert.test_an_added_column_no_row_uses_is_dropped,
    ],
    ids=lambda scenario: scenario.__name__.removeprefix("test_"),
)
def test_a_postgres_catalog_keeps_the_same_promises(
    scenario: Callable[[str, Path], None], lake_on_postgres_and_data: str, tmp_path: Path
) -> None:
    scenario(lake_on_postgres_and_data, tmp_path)


def test_the_data_is_parquet_on_s3(
    s3_bucket: str, s3_server: str, make_database: Callable[[str], str], tmp_path: Path
) -> None:
    url = lake_url(make_database("catalog"), f"{s3_bucket}/lake")
    write_csv(tmp_path / "leads" / "a.csv", "name\n" + "".join(f"n{i}\n" for i in range(200)))
    [result] = test_importer.run_import(url, tmp_path)
    assert result.status == "success"
    listing = urllib.request.urlopen(f"{s3_server}/{s3_bucket.removeprefix('s3://')}", timeout=10).read()
    assert b"lake/main/leads/" in listing and b".parquet" in listing
    with connect(url) as warehouse:
        assert warehouse.count("leads") == 200


def test_the_s3_secret_never_shows(
    s3_bucket: str, make_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = lake_url(make_database("catalog"), f"{s3_bucket}/lake")
    with connect(url) as warehouse, pytest.raises(DataRefusedError) as refused:
        warehouse.execute(f"SELECT '{S3_SECRET_KEY}'::INTEGER")  # an error quoting it
    assert S3_SECRET_KEY not in str(refused.value) and "'***'" in str(refused.value)
    # The store stops answering: the import stops the run, saying why, without the secret.
    write_csv(tmp_path / "leads" / "a.csv", "name\n" + "".join(f"n{i}\n" for i in range(200)))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    with pytest.raises(WarehouseError) as failure:
        test_importer.run_import(url, tmp_path)
    assert S3_SECRET_KEY not in str(failure.value) and "127.0.0.1:1" in str(failure.value)


def test_the_catalog_password_never_shows(tmp_path: Path) -> None:
    url = lake_url("postgresql://ann:s3cret@127.0.0.1:1/wh?connect_timeout=2", tmp_path)
    with pytest.raises(WarehouseError) as failure:
        connect(url)
    assert "s3cret" not in str(failure.value)
    assert "ducklake+postgresql://ann:***@127.0.0.1:1/wh" in str(failure.value)


def test_a_ducklake_url_names_its_catalog_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="names its file"):
        connect("ducklake:///")
    with connect("ducklake:///nested/meta.ducklake?data=nested/files/") as warehouse:
        assert warehouse.table_columns(LEDGER_TABLE) is not None
    assert (tmp_path / "nested" / "meta.ducklake").is_file() and (tmp_path / "nested" / "files").is_dir()


# -- two writers at once -------------------------------------------------------------------

_T0 = 1_700_000_000
MAPPING = "crm:\n  unique_key: [id]\nleads:\n  unique_key: [name]\n"


def _tree(root: Path) -> None:
    """In two tables, a seed file that makes the table exist before the race, then pairs of
    files (``a<n>``, ``b<n>``) that share keys no other file has: the two writers import one
    of each pair at the same moment, so both insert the same new keys."""
    write_csv(root / "pgdatahub.yaml", MAPPING)
    files = {"seed": range(1000, 1010)}
    for n in range(4):
        files[f"a{n}"] = range(n * 100, n * 100 + 60)
        files[f"b{n}"] = range(n * 100 + 30, n * 100 + 90)
    for when, (name, ids) in enumerate(files.items()):
        crm = write_csv(
            root / "crm" / f"{name}.csv", "id,label\n" + "".join(f"{i},{name}-{i}\n" for i in ids)
        )
        leads = write_csv(
            root / "leads" / f"{name}.csv", "name,score\n" + "".join(f"n{i},{when}\n" for i in ids)
        )
        for path in (crm, leads):
            os.utime(path, (_T0 + when, _T0 + when))


class _Retries(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "commit conflict" in record.getMessage():
            self.count += 1


def _import_at_once(url: str, root: str, prefix: str, start: Any, results: Any) -> None:
    """One writer process: waits for the other, imports its files (those named ``prefix…``),
    reports their statuses and how often a commit conflict made a file run again."""
    retries = _Retries()
    logger = logging.getLogger("pgdatahub_dagster")
    logger.setLevel(logging.INFO)
    logger.addHandler(retries)
    source = LocalFolderSource(Path(root))
    mine = sorted(
        (f for f in source.list_files() if f.path.split("/")[-1].startswith(prefix)),
        key=lambda f: (f.path.split("/")[-1], f.path),
    )
    with connect(url) as warehouse:
        importer = Importer(warehouse, source, FolderMapping.load(Path(root) / "pgdatahub.yaml"))
        start.wait()
        imported = list(importer.import_all(mine))
    results.put(([(r.record.source_file, r.status, r.record.error) for r in imported], retries.count))


def test_two_processes_importing_at_once_end_as_one_import(lake_on_postgres: str, tmp_path: Path) -> None:
    root = tmp_path / "files"
    _tree(root)
    with connect(lake_on_postgres) as warehouse:
        mapping = FolderMapping.load(root / "pgdatahub.yaml")
        source = LocalFolderSource(root)
        seeds = [f for f in source.list_files() if f.path.endswith("seed.csv")]
        assert [r.status for r in Importer(warehouse, source, mapping).import_all(seeds)] == ["success"] * 2
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(2), context.Queue()
    writers = [
        context.Process(target=_import_at_once, args=(lake_on_postgres, str(root), prefix, start, results))
        for prefix in ("a", "b")
    ]
    for writer in writers:
        writer.start()
    reports = [results.get(timeout=240) for _ in writers]
    for writer in writers:
        writer.join(timeout=60)
        assert writer.exitcode == 0
    outcomes = [outcome for statuses, _ in reports for outcome in statuses]
    assert sorted(outcomes) == sorted(
        (f"{table}/{pair}{n}.csv", "success", None)
        for table in ("crm", "leads")
        for pair in "ab"
        for n in range(4)
    )
    assert sum(retries for _, retries in reports) > 0, "the writers never raced: the test proves nothing"

    sequential = f"duckdb:///{tmp_path / 'sequential.duckdb'}"
    import_tree(sequential, root)
    assert_tables_equal(lake_on_postgres, sequential)
    assert_ledger_consistent(lake_on_postgres)
