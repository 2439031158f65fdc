from pgdatahub_dagster.engine.normalise.columns import (
    MAX_IDENTIFIER_BYTES,
    clean_identifier,
    unique_column_names,
)


def test_clean_identifier_transliterates_to_snake_case() -> None:
    assert clean_identifier("Straße") == "strasse"
    assert clean_identifier("Código Postal") == "codigo_postal"
    assert clean_identifier("  Business Name  ") == "business_name"
    assert clean_identifier("BusinessName") == "business_name"
    assert clean_identifier("HTTPStatus") == "http_status"
    assert clean_identifier("E-mail (work)") == "e_mail_work"


def test_leading_digit_is_made_safe() -> None:
    assert clean_identifier("2024 Sales") == "col_2024_sales"


def test_nothing_usable_gives_empty() -> None:
    assert clean_identifier("   ") == ""
    assert clean_identifier("!!!") == ""


def test_empty_and_repeated_names() -> None:
    assert unique_column_names(["Name", "", "name ", "NAME", None]) == [
        "name",
        "column_2",
        "name_2",
        "name_3",
        "column_5",
    ]


def test_reserved_lineage_names_are_renamed_not_lost() -> None:
    names = unique_column_names(
        ["source_file", "Load Timestamp", "value"], reserved=["source_file", "load_timestamp"]
    )
    assert names == ["source_file_2", "load_timestamp_2", "value"]


def test_long_names_fit_postgres_and_stay_unique_after_cutting() -> None:
    long = "a very long column header " * 5
    names = unique_column_names([long, long + "x", long])
    assert all(len(name.encode()) <= MAX_IDENTIFIER_BYTES for name in names)
    assert len(set(names)) == 3
    # The first 63 characters of the three agree, so cutting alone would collide.
    assert names[1].endswith("_2") and names[2].endswith("_3")


def test_reserved_sql_words_are_kept_as_names() -> None:
    assert unique_column_names(["Select", "Order", "User"]) == ["select", "order", "user"]


def test_postgres_system_column_names_are_renamed() -> None:
    names = unique_column_names(["ctid", "XMIN", "xmax", "cmin", "cmax", "TABLEOID", "oid", "xmin"])
    assert names == ["ctid_2", "xmin_2", "xmax_2", "cmin_2", "cmax_2", "tableoid_2", "oid", "xmin_3"]
