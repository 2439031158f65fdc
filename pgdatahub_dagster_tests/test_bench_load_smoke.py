"""``python -m bench.code_location_load`` at a tiny size, so the measurement cannot rot: the
code location loads with each table of the folders and its three checks, for a tree of a table
per folder and one whose folders share tables. No timing is checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.code_location_load import build_tree, measure


@pytest.mark.parametrize("tables", [12, 3])
def test_the_load_benchmark_measures_a_code_location_with_the_tables_of_its_folders(
    tmp_path: Path, tables: int
) -> None:
    build_tree(tmp_path / "tree", 12, tables)
    figures = measure(tmp_path / "tree")
    assert figures["table_assets"] == tables
    assert figures["table_checks"] == tables * 3
    assert figures["load_s"] > 0 and figures["load_cpu_s"] > 0
