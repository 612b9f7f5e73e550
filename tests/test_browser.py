"""A real browser on the real MLflow UI: `nas ui` serves a synthetic search, headless Chromium looks at it.

Chromium is driven through the DevTools protocol over a websocket (aiohttp, which MLflow already
depends on). Screenshots go to test-output/browser/ in the repository.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import stop_served
from test_tracking_support import OBJECTIVES, run_synthetic_search

from nas.results.pareto import front_of

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
OUTPUT = Path(__file__).resolve().parents[1] / "test-output" / "browser"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1400,1000", "--remote-debugging-port=0",
]  # fmt: skip

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_until(stream: Any, pattern: str, timeout: float, seen: list[str]) -> re.Match[str]:
    """Read lines from a process stream (in a thread, so the timeout holds) until one matches."""
    found: list[re.Match[str]] = []
    done = threading.Event()

    def reader() -> None:
        for raw in stream:
            line = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
            seen.append(line.rstrip())
            match = re.search(pattern, line)
            if match:
                found.append(match)
                done.set()
                return
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    done.wait(timeout)
    if not found:
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s; output:\n" + "\n".join(seen[-20:]))
    return found[0]


@contextlib.contextmanager
def headless_chromium(profile: Path) -> Iterator[str]:
    """Chromium on about:blank with its own profile folder; yields its DevTools websocket URL, stops it after."""
    chromium = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield _read_until(chromium.stderr, r"DevTools listening on (ws://\S+)", 60, []).group(1)
    finally:
        chromium.terminate()
        try:
            chromium.wait(timeout=15)
        except subprocess.TimeoutExpired:
            chromium.kill()
            chromium.wait()


class DevTools:
    """The few DevTools-protocol calls the test needs, over one browser websocket (flat sessions)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.iframe_sessions: list[str] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            elif data.get("method") == "Target.attachedToTarget":
                if data["params"]["targetInfo"]["type"] == "iframe":
                    self.iframe_sessions.append(data["params"]["sessionId"])

    async def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        await self.ws.send_str(json.dumps(message))
        reply = await asyncio.wait_for(future, 60)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return reply["result"]

    async def new_page(self) -> str:
        """A blank tab attached as a flat session with its Page and Runtime domains on; returns the session id."""
        target = (await self.call("Target.createTarget", {"url": "about:blank"}))["targetId"]
        page = (await self.call("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]
        await self.call("Page.enable", session=page)
        await self.call("Runtime.enable", session=page)
        return page

    async def evaluate(self, expression: str, session: str, context: int | None = None) -> Any:
        params: dict[str, Any] = {"expression": expression, "returnByValue": True}
        if context is not None:
            params["contextId"] = context
        result = await self.call("Runtime.evaluate", params, session)
        return result["result"].get("value")

    async def wait_for(self, expression: str, session: str, timeout: float, context: int | None = None) -> Any:
        """Poll a JavaScript expression until it is truthy (the MLflow UI renders after its API calls)."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = await self.evaluate(expression, session, context)
            except AssertionError:
                value = None
            if value:
                return value
            await asyncio.sleep(0.5)
        raise AssertionError(f"timed out after {timeout} s waiting for {expression!r} (last value {value!r})")

    async def screenshot(self, session: str, path: Path) -> None:
        result = await self.call("Page.captureScreenshot", {"format": "png"}, session)
        path.write_bytes(base64.b64decode(result["data"]))


FRONT_JS = """(() => {
  const names = Array.from(document.querySelectorAll('.legendtext')).map(e => e.textContent);
  const front = names.find(n => n.startsWith('Pareto front'));
  if (!front) return null;
  const traces = document.querySelectorAll('.scatterlayer .trace');
  return {legend: names, front: front, points: traces[traces.length - 1].querySelectorAll('.point').length};
})()"""


async def _look(ws_url: str, run_page: str, artifact_page: str, children: list[str]) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=0) as ws:
        dt = DevTools(ws)
        page = await dt.new_page()
        # out-of-process iframes (MLflow shows HTML artifacts in a sandboxed iframe) attach as their own sessions
        await dt.call("Target.setAutoAttach", {"autoAttach": True, "waitForDebuggerOnStart": False, "flatten": True},
                      session=page)

        await dt.call("Page.navigate", {"url": run_page}, session=page)
        names_js = " && ".join(f"document.body.innerText.includes({json.dumps(n)})" for n in children)
        await dt.wait_for(f"document.body && {names_js} && document.body.innerText.includes('hypervolume')", page, 90)
        run_text = await dt.evaluate("document.body.innerText", page)
        await dt.screenshot(page, OUTPUT / "parent_run.png")

        await dt.call("Page.navigate", {"url": artifact_page}, session=page)
        await dt.wait_for("document.querySelector('iframe.mlflow-html-iframe') !== null", page, 60)
        deadline = time.monotonic() + 60
        front = None
        while front is None and time.monotonic() < deadline:
            for session in list(dt.iframe_sessions):
                try:
                    front = await dt.evaluate(FRONT_JS, session)
                except AssertionError:
                    continue  # a session of an iframe that is gone
                if front:
                    break
            if front is None:
                front = await _front_in_same_process_frame(dt, page)
            if front is None:
                await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # let plotly finish drawing before the picture
        await dt.screenshot(page, OUTPUT / "pareto_artifact.png")
        dt.reader.cancel()
        return {"run_text": run_text, "front": front}


async def _front_in_same_process_frame(dt: DevTools, page: str) -> Any:
    """The iframe's front when Chromium kept the iframe in the page's process (no separate target)."""
    tree = (await dt.call("Page.getFrameTree", session=page))["frameTree"]
    for child in tree.get("childFrames", []):
        world = await dt.call("Page.createIsolatedWorld", {"frameId": child["frame"]["id"]}, page)
        value = await dt.evaluate(FRONT_JS, page, context=world["executionContextId"])
        if value:
            return value
    return None


@pytest.fixture
def ui(tmp_path: Path):
    """A synthetic search, then `nas ui` on a free port (stopped with Ctrl-C at the end)."""
    root = tmp_path / "runs"
    search = run_synthetic_search(root, "browsed", trials=6, refresh_seconds=3600)
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "nas.cli", "ui", "--root", str(root), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the cleanup below reaches the mlflow server too
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    seen: list[str] = []
    try:
        match = _read_until(process.stdout, r"search browsed: (http://127\.0\.0\.1:\d+/\S+)", 180, seen)
        yield search, match.group(1), port
    finally:
        stop_served(process, signal.SIGINT, 30)
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, "the MLflow UI still listens after nas ui stopped"


def test_mlflow_ui_shows_the_runs_and_the_front(ui: Any, tmp_path: Path) -> None:
    search, run_page, port = ui
    assert run_page == f"http://127.0.0.1:{port}/#/experiments/{search.tracker.experiment_id}/runs/" + \
        search.tracker.parent_run_id
    OUTPUT.mkdir(parents=True, exist_ok=True)
    front = front_of(search.records, OBJECTIVES)
    children = [f"trial-{r.number}" for r in search.records]
    with headless_chromium(Path(tempfile.mkdtemp(dir=tmp_path))) as ws_url:
        seen_result = asyncio.run(_look(ws_url, run_page, run_page + "/artifacts/pareto.html", children))
    print(f"screenshots: {OUTPUT / 'parent_run.png'} {OUTPUT / 'pareto_artifact.png'}")
    assert "browsed" in seen_result["run_text"]
    shown = seen_result["front"]
    assert shown is not None, "the pareto.html artifact did not render a front"
    assert shown["front"] == f"Pareto front ({len(front)} trials)"
    assert shown["points"] == len(front)
    for name in ("parent_run.png", "pareto_artifact.png"):
        assert (OUTPUT / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
