"""One contender in its own interpreter: ``python -m bench.worker NAME PARAMS.json RESULT.json``.

The timing is taken here, around ``run`` only, so interpreter start-up and imports count for
nobody; so is the peak RSS (``peak_rss_mb``), as the parent's ``os.wait4`` cannot tell it: Linux
carries a process's high-water mark across ``exec``, so a worker would report at least the
RSS the bench itself had when it started the worker (3.5 GB after it generated the 5M-row CSV).
"""

from __future__ import annotations

import json
import resource
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path


def main(argv: list[str]) -> int:
    name, params_path, result_path = argv
    from bench.contenders import CONTENDERS

    params = json.loads(Path(params_path).read_text())
    try:
        contender = CONTENDERS[name](params)
        contender.setup()
        profiler = None
        if params.get("profile"):
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.005)
            profiler.start()
        started = time.perf_counter()
        outcome = contender.run()
        seconds = time.perf_counter() - started
        if profiler is not None:
            profiler.stop()
            Path(params["profile"]).write_text(profiler.output_text(show_all=False))
    except Exception:
        Path(result_path).write_text(json.dumps({"error": traceback.format_exc()[-4000:]}))
        return 1
    result = {"seconds": seconds, "peak_rss_mb": _peak_rss_mb(), **asdict(outcome)}
    Path(result_path).write_text(json.dumps(result))
    return 0


def _peak_rss_mb() -> float:
    """The largest RSS of this process or of a child (the workbook reader), still running or
    waited for: each process's own memory's high-water mark (``VmHWM``, which ``exec`` starts
    afresh)."""
    import psutil

    pids = ["self", *(str(child.pid) for child in psutil.Process().children(recursive=True))]
    return round(
        max([resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, *map(_high_water_kib, pids)]) / 1024, 1
    )


def _high_water_kib(pid: str) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # a child that has just ended
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
