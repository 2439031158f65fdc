"""The scenarios: what is loaded, by which contenders, and the targets their ratios must meet.

A scenario lists its contender runs (each in a fresh process, on the same data, in the
same benchmark run) and turns their measurements into ratios and pass/miss targets.
Scenarios register themselves in ``SCENARIOS`` with ``@scenario``; the runner runs them in
registration order.

Adding a scenario: write a subclass of ``Scenario`` with ``name``, ``title``, ``runs()`` and
``targets()``, decorate it with ``@scenario``, and if it needs a new way of loading, add a
``Contender`` to ``bench/contenders.py`` (``drive_tick`` is a short example).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench import data
from pgdatahub_dagster.engine.settings import SensorSettings

Role = Literal["engine", "limit", "peer", "legacy", "ceiling", "variant", "fixed"]
ROLE_MEANING = {
    "engine": "the project, as documented",
    "limit": "what the hardware allows for the same result",
    "peer": "the tool a user would otherwise pick",
    "legacy": "an old ETL's way",
    "ceiling": "no de-duplication at all (for scale)",
    "variant": "the project with another setting",
    "fixed": "a fixed cost: the same path with no rows",
}


@dataclass(frozen=True)
class Sizes:
    csv_rows: int
    pandas_rows: int
    xlsx_rows: int
    pandas_xlsx_rows: int
    files: int
    rows_per_file: int
    memory_rows: tuple[int, int]
    #: drive_tick: (files, folders, changed files)
    drive_tree: tuple[int, int, int]
    #: hostile: (zip bomb rows of 8,192 values, MB of the long line, columns of the wide CSV);
    #: even the smoke size is over the default limits, which the files must fail on.
    hostile: tuple[int, int, int]
    #: many_files_large: (files, rows per file) through the sensor's backfill.
    large_tree: tuple[int, int] = (5_000, 200)
    #: tick_scale: (tables, folders per table, files per folder), locally and in Drive.
    tick_tree: tuple[int, int, int] = (50, 100, 20)


SIZES: dict[str, Sizes] = {
    # A few seconds per contender: for CI, proves every scenario runs end to end.
    "smoke": Sizes(
        2_000,
        1_000,
        1_000,
        500,
        4,
        500,
        (2_000, 10_000),
        (200, 20, 3),
        (2_500, 72, 20_000),
        (30, 20),
        (1, 2, 3),
    ),
    "small": Sizes(
        100_000,
        20_000,
        20_000,
        5_000,
        40,
        2_000,
        (100_000, 500_000),
        (2_000, 100, 10),
        (16_384, 256, 20_000),
        (500, 200),
        (10, 50, 20),
    ),
    "full": Sizes(
        1_000_000,
        100_000,
        200_000,
        20_000,
        200,
        2_000,
        (1_000_000, 5_000_000),
        (10_000, 500, 10),
        (16_384, 1_024, 20_000),
    ),
}


@dataclass(frozen=True)
class Run:
    """One contender in one scenario."""

    key: str
    contender: str
    role: Role
    params: dict[str, Any] = field(default_factory=dict)
    #: "postgres": a fresh database is made for it; "duckdb": a fresh file; "ducklake": a fresh
    #: lake folder (``lake``), with the engine's URL of a lake in it (``url``).
    database: Literal["postgres", "duckdb", "ducklake"] | None = "postgres"


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None
    threshold: float
    #: "min": value must be at least threshold; "max": at most.
    kind: Literal["min", "max"]

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return self.value >= self.threshold if self.kind == "min" else self.value <= self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "threshold": self.threshold,
            "kind": self.kind,
            "passed": self.passed,
        }


@dataclass
class Context:
    sizes: Sizes
    #: Scratch space for this benchmark run: source folders, DuckDB files.
    workdir: Path

    def source_folder(self, name: str, files: list[Path], mapping: str | None = None) -> Path:
        """A source root holding (links to) ``files`` and a mapping, by default one keyed like
        the listings table."""
        root = self.workdir / "sources" / name / "listings"
        root.mkdir(parents=True, exist_ok=True)
        for path in files:
            link = root / path.name
            if not link.exists():
                link.symlink_to(path)
        if mapping is None:
            mapping = "table: listings\nunique_key: [" + ", ".join(data.KEY_COLUMNS) + "]\n"
        (root / "pgdatahub.yaml").write_text(mapping)
        return root


def rate(result: dict[str, Any] | None) -> float | None:
    if not result or "error" in result or not result.get("seconds"):
        return None
    return float(result["rows_in"]) / float(result["seconds"])


def registered_share(outcome: dict[str, Any]) -> float | None:
    """rows out ÷ rows in of one contender's outcome."""
    if not outcome.get("rows_in"):
        return None
    return float(outcome["rows_out"]) / float(outcome["rows_in"])


