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
    "warehouse_kind",
]


def warehouse_kind(url: str) -> str:
    """What the warehouse a URL names is built on, as ``connect`` chooses it: ``duckdb``
    (a DuckDB file, or a DuckLake, which DuckDB runs) or ``postgres``."""
    scheme = url_scheme(url) or ""
    return "duckdb" if scheme.startswith(("duckdb", "ducklake")) else "postgres"


def connect(url: str, *, wait_seconds: float = 120.0, create: bool = True) -> Warehouse:
    """``duckdb:///relative/or//absolute/file.duckdb``, ``postgresql://user:pass@host/db``, a
    libpq ``host=… dbname=… user=…`` string, or a DuckLake:
    ``ducklake:///path/meta.ducklake?data=path/data/`` (its catalog a DuckDB file) or
    ``ducklake+postgresql://user:pass@host/db?data=path/data/`` (its catalog in PostgreSQL).

    ``wait_seconds`` bounds the wait for a DuckDB file another process is writing, or for a
    PostgreSQL server to answer. With ``create=False``, a DuckDB file or a DuckLake catalog file
    that does not exist raises ``WarehouseNotCreatedError`` instead of being created (a
    PostgreSQL database is the server's to create; its ledger tables are made as usual).
    """
    display_url = redact_url(url)
    scheme = url_scheme(url)
    conninfo = postgres_conninfo(url)
    if scheme == "duckdb":
        from pgdatahub_dagster.engine.warehouse.duckdb import DuckDBWarehouse

        path = url.split("://", 1)[1].removeprefix("/")
        if not path:
            raise ConfigError(
                f"{display_url}: a DuckDB URL needs a file path, e.g. duckdb:///data/warehouse.duckdb"
            )
        warehouse: Warehouse = DuckDBWarehouse.open(Path(path), display_url, wait_seconds, create=create)
    elif scheme in ("ducklake", "ducklake+postgresql", "ducklake+postgres"):
        from pgdatahub_dagster.engine.warehouse.ducklake import DuckLakeWarehouse, parse_lake_url

        location = parse_lake_url(url, display_url)
        warehouse = DuckLakeWarehouse.open_lake(location, display_url, wait_seconds, create=create)
    elif conninfo is not None:
        from pgdatahub_dagster.engine.warehouse.postgres import PostgresWarehouse

        warehouse = PostgresWarehouse(conninfo, display_url, wait_seconds)
    else:
        raise ConfigError(
            f"{display_url}: unsupported database URL; use duckdb:///path/file.duckdb, "
            "postgresql://user:pass@host/db, host=… dbname=… user=… or "
            "ducklake:///path/meta.ducklake?data=path/data/"
        )
    try:
        warehouse.ensure_ledger()
    except BaseException:
        warehouse.close()
        raise
    return warehouse
