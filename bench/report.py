"""Markdown of a results file, for docs/benchmarks.md: ``python -m bench.report [RESULTS.json]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.__main__ import RESULTS, target_cells


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| scenario | contender | role | rows in | rows stored | seconds | rows/s | peak RSS MB "
        "| engine ÷ it |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, scenario in report["scenarios"].items():
        for key, outcome in scenario["contenders"].items():
            if "error" in outcome:
                lines.append(f"| {name} | {key} | {outcome['role']} | failed | | | | | |")
                continue
            ratio = f"{outcome['engine_ratio']:.2f}×" if "engine_ratio" in outcome else ""
            lines.append(
                f"| {name} | {key} | {outcome['role']} | {outcome['rows_in']:,} | {outcome['rows_out']:,} "
                f"| {outcome['seconds']:.2f} | {outcome['rows_per_s']:,} | {outcome['peak_rss_mb']:.0f} "
                f"| {ratio} |"
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
