"""The ``pgdatahub`` command, in-process, against both warehouses."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgdatahub_dagster.cli import main
from pgdatahub_dagster_tests.engine.test_importer import query, run_import
from pgdatahub_dagster_tests.files import write_csv


def test_status_ledger_and_revert(
    warehouse_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_csv(tmp_path / "t" / "a.csv", "name\nAcme\nBlue\n")
    (tmp_path / "t" / "b.xlsx").write_bytes(b"broken")
    run_import(warehouse_url, tmp_path)

    assert main(["--database-url", warehouse_url, "status"]) == 0
    out = capsys.readouterr().out
    assert "t      2     1         0        1       0         0" in out
    assert "Recent failures:" in out and "t/b.xlsx: not a readable workbook" in out

    assert main(["--database-url", warehouse_url, "revert", "--file", "t/a.csv", "--dry-run"]) == 0
    assert "Would revert 1 imports, 2 rows" in capsys.readouterr().out
    assert query(warehouse_url, "SELECT count(*) FROM t") == [(2,)]

    assert main(["--database-url", warehouse_url, "revert", "--file", "t/a.csv", "--schema"]) == 0
    out = capsys.readouterr().out
    assert "Reverted 1 imports, 2 rows" in out
    assert "create_table t: undone" in out
    assert query(warehouse_url, "SELECT count(*) FROM etl_imports WHERE status = 'reverted'") == [(1,)]

    assert main(["--database-url", warehouse_url, "revert", "--sha256", "0" * 64]) == 0
    assert "Nothing to revert" in capsys.readouterr().out
    assert main(["--database-url", warehouse_url, "ledger", "--limit", "5"]) == 0
    assert "reverted" in capsys.readouterr().out


def test_revert_needs_exactly_one_selector(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["revert", "--file", "a", "--run", "b"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_an_unreachable_warehouse_is_a_clean_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--database-url", "postgresql://ann:s3cret@127.0.0.1:1/wh", "status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pgdatahub: cannot connect to PostgreSQL at postgresql://ann:***@127.0.0.1:1/wh")
    assert "s3cret" not in err
