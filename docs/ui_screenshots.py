"""The README's UI screenshots, taken with Debian's headless chromium through its DevTools
protocol (which also dismisses Dagster's first-visit dialog).

    dagster-webserver -w workspace.yaml -p 3111 &     # after a `local_folder_sync` of sample_data
    python docs/ui_screenshots.py \\
        "http://127.0.0.1:3111/locations/pgdatahub/asset-groups/local_folder|docs/images/asset-graph.png" \\
        "http://127.0.0.1:3111/assets/warehouse/leads|docs/images/table-columns.png"
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

import websocket

_PORT = 9333
_SKIP = (
    "([...document.querySelectorAll('button')].find(b => b.textContent.trim() === 'Skip')"
    " || {click() {}}).click()"
)


def main(shots: list[str]) -> None:
    with tempfile.TemporaryDirectory() as profile:
        chrome = subprocess.Popen(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1600,1000",
                f"--remote-debugging-port={_PORT}",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            page = _page()
            ws = websocket.create_connection(page, timeout=60)
            calls = iter(range(1, 1_000_000))

            def call(method: str, **params: Any) -> dict[str, Any]:
                number = next(calls)
                ws.send(json.dumps({"id": number, "method": method, "params": params}))
                while True:
                    message = json.loads(ws.recv())
                    if message.get("id") == number:
                        return dict(message.get("result", {}))

            for shot in shots:
                url, path = shot.split("|")
                call("Page.navigate", url=url)
                time.sleep(12)  # the UI loads its data after the page
                call("Runtime.evaluate", expression=_SKIP)
                time.sleep(2)
                with open(path, "wb") as image:
                    image.write(base64.b64decode(call("Page.captureScreenshot", format="png")["data"]))
                print("wrote", path)
        finally:
            chrome.terminate()


def _page() -> str:
    for _ in range(60):
        try:
            tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{_PORT}/json"))
            return str(next(tab for tab in tabs if tab["type"] == "page")["webSocketDebuggerUrl"])
        except OSError:
            time.sleep(0.5)
    raise SystemExit("chromium did not start")


if __name__ == "__main__":
    main(sys.argv[1:])
