"""The folder mapping: which table, sheet and key each folder's files use.

The YAML file mirrors the folder tree. A key is either a setting or a sub-folder (a key
whose value is a mapping); settings are inherited by sub-folders::

    default_sheet: Sheet1
    leads:
      table: leads
      sheet: Leads
      unique_key: [business_name, address, phone]
    reports:
      sheet: Data

Errors name the offending key and its line, and stop start-up.

The top-level key ``gmail`` is the Gmail block instead: one entry per Gmail search (a
``query`` and the settings of a folder for its attachments), whose files live in the folders
``gmail/<entry>``, and the entry ``messages`` for the messages table (``gmail/messages``,
keyed by ``id``)::

    gmail:
      on_delete: retract
      vendor_reports:
        query: "from:reports@vendor.example has:attachment"
        table: vendor_reports

A folder's table never takes a name of the engine's own tables (``is_engine_name``): a
``table:`` naming one is an error, and a name derived from a folder gets the prefix
``data_`` (folder ``etl_imports`` → table ``data_etl_imports``). Two folders of a tree
that would load into one table by accident (``Leads`` and ``leads``) are found by
``FolderTables``; only folders that each name the table with ``table:`` share it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import phonenumbers
import yaml

from pgdatahub_dagster.engine.errors import ConfigError, FileImportError
from pgdatahub_dagster.engine.normalise.columns import clean_identifier
from pgdatahub_dagster.engine.warehouse.base import ENGINE_PREFIX, ENGINE_TABLES, is_engine_name

FOLDER_SETTINGS = ("table", "sheet", "unique_key", "header_row", "phone_region", "on_delete", "prefer")
ON_DELETE_CHOICES = ("keep", "retract")
#: Whose values a row shows when files holding its key disagree (``ownership.py``).
PREFER_CHOICES = ("newest", "oldest")
TOP_LEVEL_SETTINGS = ("default_sheet",)
#: The top-level key of the Gmail block, and the folder its files live in (``GMAIL_ROOT/…``).
GMAIL_ROOT = "gmail"
#: The Gmail block's entry for the messages table: every message that matches a query.
GMAIL_MESSAGES = "messages"
#: What the Gmail block itself, and its ``messages`` entry, may set.
GMAIL_BLOCK_SETTINGS = ("on_delete", "prefer")
GMAIL_MESSAGES_SETTINGS = ("table", "on_delete", "prefer")
DEFAULT_PHONE_REGION = "US"
#: What a table name derived from a folder gets in front when it is one of the engine's.
RENAMED_TABLE_PREFIX = "data_"


def _value(node: yaml.Node) -> Any:
    """The plain Python value of a composed YAML node (kept for its line number)."""
    return yaml.SafeLoader("").construct_object(node, deep=True)


@dataclass(frozen=True)
class FolderSettings:
    """The resolved settings of one folder."""

    table: str
    #: Whether a ``table:`` setting names the table (else it comes from the folder's name):
    #: only folders that each name a table may share it.
    table_named: bool = False
    sheet: str | None = None
    default_sheet: str | None = None
    # None: the key is all user columns; (): no row-level de-duplication.
    unique_key: tuple[str, ...] | None = None
    header_row: int | None = None
    phone_region: str = DEFAULT_PHONE_REGION
    #: What a deleted or trashed file does to its rows: ``keep`` them, or ``retract`` them.
    on_delete: str = "keep"
    #: Where files sharing a row key disagree on its other columns, the row shows the values
    #: of the ``newest`` file (latest modification time) or the ``oldest``; then the smaller path.
    prefer: str = "newest"

    def read_as(self) -> str:
        """The settings that decide which rows a file gives, as one short text for the ledger:
        a file imported under others is read again (its bytes may give other rows now)."""
        key = "*" if self.unique_key is None else ",".join(self.unique_key)
        return (
            f"sheet={self.sheet or ''};default_sheet={self.default_sheet or ''};key={key};"
            f"header_row={self.header_row or ''};phone_region={self.phone_region}"
        )


_KEY_IN_READ_AS = re.compile(r";key=([^;]*);header_row=")


def unique_key_read_as(read_as: str) -> tuple[str, ...] | None:
    """The ``unique_key`` a ledger row's ``read_as`` records (``FolderSettings.read_as``):
    ``None`` for all user columns, ``()`` for none."""
    found = _KEY_IN_READ_AS.search(read_as)
    key = found[1] if found else "*"
    if key == "*":
        return None
    return tuple(key.split(",")) if key else ()


@dataclass(frozen=True)
class GmailQuery:
    """One entry of the Gmail block: the messages its Gmail search finds, whose spreadsheet
    attachments load into the entry's table."""

    name: str
    query: str


