"""Faults provoked for real: a PostgreSQL backend terminated at a well-defined point, a disk
that fills up, the documented import command run as a user runs it (and killed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from pgdatahub_dagster.engine.warehouse import Warehouse, connect
from pgdatahub_dagster_tests.deploy.conftest import BIN, base_env

ROOT = Path(__file__).resolve().parents[1]
MATERIALIZE = [str(BIN / "dagster"), "asset", "materialize", "-m", "pgdatahub_dagster.definitions"]
MATERIALIZE += ["--select", "local_folder_sync"]


class TableLock:
    """Holds the lock the importer takes on a PostgreSQL table (imports into one table
    serialise on it), as a long import into that table would. An import of another file of
    the table waits inside its transaction until the lock is released."""

    def __init__(self, url: str, table: str) -> None:
        self._warehouse: Warehouse | None = connect(url)
        self._transaction = self._warehouse.transaction()
        self._transaction.__enter__()
        self._warehouse.lock(table)
        self.pid = int(self._warehouse.fetchall("SELECT pg_backend_pid()")[0][0])

    def release(self) -> None:
        if self._warehouse is not None:
            self._transaction.__exit__(None, None, None)
            self._warehouse.close()
            self._warehouse = None


def importer_waiting_for_lock(url: str) -> int | None:
    """The backend of the import that waits for a table lock (``TableLock``), if one does."""
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
            "WHERE a.application_name = 'pgdatahub' AND l.locktype = 'advisory' AND NOT l.granted"
        ).fetchone()
    return int(row[0]) if row else None


def terminate_backend(url: str, pid: int) -> None:
    """What an administrator, a failover or a dropped network does to a connection."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SELECT pg_terminate_backend(%s)", (pid,))


def with_password(url: str) -> tuple[str, str]:
    """``url`` with a password, and that password: the test server's own if the URL has one,
    else one the server ignores (the embedded server trusts its local socket)."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    password = "s3cret-pw"
    netloc = f"{parts.username or 'postgres'}:{password}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc)), password


def dagster_home(tmp_path: Path) -> Path:
    """A DAGSTER_HOME with the repository's dagster.yaml, as the README sets one up."""
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def command_env(home: Path, source: Path, warehouse_url: str, **settings: str) -> dict[str, str]:
    return base_env(
        DAGSTER_HOME=str(home),
        PGDATAHUB_SOURCE_DIR=str(source),
        PGDATAHUB_DATABASE_URL=warehouse_url,
        **settings,
    )


def run(command: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def on_small_disk(command: list[str], disk: Path, size: str, keep: Path, *, full: bool = False) -> list[str]:
    """``command`` in a mount namespace of its own in which ``disk`` is a tmpfs of ``size``
    holding a copy of ``keep``'s files, which are copied back to ``keep`` when it ends (the
    tmpfs goes with the namespace). ``full`` fills the disk before the command starts."""
    probe = [*_namespace(), "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {disk} && true"]
    disk.mkdir(parents=True, exist_ok=True)
    keep.mkdir(parents=True, exist_ok=True)
    if subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip("a full disk needs a private tmpfs: `unshare --mount` is not permitted here")
    fill = 'dd if=/dev/zero of="$d/filler" bs=4k 2>/dev/null; ' if full else ""
    script = (
        'mount -t tmpfs -o size="$1" tmpfs "$2" || exit 97; d="$2"; k="$3"; shift 3; '
        f'cp -a "$k"/. "$d"/; {fill}rm -f "$k"/*; "$@"; rc=$?; rm -f "$d/filler"; '
        'cp -a "$d"/. "$k"/; exit $rc'
    )
    return [*_namespace(), "sh", "-c", script, "sh", size, str(disk), str(keep), *command]


def _namespace() -> list[str]:
    # Root may mount in a new mount namespace; anyone else needs a user namespace too.
    return ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--mount"]
