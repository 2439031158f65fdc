"""Normalising: clean column names and honest column types, with Polars."""

from pgdatahub_dagster.engine.normalise.columns import (
    clean_identifier,
    unique_column_names,
)
from pgdatahub_dagster.engine.normalise.values import normalise_frame

__all__ = ["clean_identifier", "normalise_frame", "unique_column_names"]
