"""Configuration from the environment, read in one place."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pgdatahub_dagster.engine.errors import ConfigError

DATABASE_URL_VAR = "PGDATAHUB_DATABASE_URL"
SOURCE_DIR_VAR = "PGDATAHUB_SOURCE_DIR"
CONFIG_VAR = "PGDATAHUB_CONFIG"
DATA_DIR_VAR = "PGDATAHUB_DATA_DIR"

DEFAULT_SOURCE_DIR = "sample_data"
DEFAULT_DATA_DIR = "data"
# A mapping file inside the source root is picked up without PGDATAHUB_CONFIG.
MAPPING_FILE_NAME = "pgdatahub.yaml"


@dataclass(frozen=True)
class Settings:
    database_url: str
    source_dir: Path
    config_path: Path | None

    @classmethod
    def from_env(
        cls,
        *,
        database_url: str | None = None,
        source_dir: str | None = None,
        config_path: str | None = None,
    ) -> Settings:
        """Explicit values win, then the environment, then the defaults."""
        data_dir = Path(os.environ.get(DATA_DIR_VAR) or DEFAULT_DATA_DIR)
        url = database_url or os.environ.get(DATABASE_URL_VAR) or f"duckdb:///{data_dir / 'warehouse.duckdb'}"
        root = Path(source_dir or os.environ.get(SOURCE_DIR_VAR) or DEFAULT_SOURCE_DIR)
        configured = config_path or os.environ.get(CONFIG_VAR)
        if configured:
            mapping: Path | None = Path(configured)
        else:
            beside = root / MAPPING_FILE_NAME
            mapping = beside if beside.is_file() else None
        return cls(database_url=url, source_dir=root, config_path=mapping)


@dataclass(frozen=True)
class SensorSettings:
    """How often sensors tick and how much one tick may do; how many files a backfill run takes."""

    interval_seconds: int = 30
    #: Runs one tick may request, one per file; a tick that finds more files launches them as
    #: one backfill instead. Dagster resolves and submits each run in 0.35-0.65 s on the SQLite
    #: instance at load 3-8 (2 s at load 25-30), so ten fit the tick's 8 s beside its walk
    #: (docs/benchmarks.md, "Sensor ticks at scale").
    max_runs: int = 10
    #: Files one tick may report (``Budget.max_files``); the rest follow on the next ticks.
    max_files: int = 10_000
    #: A tick that finds at least this many new or changed files (a first load, a folder moved
    #: in, an archive restored) launches them as one backfill of ``files_per_run`` files per run.
    backfill_files: int = 200
    #: A local file changed more recently than this waits for a later tick (half-written).
    settle_seconds: float = 2.0
    #: Seconds one tick may take, Dagster's share included (``Budget.seconds`` is what is
    #: left for the source); Dagster ends a tick at 60, and a tick under 10 s keeps the
    #: daemon's other sensors on time (docs/benchmarks.md, "Sensor ticks at scale").
    tick_seconds: float = 8.0
    #: Files per run of a backfill (``BackfillPolicy.multi_run``).
    files_per_run: int = 200

    @classmethod
    def from_env(cls) -> SensorSettings:
        return cls(
            interval_seconds=int(os.environ.get("PGDATAHUB_SENSOR_INTERVAL", "30")),
            max_runs=int(os.environ.get("PGDATAHUB_SENSOR_MAX_RUNS", "10")),
            max_files=int(os.environ.get("PGDATAHUB_SENSOR_MAX_FILES", "10000")),
            backfill_files=int(os.environ.get("PGDATAHUB_SENSOR_BACKFILL_FILES", "200")),
            settle_seconds=float(os.environ.get("PGDATAHUB_SENSOR_SETTLE_SECONDS", "2")),
            tick_seconds=float(os.environ.get("PGDATAHUB_SENSOR_TICK_SECONDS", "8")),
            files_per_run=int(os.environ.get("PGDATAHUB_FILES_PER_RUN", "200")),
        )


EXECUTOR_VAR = "PGDATAHUB_EXECUTOR"
CELERY_BROKER_VAR = "PGDATAHUB_CELERY_BROKER"
CELERY_BACKEND_VAR = "PGDATAHUB_CELERY_BACKEND"


@dataclass(frozen=True)
class ExecutorSettings:
    """Where a run's steps execute. The Celery URLs themselves are not kept: they may hold
    passwords, so Dagster reads them from the environment in the run's own process."""

    #: ``PGDATAHUB_EXECUTOR``, lower-cased and stripped ("" when unset).
    choice: str
    has_celery_broker: bool
    has_celery_backend: bool

    @classmethod
    def from_env(cls) -> ExecutorSettings:
        return cls(
            choice=os.environ.get(EXECUTOR_VAR, "").strip().lower(),
            has_celery_broker=bool(os.environ.get(CELERY_BROKER_VAR)),
            has_celery_backend=bool(os.environ.get(CELERY_BACKEND_VAR)),
        )


