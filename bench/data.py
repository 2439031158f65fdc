"""Deterministic benchmark data: business listings with about 10% duplicates, some messy.

The same ``rows`` and ``seed`` always give byte-identical files, so every contender of a
run, and every run, reads the same data. Files are cached under ``bench/data/`` (gitignored)
and rebuilt when the generator's ``VERSION`` changes.

Columns (12): name, address, city, state, zip, phone, email, website, category, rating,
review_count, opened. Of the rows, ~5% repeat an earlier row exactly and ~5% repeat an
earlier business messily (other case, extra spaces, the phone written another way), so
only a normalising key finds them; ~2% of phones are international or unparseable and
~1% are empty.

``changed_csv_file`` is a second version of ``csv_file``: the same rows with ~1% edited in
non-key columns, ~0.5% removed and ~0.5% new ones appended (the ``changed_file`` scenario).

``zip_bomb_xlsx``, ``long_line_csv`` and ``wide_csv`` are files the engine must refuse (the
``hostile`` scenario).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import polars as pl

VERSION = 1
DATA_DIR = Path(os.environ.get("PGDATAHUB_BENCH_DATA_DIR") or Path(__file__).resolve().parent / "data")
COLUMNS = (
    "name",
    "address",
    "city",
    "state",
    "zip",
    "phone",
    "email",
    "website",
    "category",
    "rating",
    "review_count",
    "opened",
)
KEY_COLUMNS = ("name", "address", "phone")


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_ADJECTIVES = _words(
    "Golden Silver Blue Red Green Royal Happy Sunny Lucky Urban Rustic Modern Classic Grand Little Big "
    "Bright Quiet Swift Noble Crystal Emerald Maple Cedar Oak Pine River Harbor Summit Valley Prairie "
    "Coastal Northern Southern Eastern Western Central Hidden Secret Old New Fresh Wild Gentle Brave "
    "Clever Honest True Prime"
)
_NOUNS = _words(
    "Oak Bean Leaf Stone Bridge Lantern Anchor Arrow Bell Crown Feather Garden Hearth Island Key Lotus "
    "Meadow Nest Orchard Pearl Quill Rose Sparrow Tower Umbrella Vine Willow Fox Bear Wolf Hawk Owl "
    "Tiger Lion Otter Rabbit Deer Falcon Heron Raven Robin Swan Dolphin Whale Pony Mill Forge Barn Dock "
    "Gate Hill Lake Field Brook Grove Ridge Creek"
)
_KINDS = _words(
    "Bakery Cafe Diner Grill Pizzeria Bistro Florist Pharmacy Hardware Books Boutique Salon Barbers "
    "Dental Clinic Garage Motors Plumbing Electric Roofing Cleaners Laundry Tailors Fitness Yoga "
    "Studio Gallery Market Grocery Deli Butchers Brewery Winery Tavern Hotel Inn Motel Travel Insurance "
    "Realty Law Accounting Consulting Printing Signs Movers Storage Pets Vet Toys Games Music Jewelers"
)
_SURNAMES = _words(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez "
    "Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark "
    "Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams "
    "Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Gomez Phillips Evans Turner Diaz Parker "
    "Cruz Edwards Collins Reyes Stewart Morris Morales Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper "
    "Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson Watson Brooks Chavez Wood James "
    "Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo Sanders Patel Myers Long Ross Foster"
)
_STREETS = _words(
    "Main Oak Pine Maple Cedar Elm Washington Lake Hill Park Walnut Spring North South Ridge Church "
    "Willow Mill Sunset Railroad Jackson Cherry Highland Madison Lincoln Franklin Jefferson Adams "
    "Meadow River Forest Center Union Water Chestnut Spruce Hickory Lakeview Dogwood Birch Valley "
    "Market Broad Front High Prospect Grove Locust Poplar Laurel Magnolia Sycamore Cypress Aspen "
    "Juniper Holly Ivy Rose Lily Daisy Orchid Jasmine Violet Tulip Clover Fern Moss Heather Sage"
)
_STREET_TYPES = ("St", "Ave", "Rd", "Blvd", "Ln", "Dr", "Ct", "Way", "Pl", "Ter")
_CITIES = (
    ("Springfield", "IL"),
    ("Riverside", "CA"),
    ("Franklin", "TN"),
    ("Greenville", "SC"),
    ("Bristol", "CT"),
    ("Clinton", "IA"),
    ("Fairview", "OR"),
    ("Salem", "MA"),
    ("Madison", "WI"),
    ("Georgetown", "TX"),
    ("Arlington", "VA"),
    ("Ashland", "KY"),
    ("Dover", "DE"),
    ("Oxford", "MS"),
    ("Jackson", "WY"),
    ("Burlington", "VT"),
    ("Manchester", "NH"),
    ("Milton", "FL"),
    ("Newport", "RI"),
    ("Auburn", "AL"),
    ("Dayton", "OH"),
    ("Lexington", "NE"),
    ("Hudson", "NY"),
    ("Kingston", "NJ"),
    ("Marion", "IN"),
    ("Portland", "ME"),
    ("Winchester", "NV"),
    ("Columbia", "MO"),
    ("Troy", "MI"),
    ("Bedford", "PA"),
)
_CATEGORIES = (
    "Restaurant",
    "Retail",
    "Health",
    "Automotive",
    "Home Services",
    "Beauty",
    "Fitness",
    "Arts",
    "Food & Drink",
    "Lodging",
    "Professional Services",
    "Pets",
    "Entertainment",
    "Education",
)
# How the same 10-digit US number gets written; the first is the canonical way.
_PHONE_FORMATS = (
    "({a}) {e}-{s}",
    "{a}-{e}-{s}",
    "{a}.{e}.{s}",
    "+1 {a} {e} {s}",
    "{a}{e}{s}",
    "1-{a}-{e}-{s}",
    "+1-{a}-{e}-{s}",
    "({a}){e}-{s}",
)
_FOREIGN_PHONES = ("+44 20 7946 {s}", "+49 30 901820{s2}", "+33 1 42 68 {s2} {s3}", "+61 2 9374 {s}")


def _pick(rng: np.random.Generator, words: tuple[str, ...] | list[str], n: int) -> pl.Series:
    return pl.Series(np.asarray(words, dtype=object)[rng.integers(0, len(words), n)], dtype=pl.String)


def _digits(rng: np.random.Generator, n: int, width: int, low: int, high: int) -> pl.Series:
    return pl.Series(rng.integers(low, high, n)).cast(pl.String).str.zfill(width)


def _phones(rng: np.random.Generator, n: int, fmt: np.ndarray) -> pl.Series:
    area = _digits(rng, n, 3, 201, 990)
    exchange = _digits(rng, n, 3, 200, 1000)
    station = _digits(rng, n, 4, 0, 10_000)
    frame = pl.DataFrame({"a": area, "e": exchange, "s": station, "f": fmt})
    exprs = []
    for index, pattern in enumerate(_PHONE_FORMATS):
        text = pattern.replace("{a}", "{}").replace("{e}", "{}").replace("{s}", "{}")
        order = [pl.col(part) for part in _order(pattern)]
        exprs.append(pl.when(pl.col("f") == index).then(pl.format(text, *order)))
    return frame.select(pl.coalesce(exprs).alias("phone")).to_series()


def _order(pattern: str) -> list[str]:
    return [part for _, part in sorted((pattern.index("{" + p + "}"), p) for p in ("a", "e", "s"))]


def _base_rows(rng: np.random.Generator, n: int) -> pl.DataFrame:
    """``n`` distinct-ish businesses, written cleanly."""
    name = pl.select(
        pl.concat_str(
            [
                _pick(rng, _SURNAMES, n) + "'s",
                _pick(rng, _ADJECTIVES, n),
                _pick(rng, _NOUNS, n),
                _pick(rng, _KINDS, n),
            ],
            separator=" ",
        )
    ).to_series()
    address = pl.select(
        pl.concat_str(
            [
                pl.Series(rng.integers(1, 10_000, n)).cast(pl.String),
                _pick(rng, _STREETS, n),
                _pick(rng, _STREET_TYPES, n),
            ],
            separator=" ",
        )
    ).to_series()
    city_index = rng.integers(0, len(_CITIES), n)
    city = pl.Series(np.asarray([c for c, _ in _CITIES], dtype=object)[city_index], dtype=pl.String)
    state = pl.Series(np.asarray([s for _, s in _CITIES], dtype=object)[city_index], dtype=pl.String)
    phone = _phones(rng, n, rng.integers(0, len(_PHONE_FORMATS), n))
    kind = rng.random(n)
    foreign = pl.Series(np.asarray(_FOREIGN_PHONES, dtype=object)[rng.integers(0, 4, n)], dtype=pl.String)
    s4, s2, s3 = _digits(rng, n, 4, 0, 10_000), _digits(rng, n, 2, 0, 100), _digits(rng, n, 2, 0, 100)
    foreign = pl.DataFrame({"t": foreign, "s": s4, "s2": s2, "s3": s3}).select(
        pl.col("t")
        .str.replace("{s}", pl.col("s"), literal=True)
        .str.replace("{s2}", pl.col("s2"), literal=True)
        .str.replace("{s3}", pl.col("s3"), literal=True)
    )["t"]
    phone = (
        pl.DataFrame({"p": phone, "f": foreign, "k": kind})
        .select(
            pl.when(pl.col("k") < 0.01)
            .then(None)
            .when(pl.col("k") < 0.03)
            .then(pl.col("f"))
            .when(pl.col("k") < 0.035)
            .then(pl.lit("call us"))
            .otherwise(pl.col("p"))
        )
        .to_series()
    )
    slug = name.str.to_lowercase().str.replace_all(r"[^a-z0-9]+", "")
    return pl.DataFrame(
        {
            "name": name,
            "address": address,
            "city": city,
            "state": state,
            "zip": _digits(rng, n, 5, 1001, 99_951),
            "phone": phone,
            "email": "info@" + slug + ".example.com",
            "website": "https://www." + slug + ".example.com",
            "category": _pick(rng, _CATEGORIES, n),
            "rating": pl.Series(np.round(rng.uniform(1.0, 5.0, n), 1)).cast(pl.String),
            "review_count": pl.Series(rng.integers(0, 5_000, n)).cast(pl.String),
            "opened": pl.Series(
                np.datetime64("1980-01-01") + rng.integers(0, 16_000, n).astype("timedelta64[D]")
            ).cast(pl.String),
        }
    )


def _messy(frame: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """The same businesses as another person types them: case, spacing, phone format."""
    n = frame.height
    style = pl.Series(rng.integers(0, 3, n))
    name = pl.select(
        pl.when(style == 0)
        .then(frame["name"].str.to_uppercase())
        .when(style == 1)
        .then("  " + frame["name"].str.replace_all(" ", "  ") + " ")
        .otherwise(frame["name"].str.to_lowercase())
    ).to_series()
    address = pl.select(
        pl.when(style == 2).then(frame["address"].str.to_uppercase()).otherwise(frame["address"] + "  ")
    ).to_series()
    # Rewrite the number's digits in another format; foreign or odd phones stay as they are.
    digits = frame["phone"].str.replace_all(r"[^0-9]", "").str.slice(-10)
    us = frame["phone"].str.contains(r"^[(0-9]|^\+1[ -]") & (digits.str.len_chars() == 10)
    parts = pl.DataFrame({"a": digits.str.slice(0, 3), "e": digits.str.slice(3, 3), "s": digits.str.slice(6)})
    rewritten = _phones_from(parts, pl.Series(rng.integers(0, len(_PHONE_FORMATS), n)))
    phone = pl.select(pl.when(us.fill_null(False)).then(rewritten).otherwise(frame["phone"])).to_series()
    return frame.with_columns(name.alias("name"), address.alias("address"), phone.alias("phone"))


def _phones_from(parts: pl.DataFrame, fmt: pl.Series) -> pl.Series:
    frame = parts.with_columns(fmt.alias("f"))
    exprs = []
    for index, pattern in enumerate(_PHONE_FORMATS):
        text = pattern.replace("{a}", "{}").replace("{e}", "{}").replace("{s}", "{}")
        exprs.append(
            pl.when(pl.col("f") == index).then(pl.format(text, *[pl.col(p) for p in _order(pattern)]))
        )
    return frame.select(pl.coalesce(exprs)).to_series()


def listings(rows: int, seed: int = 42) -> pl.DataFrame:
    """``rows`` listings, every value text, ~10% of them duplicates of earlier rows."""
    rng = np.random.default_rng(seed)
    duplicates = rows // 10
    base = _base_rows(rng, rows - duplicates)
    # Each duplicate repeats an earlier business and lands somewhere after it.
    source = rng.integers(0, base.height, duplicates)
    copies = base[source.tolist()]
    exact = rng.random(duplicates) < 0.5
    copies = pl.concat([copies.filter(pl.Series(exact)), _messy(copies.filter(pl.Series(~exact)), rng)])
    base_order = np.arange(base.height, dtype=np.float64)
    dup_order = np.concatenate([source[exact], source[~exact]]) + rng.uniform(
        0.5, base.height * 0.1, duplicates
    )
    order = np.argsort(np.concatenate([base_order, dup_order]), kind="stable")
    return pl.concat([base, copies])[order.tolist()]


def _cached(name: str, build: Callable[[Path], None]) -> Path:
    path = DATA_DIR / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        build(partial)
        partial.rename(path)
    return path


def csv_file(rows: int) -> Path:
    """The listings as one UTF-8 CSV with a header row."""
    return _cached(f"listings_v{VERSION}_{rows}.csv", lambda path: listings(rows).write_csv(path))


def changed_listings(rows: int, seed: int = 42) -> pl.DataFrame:
    """The second version of ``listings(rows, seed)``: the same file after a person edited it.

    Of its rows, ``rows // 100`` get a new ``review_count`` (and half of them a new
    ``rating``), keys untouched; ``rows // 200`` others are removed; ``rows // 200`` new
    businesses are appended at the end. The row count stays ``rows``, and every value stays
    text written as in the first version, so the column types do not change.
    """
    frame = listings(rows, seed).with_row_index("_row")
    rng = np.random.default_rng(seed + 1_000_003)
    edited_count, removed_count = rows // 100, rows // 200
    picked = rng.choice(rows, edited_count + removed_count, replace=False)
    edited, removed = picked[:edited_count], picked[edited_count:]
    bump = rng.integers(1, 100, edited_count)
    new_rating = np.round(rng.uniform(1.0, 5.0, edited_count), 1)
    rate_too = rng.random(edited_count) < 0.5
    edits = pl.DataFrame(
        {
            "_row": pl.Series(edited, dtype=pl.UInt32),
            "_bump": bump,
            "_rating": pl.Series(new_rating).cast(pl.String),
            "_rate": rate_too,
        }
    )
    changed = (
        frame.join(edits, on="_row", how="left", maintain_order="left")
        .with_columns(
            pl.when(pl.col("_bump").is_not_null())
            .then((pl.col("review_count").cast(pl.Int64) + pl.col("_bump")).cast(pl.String))
            .otherwise(pl.col("review_count"))
            .alias("review_count"),
            pl.when(pl.col("_rate").fill_null(False))
            .then(pl.col("_rating"))
            .otherwise(pl.col("rating"))
            .alias("rating"),
        )
        .filter(~pl.col("_row").is_in(pl.Series(removed, dtype=pl.UInt32)))
        .select(COLUMNS)
    )
    added = _base_rows(rng, removed_count).select(COLUMNS)
    return pl.concat([changed, added])


def changed_csv_file(rows: int) -> Path:
    """``changed_listings(rows)`` as a CSV written like ``csv_file(rows)``: its next version."""
    return _cached(
        f"listings_v{VERSION}_{rows}_changed.csv", lambda path: changed_listings(rows).write_csv(path)
    )


def xlsx_file(rows: int) -> Path:
    """The listings as one xlsx workbook (numbers as numbers, as a person's workbook holds them)."""

    def build(path: Path) -> None:
        import xlsxwriter

        frame = listings(rows, seed=7).with_columns(
            pl.col("rating").cast(pl.Float64), pl.col("review_count").cast(pl.Int64)
        )
        # Text stays text: no URL or number guessing by the writer.
        workbook = xlsxwriter.Workbook(str(path), {"constant_memory": True, "strings_to_urls": False})
        sheet = workbook.add_worksheet("Listings")
        sheet.write_row(0, 0, frame.columns)
        for index, row in enumerate(frame.iter_rows(), start=1):
            sheet.write_row(index, 0, [value for value in row])
        workbook.close()

    return _cached(f"listings_v{VERSION}_{rows}.xlsx", build)


def many_files(files: int, rows_per_file: int) -> Path:
    """``files`` CSVs of ``rows_per_file`` rows each, under one folder with its mapping."""

    def build(path: Path) -> None:
        frame = listings(files * rows_per_file, seed=11)
        path.mkdir()
        for index in range(files):
            part = frame.slice(index * rows_per_file, rows_per_file)
            part.write_csv(path / f"listings_{index:04d}.csv")

    return _cached(f"many_v{VERSION}_{files}x{rows_per_file}", build)


def large_tree(tables: int, folders_per_table: int, files_per_folder: int) -> Path:
    """A tree of ``tables`` top folders (a table each), each holding ``folders_per_table``
    sub-folders of ``files_per_folder`` one-row CSVs: what a sensor walks, not what it imports
    (``tick_scale``: 50 × 100 × 20 = 100,000 files in 5,000 folders)."""

    def build(path: Path) -> None:
        for table in range(tables):
            for folder in range(folders_per_table):
                directory = path / f"t{table:02d}" / f"c{folder:03d}"
                directory.mkdir(parents=True)
                for index in range(files_per_folder):
                    (directory / f"f{index:02d}.csv").write_text(f"code\n{table}-{folder}-{index}\n")

    return _cached(f"tree_{tables}x{folders_per_table}x{files_per_folder}", build)


# -- hostile files: what must fail alone, in bounded memory (the `hostile` scenario) --------

#: Values per row of the zip bomb: 8,192 one-digit cells, 15 bytes of XML each.
BOMB_ROW_CELLS = 8_192


def zip_bomb_xlsx(rows: int) -> Path:
    """An xlsx whose one sheet, declaring no dimension, unpacks to ``rows`` × 8,192 values
    (16,384 rows: 134 million cells, 2 GB of XML in a 2 MB file)."""
    from pgdatahub_dagster_tests.sheet_xml import SHEET_XML_START, write_sheet_xml

    row = b"<row>" + b"<c><v>1</v></c>" * BOMB_ROW_CELLS + b"</row>"

    def sheet(stream: IO[bytes]) -> None:
        stream.write(SHEET_XML_START + b"<sheetData>")
        for _ in range(rows):
            stream.write(row)
        stream.write(b"</sheetData></worksheet>")

    def build(path: Path) -> None:
        write_sheet_xml(path, sheet)

    return _cached(f"hostile_v{VERSION}_bomb_{rows}.xlsx", build)


def long_line_csv(megabytes: int) -> Path:
    """A header, then one line of ``megabytes`` MB with no line break."""

    def build(path: Path) -> None:
        block = b"x" * 2**20
        with path.open("wb") as handle:
            handle.write(b"id,note\n1,")
            for _ in range(megabytes):
                handle.write(block)

    return _cached(f"hostile_v{VERSION}_line_{megabytes}mb.csv", build)


def wide_csv(columns: int, rows: int = 10) -> Path:
    """``columns`` columns × ``rows`` rows (20,000 × 10: 1.2 MB)."""

    def build(path: Path) -> None:
        with path.open("w") as handle:
            handle.write(",".join(f"column_{index}" for index in range(columns)) + "\n")
            for row in range(rows):
                handle.write(",".join(f"{row:05d}" for _ in range(columns)) + "\n")

    return _cached(f"hostile_v{VERSION}_wide_{columns}x{rows}.csv", build)


def ods_repeat_bomb() -> Path:
    """An 820-byte ods of 99 million cells (a row of 1,000 cells repeated 99,000 times; just
    under calamine's own ods limit of 100 million)."""
    from pgdatahub_dagster_tests.hostile_workbooks import ods_repeat_bomb as write

    return _cached(f"hostile_v{VERSION}_repeats.ods", lambda path: write(path, 99_000, 1_000))


def huge_xlsb() -> Path:
    """A 2.6 MB xlsb of 20 million cells."""
    from pgdatahub_dagster_tests.hostile_workbooks import xlsb_sheet

    return _cached(f"hostile_v{VERSION}_huge.xlsb", lambda path: xlsb_sheet(path, 20_000, 1_000))


def lying_dimension_xlsx() -> Path:
    """A 600 KB xlsx of 20 million values whose sheet declares ``A1:B2``."""
    from pgdatahub_dagster_tests.hostile_workbooks import lying_dimension_xlsx as write

    return _cached(f"hostile_v{VERSION}_lying.xlsx", lambda path: write(path, 20_000, 1_000))
