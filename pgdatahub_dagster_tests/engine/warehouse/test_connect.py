from pathlib import Path

import pytest

from pgdatahub_dagster.engine.errors import ConfigError, WarehouseError
from pgdatahub_dagster.engine.settings import Settings, redact_url
from pgdatahub_dagster.engine.warehouse import LEDGER_TABLE, connect


def test_redact_url_hides_only_the_password() -> None:
    assert (
        redact_url("postgresql://ann:s3cret@db.example:5433/wh") == "postgresql://ann:***@db.example:5433/wh"
    )
    assert redact_url("postgresql://ann@db/wh") == "postgresql://ann@db/wh"
    assert redact_url("duckdb:///data/w.duckdb") == "duckdb:///data/w.duckdb"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgres://ann:a%23b%3Fc%2Fd@db:5433/wh", "postgresql://ann:***@db:5433/wh"),
        (
            "postgresql://ann@db/wh?password=a#b?c/d&sslmode=require",
            "postgresql://ann:***@db/wh?sslmode=require",
        ),
        ("host=db dbname=wh user=ann password='a b#c'", "postgresql://ann:***@db/wh"),
        ("postgresql:///wh?host=/run/pg&sslpassword=k3y", "postgresql:///wh?host=/run/pg&sslpassword=***"),
        ("postgresql+psycopg2://ann:s3cret@[::1]/wh", "postgresql://ann:***@[::1]/wh"),
        # psycopg cannot read these: nothing of them is shown.
        ("postgresql://ann:a#b?c/d@db/wh", "postgresql://***"),
        ("host=db password='unterminated", "postgresql://***"),
        ("mysql://ann:s3cret@db/wh", "mysql://***"),
    ],
)
def test_redact_url_reads_every_form_psycopg_accepts(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_unreachable_postgres_error_never_shows_the_password() -> None:
    with pytest.raises(WarehouseError) as failure:
        connect("postgresql://ann:s3cret@127.0.0.1:1/wh?connect_timeout=2")
    assert "s3cret" not in str(failure.value)
    assert "postgresql://ann:***@127.0.0.1:1/wh" in str(failure.value)


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unsupported database URL"):
        connect("mysql://ann:s3cret@db/wh")


def test_duckdb_url_paths_are_relative_with_three_slashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with connect("duckdb:///nested/w.duckdb") as warehouse:
        assert warehouse.table_columns(LEDGER_TABLE) is not None
    assert (tmp_path / "nested" / "w.duckdb").is_file()


def test_settings_default_to_an_embedded_duckdb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("PGDATAHUB_DATABASE_URL", "PGDATAHUB_DATA_DIR", "PGDATAHUB_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGDATAHUB_SOURCE_DIR", str(tmp_path))
    (tmp_path / "pgdatahub.yaml").write_text("default_sheet: Data\n")
    settings = Settings.from_env()
    assert settings.database_url == "duckdb:///data/warehouse.duckdb"
    assert settings.config_path == tmp_path / "pgdatahub.yaml"
    assert Settings.from_env(config_path="other.yaml").config_path == Path("other.yaml")


def test_postgres_driver_suffix_is_accepted(postgres_url: str) -> None:
    with connect(postgres_url.replace("postgresql://", "postgresql+psycopg2://", 1)) as warehouse:
        assert warehouse.table_columns(LEDGER_TABLE) is not None


def test_postgres_prices_index_probes_for_ssds_unless_the_server_sets_its_own(postgres_url: str) -> None:
    with connect(postgres_url) as warehouse:
        assert warehouse.fetchall("SHOW random_page_cost") == [("1.1",)]
        (database,) = warehouse.fetchall("SELECT current_database()")[0]
        warehouse.execute(f"ALTER DATABASE {warehouse.quote(database)} SET random_page_cost = 3")
    with connect(postgres_url) as warehouse:
        assert warehouse.fetchall("SHOW random_page_cost") == [("3",)]
