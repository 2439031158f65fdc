import hashlib
from pathlib import Path

import polars as pl
import pytest

from pgdatahub_dagster.engine.dedup import is_phone_column, row_keys
from pgdatahub_dagster.engine.dedup.keys import LEGACY_ROW_KEY_VERSION, ROW_KEY_VERSION, _e164, _phone_part
from pgdatahub_dagster_tests.engine.test_importer import query, run_import
from pgdatahub_dagster_tests.files import write_csv

# Phone columns before and after names were matched by their last word: their keys must not change.
STILL_PHONES = [
    "phone", "phones", "mobile_phone", "tel", "telephone", "fax_number", "phone_no", "cell", "cellphone",
    "cell_phone", "home_phone", "phone_home", "tel_no", "phone_2", "phone2", "phonenumber",
    "phone_number_2", "phone_1_value", "work_phone_number", "mobile",
]  # fmt: skip


def test_phone_columns_are_recognised_by_name() -> None:
    assert [name for name in STILL_PHONES if not is_phone_column(name)] == []
    not_phones = [
        "telemetry", "hotel", "phonetic_name", "cell_count", "phone_type", "phone_1_type", "phone_ext",
        "phonebook", "mobile_app", "cell_id", "fax_sent", "number", "home_number",
    ]  # fmt: skip
    assert [name for name in not_phones if is_phone_column(name)] == []


def test_phone_keys_stay_the_e164_number() -> None:
    """Stored keys of phone columns: the hash of the E.164 number, for every phone name, in
    both key versions."""
    expected = {
        ROW_KEY_VERSION: hashlib.sha256(b"+15551234567").hexdigest()[:32],
        LEGACY_ROW_KEY_VERSION: hashlib.blake2b(b"+15551234567", digest_size=16).hexdigest(),
    }
    for name in STILL_PHONES:
        frame = pl.DataFrame({name: ["(555) 123-4567", "555.123.4567"]})
        for version, key in expected.items():
            assert row_keys(frame, [name], "US", version=version).to_list() == [key] * 2, (name, version)


def test_each_key_version_hashes_the_same_key_text() -> None:
    """The versions differ only in the hash: the documented digest of the one key text, so
    they tell the same rows apart and make the same duplicates."""
    frame = pl.DataFrame(
        {
            "name": ["Acme  Plumbing", " acme plumbing", "Straße 5", None, "", "Ünïcode ÄB"],
            "phone": ["(555) 123-4567", "+1 555 123 4567", None, "ext. 12", None, "+44 20 7946 0958"],
        }
    )
    texts = [
        "acme plumbing\x1f+15551234567",
        "acme plumbing\x1f+15551234567",
        "strasse 5\x1f\x00",
        "\x00\x1f12",
        "\x00\x1f\x00",  # normalising made the empty name empty (null)
        "ünïcode äb\x1f+442079460958",
    ]
    frame = frame.with_columns(pl.col("name").replace("", None))
    sha = [hashlib.sha256(text.encode()).hexdigest()[:32] for text in texts]
    blake = [hashlib.blake2b(text.encode(), digest_size=16).hexdigest() for text in texts]
    assert row_keys(frame, ["name", "phone"], "US").to_list() == sha
    assert row_keys(frame, ["name", "phone"], "US", version=LEGACY_ROW_KEY_VERSION).to_list() == blake
    labelled = row_keys(frame, ["name", "phone"], "US", label_columns=True)
    assert labelled[0] == hashlib.sha256(b"name=acme plumbing\x1fphone=+15551234567").hexdigest()[:32]
    assert labelled[4] == hashlib.sha256(b"").hexdigest()[:32]  # no cell has a value


def test_an_unknown_key_version_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown row key version 3"):
        row_keys(pl.DataFrame({"n": ["1"]}), ["n"], "US", version=3)


def test_phone_numbers_in_any_format_are_one_key() -> None:
    frame = pl.DataFrame(
        {"name": ["Acme"] * 4, "phone": ["+1 555 123 4567", "(555) 123-4567", "555.123.4567", "555-123-4568"]}
    )
    keys = row_keys(frame, ["name", "phone"], "US").to_list()
    assert keys[0] == keys[1] == keys[2]
    assert keys[3] != keys[0]


def test_unparseable_phone_falls_back_to_digits() -> None:
    frame = pl.DataFrame({"phone": ["ext. 12-34", "1234"]})
    keys = row_keys(frame, ["phone"], "US").to_list()
    assert keys[0] == keys[1]


def test_text_keys_ignore_case_and_whitespace_but_not_content() -> None:
    frame = pl.DataFrame(
        {"name": ["Acme  Plumbing", " acme plumbing", "STRASSE 5", "Straße 5", "Acme Plumbers"]}
    )
    keys = row_keys(frame, ["name"], "US").to_list()
    assert keys[0] == keys[1]
    assert keys[2] == keys[3]  # casefold, not just lowercase
    assert keys[4] != keys[0]


def test_key_parts_do_not_run_together() -> None:
    frame = pl.DataFrame({"a": ["ab", "a"], "b": ["c", "bc"]})
    keys = row_keys(frame, ["a", "b"], "US").to_list()
    assert keys[0] != keys[1]