def ratio(results: dict[str, dict[str, Any]], top: str, bottom: str) -> float | None:
    a, b = rate(results.get(top)), rate(results.get(bottom))
    return a / b if a is not None and b else None


class Scenario:
    name: str
    #: Formatted with the size's fields (``Sizes``).
    title: str

    def heading(self, sizes: Sizes) -> str:
        return self.title.format(**sizes.__dict__)

    def runs(self, context: Context) -> list[Run]:
        raise NotImplementedError

    def targets(self, results: dict[str, dict[str, Any]], context: Context) -> list[Target]:
        return []

    def extra(self, results: dict[str, dict[str, Any]], context: Context) -> dict[str, Any]:
        """Further figures for the report."""
        return {}


SCENARIOS: dict[str, Scenario] = {}


def scenario(cls: type[Scenario]) -> type[Scenario]:
    SCENARIOS[cls.name] = cls()
    return cls


def _label(rows: int) -> str:
    return f"{rows // 1_000_000}M" if rows % 1_000_000 == 0 else f"{rows // 1_000}k"


@scenario
class CsvPostgres(Scenario):
    name = "csv_postgres"
    title = "csv_1m: {csv_rows:,}-row CSV → PostgreSQL, unique key (name, address, phone)"

    def runs(self, context: Context) -> list[Run]:
        rows = context.sizes.csv_rows
        csv = data.csv_file(rows)
        source = context.source_folder(self.name, [csv])
        return [
            Run("engine", "engine", "engine", {"source_dir": str(source)}),
            Run("copy_indexed", "copy_indexed", "limit", {"csv": str(csv)}),
            Run("dlt_merge", "dlt_postgres", "peer", {"csv": str(csv)}),
            Run(
                "pandas_to_sql",
                "pandas_to_sql",
                "legacy",
                {"csv": str(csv), "rows": context.sizes.pandas_rows},
            ),
            Run("copy_no_index", "copy_plain", "ceiling", {"csv": str(csv)}),
        ]

    def targets(self, results: dict[str, dict[str, Any]], context: Context) -> list[Target]:
        return [
            Target("engine ÷ dlt merge (rows/s)", ratio(results, "engine", "dlt_merge"), 1.5, "min"),
            Target(
                "engine ÷ raw COPY, indexed (rows/s)", ratio(results, "engine", "copy_indexed"), 0.9, "min"
            ),
        ]


@scenario
class CsvDuckDB(Scenario):
    name = "csv_duckdb"
    title = "csv_1m: {csv_rows:,}-row CSV → DuckDB, unique key (name, address, phone)"

    def runs(self, context: Context) -> list[Run]:
        csv = data.csv_file(context.sizes.csv_rows)
        source = context.source_folder(self.name, [csv])
        return [
            Run("engine", "engine", "engine", {"source_dir": str(source)}, "duckdb"),
            Run("duckdb_read_csv", "duckdb_read_csv", "ceiling", {"csv": str(csv)}, "duckdb"),
            Run("duckdb_read_csv_indexed", "duckdb_read_csv_indexed", "limit", {"csv": str(csv)}, "duckdb"),
            Run("dlt_duckdb", "dlt_duckdb", "peer", {"csv": str(csv)}, "duckdb"),
        ]

    def targets(self, results: dict[str, dict[str, Any]], context: Context) -> list[Target]:
        return [Target("engine ÷ dlt to DuckDB (rows/s)", ratio(results, "engine", "dlt_duckdb"), 1.5, "min")]

    def extra(self, results: dict[str, dict[str, Any]], context: Context) -> dict[str, Any]:
        """How far the engine is from the limit, DuckDB's own reader into an indexed table."""
        limit = ratio(results, "engine", "duckdb_read_csv_indexed")
        return {} if limit is None else {"engine_per_duckdb_read_csv_indexed": round(limit, 3)}


