"""Drive folders resolve their tables through the folder mapping as local folders do:
engine names are renamed, folders that would share a table by accident fail."""

from __future__ import annotations

from pgdatahub_dagster.engine.importer import Importer
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.sources.drive import (
    DriveClient,
    DriveScanner,
    DriveSource,
    FolderRegistry,
    ScanState,
)
from pgdatahub_dagster.engine.warehouse import Warehouse
from pgdatahub_dagster.testing.drive_server import DriveTestServer


def _import(
    client: DriveClient, registry: FolderRegistry, warehouse: Warehouse, root: str, state: ScanState
) -> tuple[dict[str, str], ScanState]:
    """One tick from ``state``, as the sensor runs it, and the imports of what it found; the
    state the next tick starts from."""
    scan = DriveScanner(client, registry, [root]).scan(state)
    importer = Importer(warehouse, DriveSource(client, registry), FolderMapping())
    results = importer.import_all(sorted(scan.found.values(), key=lambda file: file.path))
    return {r.record.source_file: str(r.record.error or r.record.table_name) for r in results}, scan.state


def test_drive_folders_named_like_engine_tables_and_colliding_folders(
    drive_server: DriveTestServer, client: DriveClient, registry: FolderRegistry, warehouse: Warehouse
) -> None:
    root = drive_server.add_folder("Inbox")
    for name in ("etl_imports", "Leads", "leads", "shop"):
        folder = drive_server.add_folder(name, root)
        drive_server.add_file("a.csv", folder, f"name\n{name}\n".encode())

    outcome, _ = _import(client, registry, warehouse, root, ScanState())

    assert outcome.pop("etl_imports/a.csv") == "data_etl_imports"
    assert outcome.pop("shop/a.csv") == "shop"
    assert outcome == {
        "Leads/a.csv": "Leads/a.csv: folders 'Inbox/Leads' and 'Inbox/leads' would both load into table "
        "leads and mix their rows; nothing was imported from this file. Give one of them another table "
        "(table: in the folder mapping) or rename it; to load both into leads on purpose, give each of "
        "them table: leads",
        "leads/a.csv": "leads/a.csv: folders 'Inbox/leads' and 'Inbox/Leads' would both load into table "
        "leads and mix their rows; nothing was imported from this file. Give one of them another table "
        "(table: in the folder mapping) or rename it; to load both into leads on purpose, give each of "
        "them table: leads",
    }
    assert warehouse.fetchall("SELECT name FROM data_etl_imports") == [("etl_imports",)]
    assert not warehouse.table_exists("leads")


def test_a_drive_folder_renamed_to_another_spelling_is_no_collision(
    drive_server: DriveTestServer, client: DriveClient, registry: FolderRegistry, warehouse: Warehouse
) -> None:
    """The ledger still has the old paths (``Leads/…``); only the tree counts."""
    root = drive_server.add_folder("Inbox")
    folder = drive_server.add_folder("Leads", root)
    drive_server.add_file("a.csv", folder, b"name\nAcme\n")
    first, state = _import(client, registry, warehouse, root, ScanState())
    assert first == {"Leads/a.csv": "leads"}

    drive_server.rename(folder, "leads")
    drive_server.add_file("b.csv", folder, b"name\nBlue\n")
    second, _ = _import(client, registry, warehouse, root, state)
    assert second == {"leads/a.csv": "leads", "leads/b.csv": "leads"}
    assert warehouse.fetchall("SELECT name FROM leads ORDER BY name") == [("Acme",), ("Blue",)]