MAX_CELLS_VAR = "PGDATAHUB_MAX_CELLS"
MAX_COLUMNS_VAR = "PGDATAHUB_MAX_COLUMNS"
MAX_LINE_MB_VAR = "PGDATAHUB_MAX_LINE_MB"
MAX_READ_MEMORY_MB_VAR = "PGDATAHUB_MAX_READ_MEMORY_MB"


@dataclass(frozen=True)
class ReadLimits:
    """How much one file may ask of the reader; a file over a limit fails alone, before the
    expensive work, naming the limit and the variable that raises it."""

    #: Cells of the sheet read from a workbook (its rows × columns); calamine holds them all
    #: at once, about 100 bytes each.
    max_cells: int = 20_000_000
    #: Columns of a file. PostgreSQL holds at most 1,600 per table.
    max_columns: int = 1_600
    #: Bytes of one line (one row, quoted line breaks included) of delimited text.
    max_line_bytes: int = 64 * 1024 * 1024
    #: Memory of the process that reads workbooks (its data: heap and private mappings), which
    #: catches what ``max_cells`` cannot see before reading: repeated ods cells, xls and xlsb
    #: sheets, a false declared dimension.
    max_read_memory_bytes: int = 1024 * 1024 * 1024

    @classmethod
    def from_env(cls) -> ReadLimits:
        defaults = cls()
        return cls(
            max_cells=int(_positive(MAX_CELLS_VAR, defaults.max_cells, whole=True)),
            max_columns=int(_positive(MAX_COLUMNS_VAR, defaults.max_columns, whole=True)),
            max_line_bytes=int(
                _positive(MAX_LINE_MB_VAR, defaults.max_line_bytes / 2**20, whole=False) * 2**20
            ),
            max_read_memory_bytes=int(
                _positive(MAX_READ_MEMORY_MB_VAR, defaults.max_read_memory_bytes / 2**20, whole=False) * 2**20
            ),
        )


SNAPSHOT_RETENTION_VAR = "PGDATAHUB_SNAPSHOT_RETENTION_DAYS"


def snapshot_retention() -> timedelta:
    """How long a DuckLake's snapshots stay readable (time travel) before compaction expires
    them and deletes the files only they use."""
    return timedelta(days=_positive(SNAPSHOT_RETENTION_VAR, 7, whole=False))


def last_tables_path(database_url: str) -> Path | None:
    """Where the code location keeps the tables it last read from this warehouse's ledger, to
    declare them when the warehouse cannot be read while it loads: a file per warehouse under
    ``DAGSTER_HOME`` (``None`` without one: an ephemeral instance keeps nothing)."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return None
    warehouse = hashlib.sha256(redact_url(database_url).encode()).hexdigest()[:16]
    return Path(home) / "pgdatahub" / f"tables-{warehouse}.json"


def _positive(name: str, default: float, *, whole: bool) -> float:
    """A positive (``whole``) number from the environment; anything else is a broken
    configuration, which stops the run."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (0 < value < float("inf") and (value.is_integer() or not whole)):
        kind = "a positive whole number" if whole else "a positive number"
        raise ConfigError(f"{name} must be {kind}, not {text!r}")
    return value


