"""Headless Chromium for tests that check what a person would see: a page opened, asked through the DevTools
protocol what it rendered, and a screenshot. Debian's ``chromium`` is installed with apt when missing; the test is
skipped, saying why, only where that is impossible (not root, no apt, no network to the mirror).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp  # ships with ray[default]
import pytest

from processes import get_json, kill_tree, wait_for


def chromium() -> str:
    """The chromium binary, installing Debian's package first if needed; skip the test if it cannot be had."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be: installing Debian's package needs root and apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            pytest.skip(f"chromium is not installed and `{' '.join(command)}` failed: {done.stderr.strip()[-300:]}")
    return shutil.which("chromium") or pytest.fail("apt-get installed chromium but no chromium binary is on PATH")


def render(url: str, expression: str, screenshot: Path, width: int = 1300, height: int = 2400, timeout: float = 60) -> Any:
    """Open ``url`` in a fresh headless Chromium, wait for it to load, return the value of the JavaScript
    ``expression`` there and write a PNG screenshot of the window. The browser is ended by its process id."""
    profile = tempfile.mkdtemp(prefix="chromium-")
    proc = subprocess.Popen(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", f"--window-size={width},{height}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        active = Path(profile) / "DevToolsActivePort"
        port = wait_for(lambda: active.exists() and active.read_text().split("\n")[0], timeout, "chromium's DevTools port")
        pages = wait_for(
            lambda: [t for t in get_json(f"http://127.0.0.1:{port}/json/list") if t["type"] == "page"], timeout, "the page"
        )
        return asyncio.run(_inspect(pages[0]["webSocketDebuggerUrl"], url, expression, screenshot, timeout))
    finally:
        kill_tree(proc, signal.SIGTERM)
        shutil.rmtree(profile, ignore_errors=True)


async def _inspect(ws_url: str, url: str, expression: str, screenshot: Path, timeout: float) -> Any:
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
        calls = iter(range(1, 1_000_000))

        async def call(method: str, **params: Any) -> dict[str, Any]:
            number = next(calls)
            await ws.send_str(json.dumps({"id": number, "method": method, "params": params}))
            while True:
                message = json.loads((await ws.receive(timeout=timeout)).data)
                if message.get("id") == number:
                    if "error" in message:
                        raise RuntimeError(f"{method}: {message['error']}")
                    return message["result"]

        async def evaluate(text: str) -> Any:
            result = await call("Runtime.evaluate", expression=text, returnByValue=True, awaitPromise=True)
            if "exceptionDetails" in result:
                raise RuntimeError(f"{text}: {result['exceptionDetails']}")
            return result["result"].get("value")

        await call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while await evaluate("location.href + ' ' + document.readyState") != f"{url} complete":
            if time.monotonic() > deadline:
                raise TimeoutError("the page did not finish loading")
            await asyncio.sleep(0.1)
        value = await evaluate(expression)
        shot = await call("Page.captureScreenshot", format="png")
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        return value
