"""Markdown of a results file, for docs/benchmarks.md: ``python -m bench.report [RESULTS.json]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.__main__ import RESULTS, ratio_cell, seconds_cell, target_cells


def _loads(outcome: dict[str, Any]) -> str:
    """The 1-minute load average at the start of each repetition."""
    return ", ".join(f"{value:.1f}" for value in outcome.get("load_averages", []))


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| scenario | contender | role | rows in | rows stored | seconds | rows/s | peak RSS MB "
        "| engine ÷ it | load average |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, scenario in report["scenarios"].items():
        for key, outcome in scenario["contenders"].items():
            if "error" in outcome:
                lines.append(f"| {name} | {key} | {outcome['role']} | failed | | | | | | |")
                continue
            lines.append(
                f"| {name} | {key} | {outcome['role']} | {outcome['rows_in']:,} | {outcome['rows_out']:,} "
                f"| {seconds_cell(outcome)} | {outcome['rows_per_s']:,} | {outcome['peak_rss_mb']:.0f} "
                f"| {ratio_cell(outcome)} | {_loads(outcome)} |"
            )
    lines += ["", "| target | value | needed | verdict |", "|---|---:|---:|---|"]
    for name, scenario in report["scenarios"].items():
        for target in scenario["targets"]:
            value, needed = target_cells(target)
            verdict = "**pass**" if target["passed"] else "**miss**"
            lines.append(f"| {name}: {target['name']} | {value} | {needed} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else RESULTS
    print(markdown(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
