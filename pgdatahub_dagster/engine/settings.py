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


@dataclass(frozen=True)
class DriveSettings:
    """Google Drive: which folders, which credentials, how hard to retry."""

    folder_ids: list[str]
    credentials_file: Path | None
    api_endpoint: str | None
    num_retries: int
    chunk_bytes: int
    tick_seconds: float
    #: A plain OAuth access token for a Drive emulator (never refreshed); only with an
    #: ``api_endpoint``, and in place of any credentials file.
    access_token: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.folder_ids) and (self.credentials_file is not None or self.access_token is not None)

    @classmethod
    def from_env(cls) -> DriveSettings:
        folders = os.environ.get("PGDATAHUB_DRIVE_FOLDER_ID", "")
        credentials = os.environ.get("PGDATAHUB_DRIVE_CREDENTIALS") or os.environ.get(
            "GOOGLE_APPLICATION_CREDENTIALS"
        )
        return cls(
            folder_ids=[part.strip() for part in folders.replace(" ", ",").split(",") if part.strip()],
            credentials_file=Path(credentials) if credentials else None,
            api_endpoint=os.environ.get("PGDATAHUB_DRIVE_API_ENDPOINT") or None,
            num_retries=int(os.environ.get("PGDATAHUB_DRIVE_RETRIES", "5")),
            chunk_bytes=int(float(os.environ.get("PGDATAHUB_DRIVE_CHUNK_MB", "8")) * 1024 * 1024),
            tick_seconds=float(os.environ.get("PGDATAHUB_DRIVE_TICK_SECONDS", "30")),
            access_token=os.environ.get("PGDATAHUB_DRIVE_ACCESS_TOKEN") or None,
        )


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