@dataclass
class _Node:
    settings: dict[str, Any] = field(default_factory=dict)
    children: dict[str, _Node] = field(default_factory=dict)


@dataclass
class FolderMapping:
    root: _Node = field(default_factory=_Node)
    default_sheet: str | None = None
    origin: str = "(no mapping file)"
    #: The sha256 of the mapping's text ("" without a mapping file): sensors compare it to
    #: notice an edited mapping.
    digest: str = ""
    #: The Gmail block's queries, in the mapping's order (the first that finds a message
    #: chooses its attachments' table).
    gmail_queries: list[GmailQuery] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path | None) -> FolderMapping:
        if path is None:
            return cls()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"{path}: cannot read the folder mapping: {error.strerror}") from None
        return cls.parse(text, origin=str(path))

    @classmethod
    def parse(cls, text: str, origin: str = "<mapping>") -> FolderMapping:
        try:
            document = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error)
            raise ConfigError(f"{origin}{where}: not valid YAML: {problem}") from None
        mapping = cls(origin=origin, digest=hashlib.sha256(text.encode()).hexdigest())
        if document is None:
            return mapping
        if not isinstance(document, yaml.MappingNode):
            raise ConfigError(
                f"{origin} line {document.start_mark.line + 1}: the top level must be a mapping"
            )
        mapping._fill(mapping.root, document, top_level=True)
        return mapping

    def _error(self, node: yaml.Node, message: str) -> ConfigError:
        return ConfigError(f"{self.origin} line {node.start_mark.line + 1}: {message}")

    def _fill(self, target: _Node, node: yaml.MappingNode, top_level: bool) -> None:
        for key_node, value_node in node.value:
            # The key's own text: a folder named 01 must not become the number 1.
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(_value(key_node))
            if top_level and key in TOP_LEVEL_SETTINGS:
                self.default_sheet = self._string(key, value_node)
            elif top_level and key == GMAIL_ROOT and isinstance(value_node, yaml.MappingNode):
                self._fill_gmail(target.children.setdefault(GMAIL_ROOT, _Node()), value_node)
            elif key in FOLDER_SETTINGS:
                target.settings[key] = self._setting(key, value_node)
            elif isinstance(value_node, yaml.MappingNode):
                child = target
                for part in (p for p in key.split("/") if p):
                    child = child.children.setdefault(part, _Node())
                self._fill(child, value_node, top_level=False)
            else:
                allowed = ", ".join(FOLDER_SETTINGS + (TOP_LEVEL_SETTINGS if top_level else ()))
                raise self._error(
                    key_node,
                    f"unknown key {key!r}: a key is either a setting ({allowed}) "
                    "or a folder name whose value is a mapping",
                )

    def _fill_gmail(self, target: _Node, node: yaml.MappingNode) -> None:
        """The Gmail block: ``on_delete`` and ``prefer`` for all of it, the optional entry
        ``messages`` (the messages table), and one entry per query, each a ``query`` and the
        settings of a folder. Its files live in the folders ``gmail/<entry>``."""
        # The messages table is keyed by message id, whatever else is inherited.
        messages = target.children.setdefault(GMAIL_MESSAGES, _Node({"unique_key": ("id",)}))
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(_value(key_node))
            if key in GMAIL_BLOCK_SETTINGS:
                target.settings[key] = self._setting(key, value_node)
            elif not isinstance(value_node, yaml.MappingNode):
                raise self._error(
                    key_node,
                    f"unknown key {key!r} in the gmail block: a key is {' or '.join(GMAIL_BLOCK_SETTINGS)}, "
                    "messages, or a name whose value is a query and its settings",
                )
            elif key == GMAIL_MESSAGES:
                messages.settings.update(
                    self._entry(value_node, GMAIL_MESSAGES_SETTINGS, "the messages table")
                )
            else:
                settings = self._entry(value_node, (*FOLDER_SETTINGS, "query"), f"gmail entry {key!r}")
                if "query" not in settings:
                    raise self._error(
                        key_node, f"gmail entry {key!r} needs a query, e.g. query: has:attachment"
                    )
                self.gmail_queries.append(GmailQuery(key, settings.pop("query")))
                target.children[key] = _Node(settings)

    def _entry(self, node: yaml.MappingNode, allowed: Sequence[str], what: str) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value if isinstance(key_node, yaml.ScalarNode) else _value(key_node))
            if key not in allowed:
                raise self._error(
                    key_node, f"unknown key {key!r} for {what}: allowed are {', '.join(allowed)}"
                )
            settings[key] = (
                self._string(key, value_node) if key == "query" else self._setting(key, value_node)
            )
        return settings

    def _string(self, key: str, node: yaml.Node) -> str:
        value = _value(node)
        if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
            raise self._error(node, f"{key} must be a non-empty text")
        return str(value)

    def _setting(self, key: str, node: yaml.Node) -> Any:
        value = _value(node)
        if key in ("table", "sheet"):
            text = self._string(key, node)
            if key == "table":
                table = clean_identifier(text)
                if not table:
                    raise self._error(node, f"table {text!r} has no letters or digits to name a table with")
                if is_engine_name(table):
                    raise self._error(
                        node,
                        f"table {text!r}: {table} is a name the engine keeps for its own tables "
                        f"({', '.join(ENGINE_TABLES)}, their sequences and indexes, and every name "
                        f"starting with {ENGINE_PREFIX}); choose another",
                    )
                return table
            return text
        if key == "unique_key":
            if value is None or (isinstance(value, str) and value.lower() == "none"):
                return ()
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                raise self._error(node, "unique_key must be a list of column names, or none")
            return tuple(clean_identifier(v) for v in value)
        if key == "header_row":
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise self._error(node, "header_row must be a row number, 1 for the first row")
            return value
        if key in ("on_delete", "prefer"):
            choices = ON_DELETE_CHOICES if key == "on_delete" else PREFER_CHOICES
            choice = self._string(key, node).lower()
            if choice not in choices:
                raise self._error(node, f"{key} must be one of {', '.join(choices)}, not {choice!r}")
            return choice
        # phone_region
        region = self._string(key, node).upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise self._error(
                node, f"phone_region {region!r} is not a known region code such as US, GB or DE"
            )
        return region

    def settings_for(self, folder: Sequence[str], root_name: str) -> FolderSettings:
        """The settings of a folder (parts relative to the source root), inherited downwards."""
        merged = dict(self.root.settings)
        node: _Node | None = self.root
        for part in folder:
            node = node.children.get(part) if node is not None else None
            if node is None:
                break
            merged.update(node.settings)
        named = merged.pop("table", None)
        return FolderSettings(
            table=named or default_table_name(folder, root_name),
            table_named=named is not None,
            default_sheet=self.default_sheet,
            **merged,
        )

    def tables_for(self, folders: Iterable[tuple[str, Sequence[str]]]) -> FolderTables:
        """The tables of a tree's folders, each given as its root's name and its path below
        the root, to find folders that would share a table by accident."""
        return FolderTables(self, folders)


