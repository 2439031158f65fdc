"""Where a run's steps execute, chosen by the environment.

Unset, ``PGDATAHUB_EXECUTOR`` keeps Dagster's default executor: each step in a process of its
own next to the run. ``PGDATAHUB_EXECUTOR=celery`` sends every step to Celery workers through
``PGDATAHUB_CELERY_BROKER``, with results coming back through ``PGDATAHUB_CELERY_BACKEND``;
start the workers with ``deploy/celery/worker.yaml``, which reads the same two variables
(docs/deployment.md). The URLs stay in the environment, resolved in the run's own process:
they may hold passwords, and executor config written here would be shown by the UI.
"""

import os

from dagster import ExecutorDefinition

EXECUTOR_ENV = "PGDATAHUB_EXECUTOR"
CELERY_BROKER_ENV = "PGDATAHUB_CELERY_BROKER"
CELERY_BACKEND_ENV = "PGDATAHUB_CELERY_BACKEND"

#: dagster-celery's own default result backend, which works with an AMQP broker (RabbitMQ) only.
DEFAULT_CELERY_BACKEND = "rpc://"

_DEFAULT_NAMES = {"", "default", "multiprocess"}


def executor_from_env() -> ExecutorDefinition | None:
    """The Celery executor when ``PGDATAHUB_EXECUTOR=celery``, ``None`` (Dagster's default)
    when it is unset or ``default``. Anything else stops the code location from loading,
    rather than silently running every import somewhere unintended."""
    choice = os.environ.get(EXECUTOR_ENV, "").strip().lower()
    if choice in _DEFAULT_NAMES:
        return None
    if choice == "celery":
        return celery_executor_from_env()
    raise ValueError(f"{EXECUTOR_ENV}={choice!r} is not an executor: use 'celery', or leave it unset")


def celery_executor_from_env() -> ExecutorDefinition:
    try:
        from dagster_celery import celery_executor
    except ImportError as error:
        raise ImportError(
            f"{EXECUTOR_ENV}=celery needs dagster-celery: pip install 'pgdatahub_dagster[deploy]'"
        ) from error
    if not os.environ.get(CELERY_BROKER_ENV):
        raise ValueError(
            f"{EXECUTOR_ENV}=celery needs {CELERY_BROKER_ENV}: the URL of the broker the Celery "
            "workers listen to, e.g. redis://redis:6379/0"
        )
    # {"env": …} makes Dagster read the variables when a run starts, so neither URL is part
    # of the definitions the UI displays.
    backend: str | dict[str, str] = (
        {"env": CELERY_BACKEND_ENV} if os.environ.get(CELERY_BACKEND_ENV) else DEFAULT_CELERY_BACKEND
    )
    executor: ExecutorDefinition = celery_executor.configured(
        {"broker": {"env": CELERY_BROKER_ENV}, "backend": backend}, name="celery"
    )
    return executor