@scenario
class CsvDuckLake(Scenario):
    name = "csv_ducklake"
    title = "csv_1m: {csv_rows:,}-row CSV → DuckLake (DuckDB catalog, Parquet in a folder), unique key"

    def runs(self, context: Context) -> list[Run]:
        # The engine's lake and dlt's made afresh for each run; the limit's Parquet file beside.
        lakes = context.workdir / "lakes" / self.name
        lakes.mkdir(parents=True, exist_ok=True)
        csv = data.csv_file(context.sizes.csv_rows)
        engine = {"source_dir": str(context.source_folder(self.name, [csv]))}
        return [
            Run("engine", "engine", "engine", engine, "ducklake"),
            Run(
                "duckdb_copy_parquet",
                "duckdb_copy_parquet",
                "limit",
                {"csv": str(csv), "parquet": str(lakes / "copy.parquet")},
                None,
            ),
            Run("dlt_ducklake", "dlt_ducklake", "peer", {"csv": str(csv)}, "ducklake"),
        ]

    def targets(self, results: dict[str, dict[str, Any]], context: Context) -> list[Target]:
        return [
            Target("engine ÷ dlt to DuckLake (rows/s)", ratio(results, "engine", "dlt_ducklake"), 1.5, "min")
        ]


@scenario
class ChangedFile(Scenario):
    """The same file (same relative path) with new content: ~1% of its rows edited in
    non-key columns, ~0.5% removed, ~0.5% added. Both contenders first import the old
    version with the engine (not timed); then the engine imports the new one over it, against
    deleting the file's rows (the engine's revert) and importing the new version whole."""

    name = "changed_file"
    title = (
        "changed_file: a {csv_rows:,}-row CSV imported again after 1% of its rows were edited, "
        "0.5% removed and 0.5% added → PostgreSQL"
    )
    database: Literal["postgres", "duckdb"] = "postgres"

    def runs(self, context: Context) -> list[Run]:
        rows = context.sizes.csv_rows
        versions = {"csv_v1": str(data.csv_file(rows)), "csv_v2": str(data.changed_csv_file(rows))}
        runs = []
        roles: tuple[tuple[str, Role], ...] = (("engine_reimport", "engine"), ("delete_reinsert", "legacy"))
        for key, role in roles:
            # Each its own folder: its setup writes the file there, then overwrites it.
            source = context.source_folder(f"{self.name}_{key}", [])
            runs.append(Run(key, key, role, {"source_dir": str(source), **versions}, self.database))
        return runs

    def targets(self, results: dict[str, dict[str, Any]], context: Context) -> list[Target]:
        return [
            Target(
                "engine re-import ÷ delete+reinsert (rows/s)",
                ratio(results, "engine_reimport", "delete_reinsert"),
                1.0,
                "min",
            )
        ]

    def extra(self, results: dict[str, dict[str, Any]], context: Context) -> dict[str, Any]:
        """Whether both contenders left the same table (its rows, and its review counts' sum)."""
        if len(results) != 2 or any("error" in outcome for outcome in results.values()):
            return {}
        stored = {
            (outcome["rows_out"], (outcome.get("extra") or {}).get("review_count_sum"))
            for outcome in results.values()
        }
        return {"same_table_after": len(stored) == 1}


@scenario
class ChangedFileDuckDB(ChangedFile):
    name = "changed_file_duckdb"
    title = ChangedFile.title.replace("changed_file:", "changed_file_duckdb:").replace("PostgreSQL", "DuckDB")
    database = "duckdb"


@scenario
class XlsxPostgres(Scenario):
    name = "xlsx_postgres"
    title = "xlsx_200k: {xlsx_rows:,}-row xlsx → PostgreSQL, same key"

    def runs(self, context: Context) -> list[Run]:
        xlsx = data.xlsx_file(context.sizes.xlsx_rows)
        source = context.source_folder(self.name, [xlsx])
        return [
            Run("engine", "engine", "engine", {"source_dir": str(source), "warm_reader": True}),
            # The same, with the start of the workbook reader (once per process) in the timing,
            # as the first workbook of a run pays it.
            Run("engine_cold_reader", "engine", "variant", {"source_dir": str(source)}),
            Run("fastexcel_read", "fastexcel_read", "limit", {"xlsx": str(xlsx)}, None),
            Run(
                "pandas_openpyxl",
                "pandas_openpyxl",
                "legacy",
                {"xlsx": str(xlsx), "rows": context.sizes.pandas_xlsx_rows},
            ),
        ]

    def targets(self, results: dict[str, dict[str, Any]], context: Context) -> list[Target]:
        return [
            Target(
                "engine ÷ bare fastexcel read (rows/s)",
                ratio(results, "engine", "fastexcel_read"),
                0.7,
                "min",
            ),
            Target(
                "engine, the reader's start timed too, ÷ bare fastexcel read (rows/s)",
                ratio(results, "engine_cold_reader", "fastexcel_read"),
                0.7,
                "min",
            ),
        ]


