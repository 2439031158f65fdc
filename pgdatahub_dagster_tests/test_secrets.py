"""The database password never shows, whatever form of connection string carries it; nor
does the S3 secret key of a DuckLake whose data is on S3 (the last test).

A real role on the real PostgreSQL has a password with ``#``, ``?`` and ``/`` in it; each form
psycopg accepts connects as that role with that password (the embedded server trusts local
connections, so the test checks that libpq got the password), and then the output of
``pgdatahub status``, the ledger, the Dagster run and event storage and the compute logs are
searched for the password, as are the errors of a connection that fails (a wrong port).
The password is made of alphanumeric pieces around the special characters, and each piece
is searched for alone, so a password shown in part or percent-encoded is found too.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from dagster import AssetKey, DagsterInstance, Definitions, JobDefinition, instance_for_test, serialize_value
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from pgdatahub_dagster.cli import main
from pgdatahub_dagster.definitions import build_defs
from pgdatahub_dagster.defs.resources import FolderMappingResource, WarehouseResource
from pgdatahub_dagster.defs.sources.drive import DriveResource
from pgdatahub_dagster.defs.sources.local import LocalFolderResource
from pgdatahub_dagster.engine.errors import WarehouseError
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster.engine.warehouse.postgres import PostgresWarehouse
from pgdatahub_dagster_tests.conftest import S3_SECRET_KEY
from pgdatahub_dagster_tests.engine.test_importer import run_import
from pgdatahub_dagster_tests.engine.warehouse.test_ducklake import lake_url
from pgdatahub_dagster_tests.files import write_csv

PIECES = ("Qzxv7", "Wkjr2", "Pmtb9", "Hfyd4")
PASSWORD = f"{PIECES[0]}#{PIECES[1]}?{PIECES[2]}/{PIECES[3]}"
#: A port nothing listens on (TCP), or whose socket file does not exist.
WRONG_PORT = "1"


@dataclass(frozen=True)
class Server:
    host: str
    port: str
    database: str
    user: str


FORMS = (
    "url, password percent-encoded",
    "postgres:// scheme",
    "driver suffix",
    "password in the query, percent-encoded",
    "password in the query, as is",
    "everything in the query",
    "key=value, quoted",
    "key=value, as is",
    "PGPASSWORD",
)
#: psycopg cannot read this one (the "?" starts the query string), so it never connects.
UNREADABLE = "password in the user info, as is"


def connection_string(form: str, server: Server, port: str) -> str:
    s, encoded = server, quote(PASSWORD, safe="")
    at = f"{quote(s.host, safe='')}:{port}/{s.database}"
    keywords = f"port={port} dbname={s.database} user={s.user}"
    return {
        "url, password percent-encoded": f"postgresql://{s.user}:{encoded}@{at}",
        "postgres:// scheme": f"postgres://{s.user}:{encoded}@{at}",
        "driver suffix": f"postgresql+psycopg://{s.user}:{encoded}@{at}",
        "password in the query, percent-encoded": f"postgresql://{s.user}@{at}?password={encoded}",
        "password in the query, as is": f"postgresql://{s.user}@{at}?password={PASSWORD}",
        "everything in the query": f"postgresql:///{s.database}?host={quote(s.host, safe='')}&port={port}"
        f"&user={s.user}&password={encoded}",
        "key=value, quoted": f"host='{s.host}' {keywords} password='{PASSWORD}'",
        "key=value, as is": f"host={s.host} {keywords} password={PASSWORD}",
        "PGPASSWORD": f"postgresql://{s.user}@{at}",
        UNREADABLE: f"postgresql://{s.user}:{PASSWORD}@{at}",
    }[form]


def assert_hidden(text: str | bytes, where: str) -> None:
    data = text.encode() if isinstance(text, str) else text
    shown = [piece for piece in PIECES if piece.encode() in data]
    assert not shown, f"{where} shows the password (pieces {shown})"


@pytest.fixture
def server(postgres_admin_url: str, make_database: Callable[[str], str]) -> Iterator[Server]:
    """A fresh database owned by a fresh role whose password has ``#``, ``?`` and ``/``."""
    url = make_database("secrets")
    facts = conninfo_to_dict(url)
    database, role = str(facts["dbname"]), f"pgdatahub_secret_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), PASSWORD))
        admin.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(database), sql.Identifier(role))
        )
    with psycopg.connect(url, autocommit=True) as owner:
        owner.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(role)))
    yield Server(str(facts.get("host") or "localhost"), str(facts.get("port") or "5432"), database, role)
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        # The database first (make_database would drop it later), so that the role owns nothing.
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _url(form: str, server: Server, port: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The connection string, with PGPASSWORD set only for the form that uses it."""
    if form == "PGPASSWORD":
        monkeypatch.setenv("PGPASSWORD", PASSWORD)
    else:
        monkeypatch.delenv("PGPASSWORD", raising=False)
    return connection_string(form, server, port)


@pytest.mark.parametrize("form", FORMS)
def test_the_cli_and_the_ledger_never_show_the_password(
    form: str,
    server: Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = _url(form, server, server.port, monkeypatch)
    write_csv(tmp_path / "shop" / "a.csv", "sku\nA1\n")
    (tmp_path / "shop" / "b.xlsx").write_bytes(b"broken")  # a failure, with its error, in the ledger
    run_import(url, tmp_path)
    with connect(url) as warehouse:
        assert warehouse.fetchall("SELECT current_user, current_database()") == [
            (server.user, server.database)
        ]
        assert isinstance(warehouse, PostgresWarehouse)
        assert warehouse._conn.info.password == PASSWORD  # what libpq connected with
        ledger = warehouse.fetchall("SELECT * FROM etl_imports") + warehouse.fetchall(
            "SELECT * FROM etl_schema_changes"
        )
        assert_hidden(repr(ledger), "the ledger")
        assert_hidden(warehouse.display_url, "display_url")
        assert warehouse.display_url.startswith(f"postgresql://{server.user}")

    assert main(["--database-url", url, "status"]) == 0
    assert main(["--database-url", url, "ledger"]) == 0
    shown = capsys.readouterr()
    assert "Warehouse: postgresql://" in shown.out and "shop/b.xlsx" in shown.out
    assert_hidden(shown.out + shown.err, "pgdatahub status")

    wrong = _url(form, server, WRONG_PORT, monkeypatch)
    assert main(["--database-url", wrong, "status"]) == 1
    shown = capsys.readouterr()
    assert shown.err.startswith("pgdatahub: cannot connect to PostgreSQL at postgresql://")
    assert_hidden(shown.out + shown.err, "a failed pgdatahub status")
    with pytest.raises(WarehouseError) as failure:
        connect(wrong, wait_seconds=2)
    assert_hidden(str(failure.value), "the connection error")


def test_an_unreadable_url_is_never_echoed(
    server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--database-url", _url(UNREADABLE, server, server.port, monkeypatch), "status"]) == 1
    shown = capsys.readouterr()
    assert "pgdatahub: cannot connect to PostgreSQL at postgresql://***: malformed URL" in shown.err
    assert "must be percent-encoded, e.g. # as %23" in shown.err
    assert_hidden(shown.out + shown.err, "an unreadable URL")


def _stored(instance: DagsterInstance) -> str:
    """Everything the instance stores about its runs: the runs (config, tags), their job and
    plan snapshots, and every event."""
    parts = []
    for run in instance.get_runs():
        parts.append(serialize_value(run))
        if run.job_snapshot_id:
            parts.append(serialize_value(instance.get_job_snapshot(run.job_snapshot_id)))
        if run.execution_plan_snapshot_id:
            parts.append(
                serialize_value(instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id))
            )
        parts += [serialize_value(event) for event in instance.all_logs(run.run_id)]
    return "\n".join(parts)


def _code_location(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Definitions, JobDefinition, JobDefinition, Path]:
    """The code location configured as users do, through the environment, reading
    ``source``; its sync and status jobs, and an empty DAGSTER_HOME for the instance."""
    monkeypatch.setenv("PGDATAHUB_SOURCE_DIR", str(source))
    monkeypatch.delenv("PGDATAHUB_CONFIG", raising=False)
    defs = build_defs(
        {
            "warehouse": WarehouseResource(),
            "folder_mapping": FolderMappingResource(),
            "local_folder": LocalFolderResource(),
            "drive": DriveResource(),
        }
    )
    job = defs.resolve_implicit_global_asset_job_def()
    sync = job.get_subset(asset_selection={AssetKey("local_folder_sync")})
    status = job.get_subset(asset_selection={AssetKey("warehouse_status")})
    home = tmp_path / "dagster_home"
    home.mkdir()
    return defs, sync, status, home


@pytest.mark.parametrize("form", [*FORMS, UNREADABLE])
def test_dagster_runs_never_store_the_password(
    form: str, server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Configured as users do, through PGDATAHUB_DATABASE_URL: a sync that imports a good
    and a bad file, the status asset, and a run whose connection fails."""
    source = tmp_path / "inbox"
    write_csv(source / "shop" / "a.csv", "sku\nA1\n")
    (source / "shop" / "b.xlsx").write_bytes(b"broken")
    _, sync, status, home = _code_location(source, tmp_path, monkeypatch)
    with instance_for_test(temp_dir=str(home)) as instance:
        if form == UNREADABLE:
            monkeypatch.setenv("PGDATAHUB_DATABASE_URL", _url(form, server, server.port, monkeypatch))
            assert not sync.execute_in_process(instance=instance, raise_on_error=False).success
        else:
            monkeypatch.setenv("PGDATAHUB_DATABASE_URL", _url(form, server, server.port, monkeypatch))
            synced = sync.execute_in_process(instance=instance, raise_on_error=False)
            assert not synced.success  # b.xlsx failed; a.csv was imported
            assert synced.asset_materializations_for_node("local_folder_sync") == []
            assert status.execute_in_process(instance=instance).success
            monkeypatch.setenv("PGDATAHUB_DATABASE_URL", _url(form, server, WRONG_PORT, monkeypatch))
            failed = sync.execute_in_process(instance=instance, raise_on_error=False)
            assert not failed.success
            failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
            assert "cannot connect to PostgreSQL at postgresql://" in serialize_value(failure)
        stored = _stored(instance)
        assert "STEP_FAILURE" in stored
        assert_hidden(stored, "the run and event storage")
        compute_logs = [
            path for path in home.rglob("*") if path.is_file() and path.suffix in (".out", ".err")
        ]
        assert compute_logs, "no compute logs were captured"
        for path in home.rglob("*"):
            if path.is_file():
                assert_hidden(path.read_bytes(), str(path.relative_to(home)))


@pytest.mark.long  # four Dagster runs against PostgreSQL and S3
def test_the_s3_secret_never_shows_in_runs_or_the_cli(
    s3_bucket: str,
    make_database: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A DuckLake with its data on S3, its credentials in the environment (AWS_…): a sync
    with a bad file, the status asset, compaction, a run whose store does not answer, and
    ``pgdatahub status`` store and show no trace of the secret key."""
    source = tmp_path / "inbox"
    write_csv(source / "shop" / "a.csv", "sku\n" + "".join(f"A{i}\n" for i in range(100)))
    (source / "shop" / "b.xlsx").write_bytes(b"broken")
    defs, sync, status, home = _code_location(source, tmp_path, monkeypatch)
    monkeypatch.setenv("PGDATAHUB_DATABASE_URL", lake_url(make_database("catalog"), f"{s3_bucket}/lake"))
    with instance_for_test(temp_dir=str(home)) as instance:
        assert not sync.execute_in_process(instance=instance, raise_on_error=False).success  # b.xlsx
        assert status.execute_in_process(instance=instance).success
        assert defs.resolve_job_def("compact_warehouse").execute_in_process(instance=instance).success
        assert main(["status"]) == 0
        shown = capsys.readouterr()
        assert "shop/b.xlsx" in shown.out and "import " in shown.out
        write_csv(source / "shop" / "c.csv", "sku\n" + "".join(f"C{i}\n" for i in range(100)))
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
        failed = sync.execute_in_process(instance=instance, raise_on_error=False)
        assert not failed.success
        stored = _stored(instance)
        assert "STEP_FAILURE" in stored and "127.0.0.1:1" in stored
        texts = [stored, shown.out, shown.err]
        texts += [path.read_text(errors="replace") for path in home.rglob("*") if path.is_file()]
        assert not [text for text in texts if S3_SECRET_KEY in text]
