"""The engine's warehouse tests run against a DuckLake as well (its catalog a DuckDB file);
the Dagster-level tests keep to DuckDB and PostgreSQL, as they would only repeat them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgdatahub_dagster_tests.conftest import url_of_warehouse


@pytest.fixture(params=["duckdb", "postgres", "ducklake"])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return url_of_warehouse(request.param, request, tmp_path)
