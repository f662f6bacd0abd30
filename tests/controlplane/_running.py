"""Run a real control plane (ADS + API) on 127.0.0.1 port 0 in a background thread.

Tests drive it like an operator would: write manifests into its folder, call its API, and
connect real xDS clients. `wait_for(predicate)` polls with a deadline instead of sleeping.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from controlplane._server import ControlPlane, Settings

T = TypeVar("T")


class RunningControlPlane:
    def __init__(self, folder: Path | None, *, debounce: float = 0.05, watch_interval: float = 0.05) -> None:
        self.folder = folder
        self.settings = Settings(xds_port=0, monitoring_port=0, debounce=debounce, watch_interval=watch_interval)
        self.plane: ControlPlane | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="controlplane")

    def start(self) -> RunningControlPlane:
        self._thread.start()
        self.plane = self.call(self._start())
        return self

    async def _start(self) -> ControlPlane:
        return await ControlPlane(settings=self.settings, folder=self.folder).start()

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def run(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run `fn` on the control plane's loop thread (its state is not thread-safe)."""
        async def wrapper() -> T:
            return fn()

        return self.call(wrapper(), timeout)  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.plane is not None:
            self.call(self.plane.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> RunningControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def xds_address(self) -> str:
        assert self.plane is not None
        return f"127.0.0.1:{self.plane.xds_port}"

    @property
    def api_address(self) -> str:
        assert self.plane is not None
        return f"127.0.0.1:{self.plane.monitoring_port}"

    def api(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(f"http://{self.api_address}{path}", data=body, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> T:
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as err:  # noqa: BLE001 - retried until the deadline
            last_error = err
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}" +
                         (f" (last error: {last_error})" if last_error else ""))


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (for listeners a proxy must bind)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
