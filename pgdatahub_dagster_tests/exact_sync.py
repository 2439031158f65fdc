"""Machinery for "exact sync" tests: after any sequence of file operations and syncs, every
warehouse table must equal what a from-scratch import of the files as they are now gives
into an empty warehouse.

The pieces, usable for any source (the local folder, Google Drive):

- ``fresh_tables`` reads a warehouse's data tables into a canonical ``Table`` (column types
  and the multiset of rows, lineage included, ``load_timestamp`` left out);
- ``assert_tables_equal`` compares a synced warehouse with an expected one under the rules the
  product documents (extra all-NULL columns and empty tables left by departed files are
  allowed, types may be wider), optionally merging in the rows of deleted ``keep`` files;
- ``assert_ledger_consistent`` runs the asset checks' functions;
- ``SensorDaemon`` does with a sensor's ticks what the Dagster daemon does, run-key rule
  included, and ``materialize`` runs an asset the way the documented command does;
- ``import_tree`` and ``place_file`` build the oracle for a local folder tree: a fresh import
  by the engine alone, with modification times preserved (the value rule ranks by them).
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    RunRequest,
    SensorResult,
    build_sensor_context,
)
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from pgdatahub_dagster.engine.dedup.keys import ROW_KEY_COLUMN
from pgdatahub_dagster.engine.importer import Importer, ImportResult
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.report import duplicate_keys, ledger_mismatches
from pgdatahub_dagster.engine.schema.types import SqlType, widen
from pgdatahub_dagster.engine.sources import LocalFolderSource
from pgdatahub_dagster.engine.warehouse import LEDGER_TABLE, Warehouse, connect
from pgdatahub_dagster_tests.defs.conftest import apply_partition_requests, launch

#: Differs on every load, so it cannot take part in a comparison.
IGNORED_COLUMNS = frozenset({"load_timestamp"})
#: The lineage and key columns compared besides the user's, in display order.
SYSTEM_COLUMNS: dict[str, str] = {
    "source_file": "TEXT",
    "source_file_id": "TEXT",
    "file_sha256": "TEXT",
    ROW_KEY_COLUMN: "UUID",
}
#: Rows printed per side of a diff; more would drown the message.
_SHOWN_ROWS = 40


# -- reading a warehouse ---------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """A data table in canonical form: every column but ``load_timestamp`` with its type
    (a ``SqlType`` value for user columns), and the rows as a sorted list of tuples in the
    order of ``columns`` (user columns sorted by name, then the lineage and key columns),
    so that two warehouses whose columns were added in different orders compare equal."""

    columns: dict[str, str]
    rows: list[tuple[Any, ...]]

    def index(self, column: str) -> int:
        return list(self.columns).index(column)


def _sort_key(row: Sequence[Any]) -> tuple[tuple[bool, str, str], ...]:
    # Rows mix NULLs, numbers and text; any total order will do for a canonical listing.
    return tuple((value is not None, type(value).__name__, str(value)) for value in row)


def _canonical_order(columns: Iterable[str]) -> list[str]:
    names = set(columns)
    return sorted(names - set(SYSTEM_COLUMNS)) + [name for name in SYSTEM_COLUMNS if name in names]


def data_table_names(warehouse: Warehouse) -> list[str]:
    """The tables the ledger names that exist: every data table, whatever its history."""
    named = {str(row[0]) for row in warehouse.fetchall(f"SELECT DISTINCT table_name FROM {LEDGER_TABLE}")}
    return sorted(table for table in named if warehouse.table_columns(table) is not None)


def read_tables(
    warehouse: Warehouse, widen_to: Mapping[str, Mapping[str, str]] | None = None
) -> dict[str, Table]:
    """``fresh_tables`` on an open warehouse."""
    tables: dict[str, Table] = {}
    for table in data_table_names(warehouse):
        user_types = warehouse.table_columns(table) or {}
        present = [name for name in warehouse.column_names(table) if name not in IGNORED_COLUMNS]
        targets = (widen_to or {}).get(table, {})
        columns: dict[str, str] = {}
        selected: list[str] = []
        for name in _canonical_order(present):
            quoted = warehouse.quote(name)
            if name not in user_types:
                columns[name] = SYSTEM_COLUMNS.get(name, "?")
                selected.append(quoted)
                continue
            kind = user_types[name]
            target = _sql_type(targets.get(name))
            if target is not None and target != kind and widen(kind, target) == target:
                # The same SQL the product runs when it widens a column, so values read as
                # they would had this warehouse widened them itself.
                selected.append(warehouse.cast_sql(quoted, kind, target))
                kind = target
            else:
                selected.append(quoted)
            columns[name] = kind.value
        rows = warehouse.fetchall(f"SELECT {', '.join(selected)} FROM {warehouse.quote(table)}")
        tables[table] = Table(columns, sorted((tuple(row) for row in rows), key=_sort_key))
    return tables


def _sql_type(name: str | None) -> SqlType | None:
    if name is None:
        return None
    try:
        return SqlType(name)
    except ValueError:
        return None


def fresh_tables(url: str, widen_to: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, Table]:
    """Every data table of the warehouse at ``url`` as a canonical ``Table``.

    ``widen_to`` (table → column → type name) reads a column as that wider type, converted
    with the warehouse's own widening SQL (``Warehouse.cast_sql``); columns it does not name,
    or names a type that is not wider, are read as they are."""
    with connect(url) as warehouse:
        return read_tables(warehouse, widen_to)


def column_types(tables: Mapping[str, Table]) -> dict[str, dict[str, str]]:
    return {name: dict(table.columns) for name, table in tables.items()}


# -- the expected side -----------------------------------------------------------------------


def merge_kept(live: Mapping[str, Table], kept: Mapping[str, Table]) -> dict[str, Table]:
    """What a warehouse holds when deleted ``keep`` files left their rows behind: the rows of
    a fresh import of the live files, plus the rows of a fresh import of the kept files whose
    ``_row_key`` no live file holds in the same table (a live file's row wins its key)."""
    merged: dict[str, Table] = {}
    for name in sorted(set(live) | set(kept)):
        first, second = live.get(name), kept.get(name)
        if second is None or first is None:
            either = first if second is None else second
            assert either is not None
            merged[name] = either
            continue
        columns = dict(first.columns)
        for column, kind in second.columns.items():
            if column in columns and columns[column] != kind:
                old, new = _sql_type(columns[column]), _sql_type(kind)
                # Both sides were read widened to the synced warehouse's types, so they only
                # differ when that warehouse is narrower; the comparison reports it.
                columns[column] = widen(old, new).value if old and new else kind
            columns.setdefault(column, kind)
        order = _canonical_order(columns)
        ordered = {column: columns[column] for column in order}
        live_keys = {row[first.index(ROW_KEY_COLUMN)] for row in first.rows}
        key_at = second.index(ROW_KEY_COLUMN)
        rows = _project(first, order) + _project(
            Table(
                second.columns,
                [row for row in second.rows if row[key_at] is None or row[key_at] not in live_keys],
            ),
            order,
        )
        merged[name] = Table(ordered, sorted(rows, key=_sort_key))
    return merged


def _project(table: Table, order: Sequence[str]) -> list[tuple[Any, ...]]:
    """The rows with the columns ``order`` names; NULL where the table lacks a column."""
    positions = [table.index(column) if column in table.columns else None for column in order]
    return [tuple(None if at is None else row[at] for at in positions) for row in table.rows]


# -- the comparison --------------------------------------------------------------------------


def _show_value(column: str, value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    if value is not None and column in ("file_sha256", ROW_KEY_COLUMN):
        text = str(value)[:8]  # enough to tell versions and keys apart
    return text


def _show_rows(columns: Sequence[str], rows: Sequence[tuple[Any, ...]], label: str) -> list[str]:
    lines = [f"    {label} ({len(rows)}):"]
    for row in list(rows)[:_SHOWN_ROWS]:
        cells = (f"{name}={_show_value(name, value)}" for name, value in zip(columns, row, strict=True))
        lines.append("      " + " ".join(cells))
    if len(rows) > _SHOWN_ROWS:
        lines.append(f"      … and {len(rows) - _SHOWN_ROWS} more")
    return lines


def compare_tables(synced: Mapping[str, Table], expected: Mapping[str, Table]) -> list[str]:
    """The differences between a synced warehouse and the expected tables, as readable text;
    empty when they agree. The documented allowances, and nothing else:

    - the synced warehouse may have extra tables, which must be empty, and extra columns
      (used only by files that have since gone), which must be NULL in every row;
    - a column may be wider in the synced warehouse (types only widen): ``expected`` must have
      been read widened to the synced types already (``fresh_tables(widen_to=...)``);
    - rows compare as multisets.
    """
    problems: list[str] = []
    for name in sorted(set(synced) | set(expected)):
        have, want = synced.get(name), expected.get(name)
        if want is None:
            assert have is not None
            if have.rows:
                lines = [
                    f"table {name}: not in a fresh import, yet it holds rows (an extra table must be empty)"
                ]
                problems.append("\n".join(lines + _show_rows(list(have.columns), have.rows, "its rows")))
            continue
        if have is None:
            lines = [f"table {name}: missing from the synced warehouse"]
            problems.append(
                "\n".join(lines + _show_rows(list(want.columns), want.rows, "a fresh import has"))
            )
            continue
        lines = []
        missing = [column for column in want.columns if column not in have.columns]
        if missing:
            lines.append(f"  columns missing from the synced warehouse: {', '.join(missing)}")
        for column, kind in want.columns.items():
            if column in have.columns and have.columns[column] != kind:
                lines.append(
                    f"  column {column}: {have.columns[column]} in the synced warehouse, {kind} in a fresh "
                    "import (the synced type must be the same or wider)"
                )
        extra = [column for column in have.columns if column not in want.columns]
        if extra:
            positions = [have.index(column) for column in extra]
            filled = [row for row in have.rows if any(row[at] is not None for at in positions)]
            if filled:
                lines.append(
                    f"  extra columns {', '.join(extra)} must be NULL in every row; these rows fill them:"
                )
                lines += _show_rows(list(have.columns), filled, "rows")
        order = list(want.columns)
        have_rows, want_rows = Counter(_project(have, order)), Counter(want.rows)
        only_synced = sorted((have_rows - want_rows).elements(), key=_sort_key)
        only_fresh = sorted((want_rows - have_rows).elements(), key=_sort_key)
        if only_synced or only_fresh:
            lines.append(
                f"  rows differ: {sum(have_rows.values())} in the synced warehouse, "
                f"{sum(want_rows.values())} in a fresh import"
            )
            if only_synced:
                lines += _show_rows(order, only_synced, "only in the synced warehouse")
            if only_fresh:
                lines += _show_rows(order, only_fresh, "only in a fresh import")
        if lines:
            problems.append("\n".join([f"table {name}:", *lines]))
    return problems


def _ledger_text(label: str, url: str) -> list[str]:
    with connect(url) as warehouse:
        rows = list(warehouse.ledger())
    noise = {"run_id", "started_at", "finished_at"}
    lines = [f"ledger of {label} ({len(rows)} rows):"]
    for row in rows:
        cells = []
        for key, value in row.items():
            if key in noise or value is None:
                continue
            shown = str(value)[:8] if key == "file_sha256" else value
            cells.append(f"{key}={shown}")
        lines.append("  " + " ".join(cells))
    return lines


def failure_report(
    title: str, problems: Sequence[str], history: Sequence[str], ledgers: Mapping[str, str | None]
) -> str:
    """A failure message: what differs, the steps that led there, and the ledgers involved."""
    lines = [title, "", *problems, "", "steps:"]
    lines += [f"  {number:>3}. {step}" for number, step in enumerate(history, 1)]
    for label, url in ledgers.items():
        if url is not None:
            lines += ["", *_ledger_text(label, url)]
    return "\n".join(lines)


def assert_tables_equal(
    incremental_url: str,
    expected_url: str,
    *,
    kept_url: str | None = None,
    history: Sequence[str] = (),
) -> None:
    """The synced warehouse at ``incremental_url`` must hold what a fresh import gives:
    the tables of ``expected_url``, plus, with ``kept_url`` (a fresh import of the files
    deleted from ``keep`` folders, each at its last imported version), the kept rows whose
    key no live file holds. Raises ``AssertionError`` with a readable diff otherwise."""
    synced = fresh_tables(incremental_url)
    types = column_types(synced)
    expected = fresh_tables(expected_url, widen_to=types)
    if kept_url is not None:
        expected = merge_kept(expected, fresh_tables(kept_url, widen_to=types))
    problems = compare_tables(synced, expected)
    if problems:
        ledgers: dict[str, str | None] = {
            "the synced warehouse": incremental_url,
            "the fresh import": expected_url,
            "the fresh import of the kept files": kept_url,
        }
        raise AssertionError(
            failure_report(
                "the synced warehouse differs from a fresh import of the files as they are now",
                problems,
                history,
                ledgers,
            )
        )


def assert_ledger_consistent(
    url: str, history: Sequence[str] = (), label: str = "the synced warehouse"
) -> None:
    """The asset checks ``ledger_matches_tables`` and ``unique_keys_hold`` must pass."""
    with connect(url) as warehouse:
        mismatches, duplicates = ledger_mismatches(warehouse), duplicate_keys(warehouse)
    problems = []
    if mismatches:
        problems.append(
            f"ledger_mismatches (table: (rows in the table, rows the ledger accounts for)): {mismatches}"
        )
    if duplicates:
        problems.append(f"duplicate_keys (table: keys held by more than one row): {duplicates}")
    if problems:
        raise AssertionError(
            failure_report(f"the asset checks fail on {label}", problems, history, {label: url})
        )


# -- running the product as Dagster would ----------------------------------------------------


class SensorDaemon:
    """What the Dagster daemon does with one sensor: evaluate a tick with the stored cursor,
    apply its partition requests, keep the cursor it returns, and drop every run request
    whose run key this sensor already used (whatever became of that run), exactly as the
    daemon does. Runs execute in process when ``launch`` is called, in any order the caller
    likes: with queued runs and pool slots, the runs of one tick may start in any order."""

    #: A change made right after a tick must get a later change time than anything the tick
    #: saw, even on file systems whose timestamps are coarse (a few milliseconds); the
    #: product's settle delay guarantees that in production, and tests set it to 0.
    after_tick_pause_seconds = 0.02

    def __init__(self, defs: Definitions, instance: DagsterInstance, sensor_name: str) -> None:
        self.defs = defs
        self.instance = instance
        self.sensor_name = sensor_name
        self.cursor: str | None = None
        self.used_run_keys: set[str] = set()
        #: Every request launched so far, for retries.
        self.launched: list[RunRequest] = []

    def evaluate(self) -> SensorResult:
        """Evaluate one tick with the stored cursor; apply its partition requests and keep
        its cursor. Its run requests are not filtered yet (``tick``)."""
        sensor = self.defs.resolve_sensor_def(self.sensor_name)
        with build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=self.defs.resources
        ) as context:
            result = sensor(context)
        assert isinstance(result, SensorResult), f"{self.sensor_name} returned {result!r}"
        apply_partition_requests(self.instance, result)
        if result.cursor is not None:
            self.cursor = result.cursor
        time.sleep(self.after_tick_pause_seconds)
        return result

    def tick(self) -> tuple[list[RunRequest], list[RunRequest]]:
        """One tick: the requests the daemon would launch, and those it drops (run key used)."""
        kept, dropped = [], []
        for request in self.evaluate().run_requests or []:
            if request.run_key is not None and request.run_key in self.used_run_keys:
                dropped.append(request)
                continue
            if request.run_key is not None:
                self.used_run_keys.add(request.run_key)
            kept.append(request)
        return kept, dropped

    def launch(self, request: RunRequest, *, retry: bool = False) -> bool:
        """Execute one requested run, or (``retry``) one launched before again: at-least-once
        delivery. Whether the run succeeded."""
        if not retry:
            self.launched.append(request)
        return launch(self.defs, self.instance, request)

    def sync_in_any_order(
        self, data: st.DataObject, describe: Callable[[RunRequest], str] | None = None
    ) -> str:
        """One tick, and its runs launched in an order Hypothesis draws (with queued runs and
        pool slots, the runs of one tick may start in any order); what happened, in words,
        each run named by ``describe`` (by default ``describe_request``)."""
        describe = describe or describe_request
        requests, dropped = self.tick()
        order = list(range(len(requests)))
        if len(requests) > 1 and data.draw(st.booleans(), label="runs start in another order"):
            order = data.draw(st.permutations(order), label="run order")
        outcomes = []
        for index in order:
            ok = self.launch(requests[index])
            outcomes.append(f"{describe(requests[index])}: {'success' if ok else 'run failed'}")
        outcomes += [f"DROPPED (run key used before) {describe(request)}" for request in dropped]
        return "sensor tick" + "".join(f"\n         - {line}" for line in outcomes or ["no runs"])

    def sync(self, *, runs_succeed: bool = True) -> list[str]:
        """One tick and every run the daemon would launch from it (each must succeed, unless
        ``runs_succeed`` is false); their partitions, or job names for runs without one."""
        kept, _ = self.tick()
        for request in kept:
            succeeded = self.launch(request)
            assert succeeded or not runs_succeed, f"run failed: {describe_request(request)}"
        return [name for request in kept for name in _request_targets(request)]


def materialize(defs: Definitions, instance: DagsterInstance, asset: str) -> bool:
    """Materialise one unpartitioned asset in process, as
    ``dagster asset materialize --select <asset>`` does; whether the run succeeded."""
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={AssetKey(asset)})
    return job.execute_in_process(instance=instance, raise_on_error=False).success


