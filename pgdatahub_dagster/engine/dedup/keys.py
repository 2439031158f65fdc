"""Row keys: one compact, normalised business key per row.

Two rows are the same business when their key columns agree after normalising: trimmed,
inner whitespace collapsed, case-folded, and phone numbers compared as E.164 numbers. The
key is stored as a 128-bit hash (a UUID column with a UNIQUE index), so the index stays
small however wide the key columns are.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import phonenumbers
import polars as pl

ROW_KEY_COLUMN = "_row_key"

_PHONE_WORDS = frozenset({"phone", "phones", "telephone", "tel", "mobile", "fax", "cell", "cellphone"})
_NON_DIGIT = re.compile(r"\D")
# Separates key parts; a control character that trimmed cell text never contains.
_PART_SEPARATOR = "\x1f"
_NULL_PART = "\x00"


def is_phone_column(name: str) -> bool:
    """``phone``, ``mobile_phone``, ``tel``, ``fax_number``… compare as phone numbers."""
    return any(word in _PHONE_WORDS or word.startswith("phone") for word in name.split("_"))


def _e164(value: str, region: str) -> str:
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return _NON_DIGIT.sub("", value)
    if not phonenumbers.is_possible_number(number):
        return _NON_DIGIT.sub("", value)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _phone_part(column: pl.Series, region: str) -> pl.Series:
    # Parse each distinct value once: phone columns repeat a lot and parsing is the slow part.
    distinct = column.drop_nulls().unique()
    mapping = {value: _e164(value, region) for value in distinct.to_list()}
    return column.replace_strict(mapping, default=None, return_dtype=pl.String)


def _casefolded(column: pl.Series) -> pl.Series:
    lowered = column.str.to_lowercase()
    # Polars lowercases; Python's casefold also folds ß → ss and the like. Only values
    # outside ASCII can differ, so only those go through Python.
    needs_fold = lowered.drop_nulls().filter(lowered.drop_nulls().str.contains(r"[^\x00-\x7f]"))
    if needs_fold.is_empty():
        return lowered
    mapping = {value: value.casefold() for value in needs_fold.unique().to_list()}
    return lowered.replace(mapping)


def _key_part(column: pl.Series, region: str) -> pl.Series:
    text = column.cast(pl.String).str.strip_chars().str.replace_all(r"\s+", " ")
    if is_phone_column(column.name):
        return _phone_part(text, region)
    return _casefolded(text)


def row_keys(
    frame: pl.DataFrame, key_columns: Sequence[str], phone_region: str, *, label_columns: bool = False
) -> pl.Series:
    """A 32-hex-digit key per row (``_row_key``), from the normalised ``key_columns``.

    With ``label_columns`` the key is the set of (column, value) pairs of the non-empty
    cells instead of the values in order: used when every column is the key, so that a
    file with an extra empty column, or its columns in another order, keys the same rows
    the same way.
    """
    parts = pl.DataFrame([_key_part(frame[name], phone_region).alias(name) for name in key_columns])
    if label_columns:
        # concat_str is null when any input is null, so an empty cell drops its label too.
        labelled = [pl.concat_str(pl.lit(f"{name}="), pl.col(name)) for name in key_columns]
        joined = parts.select(pl.concat_str(labelled, separator=_PART_SEPARATOR, ignore_nulls=True))
    else:
        values = [pl.col(name).fill_null(_NULL_PART) for name in key_columns]
        joined = parts.select(pl.concat_str(values, separator=_PART_SEPARATOR))
    digests = [hashlib.blake2b(text.encode(), digest_size=16).hexdigest() for text in joined.to_series()]
    return pl.Series(ROW_KEY_COLUMN, digests, dtype=pl.String)
