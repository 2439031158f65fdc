"""Where files come from: one interface for the whole life of a source (listing, fetching,
changes from a cursor), one implementation per kind of source."""

from pgdatahub_dagster.engine.sources.base import (
    Budget,
    Changes,
    FileRefusedError,
    LocalCopy,
    Source,
    SourceFile,
    SourceState,
    SourceUnavailableError,
)
from pgdatahub_dagster.engine.sources.local import LocalFolderSource

__all__ = [
    "Budget",
    "Changes",
    "FileRefusedError",
    "LocalCopy",
    "LocalFolderSource",
    "Source",
    "SourceFile",
    "SourceState",
    "SourceUnavailableError",
]
