"""Warehouses behind one interface, chosen by URL in exactly one place: ``connect``."""

from __future__ import annotations

from pathlib import Path

from pgdatahub_dagster.engine.errors import ConfigError
from pgdatahub_dagster.engine.settings import postgres_conninfo, redact_url, url_scheme
from pgdatahub_dagster.engine.warehouse.base import (
    LEDGER_TABLE,
    LINEAGE_COLUMNS,
    REGISTRY_TABLE,
    SCHEMA_CHANGES_TABLE,
    HoldingImport,
    ImportRecord,
    Lineage,
    Warehouse,
)

__all__ = [
    "LEDGER_TABLE",
    "LINEAGE_COLUMNS",
    "REGISTRY_TABLE",
    "SCHEMA_CHANGES_TABLE",
    "HoldingImport",
    "ImportRecord",
    "Lineage",
    "Warehouse",
    "connect",
]


def connect(url: str, *, wait_seconds: float = 120.0) -> Warehouse:
    """``duckdb:///relative/or//absolute/file.duckdb``, ``postgresql://user:pass@host/db`` or a
    libpq ``host=… dbname=… user=…`` string.

    ``wait_seconds`` bounds the wait for a DuckDB file another process is writing, or for a
    PostgreSQL server to answer.
    """
    display_url = redact_url(url)
    conninfo = postgres_conninfo(url)
    if url_scheme(url) == "duckdb":
        from pgdatahub_dagster.engine.warehouse.duckdb import DuckDBWarehouse

        path = url.split("://", 1)[1].removeprefix("/")
        if not path:
            raise ConfigError(
                f"{display_url}: a DuckDB URL needs a file path, e.g. duckdb:///data/warehouse.duckdb"
            )
        warehouse: Warehouse = DuckDBWarehouse(Path(path), display_url, wait_seconds)
    elif conninfo is not None:
        from pgdatahub_dagster.engine.warehouse.postgres import PostgresWarehouse

        warehouse = PostgresWarehouse(conninfo, display_url, wait_seconds)
    else:
        raise ConfigError(
            f"{display_url}: unsupported database URL; use duckdb:///path/file.duckdb, "
            "postgresql://user:pass@host/db or host=… dbname=… user=…"
        )
    try:
        warehouse.ensure_ledger()
    except BaseException:
        warehouse.close()
        raise
    return warehouse