@scenario
class ManyFiles(Scenario):
    name = "many_files"
    title = "many_files: {files} CSVs × {rows_per_file:,} rows → PostgreSQL through Dagster"

    def runs(self, context: Context) -> list[Run]:
        folder = data.many_files(context.sizes.files, context.sizes.rows_per_file)
        source = context.source_folder(self.name, sorted(folder.glob("*.csv")))
        empty = context.source_folder(f"{self.name}_empty", [])
        return [
            Run("dagster", "dagster_materialize", "engine", {"source_dir": str(source)}),
            Run(
                "dagster_multiprocess",
                "dagster_materialize",
                "variant",
                {"source_dir": str(source), "executor": "multiprocess"},
            ),
            Run("dagster_no_files", "dagster_materialize", "fixed", {"source_dir": str(empty)}),
            Run("engine_alone", "engine", "limit", {"source_dir": str(source)}),
            Run("dlt_per_file", "dlt_per_file", "peer", {"source_dir": str(source)}),
        ]

    def targets(self, results: dict[str, dict[str, Any]], context: Context) -> list[Target]:
        return [
            Target("Dagster ÷ engine alone (rows/s)", ratio(results, "dagster", "engine_alone"), 0.8, "min"),
            Target(
                "Dagster ÷ dlt, one run per file (rows/s)",
                ratio(results, "dagster", "dlt_per_file"),
                5.0,
                "min",
            ),
            Target(
                "Dagster's cost per file after start-up (ms)",
                self.extra(results, context).get("dagster_overhead_ms_per_file_after_start"),
                10.0,
                "max",
            ),
        ]

    def extra(self, results: dict[str, dict[str, Any]], context: Context) -> dict[str, Any]:
        """Dagster's cost split into its start-up (a run over no files) and its cost per file."""
        seconds = {key: outcome.get("seconds") for key, outcome in results.items()}
        if any(seconds.get(key) is None for key in ("dagster", "dagster_no_files", "engine_alone")):
            return {}
        files = context.sizes.files
        figures = {
            "engine_ms_per_file": round(1000 * seconds["engine_alone"] / files, 1),
            "dagster_overhead_ms_per_file": round(
                1000 * (seconds["dagster"] - seconds["engine_alone"]) / files, 1
            ),
            "dagster_start_seconds": seconds["dagster_no_files"],
            "dagster_overhead_ms_per_file_after_start": round(
                1000 * (seconds["dagster"] - seconds["dagster_no_files"] - seconds["engine_alone"]) / files, 1
            ),
        }
        if seconds.get("dagster_multiprocess") is not None:
            figures["dagster_multiprocess_overhead_ms_per_file"] = round(
                1000 * (seconds["dagster_multiprocess"] - seconds["engine_alone"]) / files, 1
            )
        return figures


