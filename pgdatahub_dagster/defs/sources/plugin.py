"""What a source module of the Dagster layer provides: a resource that builds the engine's
``Source``, and a ``SourcePlugin`` naming it. ``factory.py`` turns each plugin into its
partitions, import asset, job and sensor; ``definitions.py`` lists the plugins."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

from dagster import ConfigurableResource, DagsterInstance, DynamicPartitionsDefinition

from pgdatahub_dagster.defs.partitions import file_id_for
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.sources import Source, SourceState
from pgdatahub_dagster.engine.warehouse import Warehouse


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
    #: What the source holds, for descriptions: "the local folder tree".
    label: str
    #: The import asset's UI group and kinds.
    group_name: str
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

    @property
    def partitions_def(self) -> DynamicPartitionsDefinition:
        """One partition per file (the key: ``partition_key_for(file_id)``)."""
        return DynamicPartitionsDefinition(name=self.partitions_name)


class DagsterSourceState(SourceState):
    """A source's state as Dagster keeps it: the files reported are its partitions, and the
    warehouse is opened by ``open_warehouse`` at the first call (a sensor opens it only for a
    source that keeps tables there, a run passes the one it has open)."""

    def __init__(
        self,
        instance: DagsterInstance,
        plugin: SourcePlugin,
        mapping: Callable[[], FolderMapping],
        open_warehouse: Callable[[], Warehouse],
    ) -> None:
        self._instance = instance
        self._plugin = plugin
        self._mapping = cache(mapping)
        self._warehouse = cache(open_warehouse)
        self._partition_keys: frozenset[str] | None = None

    def partition_keys(self) -> frozenset[str]:
        """The source's partitions, read once: a sensor asks for them twice a tick, and with
        100,000 files one read takes about 0.3 s."""
        if self._partition_keys is None:
            self._partition_keys = frozenset(
                self._instance.get_dynamic_partitions(self._plugin.partitions_name)
            )
        return self._partition_keys

    def known_file_ids(self) -> set[str]:
        return {file_id_for(key) for key in self.partition_keys()}

    def warehouse(self) -> Warehouse:
        return self._warehouse()

    def mapping(self) -> FolderMapping:
        return self._mapping()
