"""Runs whose process died give their slots of the ``warehouse`` pool back.

A run killed by ``kill -9`` or the OOM killer cannot release its pool slot, and stays
STARTED; without the daemon's run monitoring (``dagster asset materialize`` runs none) every
later run waits for that slot for ever. So a run that executes its steps in its own process
records that process as a run tag, and before a run asks for its slot it marks failed the runs
of this machine whose process is gone and frees their slots, with Dagster's own calls
(``report_run_failed``, ``free_concurrency_slots_for_run``). Runs recorded on another machine,
and runs whose steps execute in processes of their own (the multiprocess and Celery
executors), are left to the daemon's run monitoring (docs/deployment.md): only it can tell
whether they still run.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

#: ``<machine> <process>``: where the run's steps execute (see ``_machine`` and ``_process``).
PROCESS_TAG = "pgdatahub/process"
_RUNNING = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _machine() -> str:
    """This machine as it is now: its host name, and on Linux its boot and pid namespace (so a
    restarted machine, or a container sharing the host name, is another one)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return "/".join(filter(None, (socket.gethostname(), _read("/proc/sys/kernel/random/boot_id"), namespace)))


def _process(pid: int) -> str | None:
    """A live process: its pid and, on Linux, its start time, so a pid given to a newer process
    is not taken for the old one; ``None`` when no process has that pid."""
    stat = _read(f"/proc/{pid}/stat")
    if stat:
        # Fields 3 and 22 are the state and the start time; the command name before them (in
        # parentheses) may hold spaces. A zombie is a process that has died.
        fields = stat.rsplit(")", 1)[1].split()
        return None if fields[0] == "Z" else f"{pid}:{fields[19]}"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # another user's process, alive
    return str(pid)


def process_tag(pid: int) -> str:
    """The live process ``pid`` as ``PROCESS_TAG`` records it."""
    process = _process(pid)
    if process is None:
        raise ProcessLookupError(pid)
    return f"{_machine()} {process}"


def record_process(instance: DagsterInstance, run: DagsterRun) -> None:
    """Record this process as the run's, if the run executes here (its run worker, whose pid
    the RUN_START event holds, is this process): it then lives exactly as long as the run."""
    started = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_START)
    worker = started[-1].dagster_event.pid if started and started[-1].dagster_event else None
    if worker == os.getpid():
        instance.add_run_tags(run.run_id, {PROCESS_TAG: process_tag(worker)})


def _process_gone(recorded: str) -> bool:
    machine, _, process = recorded.rpartition(" ")
    if machine != _machine():
        return False
    pid = int(process.split(":")[0])
    return _process(pid) != process


def end_crashed_runs(instance: DagsterInstance, current: DagsterRun) -> list[DagsterRun]:
    """Mark failed the running runs of this machine whose process is gone, which would count
    as running for ever (against ``max_concurrent_runs`` too), and free their pool slots;
    returns them."""
    crashed = [
        record.dagster_run
        for record in instance.get_run_records(RunsFilter(statuses=_RUNNING))
        if record.dagster_run.run_id != current.run_id
        and PROCESS_TAG in record.dagster_run.tags
        and _process_gone(record.dagster_run.tags[PROCESS_TAG])
    ]
    for run in crashed:
        instance.report_run_failed(
            run,
            f"Its process ({run.tags[PROCESS_TAG]}) is gone, killed or out of memory; run "
            f"{current.run_id} marked it failed and freed its pool slots. Whatever file it was "
            "importing was rolled back; run the import again to load it.",
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
    return crashed