@dataclass(frozen=True)
class DriveSettings:
    """Google Drive: which folders, which credentials, how hard to retry."""

    folder_ids: list[str]
    credentials_file: Path | None
    api_endpoint: str | None
    num_retries: int
    chunk_bytes: int
    #: The work budget of one Drive sensor tick, when it differs from every sensor's
    #: (``SensorSettings.tick_seconds``).
    tick_seconds: float | None
    #: A plain OAuth access token for a Drive emulator (never refreshed); only with an
    #: ``api_endpoint``, and in place of any credentials file.
    access_token: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.folder_ids) and (self.credentials_file is not None or self.access_token is not None)

    @classmethod
    def from_env(cls) -> DriveSettings:
        folders = os.environ.get("PGDATAHUB_DRIVE_FOLDER_ID", "")
        credentials = os.environ.get("PGDATAHUB_DRIVE_CREDENTIALS") or os.environ.get(
            "GOOGLE_APPLICATION_CREDENTIALS"
        )
        return cls(
            folder_ids=[part.strip() for part in folders.replace(" ", ",").split(",") if part.strip()],
            credentials_file=Path(credentials) if credentials else None,
            api_endpoint=os.environ.get("PGDATAHUB_DRIVE_API_ENDPOINT") or None,
            num_retries=int(os.environ.get("PGDATAHUB_DRIVE_RETRIES", "5")),
            chunk_bytes=int(float(os.environ.get("PGDATAHUB_DRIVE_CHUNK_MB", "8")) * 1024 * 1024),
            tick_seconds=float(tick) if (tick := os.environ.get("PGDATAHUB_DRIVE_TICK_SECONDS")) else None,
            access_token=os.environ.get("PGDATAHUB_DRIVE_ACCESS_TOKEN") or None,
        )


@dataclass(frozen=True)
class S3Settings:
    """Credentials for a DuckLake whose data is on S3 (or an S3-compatible store), from the
    variables every AWS tool reads; without a key, the bucket is read and written unsigned."""

    key_id: str | None
    secret: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    #: ``host:port`` of a store other than AWS (MinIO, moto), from ``AWS_ENDPOINT_URL_S3`` or
    #: ``AWS_ENDPOINT_URL``; ``None``: AWS itself.
    endpoint: str | None = None
    use_ssl: bool = True

    @property
    def secrets(self) -> list[str]:
        """The values no message may show."""
        return [value for value in (self.secret, self.session_token) if value]

    @classmethod
    def from_env(cls) -> S3Settings:
        endpoint_url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
        endpoint = urlsplit(endpoint_url) if "://" in endpoint_url else None
        return cls(
            key_id=os.environ.get("AWS_ACCESS_KEY_ID") or None,
            secret=os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None,
            endpoint=endpoint.netloc if endpoint else (endpoint_url or None),
            use_ssl=endpoint is None or endpoint.scheme.lower() != "http",
        )


@dataclass(frozen=True)
class GmailSettings:
    """Gmail: which credentials, whose mailbox, how hard to retry. What to import comes from
    the ``gmail:`` block of the folder mapping."""

    credentials_file: Path | None
    #: The mailbox a service account reads by domain-wide delegation (its user's address).
    subject: str | None
    api_endpoint: str | None
    num_retries: int
    #: A plain OAuth access token for a Gmail emulator (never refreshed); only with an
    #: ``api_endpoint``, and in place of any credentials file.
    access_token: str | None = None

    @property
    def configured(self) -> bool:
        return self.credentials_file is not None or self.access_token is not None

    @classmethod
    def from_env(
        cls,
        *,
        credentials_file: str | None = None,
        subject: str | None = None,
        api_endpoint: str | None = None,
    ) -> GmailSettings:
        """Explicit values win, then the environment."""
        credentials = (
            credentials_file
            or os.environ.get("PGDATAHUB_GMAIL_CREDENTIALS")
            or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        )
        return cls(
            credentials_file=Path(credentials) if credentials else None,
            subject=subject or os.environ.get("PGDATAHUB_GMAIL_SUBJECT") or None,
            api_endpoint=api_endpoint or os.environ.get("PGDATAHUB_GMAIL_API_ENDPOINT") or None,
            num_retries=int(_positive("PGDATAHUB_GMAIL_RETRIES", 5, whole=True)),
            access_token=os.environ.get("PGDATAHUB_GMAIL_ACCESS_TOKEN") or None,
        )


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
#: Connection parameters that hold secrets (libpq's ``password`` and ``sslpassword``).
_SECRET_PARAMETERS = ("password", "sslpassword")
_HIDDEN = "***"


