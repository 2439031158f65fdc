"""Row keys: one compact, normalised business key per row.

Two rows are the same business when their key columns agree after normalising: trimmed,
inner whitespace collapsed, case-folded, and phone numbers compared as E.164 numbers. The
key is stored as a 128-bit hash (a UUID column with a UNIQUE index), so the index stays
small however wide the key columns are.

The hash is versioned, and the version each table's keys were made with is recorded
(``Warehouse.row_key_version``), so a table keeps one kind of key for its life:

- version 1: BLAKE2b with a 16-byte digest (``hashlib.blake2b(text, digest_size=16)``) of the
  key text, one Python call per row. Tables created before versions were recorded have these.
- version 2: the first 16 bytes of SHA-256 of the same key text, computed in Rust by the
  ``polars-hash`` plugin over the whole column. SHA-256 is a fixed standard, so the keys stay
  the same across library upgrades (never ``pl.Series.hash``, whose output may change between
  Polars releases), and PostgreSQL and DuckDB compute it too (``sha256``).

The key text (the normalised parts joined by ``\\x1f``) is the same in every version: it
defines which rows are duplicates.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterator, Sequence

import numpy as np
import phonenumbers
import polars as pl
import polars_hash

ROW_KEY_COLUMN = "_row_key"
#: Keys of tables created before versions were recorded: BLAKE2b-128.
LEGACY_ROW_KEY_VERSION = 1
#: Keys of every table created now: SHA-256, first 128 bits.
ROW_KEY_VERSION = 2
ROW_KEY_VERSIONS = (LEGACY_ROW_KEY_VERSION, ROW_KEY_VERSION)

_PHONE_WORDS = frozenset({"phone", "phones", "telephone", "tel", "mobile", "fax", "cell", "cellphone"})
# One word for "phone number": phonenumber, phoneno, phone2.
_PHONE_COMPOUND = re.compile(r"phone(?:number|no|num|nr)?[0-9]*")
# Words after the phone word that still name the number itself: phone_number, fax_no,
# phone_home, phone_1_value.
_PHONE_QUALIFIERS = frozenset(
    {"number", "no", "num", "nr", "value", "home", "work", "office", "main", "primary", "other", "business"}
)
_NON_DIGIT = re.compile(r"\D")
# North American numbers written in the everyday ways: (555) 123-4567, 555-123-4567,
# 555.123.4567, 5551234567, 1-555-123-4567, +1 555 123 4567. For these phonenumbers'
# answer is always "+1" and the ten digits (the area code starts with 2-9, so no national
# prefix is stripped, and ten digits are a possible NANP number), so they skip the
# parser; anything else, and bare numbers outside region US, still go through it.
# Only ASCII digits: Rust's \d would also match other scripts' digits.
# The groups are the ten digits (the area code in group 1 or 2, as it has parentheses or not).
_NANP_BODY = r"(?:\(([2-9][0-9]{2})\)|([2-9][0-9]{2}))[-. ]?([0-9]{3})[-. ]?([0-9]{4})$"
_NANP_INTERNATIONAL = r"^\+1[-. ]?" + _NANP_BODY
_NANP_IN_US = r"^(?:\+?1[-. ]?)?" + _NANP_BODY
_NANP_E164 = "+1${1}${2}${3}${4}"
#: Distinct phone values parsed by phonenumbers, remembered across batches and files: the
#: same customers' numbers recur (a file edited and imported again, its other versions).
_PARSED_PHONES = 65_536
# Separates key parts; a control character that trimmed cell text never contains.
_PART_SEPARATOR = "\x1f"
_NULL_PART = "\x00"


def is_phone_column(name: str) -> bool:
    """``phone``, ``mobile_phone``, ``tel``, ``fax_number``, ``phone_2``… compare as phone numbers.

    The name's last word, past numbers and qualifiers, must be a phone word: English puts
    the head noun last, so ``home_phone`` is a phone but ``cell_count``, ``phone_type`` and
    ``phonetic_name`` are not (as phones, all their values without digits would be one key).
    """
    words = [word for word in name.split("_") if not word.isdigit()]
    while len(words) > 1 and words[-1] in _PHONE_QUALIFIERS:
        words.pop()
    head = words[-1] if words else ""
    return head in _PHONE_WORDS or _PHONE_COMPOUND.fullmatch(head) is not None


@functools.lru_cache(maxsize=_PARSED_PHONES)
def _e164(value: str, region: str) -> str:
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return _NON_DIGIT.sub("", value)
    if not phonenumbers.is_possible_number(number):
        return _NON_DIGIT.sub("", value)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _phone_part(column: pl.Series, region: str) -> pl.Series:
    """Each value as E.164, byte for byte what ``_e164`` (phonenumbers) gives."""
    nanp = _NANP_IN_US if region == "US" else _NANP_INTERNATIONAL
    fast = column.str.contains(nanp).fill_null(False)
    others = column.filter(~fast)
    # Parse each other distinct value once: parsing is the slow part.
    mapping = {value: _e164(value, region) for value in others.drop_nulls().unique().to_list()}
    parsed = others.replace_strict(mapping, default=None, return_dtype=pl.String)
    return column.str.replace(nanp, _NANP_E164).scatter((~fast).arg_true(), parsed)


def _casefolded(lowered: pl.Series) -> pl.Series:
    # Polars lowercases; Python's casefold also folds ß → ss and the like. Only values
    # outside ASCII can differ, so only those go through Python.
    needs_fold = lowered.drop_nulls().filter(lowered.drop_nulls().str.contains(r"[^\x00-\x7f]"))
    if needs_fold.is_empty():
        return lowered
    mapping = {value: value.casefold() for value in needs_fold.unique().to_list()}
    return lowered.replace(mapping)


def _normalised_text(name: str) -> pl.Expr:
    """Trimmed, inner whitespace collapsed; lower-cased unless a phone column."""
    # Every run of whitespace becomes one space. Rewriting only runs of two or more, and
    # lone whitespace other than a space, gives the same text and leaves most values as
    # they are, which Polars does without copying them.
    text = pl.col(name).cast(pl.String).str.strip_chars().str.replace_all(r"\s{2,}|[^\S ]", " ")
    return (text if is_phone_column(name) else text.str.to_lowercase()).alias(name)


def _key_parts(frame: pl.DataFrame, key_columns: Sequence[str], region: str) -> pl.DataFrame:
    # One select, so Polars works on the columns side by side; then what needs Python.
    texts = frame.select(_normalised_text(name) for name in key_columns)
    return pl.DataFrame(
        [
            _phone_part(texts[name], region) if is_phone_column(name) else _casefolded(texts[name])
            for name in key_columns
        ]
    )


def row_keys(
    frame: pl.DataFrame,
    key_columns: Sequence[str],
    phone_region: str,
    *,
    label_columns: bool = False,
    version: int = ROW_KEY_VERSION,
) -> pl.Series:
    """A 32-hex-digit key per row (``_row_key``), from the normalised ``key_columns``, made
    the way ``version`` (one of ``ROW_KEY_VERSIONS``) says.

    With ``label_columns`` the key is the set of (column, value) pairs of the non-empty
    cells instead of the values in order: used when every column is the key, so that a
    file with an extra empty column, or its columns in another order, keys the same rows
    the same way.
    """
    parts = _key_parts(frame, key_columns, phone_region)
    if label_columns:
        # concat_str is null when any input is null, so an empty cell drops its label too.
        labelled = [pl.concat_str(pl.lit(f"{name}="), pl.col(name)) for name in key_columns]
        joined = parts.select(pl.concat_str(labelled, separator=_PART_SEPARATOR, ignore_nulls=True))
    else:
        values = [pl.col(name).fill_null(_NULL_PART) for name in key_columns]
        joined = parts.select(pl.concat_str(values, separator=_PART_SEPARATOR))
    text = joined.to_series().alias(ROW_KEY_COLUMN)
    if version == ROW_KEY_VERSION:
        sha256 = polars_hash.col(ROW_KEY_COLUMN).chash.sha2_256()
        return text.to_frame().select(sha256.str.slice(0, 32)).to_series()
    if version == LEGACY_ROW_KEY_VERSION:
        blake2b = hashlib.blake2b
        # One Python call per row; Binary hands over bytes without re-encoding.
        digests = [blake2b(value, digest_size=16).hexdigest() for value in text.cast(pl.Binary)]
        return pl.Series(ROW_KEY_COLUMN, digests, dtype=pl.String)
    raise ValueError(f"unknown row key version {version}; this pgdatahub knows {ROW_KEY_VERSIONS}")


_HI, _LO = "_key_hi", "_key_lo"


def _halves_of(keys: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """32-hex-digit keys (no nulls) as the NumPy arrays of their two halves."""
    halves = _key_halves(keys)
    return halves[_HI].to_numpy(), halves[_LO].to_numpy()


def _key_halves(keys: pl.Series) -> pl.DataFrame:
    """32-hex-digit keys (no nulls) as two UInt64 columns: the same equality in 16 bytes."""
    return pl.DataFrame(
        {
            _HI: keys.str.slice(0, 16).str.to_integer(base=16, dtype=pl.UInt64),
            _LO: keys.str.slice(16).str.to_integer(base=16, dtype=pl.UInt64),
        }
    )


class SeenKeys:
    """The row keys one import has loaded into a table that has no unique index yet.

    It answers what ``INSERT … ON CONFLICT DO NOTHING`` against the index would: a row goes
    in when its key is new, the first of rows sharing a key wins, and a row without a key
    always goes in. The keys are held as their two 64-bit halves in an open-addressing hash
    table (linear probing, at most half full), probed a whole batch at a time with NumPy:
    a batch costs the same however many keys are held, where a sorted array had to be
    copied whole to merge each batch in (docs/benchmarks.md, *SeenKeys as a hash table*).
    """

    def __init__(self, slots: int = 2**16) -> None:
        if slots <= 0 or slots & (slots - 1):
            raise ValueError(f"a key table has a power of two of slots: {slots}")
        self._high = np.zeros(slots, dtype=np.uint64)
        self._low = np.zeros(slots, dtype=np.uint64)
        self._used = np.zeros(slots, dtype=np.bool_)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def halves(self, slots: int = 2**16) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The keys held, as their two 64-bit halves, ``slots`` slots at a time: a copy of
        them all at once would be as large as the keys."""
        for start in range(0, len(self._used), slots):
            used = self._used[start : start + slots]
            yield self._high[start : start + slots][used], self._low[start : start + slots][used]

    def admit(self, keys: pl.Series) -> pl.Series:
        """Which rows go in (a Boolean per key); their keys count as seen from now on."""
        keyed = keys.is_not_null()
        high, low = _halves_of(keys.filter(keyed))
        new = pl.Series(self.admit_halves(high, low))
        return pl.repeat(True, keys.len(), eager=True).scatter(keyed.arg_true(), new)

    def admit_halves(self, high: np.ndarray, low: np.ndarray) -> np.ndarray:
        """``admit`` for keys given as their two halves (no nulls)."""
        self._make_room(self._count + len(high))
        return self._insert(high, low)

    def holds(self, high: np.ndarray, low: np.ndarray) -> np.ndarray:
        """Which of the keys (as their two halves) are held; nothing is added."""
        mask = len(self._used) - 1
        slot = (low & np.uint64(mask)).astype(np.intp)
        held = np.zeros(len(high), dtype=np.bool_)
        pending = np.arange(len(high))
        while pending.size:
            at = slot[pending]
            used = self._used[at]
            same = used & (self._high[at] == high[pending]) & (self._low[at] == low[pending])
            held[pending[same]] = True
            # A free slot ends the probe: the key would be there.
            going = used & ~same
            pending = pending[going]
            slot[pending] = (slot[pending] + 1) & mask
        return held

    def _make_room(self, keys: int) -> None:
        """Enough slots for ``keys`` keys, the table at most half full: grown by doubling,
        the held keys placed anew."""
        slots = len(self._used)
        if 2 * keys <= slots:
            return
        while 2 * keys > slots:
            slots *= 2
        high, low = self._high[self._used], self._low[self._used]
        self._high = np.zeros(slots, dtype=np.uint64)
        self._low = np.zeros(slots, dtype=np.uint64)
        self._used = np.zeros(slots, dtype=np.bool_)
        self._count = 0
        self._insert(high, low)

    def _insert(self, high: np.ndarray, low: np.ndarray) -> np.ndarray:
        """Place each key unless held already: True where it was new, and for the first of
        keys repeated among ``high``/``low``."""
        # Keys are hashes already, so their low bits serve as the slot.
        mask = len(self._used) - 1
        slot = (low & np.uint64(mask)).astype(np.intp)
        placed = np.zeros(len(high), dtype=np.bool_)
        pending = np.arange(len(high))  # in row order: the first of equal keys wins
        while pending.size:
            at = slot[pending]
            used = self._used[at]
            same = used & (self._high[at] == high[pending])
            # Low halves only where the high halves agree: a repeat, or a rare collision.
            agree = np.flatnonzero(same)
            same[agree] = self._low[at[agree]] == low[pending[agree]]
            settled = same
            free = np.flatnonzero(~used)
            if free.size:
                # Of the keys landing on one free slot the first takes it. Equal keys probe
                # the same slots in step, so a repeat finds its first on the next round.
                taken, first = np.unique(at[free], return_index=True)
                winners = pending[free[first]]
                self._used[taken] = True
                self._high[taken], self._low[taken] = high[winners], low[winners]
                placed[winners] = True
                settled = same.copy()
                settled[free[first]] = True
            # A slot holding another key sends the key on to the next one.
            moving = pending[used & ~same]
            slot[moving] = (slot[moving] + 1) & mask
            pending = pending[~settled]
        self._count += int(placed.sum())
        return placed


