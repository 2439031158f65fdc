"""Google Drive as a source: the API client, the folder registry, the change scanner."""

from pgdatahub_dagster.engine.sources.drive.client import (
    DriveClient,
    DriveError,
    DriveItem,
    InvalidPageToken,
)
from pgdatahub_dagster.engine.sources.drive.registry import FolderRegistry
from pgdatahub_dagster.engine.sources.drive.scanner import DriveScanner, ScanResult, ScanState
from pgdatahub_dagster.engine.sources.drive.source import DriveSource
from pgdatahub_dagster.engine.sources.google_api import CredentialsRefused

__all__ = [
    "CredentialsRefused",
    "DriveClient",
    "DriveError",
    "DriveItem",
    "DriveScanner",
    "DriveSource",
    "FolderRegistry",
    "InvalidPageToken",
    "ScanResult",
    "ScanState",
]
