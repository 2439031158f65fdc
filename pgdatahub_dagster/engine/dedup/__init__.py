"""De-duplication at two levels: whole files by content hash, rows by a business key."""

from pgdatahub_dagster.engine.dedup.fingerprint import sha256_of_file
from pgdatahub_dagster.engine.dedup.keys import (
    ROW_KEY_COLUMN,
    is_phone_column,
    row_keys,
)

__all__ = ["ROW_KEY_COLUMN", "is_phone_column", "row_keys", "sha256_of_file"]
