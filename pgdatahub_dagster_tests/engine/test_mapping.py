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
