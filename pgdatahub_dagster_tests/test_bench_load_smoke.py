"""``python -m bench.code_location_load`` at a tiny size, so the measurement cannot rot: the
code location loads with every folder's table and its three checks. No timing is checked."""

from __future__ import annotations

from pathlib import Path

from bench.code_location_load import build_tree, measure


def test_the_load_benchmark_measures_a_code_location_with_a_table_per_folder(tmp_path: Path) -> None:
    build_tree(tmp_path, 12)
    figures = measure(tmp_path)
    assert figures["table_assets"] == 12
    assert figures["checks"] == 12 * 3 + 2  # and warehouse_status's two
    assert figures["load_s"] > 0
