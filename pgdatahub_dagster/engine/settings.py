"""Configuration from the environment, read in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DATABASE_URL_VAR = "PGDATAHUB_DATABASE_URL"
SOURCE_DIR_VAR = "PGDATAHUB_SOURCE_DIR"
CONFIG_VAR = "PGDATAHUB_CONFIG"
DATA_DIR_VAR = "PGDATAHUB_DATA_DIR"

DEFAULT_SOURCE_DIR = "sample_data"
DEFAULT_DATA_DIR = "data"
# A mapping file inside the source root is picked up without PGDATAHUB_CONFIG.
MAPPING_FILE_NAME = "pgdatahub.yaml"


@dataclass(frozen=True)
class Settings:
    database_url: str
    source_dir: Path
    config_path: Path | None

    @classmethod
    def from_env(
        cls,
        *,
        database_url: str | None = None,
        source_dir: str | None = None,
        config_path: str | None = None,
    ) -> Settings:
        """Explicit values win, then the environment, then the defaults."""
        data_dir = Path(os.environ.get(DATA_DIR_VAR) or DEFAULT_DATA_DIR)
        url = database_url or os.environ.get(DATABASE_URL_VAR) or f"duckdb:///{data_dir / 'warehouse.duckdb'}"
        root = Path(source_dir or os.environ.get(SOURCE_DIR_VAR) or DEFAULT_SOURCE_DIR)
        configured = config_path or os.environ.get(CONFIG_VAR)
        if configured:
            mapping: Path | None = Path(configured)
        else:
            beside = root / MAPPING_FILE_NAME
            mapping = beside if beside.is_file() else None
        return cls(database_url=url, source_dir=root, config_path=mapping)


def redact_url(url: str) -> str:
    """The URL with its password replaced, fit for logs, metadata and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))
