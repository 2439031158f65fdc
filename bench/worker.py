"""One contender in its own interpreter: ``python -m bench.worker NAME PARAMS.json RESULT.json``.

The parent measures this process's peak RSS (``os.wait4``); the timing is taken here,
around ``run`` only, so interpreter start-up and imports count for nobody.
"""

from __future__ import annotations

import json
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
    Path(result_path).write_text(json.dumps({"seconds": seconds, **asdict(outcome)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