@scenario
class ManyFilesLarge(Scenario):
    """A first load of a large tree as the sensor launches it: one backfill under a real
    daemon (the smoke size keeps it tiny), against the engine alone over the same files."""

    name = "many_files_large"
    title = "many_files_large: {files} CSVs × {rows} rows → PostgreSQL, one sensor backfill, real daemon"

    def heading(self, sizes: Sizes) -> str:
        files, rows = sizes.large_tree
        return self.title.format(files=f"{files:,}", rows=f"{rows:,}")

    def runs(self, context: Context) -> list[Run]:
        files, rows = context.sizes.large_tree
        folder = data.many_files(files, rows)
        # Links to the cached files, as in many_files: a backfill's runs import linked files.
        source = context.source_folder(self.name, sorted(folder.glob("*.csv")))
        # The smoke size's few files must make a backfill too.
        sensor = {"source_dir": str(source), "backfill_files": min(files, 200)}
        return [
            Run("sensor_backfill", "dagster_sensor_backfill", "engine", sensor),
            Run(
                "sensor_backfill_postgres",
                "dagster_sensor_backfill",
                "variant",
                {**sensor, "instance": "postgres"},
            ),
            Run("engine_alone", "engine", "limit", {"source_dir": str(source)}),
        ]

    def targets(self, results: dict[str, dict[str, Any]], context: Context) -> list[Target]:
        return [
            Target(
                f"sensor backfill{label} ÷ engine alone (rows/s)",
                ratio(results, key, "engine_alone"),
                0.8,
                "min",
            )
            for key, label in (
                ("sensor_backfill", ""),
                ("sensor_backfill_postgres", ", Dagster on PostgreSQL"),
            )
        ]

    def extra(self, results: dict[str, dict[str, Any]], context: Context) -> dict[str, Any]:
        """Files per second, and what Dagster (daemon start, ticks, backfill, runs) costs per file."""
        seconds = {key: outcome.get("seconds") for key, outcome in results.items()}
        if seconds.get("engine_alone") is None:
            return {}
        files = context.sizes.large_tree[0]
        figures = {"engine_files_per_s": round(files / seconds["engine_alone"], 1)}
        for key in ("sensor_backfill", "sensor_backfill_postgres"):
            if seconds.get(key) is not None:
                figures[f"{key}_files_per_s"] = round(files / seconds[key], 1)
                figures[f"{key}_dagster_ms_per_file"] = round(
                    1000 * (seconds[key] - seconds["engine_alone"]) / files, 1
                )
        return figures


@scenario
class LedgerHistory(Scenario):
    """The many_files folder imported by the engine into a warehouse whose ledger already
    holds a long history (500 imports per file of the folder: 100,000 at full size), against
    the same import with an empty ledger."""

    name = "ledger_history"
    title = "ledger_history: {files} CSVs × {rows_per_file:,} rows → PostgreSQL, ledger of 500 × {files} rows"

    def runs(self, context: Context) -> list[Run]:
        folder = data.many_files(context.sizes.files, context.sizes.rows_per_file)
        source = context.source_folder(self.name, sorted(folder.glob("*.csv")))
        history = {"ledger_rows": 500 * context.sizes.files, "history_tables": 25 * context.sizes.files}
        return [
            Run("engine", "engine", "engine", {"source_dir": str(source), **history}),
            Run("engine_empty_ledger", "engine", "limit", {"source_dir": str(source)}),
        ]

    def targets(self, results: dict[str, dict[str, Any]], context: Context) -> list[Target]:
        return [
            Target(
                "long ledger ÷ empty ledger (rows/s)",
                ratio(results, "engine", "engine_empty_ledger"),
                0.9,
                "min",
            )
        ]


@scenario
class Status(Scenario):
    """``pgdatahub status`` over many tables (25 per file of many_files: 5,000 at full size)
    and a ledger of 500 imports per file (100,000)."""

    name = "status"
    title = "status: pgdatahub status, {files} × 25 tables, a ledger of {files} × 500 rows (PostgreSQL)"

    def runs(self, context: Context) -> list[Run]:
        files = context.sizes.files
        return [Run("status", "engine_status", "engine", {"tables": 25 * files, "ledger_rows": 500 * files})]

    def targets(self, results: dict[str, dict[str, Any]], context: Context) -> list[Target]:
        outcome = results.get("status") or {}
        return [Target("seconds for pgdatahub status", outcome.get("seconds"), 2.0, "max")]


@scenario
class Memory(Scenario):
    name = "memory"
    title = (
        "memory: the engine's peak RSS and rows/s importing a CSV of {memory_rows[0]:,} rows, "
        "and one of {memory_rows[1]:,}, into PostgreSQL"
    )
    database: Literal["postgres", "duckdb"] = "postgres"

    def runs(self, context: Context) -> list[Run]:
        runs = []
        for key, rows in zip(("engine_n", "engine_5n"), context.sizes.memory_rows, strict=True):
            csv = data.csv_file(rows)
            source = context.source_folder(f"{self.name}_{_label(rows)}", [csv])
            runs.append(Run(key, "engine", "engine", {"source_dir": str(source)}, self.database))
        # The large file first: the first run is the one the report divides by the others, so
        # the smaller file's "engine ÷" reads as the target does, rows/s large ÷ small.
        return runs[::-1]

    def targets(self, results: dict[str, dict[str, Any]], context: Context) -> list[Target]:
        small, large = results.get("engine_n", {}), results.get("engine_5n", {})
        ratio_value = None
        if small.get("peak_rss_mb") and large.get("peak_rss_mb"):
            ratio_value = large["peak_rss_mb"] / small["peak_rss_mb"]
        n, n5 = (_label(rows) for rows in context.sizes.memory_rows)
        return [
            Target(
                f"rows/s {n5} ÷ rows/s {n} (linear cost)",
                ratio(results, "engine_5n", "engine_n"),
                0.85,
                "min",
            ),
            Target(f"peak RSS {n5} ÷ peak RSS {n}", ratio_value, 1.25, "max"),
            Target(f"peak RSS {n5} (MB)", large.get("peak_rss_mb"), 600.0, "max"),
        ]


