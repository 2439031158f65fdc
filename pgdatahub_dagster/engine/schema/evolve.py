"""Plan the DDL that lets a table take a frame: never narrowing, always audited."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pgdatahub_dagster.engine.schema.types import SqlType, widen

#: What imports do to a table; ``drop_column`` and ``drop_table`` come from reverts.
ChangeType = Literal["create_table", "add_column", "alter_type", "drop_column", "drop_table"]


@dataclass(frozen=True)
class SchemaChange:
    """One change to a table, as written to ``etl_schema_changes``."""

    change_type: ChangeType
    column_name: str | None
    old_type: SqlType | None
    new_type: SqlType | None


@dataclass(frozen=True)
class SchemaPlan:
    changes: list[SchemaChange]
    # The type each incoming column must be cast to before loading (the table's type
    # when it is already wider than the frame's).
    load_types: dict[str, SqlType]


def plan_schema_changes(
    table_columns: Mapping[str, SqlType] | None, incoming: Mapping[str, SqlType]
) -> SchemaPlan:
    """Compare a table's user columns (``None``: no such table) with a frame's columns."""
    if table_columns is None:
        changes = [SchemaChange("create_table", None, None, None)]
        changes += [SchemaChange("add_column", name, None, kind) for name, kind in incoming.items()]
        return SchemaPlan(changes, dict(incoming))
    changes = []
    load_types: dict[str, SqlType] = {}
    for name, kind in incoming.items():
        current = table_columns.get(name)
        if current is None:
            changes.append(SchemaChange("add_column", name, None, kind))
            load_types[name] = kind
            continue
        target = widen(current, kind)
        if target != current:
            changes.append(SchemaChange("alter_type", name, current, target))
        load_types[name] = target
    return SchemaPlan(changes, load_types)
