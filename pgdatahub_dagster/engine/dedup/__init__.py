"""De-duplication of rows by a normalised business key. (Whole files are recognised by the
sha256 their source computes while taking its snapshot: ``sources``.)"""

from pgdatahub_dagster.engine.dedup.keys import (
    ROW_KEY_COLUMN,
    is_phone_column,
    row_keys,
)

__all__ = ["ROW_KEY_COLUMN", "is_phone_column", "row_keys"]