#: Bits of a key each ``KeyFilter`` probe takes (the filter holds at most 2**32 bits).
_PROBE_BITS = 32


class KeyFilter:
    """The row keys one import has loaded into a table without a unique index, past what
    ``SeenKeys`` may hold, in fixed memory however many.

    Every key is in a Bloom filter of ``bits`` bits (a power of two), setting three of them,
    taken from three disjoint 32-bit slices of the key (a hash already). The keys taken in
    since the filter took over are also held exactly while they are recent: in two
    generations of ``SeenKeys`` of at most ``generation`` keys each, the older dropped when
    the newer fills. A key the recent ones hold is a repeat; one they do not hold is
    certainly new when the Bloom filter never saw it. The others are undecided: the filter
    may claim a key it never held (at 5,000,000 keys in 2**27 bits, 16 MiB, about one key in
    800), and a key no longer recent may be held; the database settles them against the
    whole table (``Warehouse.settle_fresh``). So a repeat within about ``generation`` keys of
    its first row costs the database nothing; a farther one costs a row of the temporary
    table and an index probe.
    """

    def __init__(self, bits: int, held: SeenKeys, generation: int) -> None:
        if bits < 8 or bits & (bits - 1) or bits > 2**_PROBE_BITS:
            raise ValueError(f"a key filter has a power of two of bits, 8 to 2**{_PROBE_BITS}: {bits}")
        self._size = bits
        self._bits = np.zeros(bits // 8, dtype=np.uint8)
        self._generation = generation
        # Each generation's table made at its full size at once: growing it by doubling
        # would hold the old and the new table together, once a generation.
        self._slots = 1 << (2 * generation - 1).bit_length()
        self._older, self._newer = SeenKeys(), SeenKeys(self._slots)
        for high, low in held.halves():
            self._mark(self._probes(high, low))

    def admit(self, keys: pl.Series) -> tuple[pl.Series, pl.Series]:
        """For each row, whether it is certainly the first with its key, and whether that is
        undecided; a row neither repeats a key held (or one earlier in ``keys``). Rows
        without a key are always first. Every key counts as held from now on."""
        keyed = keys.is_not_null()
        high, low = _halves_of(keys.filter(keyed))
        if len(self._newer) + len(high) > self._generation:
            self._older, self._newer = self._newer, SeenKeys(self._slots)
        new = ~self._older.holds(high, low)
        new[new] = self._newer.admit_halves(high[new], low[new])
        probes = self._probes(high, low)
        seen = np.ones(len(high), dtype=np.bool_)
        for probe in probes:
            seen &= ((self._bits[probe >> 3] >> (probe & 7).astype(np.uint8)) & 1).astype(np.bool_)
        self._mark(probes)
        rows, at = keys.len(), keyed.arg_true()
        first = pl.repeat(True, rows, eager=True).scatter(at, pl.Series(new & ~seen))
        undecided = pl.repeat(False, rows, eager=True).scatter(at, pl.Series(new & seen))
        return first, undecided

    def _probes(self, high: np.ndarray, low: np.ndarray) -> list[np.ndarray]:
        size, slice_mask = np.uint64(self._size - 1), np.uint64(2**_PROBE_BITS - 1)
        slices = (high & slice_mask, high >> np.uint64(_PROBE_BITS), low & slice_mask)
        return [(part & size).astype(np.intp) for part in slices]

    def _mark(self, probes: list[np.ndarray]) -> None:
        for probe in probes:
            np.bitwise_or.at(self._bits, probe >> 3, np.left_shift(1, probe & 7).astype(np.uint8))