def url_scheme(url: str) -> str | None:
    """The lower-cased scheme of a URL; ``None`` for a string without one (a libpq
    ``key=value`` connection string)."""
    match = _SCHEME.match(url)
    return match.group(1).lower() if match else None


def postgres_conninfo(url: str) -> str | None:
    """What psycopg reads for a PostgreSQL database URL: ``postgresql://…`` or
    ``postgres://…`` (a SQLAlchemy driver suffix such as ``postgresql+psycopg2://`` dropped,
    which means nothing to psycopg), or a libpq ``host=… dbname=…`` string; ``None`` for any
    other URL."""
    scheme = url_scheme(url)
    if scheme is None:
        return url if "=" in url else None
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        return "postgresql://" + url.split("://", 1)[1]
    return None


def redact_url(url: str) -> str:
    """The database URL without its secrets, fit for logs, metadata and error messages.

    A PostgreSQL URL or ``key=value`` string is read by psycopg's own parser, so the password
    is found in every form psycopg accepts (in the user info, percent-encoded or not, in the
    query string, as ``password=…``), and shown as ``***``. A string psycopg cannot read is
    not shown at all: where its password ends is anybody's guess.
    """
    scheme = url_scheme(url)
    if scheme is not None and scheme.startswith("ducklake+"):
        # A DuckLake whose catalog is in PostgreSQL: that URL, without the lake's own
        # parameters (its data folder and catalog schema, which psycopg would not read).
        parts = urlsplit(url)
        libpq = [
            (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("data", "schema")
        ]
        catalog = urlunsplit(
            (scheme.removeprefix("ducklake+"), parts.netloc, parts.path, urlencode(libpq), "")
        )
        return "ducklake+" + redact_url(catalog)
    conninfo = postgres_conninfo(url)
    if conninfo is None:
        # A DuckDB or DuckLake URL is a file path, with nowhere to hold a secret.
        return url if scheme in ("duckdb", "ducklake") else f"{scheme or 'database'}://{_HIDDEN}"
    # Imported here: the workbook reader's process reads its limits from this module, and
    # psycopg would be a quarter of what it imports at its start.
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        parameters = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return f"postgresql://{_HIDDEN}"
    return _display_url({k: str(v) for k, v in parameters.items() if v is not None})


def _display_url(parameters: dict[str, str]) -> str:
    """A ``postgresql://`` URL of connection parameters, with every secret as ``***``."""
    rest = {key: (_HIDDEN if key in _SECRET_PARAMETERS else value) for key, value in parameters.items()}
    user, password = rest.pop("user", ""), rest.pop("password", "")
    host, port = rest.get("host", ""), rest.get("port", "")
    netloc = ""
    # One plain host and port read best in the URL; a socket path or a host list stays a parameter.
    if host and "/" not in host and "," not in host and (port.isdigit() or not port):
        netloc = f"[{host}]" if ":" in host else host
        netloc += f":{port}" if port else ""
        rest.pop("host")
        rest.pop("port", None)
    if user or password:
        netloc = quote(user, safe="") + (f":{password}" if password else "") + "@" + netloc
    path = "/" + quote(rest.pop("dbname"), safe="") if "dbname" in rest else ""
    query = "?" + urlencode(rest, safe="/*,:") if rest else ""
    return f"postgresql://{netloc}{path}{query}"
