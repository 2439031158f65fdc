"""Column and table names: lower snake_case ASCII that PostgreSQL and DuckDB both accept."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from anyascii import anyascii

# PostgreSQL silently truncates identifiers longer than this many bytes, which would make
# two long names collide; names are ASCII after cleaning, so characters are bytes.
MAX_IDENTIFIER_BYTES = 63

# PostgreSQL's system columns: no table may have a user column of these names, so a header
# with one is renamed (``xmin`` → ``xmin_2``), on every warehouse alike.
POSTGRES_SYSTEM_COLUMNS = ("tableoid", "xmin", "cmin", "xmax", "cmax", "ctid")

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NOT_WORD = re.compile(r"[^a-z0-9]+")


def clean_identifier(raw: object) -> str:
    """``'Código Postal'`` → ``'codigo_postal'``; ``''`` when nothing usable is left.

    Non-ASCII letters are transliterated (``Straße`` → ``strasse``), camelCase is split,
    and a leading digit gets a ``col_`` prefix so the name needs no quoting by humans.
    """
    text = anyascii(str(raw)) if raw is not None else ""
    text = _CAMEL_BOUNDARY.sub("_", text).lower()
    name = _NOT_WORD.sub("_", text).strip("_")
    if name and name[0].isdigit():
        name = f"col_{name}"
    return name[:MAX_IDENTIFIER_BYTES].rstrip("_")


def _with_suffix(base: str, number: int) -> str:
    suffix = f"_{number}"
    return base[: MAX_IDENTIFIER_BYTES - len(suffix)].rstrip("_") + suffix


def unique_column_names(raw_names: Sequence[object], reserved: Iterable[str] = ()) -> list[str]:
    """Clean every header and make the result unique.

    An empty header becomes ``column_N`` (N is its 1-based position), a repeated one
    ``name_2``, ``name_3``…, and a header equal to a ``reserved`` name (the lineage
    columns) or a system column is renamed the same way, so no user column is ever lost.
    """
    taken = set(POSTGRES_SYSTEM_COLUMNS) | set(reserved)
    names: list[str] = []
    for position, raw in enumerate(raw_names, start=1):
        base = clean_identifier(raw) or f"column_{position}"
        name, number = base, 1
        while name in taken:
            number += 1
            name = _with_suffix(base, number)
        taken.add(name)
        names.append(name)
    return names
