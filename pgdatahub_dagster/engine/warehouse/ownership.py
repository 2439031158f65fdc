"""Row ownership: which imports hold each row key, and whose values a row shows.

The promise is that a table equals a fresh import of the files as they are now, so a row
that several files hold belongs to all of them, and it leaves the table only when the last
of them goes. The record of that is compact:

* A data row names the import that **supplies** its values through its lineage columns
  (``source_file_id`` and ``file_sha256`` identify one import of the table).
* Every other import holding the same key has a row in the table's **holders table**
  (``pgdatahub_holders.<table>``): its import id and the 16-byte key, and its own values only
  where they differ from the supplier's (``_has_values``). Files that merely repeat rows
  cost two numbers per row; the holders table is empty while no rows are shared.

Which holder supplies a key follows one rule, independent of the order of imports: live
files before files deleted under ``on_delete: keep``, then the folder's ``prefer``
(``newest``: the latest modification time first; ``oldest``: the earliest), then the
smaller path, then the smaller file id. ``resolve`` applies it to a set of keys after any
change of their holders, in a handful of set-based statements.

Everything here is SQL that PostgreSQL, DuckDB and DuckLake all accept, written once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from pgdatahub_dagster.engine.dedup.keys import ROW_KEY_COLUMN
from pgdatahub_dagster.engine.schema.types import SqlType
from pgdatahub_dagster.engine.warehouse.base import (
    ENGINE_PREFIX,
    HOLDERS_SCHEMA,
    HOLDING_SQL,
    LEDGER_TABLE,
    LINEAGE_COLUMNS,
    Lineage,
    Warehouse,
)

# Helper columns of the holders table and of intermediate results. Cleaned user column
# names never start with "_", so these never collide with them.
_IMPORT_ID = "_import_id"
_HAS_VALUES = "_has_values"
_KEYS = f"{ENGINE_PREFIX}keys"
_CANDIDATES = f"{ENGINE_PREFIX}candidates"
_BEST = f"{ENGINE_PREFIX}best"
_SWITCH = f"{ENGINE_PREFIX}switch"
_SET_ASIDE = f"{ENGINE_PREFIX}set_aside"


@dataclass(frozen=True)
class Holder:
    """The import whose rows are being merged: its ledger id and its lineage."""

    import_id: int
    lineage: Lineage


@dataclass
class MergeCounts:
    #: Rows the import supplies now: new keys, and keys it took over.
    supplied: int = 0
    #: Distinct keys (and key-less rows) the import holds.
    held: int = 0


class RowOwnership:
    """The ownership records of one data table."""

    def __init__(self, warehouse: Warehouse, table: str, prefer: str = "newest") -> None:
        self.w = warehouse
        self.table = table
        self.prefer = prefer
        q = warehouse.quote
        self.data = q(table)
        self.holders = f"{q(HOLDERS_SCHEMA)}.{q(table)}"
        self.key = q(ROW_KEY_COLUMN)
        #: Whether ``make_way`` set keys aside for ``rows_brought_back``.
        self._set_aside = False

    # -- the holders table -------------------------------------------------------------------

    def holders_exist(self) -> bool:
        return self.w.table_exists(self.table, schema=HOLDERS_SCHEMA)

    def ensure_holders(self) -> None:
        """Created on first use with the data table's user columns; ``mirror_*`` keep it in
        step with the data table's schema from then on."""
        if self.holders_exist():
            return
        q = self.w.quote
        columns = self.w.table_columns(self.table) or {}
        selected = ", ".join(q(name) for name in columns)
        self.w.execute(f"CREATE SCHEMA IF NOT EXISTS {q(HOLDERS_SCHEMA)}")
        self.w.execute(
            f"CREATE TABLE {self.holders} AS SELECT CAST(NULL AS BIGINT) AS {q(_IMPORT_ID)}, "
            f"{self.key}, CAST(NULL AS BOOLEAN) AS {q(_HAS_VALUES)}"
            f"{', ' + selected if selected else ''} FROM {self.data} WHERE 1 = 0"
        )
        self.w.index_holders(self.holders, self.table)

    def drop_holders(self) -> None:
        self.w.execute(f"DROP TABLE IF EXISTS {self.holders}")

    # -- SQL fragments ---------------------------------------------------------------------

    def _user_columns(self) -> list[str]:
        return list(self.w.table_columns(self.table) or {})

    def _differs(self, left: str, right: str, columns: Sequence[str], present: Sequence[str]) -> str:
        """Whether row ``left`` (all ``columns``) differs from row ``right``, which has only
        ``present`` (the others count as empty)."""
        q = self.w.quote
        same = [
            f"{left}.{q(c)} IS NOT DISTINCT FROM {right}.{q(c)}" if c in present else f"{left}.{q(c)} IS NULL"
            for c in columns
        ]
        return f"NOT ({' AND '.join(same)})" if same else "FALSE"

    def _supplier_join(self, alias: str, row: str, *, join: str = "JOIN") -> str:
        """The live import that supplies data row ``row``, looked up row by row in the
        ledger's index: a plain join let PostgreSQL, misled by the ledger's statistics while
        it grows, probe every key once per import (quadratic in the number of files)."""
        p = self.w.placeholder
        return (
            f"{join} LATERAL (SELECT * FROM {LEDGER_TABLE} l WHERE l.table_name = {p} "
            f"AND l.source_file_id = {row}.source_file_id AND l.file_sha256 = {row}.file_sha256 "
            f"AND l.status IN {HOLDING_SQL} LIMIT 1) {alias} ON TRUE"
        )

    def _rank(self, alias: str) -> str:
        order = "DESC" if self.prefer == "newest" else "ASC"
        collate = ' COLLATE "C"'
        return (
            f"CASE WHEN {alias}.status = 'success' THEN 0 ELSE 1 END, "
            f"{alias}.modified_at {order} NULLS LAST, {alias}.source_file{collate}, "
            f"{alias}.source_file_id{collate}"
        )

    def _drop(self, *names: str) -> None:
        for name in names:
            self.w.execute(f"DROP TABLE IF EXISTS {self.w.quote(name)}")

    # -- merging one batch of a new import -------------------------------------------------

    def load_batch(self, frame: pl.DataFrame, types: Mapping[str, SqlType], holder: Holder) -> MergeCounts:
        """Load one batch of an import (user columns and ``_row_key``, no repeats inside the
        batch). A table without an index yet (created or emptied by this transaction) takes
        the fast path: nobody else can hold its keys."""
        inserted = self.w.load_fresh(self.table, frame, holder.lineage)
        if inserted is not None:
            return MergeCounts(supplied=inserted, held=inserted)
        with self.w.staged(frame, types) as stage:
            return self.merge_stage(stage, frame.columns, frame.height, holder)

    def finish_load(self, holder: Holder) -> MergeCounts:
        """After an import's last batch: the rows the fast path left undecided are settled
        (``Warehouse.settle_fresh``); returns what they add."""
        inserted = self.w.settle_fresh(self.table, holder.lineage)
        return MergeCounts(supplied=inserted, held=inserted)

    def merge_stage(self, stage: str, stage_columns: Sequence[str], rows: int, holder: Holder) -> MergeCounts:
        """Merge the ``rows`` staged rows of one batch (user columns and ``_row_key``, no
        repeats inside the batch) into the existing table, as ``holder``."""
        w, q, p = self.w, self.w.quote, self.w.placeholder
        s = q(stage)
        lineage = holder.lineage
        own = f"t.source_file_id = {p} AND t.file_sha256 = {p}"
        own_params = [lineage.source_file_id, lineage.file_sha256]
        holders_exist = self.holders_exist()
        user_columns = [c for c in stage_columns if c != ROW_KEY_COLUMN]
        lineage_values = [
            lineage.source_file,
            lineage.source_file_id,
            lineage.file_sha256,
            lineage.load_timestamp,
        ]
        quoted = ", ".join(q(c) for c in stage_columns)
        lineage_columns = ", ".join(q(name) for name in LINEAGE_COLUMNS)
        placed = max(
            w.execute(
                w.insert_new_keys(
                    self.data, f"{quoted}, {lineage_columns}", f"{quoted}, {p}, {p}, {p}, {p}", s
                ),
                lineage_values,
            ),
            0,
        )
        if placed == rows:
            return MergeCounts(supplied=placed, held=placed)  # every key was new
        # What is left are keys another import supplies: this one joins their holders.
        self._drop(_KEYS)
        # A key this import placed or joined in an earlier batch of the file is a repeat:
        # the first occurrence won, so it is left out here.
        held_before = (
            f" AND NOT EXISTS (SELECT 1 FROM {self.holders} h "
            f"WHERE h.{q(_IMPORT_ID)} = {p} AND h.{self.key} = {s}.{self.key})"
            if holders_exist
            else ""
        )
        w.execute(
            f"CREATE TEMPORARY TABLE {q(_KEYS)} AS SELECT {s}.{self.key} FROM {s} "
            f"JOIN {self.data} t ON t.{self.key} = {s}.{self.key} WHERE NOT ({own}){held_before}",
            [*own_params, holder.import_id] if holders_exist else own_params,
        )
        contested, taken = w.count(_KEYS), 0
        if contested:
            self.ensure_holders()
            # Whether the data row ``t`` holds other values than the staged row of its key.
            changed = self._differs("t", s, self._user_columns(), user_columns)
            held_values = ", ".join(f"CASE WHEN {changed} THEN {s}.{q(c)} END" for c in user_columns)
            w.execute(
                f"INSERT INTO {self.holders} ({q(_IMPORT_ID)}, {self.key}, {q(_HAS_VALUES)}"
                f"{''.join(', ' + q(c) for c in user_columns)}) "
                f"SELECT {p}, {s}.{self.key}, {changed}{', ' + held_values if held_values else ''} FROM {s} "
                f"JOIN {q(_KEYS)} k ON k.{self.key} = {s}.{self.key} "
                f"JOIN {self.data} t ON t.{self.key} = {s}.{self.key}",
                [holder.import_id],
            )
            taken = self._resolve_keys(taker=holder.import_id)[1]
        self._drop(_KEYS)
        return MergeCounts(supplied=placed + taken, held=placed + contested)

    def remove_orphans(self, source_file_id: str, shas: Sequence[str]) -> int:
        """After a file's new version is loaded (or a file leaves): rows its earlier
        versions still supply pass to their next holder, or leave the table; returns how
        many left."""
        if not shas or not self.w.table_exists(self.table):
            return 0
        w, q, p = self.w, self.w.quote, self.w.placeholder
        match = f"source_file_id = {p} AND file_sha256 IN ({', '.join([p] * len(shas))})"
        params = [source_file_id, *shas]
        removed = max(w.execute(f"DELETE FROM {self.data} WHERE {match} AND {self.key} IS NULL", params), 0)
        if not self.holders_exist():
            # Nobody else holds anything in this table: the rows simply go.
            return removed + max(w.execute(f"DELETE FROM {self.data} WHERE {match}", params), 0)
        self._drop(_KEYS)
        w.execute(
            f"CREATE TEMPORARY TABLE {q(_KEYS)} AS SELECT {self.key} FROM {self.data} WHERE {match}", params
        )
        removed += self._resolve_keys()[0]
        self._drop(_KEYS)
        return removed

    def make_way(self, source_file_id: str, shas: Sequence[str], importing: int) -> int:
        """Before a file's new version loads (import ``importing``), its earlier versions
        (already retired) give up their rows: keys they alone held leave, the others pass to
        their next holder. Returns the rows that left. The keys set aside let
        ``rows_brought_back`` tell which of them the new version brings back, so the ledger
        counts what really left.

        Deleting first and loading the new version with the same statements as any new rows
        costs less on both databases than rewriting the old rows in place: every row gets new
        lineage, so an in-place ``UPDATE`` rewrites them all (``docs/benchmarks.md``). When
        the earlier versions held the whole table, it is emptied and the new version loads by
        the fast path of a new table, its index built once at commit."""
        if not shas or not self.w.table_exists(self.table):
            return 0
        w, q, p = self.w, self.w.quote, self.w.placeholder
        holders_exist = self.holders_exist()
        nobody_else = (
            f" AND NOT EXISTS (SELECT 1 FROM {self.holders} h WHERE h.{self.key} = t.{self.key})"
            if holders_exist
            else ""
        )
        self._drop(_SET_ASIDE)
        w.execute(
            f"CREATE TEMPORARY TABLE {q(_SET_ASIDE)} AS SELECT t.{self.key} FROM {self.data} t "
            f"WHERE t.source_file_id = {p} AND t.file_sha256 IN ({', '.join([p] * len(shas))}) "
            f"AND t.{self.key} IS NOT NULL{nobody_else}",
            [source_file_id, *shas],
        )
        self._set_aside = True
        if not self._others_hold_rows(importing, holders_exist):
            return w.empty_for_reload(self.table)
        return self.remove_orphans(source_file_id, shas)

    def _others_hold_rows(self, importing: int, holders_exist: bool) -> bool:
        """Whether an import other than ``importing`` (and those just retired) holds rows."""
        p = self.w.placeholder
        if holders_exist and self.w.fetchall(f"SELECT 1 FROM {self.holders} LIMIT 1"):
            return True
        return bool(
            self.w.fetchall(
                f"SELECT 1 FROM {LEDGER_TABLE} WHERE table_name = {p} AND status IN {HOLDING_SQL} "
                f"AND id <> {p} LIMIT 1",
                [self.table, importing],
            )
        )

    def rows_brought_back(self) -> int:
        """Of the keys ``make_way`` removed, how many are in the table again."""
        if not self._set_aside:
            return 0
        self._set_aside = False
        q = self.w.quote
        back = int(
            self.w.fetchall(
                f"SELECT count(*) FROM {q(_SET_ASIDE)} a JOIN {self.data} t ON t.{self.key} = a.{self.key}"
            )[0][0]
        )
        self._drop(_SET_ASIDE)
        return back

    # -- releasing and re-ranking whole imports --------------------------------------------

    def apply_prefer(self) -> None:
        """The folder's ``prefer`` may differ from the one the table's shared keys were decided
        by (the mapping changed, or the table predates the record): a fresh import would
        decide them by this one, so every key several imports hold is decided again. Only
        keys with holders can change hands, so the cost is the holders table's size, once."""
        if self.w.decided_prefer(self.table) == self.prefer:
            return
        if self.holders_exist():
            self._drop(_KEYS)
            keys = self.w.quote(_KEYS)
            self.w.execute(f"CREATE TEMPORARY TABLE {keys} AS SELECT DISTINCT {self.key} FROM {self.holders}")
            self._resolve_keys()
            self._drop(_KEYS)
        self.w.record_prefer(self.table, self.prefer)

    def retire(self, import_ids: Sequence[int], status: str) -> None:
        """Imports stop holding keys (their ledger status says why). The rows they supply stay
        until ``remove_orphans`` passes them on or removes them."""
        self._mark(import_ids, status)
        if self.holders_exist():
            marks = ", ".join([self.w.placeholder] * len(import_ids))
            self.w.execute(
                f"DELETE FROM {self.holders} WHERE {self.w.quote(_IMPORT_ID)} IN ({marks})", list(import_ids)
            )

    def _mark(self, import_ids: Sequence[int], status: str) -> None:
        p = self.w.placeholder
        marks = ", ".join([p] * len(import_ids))
        self.w.execute(f"UPDATE {LEDGER_TABLE} SET status = {p} WHERE id IN ({marks})", [status, *import_ids])

    def release(self, imports: Sequence[tuple[int, str, str]], status: str) -> int:
        """Imports (id, file id, sha256) stop holding their rows (``replaced``,
        ``retracted``, ``reverted``) or drop to the lowest rank (``kept``); rows pass to their
        next holder or leave. Returns the rows that left the table."""
        if not imports:
            return 0
        if status == "kept":
            self._mark([import_id for import_id, _, _ in imports], status)
            if self.holders_exist():  # else each stays the only holder of its rows
                self._keys_supplied_by(imports)
                self._resolve_keys()
                self._drop(_KEYS)
            return 0
        self.retire([import_id for import_id, _, _ in imports], status)
        by_file: dict[str, list[str]] = {}
        for _, file_id, sha in imports:
            by_file.setdefault(file_id, []).append(sha)
        return sum(self.remove_orphans(file_id, shas) for file_id, shas in by_file.items())

    def refresh(self, import_id: int, source_file_id: str, file_sha256: str) -> None:
        """An import's rank changed (its file was touched, renamed or restored): the keys it
        holds are decided again."""
        w, q, p = self.w, self.w.quote, self.w.placeholder
        if not self.holders_exist():
            return  # it is the only holder of its rows: nothing to decide
        self._keys_supplied_by([(import_id, source_file_id, file_sha256)])
        w.execute(
            f"INSERT INTO {q(_KEYS)} SELECT {self.key} FROM {self.holders} WHERE {q(_IMPORT_ID)} = {p}",
            [import_id],
        )
        self._resolve_keys()
        self._drop(_KEYS)

    def rename(self, source_file_id: str, file_sha256: str, source_file: str) -> None:
        """The rows a file supplies name its new path, as a fresh import would."""
        p = self.w.placeholder
        self.w.execute(
            f"UPDATE {self.data} SET source_file = {p} WHERE source_file_id = {p} AND file_sha256 = {p}",
            [source_file, source_file_id, file_sha256],
        )

    def _keys_supplied_by(self, imports: Sequence[tuple[int, str, str]]) -> None:
        w, q, p = self.w, self.w.quote, self.w.placeholder
        self._drop(_KEYS)
        pairs = " OR ".join([f"(source_file_id = {p} AND file_sha256 = {p})"] * len(imports))
        params = [value for _, file_id, sha in imports for value in (file_id, sha)]
        w.execute(
            f"CREATE TEMPORARY TABLE {q(_KEYS)} AS SELECT {self.key} FROM {self.data} "
            f"WHERE ({pairs}) AND {self.key} IS NOT NULL",
            params,
        )

    # -- deciding who supplies each key ----------------------------------------------------

    def _resolve_keys(self, taker: int | None = None) -> tuple[int, int]:
        """For every key in the temporary table of keys: choose its supplier among its live
        holders by the rule, and make the data row show that holder's values and lineage;
        a key nobody holds any more leaves the table. Returns (rows removed, keys that
        ``taker`` took over)."""
        w, q, p = self.w, self.w.quote, self.w.placeholder
        if not self.holders_exist():
            self.ensure_holders()
        keys, cand, best, switch = q(_KEYS), q(_CANDIDATES), q(_BEST), q(_SWITCH)
        key, imp, has = self.key, q(_IMPORT_ID), q(_HAS_VALUES)
        columns = self._user_columns()
        self._drop(_CANDIDATES, _BEST, _SWITCH)
        w.analyze(_KEYS)
        ranked = "status, modified_at, source_file, source_file_id"
        w.execute(
            f"CREATE TEMPORARY TABLE {cand} AS "
            f"SELECT t.{key} AS {key}, l.id AS {imp}, FALSE AS {has}, "
            f"l.status, l.modified_at, l.source_file, l.source_file_id "
            f"FROM {self.data} t JOIN {keys} k ON k.{key} = t.{key} {self._supplier_join('l', 't')} "
            f"UNION ALL SELECT h.{key}, h.{imp}, h.{has}, l.status, l.modified_at, l.source_file, "
            f"l.source_file_id FROM {self.holders} h JOIN {keys} k ON k.{key} = h.{key} "
            f"JOIN {LEDGER_TABLE} l ON l.id = h.{imp}",
            [self.table],
        )
        w.execute(
            f"CREATE TEMPORARY TABLE {best} AS SELECT {key}, {imp}, {has} FROM ("
            f"SELECT {key}, {imp}, {has}, {ranked}, ROW_NUMBER() OVER "
            f"(PARTITION BY {key} ORDER BY {self._rank(cand)}) AS position FROM {cand}) AS ranked "
            "WHERE position = 1"
        )
        w.analyze(_BEST)
        removed = max(
            w.execute(
                f"DELETE FROM {self.data} WHERE {key} IN (SELECT {key} FROM {keys}) "
                f"AND {key} NOT IN (SELECT {key} FROM {best})"
            ),
            0,
        )
        differs = self._differs("t", "hb", columns, columns)
        w.execute(
            f"CREATE TEMPORARY TABLE {switch} AS SELECT b.{key} AS {key}, b.{imp} AS new_id, "
            f"cur.id AS old_id, (b.{has} AND {differs}) AS differs "
            f"FROM {best} b JOIN {self.data} t ON t.{key} = b.{key} "
            f"{self._supplier_join('cur', 't', join='LEFT JOIN')} "
            f"LEFT JOIN {self.holders} hb ON hb.{imp} = b.{imp} AND hb.{key} = b.{key} "
            f"WHERE cur.id IS NULL OR cur.id <> b.{imp}",
            [self.table],
        )
        w.analyze(_SWITCH)
        taken = 0
        if taker is not None:
            taken = int(w.fetchall(f"SELECT count(*) FROM {switch} WHERE new_id = {p}", [taker])[0][0])
        if w.count(_SWITCH):
            self._switch(columns)
        self._drop(_CANDIDATES, _BEST, _SWITCH)
        return removed, taken

    def _switch(self, columns: Sequence[str]) -> None:
        w, q = self.w, self.w.quote
        switch, key, imp, has = q(_SWITCH), self.key, q(_IMPORT_ID), q(_HAS_VALUES)
        if columns:
            # Holders that relied on the row's current values keep them where they change.
            keep = ", ".join(f"{q(c)} = t.{q(c)}" for c in columns)
            w.execute(
                f"UPDATE {self.holders} AS h SET {has} = TRUE, {keep} FROM {switch} sw, {self.data} t "
                f"WHERE h.{key} = sw.{key} AND t.{key} = sw.{key} AND sw.differs "
                f"AND NOT h.{has} AND h.{imp} <> sw.new_id"
            )
        # The supplier that gives way, if it still holds the key, becomes one of its holders.
        kept_values = "".join(f", CASE WHEN sw.differs THEN t.{q(c)} END" for c in columns)
        w.execute(
            f"INSERT INTO {self.holders} ({imp}, {key}, {has}{''.join(', ' + q(c) for c in columns)}) "
            f"SELECT sw.old_id, t.{key}, sw.differs{kept_values} FROM {switch} sw "
            f"JOIN {self.data} t ON t.{key} = sw.{key} WHERE sw.old_id IS NOT NULL"
        )
        # The row takes the new supplier's values (where they differ) and lineage.
        new_values = ", ".join(
            f"{q(c)} = CASE WHEN src._pgdh_differs THEN src.{q(c)} ELSE t.{q(c)} END" for c in columns
        )
        lineage = (
            "source_file = src._pgdh_source_file, source_file_id = src._pgdh_source_file_id, "
            "file_sha256 = src._pgdh_file_sha256, load_timestamp = src._pgdh_loaded_at"
        )
        w.execute(
            f"UPDATE {self.data} AS t SET {new_values + ', ' if new_values else ''}{lineage} FROM ("
            f"SELECT sw.{key} AS {key}, sw.differs AS _pgdh_differs, l.source_file AS _pgdh_source_file, "
            f"l.source_file_id AS _pgdh_source_file_id, l.file_sha256 AS _pgdh_file_sha256, "
            f"l.started_at AS _pgdh_loaded_at{''.join(', hb.' + q(c) for c in columns)} "
            f"FROM {switch} sw JOIN {LEDGER_TABLE} l ON l.id = sw.new_id "
            f"LEFT JOIN {self.holders} hb ON hb.{imp} = sw.new_id AND hb.{key} = sw.{key}) AS src "
            f"WHERE t.{key} = src.{key}"
        )
        w.execute(
            f"DELETE FROM {self.holders} AS h WHERE EXISTS (SELECT 1 FROM {switch} sw "
            f"WHERE sw.new_id = h.{imp} AND sw.{key} = h.{key})"
        )
