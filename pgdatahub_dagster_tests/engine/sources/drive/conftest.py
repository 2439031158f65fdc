from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pgdatahub_dagster.engine.sources.drive import DriveClient, FolderRegistry
from pgdatahub_dagster.engine.warehouse import Warehouse, connect
from pgdatahub_dagster.testing.drive_server import DriveTestServer


@pytest.fixture
def client(drive_server: DriveTestServer, drive_credentials: Path) -> DriveClient:
    return DriveClient.connect(
        drive_credentials, api_endpoint=drive_server.api_endpoint, num_retries=4, chunk_bytes=256 * 1024
    )


@pytest.fixture
def warehouse(warehouse_url: str) -> Iterator[Warehouse]:
    with connect(warehouse_url) as opened:
        yield opened


@pytest.fixture
def registry(warehouse: Warehouse) -> FolderRegistry:
    return FolderRegistry(warehouse)
