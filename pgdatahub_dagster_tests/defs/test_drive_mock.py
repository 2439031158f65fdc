"""The Drive sensor against an independent Drive fake: npm ``google-drive-mock`` 1.2.0 (MIT),
run with the machine's Node.js, reached by the real google-api-python-client.

The project's own test server encodes the project's reading of the Drive API; this one was
written by others. It is installed on first use into a cache directory (``npm install
--prefix``), so a clean checkout's CI installs it itself. Its known limits are worked around
here, never in the product: multipart upload is broken (files are uploaded with
``uploadType=media``, then named and placed with ``files.update(addParents=…)``); it ignores
``Range`` (downloads come back whole); ``changes.list`` never pages; it has no export route,
no shared drives and no fault injection; ``version`` is a JSON number. It accepts the access
tokens ``valid-token`` and ``another-valid-token`` only, given the supported way for
emulators: ``PGDATAHUB_DRIVE_ACCESS_TOKEN``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, Definitions

from pgdatahub_dagster.defs.sources.drive import GOOGLE_DRIVE
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster_tests.exact_sync import SensorDaemon

MOCK_PACKAGE = "google-drive-mock@1.2.0"
#: Required by the fake at run time, yet listed among its devDependencies, so npm leaves it out.
MOCK_RUNTIME_DEPENDENCIES = ("cors@2.8.6",)
MOCK_TOKEN = "valid-token"
FOLDER_MIME_TYPE = "application/vnd.google-apps.folder"
_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    / "pgdatahub-tests"
    / "google-drive-mock-1.2.0"
)


def _installed() -> Path:
    """The package's folder, installed into the cache on first use."""
    package = _CACHE / "node_modules" / "google-drive-mock"
    if not (package / "dist" / "index.js").is_file() or not (_CACHE / "node_modules" / "cors").is_dir():
        npm = shutil.which("npm")
        if npm is None or shutil.which("node") is None:
            pytest.fail("google-drive-mock needs Node.js and npm on PATH (apt-get install nodejs npm)")
        _CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(_CACHE),
                "--no-audit",
                "--no-fund",
                MOCK_PACKAGE,
                *MOCK_RUNTIME_DEPENDENCIES,
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
    return package


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class DriveMock:
    """The running fake, and the few calls that seed and change its tree over HTTP."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    @property
    def api_endpoint(self) -> str:
        return f"{self.base}/drive/v3/"

    def _call(
        self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"
    ) -> Any:
        request = urllib.request.Request(f"{self.base}{path}", data=body, method=method)
        request.add_header("Authorization", f"Bearer {MOCK_TOKEN}")
        if body is not None:
            request.add_header("Content-Type", content_type)
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
            is_json = "json" in response.headers.get("Content-Type", "")
        return json.loads(text) if text and is_json else None

    def clear(self) -> None:
        self._call("POST", "/debug/clear", b"", "text/plain")

    def add_folder(self, name: str, parent_id: str | None = None) -> str:
        body = {"name": name, "mimeType": FOLDER_MIME_TYPE, "parents": [parent_id] if parent_id else []}
        return str(self._call("POST", "/drive/v3/files", json.dumps(body).encode())["id"])

    def add_file(self, name: str, parent_id: str, content: bytes) -> str:
        # Multipart upload is broken in the fake: upload the bytes, then name and place them.
        created = self._call("POST", "/upload/drive/v3/files?uploadType=media", content, "text/csv")
        file_id = str(created["id"])
        self._patch(file_id, {"name": name}, f"addParents={parent_id}")
        return file_id

    def _patch(self, file_id: str, body: dict[str, Any], query: str = "") -> None:
        self._call("PATCH", f"/drive/v3/files/{file_id}?{query}", json.dumps(body).encode())

    def rename(self, file_id: str, name: str) -> None:
        self._patch(file_id, {"name": name})

    def update_content(self, file_id: str, content: bytes) -> None:
        self._call("PATCH", f"/upload/drive/v3/files/{file_id}?uploadType=media", content, "text/csv")

    def trash(self, file_id: str) -> None:
        self._patch(file_id, {"trashed": True})

    def delete(self, file_id: str) -> None:
        self._call("DELETE", f"/drive/v3/files/{file_id}")


@pytest.fixture(scope="module")
def drive_mock_server() -> Iterator[DriveMock]:
    package = _installed()
    port = _free_port()
    script = f"require({json.dumps(str(package))}).startServer({port}, '127.0.0.1')"
    process = subprocess.Popen(
        ["node", "-e", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    mock = DriveMock(port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{mock.base}/", timeout=1).close()
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"google-drive-mock did not start: {process.stderr.read() if process.stderr else ''}"
                    )
                time.sleep(0.1)
        yield mock
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def drive_mock(
    drive_mock_server: DriveMock, drive_server: object, monkeypatch: pytest.MonkeyPatch
) -> DriveMock:
    """The fake, emptied, with the Drive settings pointing at it (``drive_server`` for the
    environment it sets up: no proxies for 127.0.0.1, no waits between retries)."""
    drive_mock_server.clear()
    monkeypatch.setenv("PGDATAHUB_DRIVE_ACCESS_TOKEN", MOCK_TOKEN)
    monkeypatch.setenv("PGDATAHUB_DRIVE_API_ENDPOINT", drive_mock_server.api_endpoint)
    for name in ("PGDATAHUB_DRIVE_CREDENTIALS", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    return drive_mock_server


def _rows(url: str, sql: str) -> list[tuple[object, ...]]:
    with connect(url) as warehouse:
        return warehouse.fetchall(sql)


def test_the_sensor_scenario_against_google_drive_mock(
    test_defs: Definitions,
    instance: DagsterInstance,
    drive_mock: DriveMock,
    source_dir: Path,
    warehouse_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """First walk, idle tick, new file, rename, edit, trash, delete, retract."""
    (source_dir / "pgdatahub.yaml").write_text("Leads:\n  on_delete: retract\n")
    root = drive_mock.add_folder("Sales Inbox")
    leads = drive_mock.add_folder("Leads", root)
    first = drive_mock.add_file("a.csv", leads, b"name,city\nAcme,Oslo\nBlue,Rome\n")
    monkeypatch.setenv("PGDATAHUB_DRIVE_FOLDER_ID", root)
    daemon = SensorDaemon(test_defs, instance, "drive_sensor")

    assert daemon.sync() == [first]
    assert _rows(warehouse_url, "SELECT name, source_file FROM leads ORDER BY name") == [
        ("Acme", "Leads/a.csv"),
        ("Blue", "Leads/a.csv"),
    ]
    assert daemon.tick() == ([], [])  # idle

    second = drive_mock.add_file("b.csv", leads, b"name,city\nCorner,Bern\n")
    assert daemon.sync() == [second]
    assert _rows(warehouse_url, "SELECT count(*) FROM leads") == [(3,)]

    drive_mock.rename(first, "renamed.csv")
    assert daemon.sync() == [first]
    assert _rows(warehouse_url, "SELECT DISTINCT source_file FROM leads WHERE name = 'Acme'") == [
        ("Leads/renamed.csv",)
    ]
    assert _rows(warehouse_url, "SELECT count(*) FROM etl_imports WHERE status = 'success'") == [(2,)]

    drive_mock.update_content(first, b"name,city\nAcme,Oslo\nDelta,Lyon\n")
    assert daemon.sync() == [first]
    assert _rows(warehouse_url, "SELECT name FROM leads ORDER BY name") == [
        ("Acme",),
        ("Corner",),
        ("Delta",),
    ]

    # Trashed and deleted under on_delete: retract: their rows leave.
    drive_mock.trash(first)
    assert daemon.sync() == ["handle_deleted_files"]
    assert _rows(warehouse_url, "SELECT name FROM leads ORDER BY name") == [("Corner",)]
    drive_mock.delete(second)
    assert daemon.sync() == ["handle_deleted_files"]
    assert _rows(warehouse_url, "SELECT count(*) FROM leads") == [(0,)]
    assert instance.get_dynamic_partitions(GOOGLE_DRIVE.partitions_name) == []
    assert daemon.tick() == ([], [])
