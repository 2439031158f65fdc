"""Where files come from: one small interface, one implementation per kind of source."""

from pgdatahub_dagster.engine.sources.base import LocalCopy, Source, SourceFile, SourceUnavailableError
from pgdatahub_dagster.engine.sources.local import LocalFolderSource

__all__ = ["LocalCopy", "LocalFolderSource", "Source", "SourceFile", "SourceUnavailableError"]