@scenario
class MemoryDuckDB(Memory):
    name = "memory_duckdb"
    title = Memory.title.replace("memory:", "memory_duckdb:").replace("PostgreSQL", "a DuckDB file")
    database = "duckdb"


@scenario
class DriveTickScenario(Scenario):
    name = "drive_tick"
    title = (
        "drive_tick: one Drive-sensor tick over {drive_tree[0]:,} files in {drive_tree[1]:,} folders, "
        "{drive_tree[2]} changed"
    )

    def runs(self, context: Context) -> list[Run]:
        files, folders, changes = context.sizes.drive_tree
        return [
            Run(
                "drive_tick", "drive_tick", "engine", {"files": files, "folders": folders, "changes": changes}
            )
        ]

    def targets(self, results: dict[str, dict[str, Any]], context: Context) -> list[Target]:
        outcome = results.get("drive_tick") or {}
        figures = outcome.get("extra") or {}
        changes = context.sizes.drive_tree[2]
        calls, pages = figures.get("api_calls"), figures.get("changes_pages")
        budget = 2 * changes + pages if pages is not None else None
        return [
            Target(
                "API calls ÷ (2 × changes + pages)",
                calls / budget if calls is not None and budget else None,
                1.0,
                "max",
            ),
            Target("seconds for the tick", outcome.get("seconds"), 2.0, "max"),
        ]


def _tick_seconds(outcome: dict[str, Any], key: str) -> list[float]:
    return [tick["seconds"] for tick in (outcome.get("extra") or {}).get(key, [])]


@scenario
class TickScale(Scenario):
    """Sensor ticks over a large tree as the sensor daemon runs them (its own iteration, the
    code location in a gRPC code server, the tick records' own times): the local sensor's
    first load and idle ticks, a tick of a run per file, and the Drive sensor's first walk on
    the Drive test server to its end."""

    name = "tick_scale"
    title = "tick_scale: sensor ticks over {files:,} files in {folders:,} folders ({tables} tables)"

    def heading(self, sizes: Sizes) -> str:
        tables, folders, files = sizes.tick_tree
        return self.title.format(files=tables * folders * files, folders=tables * folders, tables=tables)

    def runs(self, context: Context) -> list[Run]:
        tree = context.sizes.tick_tree
        files = tree[0] * tree[1] * tree[2]
        source = data.large_tree(*tree)
        return [
            # The tick of a run per file: as many files as a tick may run, at most.
            # A mass deletion: a tick's worth of files (``PGDATAHUB_SENSOR_MAX_FILES``) gone at once.
            Run(
                "local_ticks",
                "local_ticks",
                "engine",
                {
                    "source_dir": str(source),
                    "runs": min(SensorSettings.from_env().max_runs, files),
                    "deletions": min(10_000, files),
                },
            ),
            Run("drive_ticks", "drive_ticks", "engine", {"tree": tree}),
        ]

    def targets(self, results: dict[str, dict[str, Any]], context: Context) -> list[Target]:
        local, drive = results.get("local_ticks") or {}, results.get("drive_ticks") or {}
        first, idle = _tick_seconds(local, "first_load_ticks"), _tick_seconds(local, "idle_ticks")
        walk = _tick_seconds(drive, "walk_ticks")
        extra = local.get("extra") or {}
        runs_tick, gone = extra.get("runs_tick") or {}, extra.get("deletion_tick") or {}
        return [
            Target("local first load: longest tick (s)", max(first) if first else None, 10.0, "max"),
            Target("local tick of a run a file (s)", runs_tick.get("seconds"), 10.0, "max"),
            Target("local tick of a mass deletion (s)", gone.get("seconds"), 10.0, "max"),
            Target("local idle tick, median (s)", statistics.median(idle) if idle else None, 2.0, "max"),
            Target("Drive walk: longest tick (s)", max(walk) if walk else None, 10.0, "max"),
            Target("Drive walk: files registered ÷ files", registered_share(drive), 1.0, "min"),
        ]

    def extra(self, results: dict[str, dict[str, Any]], context: Context) -> dict[str, Any]:
        local, drive = results.get("local_ticks") or {}, results.get("drive_ticks") or {}
        runs_tick = (local.get("extra") or {}).get("runs_tick") or {}
        idle = _tick_seconds(local, "idle_ticks")
        figures: dict[str, Any] = {
            "local_first_load_ticks": _tick_seconds(local, "first_load_ticks"),
            "local_idle_ticks": idle,
            "drive_walk_ticks": _tick_seconds(drive, "walk_ticks"),
            "local_deletion_tick": (local.get("extra") or {}).get("deletion_tick"),
        }
        if runs_tick.get("runs") and idle:
            # What Dagster takes per run it resolves and submits, over an idle tick's cost.
            figures["seconds_per_run"] = round(
                (runs_tick["seconds"] - statistics.median(idle)) / runs_tick["runs"], 3
            )
        return figures


