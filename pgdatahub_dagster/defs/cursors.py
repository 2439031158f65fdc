"""Sensor cursors: small JSON documents that Dagster stores between ticks."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from pgdatahub_dagster.engine.sources.drive import ScanState
from pgdatahub_dagster.engine.sources.local import LocalFileState


@dataclass
class LocalFolderCursor:
    changed_ns: int = 0
    handled_at_changed_ns: list[str] = field(default_factory=list)
    #: The digest of the folder mapping the files were handled under (``FolderMapping.digest``).
    mapping: str | None = None

    @classmethod
    def from_json(cls, text: str | None) -> LocalFolderCursor:
        return cls(**json.loads(text)) if text else cls()

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    def is_unhandled(self, state: LocalFileState) -> bool:
        if state.changed_ns != self.changed_ns:
            return state.changed_ns > self.changed_ns
        return state.file.file_id not in self.handled_at_changed_ns

    def advance(self, state: LocalFileState) -> None:
        if state.changed_ns != self.changed_ns:
            self.changed_ns, self.handled_at_changed_ns = state.changed_ns, []
        self.handled_at_changed_ns.append(state.file.file_id)


def drive_state_from_json(text: str | None) -> ScanState:
    """The Drive sensor's cursor: the Changes API page tokens, whether a walk of the tree is
    still going on (the registry knows which folders are left), and the tick count."""
    return ScanState(**json.loads(text)) if text else ScanState()


def drive_state_to_json(state: ScanState) -> str:
    return state.to_json()