def test_all_column_keys_ignore_column_order_and_empty_columns() -> None:
    one = pl.DataFrame({"name": ["Acme"], "city": ["Oslo"]})
    other = pl.DataFrame({"city": ["Oslo"], "notes": pl.Series([None], dtype=pl.String), "name": ["ACME"]})
    first = row_keys(one, sorted(one.columns), "US", label_columns=True).to_list()
    second = row_keys(other, sorted(other.columns), "US", label_columns=True).to_list()
    assert first == second


def test_keys_are_compact_hex() -> None:
    keys = row_keys(pl.DataFrame({"n": [1, 2]}), ["n"], "US").to_list()
    assert all(len(key) == 32 and int(key, 16) >= 0 for key in keys)


# The fast path for North American numbers must give phonenumbers' answer byte for byte,
# for the formats it takes and for everything near them that it must leave to the parser.
_PHONE_FORMATS = [
    "({a}) {e}-{s}",
    "({a}){e}-{s}",
    "({a}) {e} {s}",
    "{a}-{e}-{s}",
    "{a}.{e}.{s}",
    "{a} {e} {s}",
    "{a}{e}{s}",
    "{a}-{e}{s}",
    "{a}{e}-{s}",
    "1{a}{e}{s}",
    "1-{a}-{e}-{s}",
    "1 ({a}) {e}-{s}",
    "1.{a}.{e}.{s}",
    "1({a}){e}-{s}",
    "+1{a}{e}{s}",
    "+1 {a} {e} {s}",
    "+1-{a}-{e}-{s}",
    "+1 ({a}) {e}-{s}",
    "+1({a}){e}{s}",
    "+1.{a}.{e}.{s}",
    # Near misses: the parser decides these.
    "({a} {e}-{s}",
    "{a}) {e}-{s}",
    "({a})-{e}-{s}",
    "{a}--{e}--{s}",
    "{a}/{e}-{s}",
    "+ 1 {a} {e} {s}",
    "+11{a}{e}{s}",
    "11{a}{e}{s}",
    "001 {a} {e} {s}",
    "011 1 {a} {e} {s}",
    "1{a}{e}{s}0",
    "{a}{e}{s}0",
    "{e}-{s}",
    "{a}-{e}-{s} x12",
    "{a}-{e}-{s} ext. 5",
    "tel: {a}-{e}-{s}",
    "+{a}{e}{s}",
    "+44 {a} {e} {s}",
    "{a}-{e}-{s}-",
    "-{a}-{e}-{s}",
    "１{a}{e}{s}",
    "{a}\u00a0{e}\u00a0{s}",
]


def _phone_samples(count: int) -> list[str]:
    import random

    rng = random.Random(20261125)
    values = []
    for index in range(count):
        # Area codes and exchanges over the whole range, 0xx and 1xx included.
        area, exchange = f"{rng.randrange(1000):03d}", f"{rng.randrange(1000):03d}"
        station = f"{rng.randrange(10_000):04d}"
        pattern = _PHONE_FORMATS[index % len(_PHONE_FORMATS)]
        values.append(pattern.format(a=area, e=exchange, s=station))
    return values


@pytest.mark.parametrize("region", ["US", "CA", "DE", "GB", "AG"])
def test_phone_fast_path_matches_phonenumbers_exactly(region: str) -> None:
    values = _phone_samples(6_000)
    fast = _phone_part(pl.Series("phone", values), region).to_list()
    assert fast == [_e164(value, region) for value in values]


def test_phone_fast_path_keeps_nulls_and_takes_most_everyday_us_formats() -> None:
    column = pl.Series("phone", ["(555) 123-4567", None, "+1 555 123 4567", "1-555-123-4567", "call us"])
    assert _phone_part(column, "US").to_list() == [
        "+15551234567",
        None,
        "+15551234567",
        "+15551234567",
        _e164("call us", "US"),
    ]


def test_every_kind_of_whitespace_run_is_one_space() -> None:
    values = ["a b", "a  b", "a\tb", "a \t b", "a\u00a0b", "a\u2003\u2003b", " a\n\nb ", "a\r\nb"]
    keys = row_keys(pl.DataFrame({"name": values}), ["name"], "US").to_list()
    assert len(set(keys)) == 1
    assert row_keys(pl.DataFrame({"name": ["ab"]}), ["name"], "US")[0] != keys[0]


def test_names_that_only_mention_phones_keep_their_rows(warehouse_url: str, tmp_path: Path) -> None:
    # As phone numbers, names without digits were all one key, and -3 the same key as 3.
    write_csv(tmp_path / "people" / "f.csv", "phonetic_name,cell_count\nAH-nuh,3\nBOHB,3\nkris,3\nkris,-3\n")
    [result] = run_import(warehouse_url, tmp_path, "people:\n  unique_key: [phonetic_name, cell_count]\n")
    assert (result.status, result.record.rows_inserted) == ("success", 4)
    assert query(warehouse_url, "SELECT phonetic_name, cell_count FROM people ORDER BY 1, 2") == [
        ("AH-nuh", 3),
        ("BOHB", 3),
        ("kris", -3),
        ("kris", 3),
    ]