@scenario
class GmailTickScenario(Scenario):
    """The mailbox is as large as drive_tick's tree, the new messages as many as its changes."""

    name = "gmail_tick"
    title = (
        "gmail_tick: one Gmail tick over {drive_tree[0]:,} messages, "
        "{drive_tree[2]} new (each with a workbook)"
    )

    def runs(self, context: Context) -> list[Run]:
        messages, _, new = context.sizes.drive_tree
        return [Run("gmail_tick", "gmail_tick", "engine", {"messages": messages, "new": new})]

    def targets(self, results: dict[str, dict[str, Any]], context: Context) -> list[Target]:
        outcome = results.get("gmail_tick") or {}
        figures = outcome.get("extra") or {}
        new = context.sizes.drive_tree[2]
        return [
            # The history page, one batch of the new messages, one search of the query.
            Target("HTTP requests", figures.get("round_trips"), 3, "max"),
            # A run for each new message and one for its workbook.
            Target(
                "runs requested ÷ (2 × new)", (figures.get("runs_requested") or 0) / (2 * new), 1.0, "min"
            ),
            Target("seconds for the tick", outcome.get("seconds"), 2.0, "max"),
        ]


@scenario
class Hostile(Scenario):
    """Files that asked for unbounded memory before the read limits, each imported alone with
    the default limits: each must end ``failed`` naming its limit, in well under 1 GB."""

    name = "hostile"
    title = (
        "hostile: a zip-bomb xlsx ({hostile[0]:,} rows × 8,192 values, no declared dimension), a CSV "
        "whose second line is {hostile[1]:,} MB, a CSV of {hostile[2]:,} columns × 10 rows, an 820-byte ods "
        "of 99 million repeated cells, an xlsb of 20 million cells, an xlsx of 20 million values declaring "
        "A1:B2; default limits"
    )

    def files(self, context: Context) -> dict[str, Path]:
        rows, megabytes, columns = context.sizes.hostile
        return {
            "zip_bomb_xlsx": data.zip_bomb_xlsx(rows),
            "long_line_csv": data.long_line_csv(megabytes),
            "wide_csv": data.wide_csv(columns),
            # Over the reader's memory limit at every size: nothing checks them before reading.
            "ods_repeat_bomb": data.ods_repeat_bomb(),
            "huge_xlsb": data.huge_xlsb(),
            "lying_dimension_xlsx": data.lying_dimension_xlsx(),
        }

    def runs(self, context: Context) -> list[Run]:
        return [
            Run(
                key,
                "engine_refuses",
                "engine",
                # No key: the file must be refused for its size, not for lacking the listings' key.
                {"source_dir": str(context.source_folder(f"{self.name}_{key}", [path], "table: hostile\n"))},
                "duckdb",
            )
            for key, path in self.files(context).items()
        ]

    def targets(self, results: dict[str, dict[str, Any]], context: Context) -> list[Target]:
        targets = [
            Target(f"peak RSS {key} (MB)", (results.get(key) or {}).get("peak_rss_mb"), 1024.0, "max")
            for key in self.files(context)
        ]
        named = [
            key
            for key, outcome in results.items()
            if all(
                "set PGDATAHUB_MAX_" in error for error in (outcome.get("extra") or {}).get("errors", [""])
            )
        ]
        targets.append(Target("files that failed naming their limit", len(named), len(targets), "min"))
        return targets
