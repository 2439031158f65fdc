from pgdatahub_dagster.engine.schema import SqlType, plan_schema_changes

T = SqlType


def test_new_table_is_created_with_every_column() -> None:
    plan = plan_schema_changes(None, {"a": T.INTEGER, "b": T.TEXT})
    assert [(c.change_type, c.column_name, c.new_type) for c in plan.changes] == [
        ("create_table", None, None),
        ("add_column", "a", T.INTEGER),
        ("add_column", "b", T.TEXT),
    ]


def test_new_columns_are_added_and_conflicts_widen_the_table() -> None:
    plan = plan_schema_changes(
        {"a": T.INTEGER, "d": T.DATE, "t": T.TEXT},
        {"a": T.DOUBLE, "d": T.DATE, "t": T.INTEGER, "n": T.BOOLEAN},
    )
    assert [(c.change_type, c.column_name, c.old_type, c.new_type) for c in plan.changes] == [
        ("alter_type", "a", T.INTEGER, T.DOUBLE),
        ("add_column", "n", None, T.BOOLEAN),
    ]
    # A narrower incoming column is cast up to the table's type instead.
    assert plan.load_types == {"a": T.DOUBLE, "d": T.DATE, "t": T.TEXT, "n": T.BOOLEAN}


def test_matching_schema_needs_no_change() -> None:
    plan = plan_schema_changes({"a": T.BIGINT}, {"a": T.INTEGER})
    assert plan.changes == []
    assert plan.load_types == {"a": T.BIGINT}
