"""Schema evolution: the column type lattice and the plan that brings a table up to a frame."""

from pgdatahub_dagster.engine.schema.evolve import SchemaChange, plan_schema_changes
from pgdatahub_dagster.engine.schema.types import SqlType, sql_type_of, widen

__all__ = ["SchemaChange", "SqlType", "plan_schema_changes", "sql_type_of", "widen"]
