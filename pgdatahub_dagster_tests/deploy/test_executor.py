"""Executor selection from the environment (its use by real workers: test_celery.py)."""

from __future__ import annotations

import pytest
from dagster import Definitions, ExecutorDefinition
from dagster._serdes import serialize_value

from pgdatahub_dagster.definitions import build_defs
from pgdatahub_dagster.defs.executor import executor_from_env
from pgdatahub_dagster.defs.resources import FolderMappingResource, WarehouseResource
from pgdatahub_dagster.defs.sources.drive import DriveResource
from pgdatahub_dagster.defs.sources.local import LocalFolderResource

SECRET_BROKER = "redis://:s3cret-broker-password@redis.internal:6379/0"
SECRET_BACKEND = "db+postgresql+psycopg2://celery:s3cret-backend-password@db.internal/celery"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PGDATAHUB_EXECUTOR", "PGDATAHUB_CELERY_BROKER", "PGDATAHUB_CELERY_BACKEND"):
        monkeypatch.delenv(name, raising=False)


def _defs() -> Definitions:
    return build_defs(
        {
            "warehouse": WarehouseResource(),
            "folder_mapping": FolderMappingResource(),
            "local_folder": LocalFolderResource(),
            "drive": DriveResource(),
        }
    )


@pytest.mark.parametrize("value", [None, "", "in_process"])
def test_unset_runs_steps_in_the_runs_own_process(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is not None:
        monkeypatch.setenv("PGDATAHUB_EXECUTOR", value)
    job = _defs().resolve_job_def("import_local_files")
    assert job.executor_def.name == "in_process"


@pytest.mark.parametrize("value", ["default", "Multiprocess"])
def test_multiprocess_keeps_dagsters_default_executor(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("PGDATAHUB_EXECUTOR", value)
    assert executor_from_env() is None
    job = _defs().resolve_job_def("import_local_files")
    assert job.executor_def.name == "multi_or_in_process_executor"


def test_celery_is_used_by_every_job_and_keeps_the_urls_out_of_the_definitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGDATAHUB_EXECUTOR", "celery")
    monkeypatch.setenv("PGDATAHUB_CELERY_BROKER", SECRET_BROKER)
    monkeypatch.setenv("PGDATAHUB_CELERY_BACKEND", SECRET_BACKEND)
    executor = executor_from_env()
    assert isinstance(executor, ExecutorDefinition)
    assert executor.name == "celery"

    jobs = _defs().resolve_all_job_defs()
    assert "import_local_files" in {job.name for job in jobs}
    for job in jobs:  # the sensors' jobs and the implicit one behind `dagster asset materialize`
        assert job.executor_def.name == "celery"
        # What the UI and the run storage see of the job: neither URL, nor any password.
        snapshot = serialize_value(job.get_job_snapshot())
        assert "s3cret" not in snapshot
        assert "redis.internal" not in snapshot


def test_celery_without_a_broker_stops_the_code_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGDATAHUB_EXECUTOR", "celery")
    with pytest.raises(ValueError, match="PGDATAHUB_CELERY_BROKER"):
        executor_from_env()


def test_an_unknown_executor_stops_the_code_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGDATAHUB_EXECUTOR", "k8s")
    with pytest.raises(ValueError, match="PGDATAHUB_EXECUTOR='k8s'"):
        executor_from_env()
