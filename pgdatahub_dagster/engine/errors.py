"""Typed errors of the engine.

Every error that concerns one file says which file and why, in words a user can act on;
the importer records ``str(error)`` in the ledger as it is.
"""

from __future__ import annotations


class PgDataHubError(Exception):
    """Base class of every error the engine raises on purpose."""


class ConfigError(PgDataHubError):
    """The environment or the folder mapping is invalid; raised at start-up."""


class FileImportError(PgDataHubError):
    """One file cannot be imported. Other files are not affected."""

    def __init__(self, source_file: str, reason: str) -> None:
        super().__init__(f"{source_file}: {reason}")
        self.source_file = source_file
        self.reason = reason


class UnreadableFileError(FileImportError):
    """The file is corrupt, encrypted, of an unsupported kind or otherwise unreadable."""


class LimitExceededError(FileImportError):
    """The file is larger than a reader limit allows (settings.ReadLimits)."""


class SheetNotFoundError(FileImportError):
    """The configured sheet does not exist in the workbook."""


class BadKeyError(FileImportError):
    """The configured unique key names columns the file does not have."""


class SystemFaultError(PgDataHubError):
    """Not the fault of the file being imported: it stops the run (the file is rolled back and
    imported by the next run), with a message that says what failed and why."""


class WarehouseError(SystemFaultError):
    """The warehouse cannot be reached, lost the connection, has no disk space left or refused
    permission. The message names the warehouse by its redacted URL."""


class WarehouseNotCreatedError(PgDataHubError):
    """The warehouse is a file that does not exist yet, and the caller asked not to create it
    (a read that must leave no trace, such as loading the code location)."""


class CommitConflict(WarehouseError):
    """Another writer committed a conflicting change first (DuckLake's optimistic commits):
    the transaction was rolled back and may run again."""


class DataRefusedError(PgDataHubError):
    """The warehouse refused the data or the schema one file brought (a value it cannot store,
    too many columns): that file fails, the others go on. The message says why, without the
    file, which the importer adds."""
