"""The production deployment, exercised as operators run it: deploy/dagster.yaml as the
instance (PostgreSQL storage), real daemons and Celery workers as subprocesses, and polling
with deadlines. Every subprocess starts in a process group of its own and the whole group is
stopped when the test ends, passed or failed, so no daemon, code server, run worker or Celery
pool process outlives it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import psycopg
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent

T = TypeVar("T")


def sqlalchemy_url(url: str) -> str:
    """The URL with the psycopg2 driver named, as deploy/dagster.yaml asks for: with
    SQLAlchemy 2.1 a bare postgresql:// would pick psycopg 3, which dagster-postgres breaks on."""
    scheme, rest = url.split("://", 1)
    if scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {scheme}://…")
    return f"postgresql+psycopg2://{rest}"


def deploy_config() -> dict[str, Any]:
    config = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    assert isinstance(config, dict)
    return config


def production_home(tmp_path: Path, overrides: dict[str, Any] | None = None) -> Path:
    """A DAGSTER_HOME holding deploy/dagster.yaml, as an operator installs it. ``overrides``
    are merged into it (only to shorten a test's waits, never storage)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    if overrides:
        assert "storage" not in overrides
        (home / "dagster.yaml").write_text(yaml.safe_dump(_merged(deploy_config(), overrides)))
    else:
        shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    return home


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merged(base[key], value)
        else:
            merged[key] = value
    return merged


def base_env(**settings: str) -> dict[str, str]:
    """The test process's environment without anything that would point a subprocess at
    another instance, warehouse, folder or broker, plus ``settings``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PGDATAHUB_", "DAGSTER_", "CELERY_"))
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # `dagster-celery` starts `celery`
    env.update(settings)
    return env


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float, on_timeout: Callable[[], str] = str
) -> T:
    """Polls ``probe`` until it returns something other than None or False."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{on_timeout()}")
        time.sleep(0.5)


@dataclass
class _Started:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]


@dataclass
class Processes:
    """Subprocesses of one test, each the leader of a new process group (and session)."""

    log_dir: Path
    started: list[_Started] = field(default_factory=list)

    def start(self, name: str, command: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("wb")
        process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started.append(_Started(name, process, log_path, log))
        return process

    def logs(self, chars: int = 3000) -> str:
        """The end of every log, for failure messages."""
        parts = []
        for started in self.started:
            text = started.log_path.read_text(errors="replace")
            parts.append(f"----- {started.name} (exit {started.process.poll()}) -----\n{text[-chars:]}")
        return "\n".join(parts)

    def stop_all(self, grace_seconds: float = 10.0) -> None:
        """SIGTERM to every group, SIGKILL to whatever is left after the grace period."""
        for started in self.started:
            _signal_group(started.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        for started in self.started:
            while _group_alive(started.process) and time.monotonic() < deadline:
                time.sleep(0.2)
        for started in self.started:
            _signal_group(started.process.pid, signal.SIGKILL)
        # Killed members the leader did not reap are reparented to init, which reaps them soon.
        deadline = time.monotonic() + 10
        while any(_group_alive(started.process) for started in self.started) and time.monotonic() < deadline:
            time.sleep(0.2)
        for started in self.started:
            started.log.close()
        stray = [started.name for started in self.started if _group_alive(started.process)]
        assert not stray, f"process groups still alive after SIGKILL: {stray}"


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _group_alive(process: subprocess.Popen[bytes]) -> bool:
    process.poll()  # reap the leader, or its zombie keeps the group "alive"
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


def count_rows(url: str, table: str) -> int | None:
    """Rows of ``table``, or None while the table does not exist yet."""
    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        if not row or not row[0]:
            return None
        counted = connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()
        return int(counted[0]) if counted else None