def default_table_name(folder: Sequence[str], root_name: str) -> str:
    """The cleaned folder path joined by ``_``; files at the root use the root's name. A
    name the engine keeps for itself gets the prefix ``data_``."""
    parts = [clean_identifier(part) for part in folder] or [clean_identifier(root_name)]
    table = clean_identifier("_".join(p for p in parts if p)) or "spreadsheets"
    return clean_identifier(RENAMED_TABLE_PREFIX + table) if is_engine_name(table) else table


class TableCollisionError(FileImportError):
    """The file's folder would load into the same table as another folder of the tree."""


#: A folder of a tree: its root's name and its path below the root.
_Folder = tuple[str, tuple[str, ...]]


def _label(folder: _Folder) -> str:
    return "/".join((folder[0], *folder[1]))


class FolderTables:
    """Which folders of one tree load into each table.

    Cleaning folder names into table names folds case and accents and cuts names at 63
    bytes, so ``Leads`` and ``leads``, ``café`` and ``cafe``, or two long names that agree
    in their first 63 bytes would load into one table and mix their rows. A folder may share
    its table with another only when both name it with a ``table:`` setting.
    """

    def __init__(self, mapping: FolderMapping, folders: Iterable[tuple[str, Sequence[str]]]) -> None:
        self._mapping = mapping
        self._folders: dict[str, dict[_Folder, bool]] = {}
        for root_name, parts in folders:
            settings = mapping.settings_for(parts, root_name)
            self._folders.setdefault(settings.table, {})[(root_name, tuple(parts))] = settings.table_named

    def check(self, source_file: str, root_name: str, folder: Sequence[str]) -> None:
        """Raise ``TableCollisionError`` when the file's folder would share its table with
        another folder of the tree, and not both of them name that table."""
        here: _Folder = (root_name, tuple(folder))
        settings = self._mapping.settings_for(folder, root_name)
        for other, other_named in sorted(self._folders.get(settings.table, {}).items()):
            if other != here and not (settings.table_named and other_named):
                raise TableCollisionError(
                    source_file,
                    f"folders {_label(here)!r} and {_label(other)!r} would both load into table "
                    f"{settings.table} and mix their rows; nothing was imported from this file. "
                    f"Give one of them another table (table: in the folder mapping) or rename it; "
                    f"to load both into {settings.table} on purpose, give each of them "
                    f"table: {settings.table}",
                )
