"""What every reader returns."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl


@dataclass
class RawTable:
    """Raw header texts and the data rows, in batches whose columns are in header order.

    Batch column names are placeholders; the importer renames them from ``headers``
    after cleaning, so readers never decide about names.
    """

    headers: list[str]
    batches: Iterator[pl.DataFrame]
    sheet: str | None = None