def _request_targets(request: RunRequest) -> list[str]:
    """The partitions a run or backfill request imports, or the job of a run without one."""
    subset = request.asset_graph_subset
    if subset is not None:
        return sorted(str(item.partition_key) for item in subset.iterate_asset_partitions())
    return [str(request.partition_key or request.job_name)]


def describe_request(request: RunRequest) -> str:
    if request.asset_graph_subset is not None:
        return f"backfill of {_request_targets(request)} (tags {dict(request.tags)})"
    if request.partition_key is not None:
        return f"{request.job_name}[{request.partition_key}] (run key {request.run_key})"
    config = request.run_config.get("ops", {}) if request.run_config else {}
    return f"{request.job_name} {config} (run key {request.run_key})"


# -- the oracle for a local folder tree ------------------------------------------------------


def place_file(
    root: Path, path: str, *, copy_of: Path | None = None, data: bytes | None = None, mtime_ns: int
) -> None:
    """Put one file into an oracle tree at ``path`` with modification time ``mtime_ns``:
    a copy of ``copy_of`` (``shutil.copy2``, which keeps the time), or ``data`` (an earlier
    version, whose time is set back to what it was)."""
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    if copy_of is not None:
        shutil.copy2(copy_of, target)
    else:
        assert data is not None
        target.write_bytes(data)
        os.utime(target, ns=(mtime_ns, mtime_ns))
    assert target.stat().st_mtime_ns == mtime_ns, f"{target}: the modification time was not kept"


def import_tree(url: str, root: Path, *, reverse: bool = False) -> list[ImportResult]:
    """Import every file under ``root`` into the (empty) warehouse at ``url`` with the
    engine alone, following ``root/pgdatahub.yaml``. ``reverse`` lists the files in the
    opposite order: a fresh import must not depend on the order files are met."""
    mapping_file = root / "pgdatahub.yaml"
    with connect(url) as warehouse:
        source = LocalFolderSource(root)
        importer = Importer(
            warehouse, source, FolderMapping.load(mapping_file if mapping_file.exists() else None)
        )
        files = list(source.list_files())
        if reverse:
            files.reverse()
        return list(importer.import_all(files))


def machine_settings(examples: int, steps: int, *, shrink: bool) -> settings:
    # Derandomised, so a run tests the same examples every time (and a failure reproduces);
    # no example database, which would write .hypothesis/ into the checkout.
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        derandomize=True,
        database=None,
        deadline=None,
        phases=phases,
        # Examples are slow and large by design (real runs, a seeded tree); the fixtures are
        # per test on purpose, each example makes its own warehouse and instance.
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.large_base_example,
            HealthCheck.data_too_large,
        ],
    )
