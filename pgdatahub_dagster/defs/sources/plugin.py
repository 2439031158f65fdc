"""What a source module of the Dagster layer provides: a resource that builds the engine's
``Source``, and a ``SourcePlugin`` naming it. ``factory.py`` turns each plugin into its
partitions, import asset, job and sensor; ``definitions.py`` lists the plugins."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from dagster import ConfigurableResource

from pgdatahub_dagster.engine.sources import Source, SourceState


class SourceResource(ConfigurableResource["SourceResource"]):
    """A source's configuration, defaulting to the environment (read in engine/settings.py),
    so that no secret needs to be written into resource config, where the UI would show it."""

    def unconfigured(self) -> str | None:
        """Why the source cannot be followed at all (nothing configured), for the sensor to
        skip with; ``None`` when it can."""
        return None

    @abstractmethod
    def source(self, state: SourceState) -> Source:
        """The engine's source, keeping its private state behind ``state``."""


@dataclass(frozen=True)
class FullSync:
    """The names of a source's full-sync asset (one run: every file, ``on_delete`` for the
    gone) and of the job its sensor asks for when ``Changes.full_sync`` is set."""

    asset_name: str
    job_name: str


@dataclass(frozen=True)
class SourcePlugin:
    """One source as the code location sees it. The Dagster names derive from ``name`` unless
    given (the names of existing instances' history must not change)."""

    #: ``Source.name``: the ledger's ``source`` column, the ``pgdatahub/source`` run tag.
    name: str
    #: The resource key, and the resource used when ``build_defs`` is given none for it.
    resource_key: str
    default_resource: Callable[[], SourceResource]
    #: The import asset's UI group, kinds and description.
    group_name: str
    description: str
    kinds: frozenset[str] = field(default_factory=frozenset)
    asset_name: str = ""  # default: <name>_spreadsheets
    partitions_name: str = ""  # default: <name>_files
    job_name: str = ""  # default: import_<name>_files
    sensor_name: str = ""  # default: <name>_sensor
    #: Only sources that can be synced whole in one run have a full-sync asset.
    full_sync: FullSync | None = None

    def __post_init__(self) -> None:
        derived = {
            "asset_name": f"{self.name}_spreadsheets",
            "partitions_name": f"{self.name}_files",
            "job_name": f"import_{self.name}_files",
            "sensor_name": f"{self.name}_sensor",
        }
        for attribute, default in derived.items():
            if not getattr(self, attribute):
                object.__setattr__(self, attribute, default)
