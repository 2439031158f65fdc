"""The sources' tests use the warehouse only for the Drive folder registry: DuckDB and
PostgreSQL cover it; on DuckLake they take minutes and test nothing the warehouse tests do not."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgdatahub_dagster_tests.conftest import url_of_warehouse


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return url_of_warehouse(request.param, request, tmp_path)
