from pathlib import Path

import pytest

from pgdatahub_dagster.engine.errors import ConfigError
from pgdatahub_dagster.engine.mapping import FolderMapping, default_table_name

EXAMPLE = """\
default_sheet: Sheet1
leads:
  table: leads
  sheet: Leads
  unique_key: [business_name, address, phone]
  "01":
    header_row: 3
reports:
  sheet: Data
archive/old:
  unique_key: none
  phone_region: gb
"""


def test_settings_are_inherited_by_subfolders() -> None:
    mapping = FolderMapping.parse(EXAMPLE)
    nested = mapping.settings_for(("leads", "01", "deeper"), "root")
    assert nested.table == "leads"
    assert nested.sheet == "Leads"
    assert nested.unique_key == ("business_name", "address", "phone")
    assert nested.header_row == 3
    assert nested.default_sheet == "Sheet1"


def test_default_table_is_the_cleaned_folder_path() -> None:
    mapping = FolderMapping.parse(EXAMPLE)
    reports = mapping.settings_for(("reports", "Q1 2024"), "root")
    assert reports.table == "reports_q1_2024"
    assert reports.sheet == "Data"
    assert mapping.settings_for((), "My Inbox").table == "my_inbox"
    assert default_table_name(("Ventas", "Año 2024"), "root") == "ventas_ano_2024"


def test_slash_keys_nest_and_none_disables_row_keys() -> None:
    settings = FolderMapping.parse(EXAMPLE).settings_for(("archive", "old"), "root")
    assert settings.unique_key == ()
    assert settings.phone_region == "GB"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("leads:\n  tabel: x\n", "line 2: unknown key 'tabel'"),
        ("leads:\n  table: [x\n", "line 3: not valid YAML"),
        ("a:\n  header_row: 0\n", "line 2: header_row must be a row number"),
        ("a:\n  unique_key: 5\n", "line 2: unique_key must be a list"),
        ("phone_region: ZZ\n", "line 1: phone_region 'ZZ'"),
        ("- a\n", "line 1: the top level must be a mapping"),
    ],
)
def test_errors_name_the_key_and_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FolderMapping.parse(text, origin="mapping.yaml")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the folder mapping"):
        FolderMapping.load(tmp_path / "nope.yaml")


GMAIL_BLOCK = """\
gmail:
  on_delete: retract
  messages:
    prefer: oldest
  vendor_reports:
    query: "from:reports@vendor.example has:attachment"
    table: vendor_reports
    sheet: Data
  label:finance:
    query: label:finance
"""


def test_the_gmail_block_gives_queries_tables_and_the_messages_settings() -> None:
    mapping = FolderMapping.parse(GMAIL_BLOCK)
    assert [(q.name, q.query) for q in mapping.gmail_queries] == [
        ("vendor_reports", "from:reports@vendor.example has:attachment"),
        ("label:finance", "label:finance"),
    ]
    vendor = mapping.settings_for(("gmail", "vendor_reports"), "gmail")
    assert (vendor.table, vendor.sheet, vendor.on_delete, vendor.unique_key) == (
        "vendor_reports",
        "Data",
        "retract",
        None,
    )
    assert mapping.settings_for(("gmail", "label:finance"), "gmail").table == "gmail_label_finance"
    messages = mapping.settings_for(("gmail", "messages"), "gmail")
    assert (messages.table, messages.unique_key, messages.on_delete, messages.prefer) == (
        "gmail_messages",
        ("id",),
        "retract",
        "oldest",
    )
    # Without a gmail block the messages still have their table and key.
    assert FolderMapping.parse("").settings_for(("gmail", "messages"), "gmail").table == "gmail_messages"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gmail:\n  reports:\n    table: r\n", "line 2: gmail entry 'reports' needs a query"),
        (
            "gmail:\n  reports:\n    query: x\n    folder: y\n",
            "line 4: unknown key 'folder' for gmail entry 'reports'",
        ),
        ("gmail:\n  messages:\n    sheet: x\n", "line 3: unknown key 'sheet' for the messages table"),
        ("gmail:\n  table: x\n", "line 2: unknown key 'table' in the gmail block"),
        ("gmail:\n  reports:\n    query: [a]\n", "line 3: query must be a non-empty text"),
    ],
)
def test_gmail_block_errors_name_the_key_and_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FolderMapping.parse(text)
