"""Where a run's steps execute, chosen by the environment.

Unset (or ``in_process``), ``PGDATAHUB_EXECUTOR`` runs each run's steps inside the run's own
process: every job here is one import step, and a run is already a process of its own, so a
second process per step would only add seconds of start-up to each run.
``PGDATAHUB_EXECUTOR=multiprocess`` keeps Dagster's default (a process per step).
``PGDATAHUB_EXECUTOR=celery`` sends every step to Celery workers through
``PGDATAHUB_CELERY_BROKER``, with results coming back through ``PGDATAHUB_CELERY_BACKEND``;
start the workers with ``deploy/celery/worker.yaml``, which reads the same two variables
(docs/deployment.md). The URLs stay in the environment, resolved in the run's own process:
they may hold passwords, and executor config written here would be shown by the UI.
"""

from dagster import ExecutorDefinition, in_process_executor

from pgdatahub_dagster.engine.settings import (
    CELERY_BACKEND_VAR,
    CELERY_BROKER_VAR,
    EXECUTOR_VAR,
    ExecutorSettings,
)

#: dagster-celery's own default result backend, which works with an AMQP broker (RabbitMQ) only.
DEFAULT_CELERY_BACKEND = "rpc://"

_IN_PROCESS_NAMES = {"", "in_process"}
_DAGSTER_DEFAULT_NAMES = {"default", "multiprocess"}


def executor_from_env() -> ExecutorDefinition | None:
    """In-process when ``PGDATAHUB_EXECUTOR`` is unset, the Celery executor for ``celery``,
    ``None`` (Dagster's multiprocess default) for ``multiprocess``. Anything else stops the
    code location from loading, rather than silently running every import somewhere
    unintended."""
    choice = ExecutorSettings.from_env().choice
    if choice in _IN_PROCESS_NAMES:
        return in_process_executor
    if choice in _DAGSTER_DEFAULT_NAMES:
        return None
    if choice == "celery":
        return celery_executor_from_env()
    raise ValueError(
        f"{EXECUTOR_VAR}={choice!r} is not an executor: use 'celery' or 'multiprocess', or leave it unset"
    )


def celery_executor_from_env() -> ExecutorDefinition:
    try:
        from dagster_celery import celery_executor
    except ImportError as error:
        raise ImportError(
            f"{EXECUTOR_VAR}=celery needs dagster-celery: pip install 'pgdatahub_dagster[deploy]'"
        ) from error
    settings = ExecutorSettings.from_env()
    if not settings.has_celery_broker:
        raise ValueError(
            f"{EXECUTOR_VAR}=celery needs {CELERY_BROKER_VAR}: the URL of the broker the Celery "
            "workers listen to, e.g. redis://redis:6379/0"
        )
    # {"env": …} makes Dagster read the variables when a run starts, so neither URL is part
    # of the definitions the UI displays.
    backend: str | dict[str, str] = (
        {"env": CELERY_BACKEND_VAR} if settings.has_celery_backend else DEFAULT_CELERY_BACKEND
    )
    executor: ExecutorDefinition = celery_executor.configured(
        {"broker": {"env": CELERY_BROKER_VAR}, "backend": backend}, name="celery"
    )
    return executor
