"""The status writer on its own: latest status wins, failures are retried with backoff, a gone
object is dropped, and an unchanged status is never written twice (the Kubernetes side is in
`test_kube_source.py`)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from controlplane._module_status import StatusTargetGone, StatusWriter
from controlplane._resources import ResourceKey
from tests.controlplane._running import wait_for

PLUGIN = ResourceKey("WasmPlugin", "default", "headers")
GONE = ResourceKey("WasmPlugin", "default", "deleted")


class FlakyApi:
    """Records writes; fails the first `failures` ones; the first write waits for `release`."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[tuple[ResourceKey, Mapping[str, Any]]] = []
        self.release = threading.Event()
        self.started = threading.Event()

    def patch(self, key: ResourceKey, status: Mapping[str, Any]) -> None:
        self.started.set()
        self.release.wait(10)
        self.calls.append((key, status))
        if key == GONE:
            raise StatusTargetGone("deleted")
        if self.failures:
            self.failures -= 1
            raise ConnectionError("API server unavailable")


def test_the_latest_status_is_written_after_retries_and_never_twice() -> None:
    api = FlakyApi(failures=2)
    writer = StatusWriter(api.patch, backoff=0.01).start()
    try:
        writer.submit(PLUGIN, {"phase": 1})
        assert api.started.wait(10)  # the first attempt is under way
        writer.submit(PLUGIN, {"phase": 2})  # arrives while phase 1 is being written (and fails)
        writer.submit(PLUGIN, {"phase": 3})  # replaces phase 2 before it was ever written
        writer.submit(GONE, {"phase": 1})
        writer.submit(PLUGIN, None)  # nothing to say: ignored
        api.release.set()
        wait_for(writer.idle, what="everything written")
        assert writer.written == {PLUGIN: {"phase": 3}} and writer.failures == 2
        assert {"phase": 2} not in [status for _, status in api.calls]
        assert [key for key, _ in api.calls].count(GONE) == 1  # dropped, never retried
        calls = len(api.calls)
        writer.submit(PLUGIN, {"phase": 3})  # unchanged: not written again
        wait_for(writer.idle, what="nothing to write")
        assert len(api.calls) == calls
    finally:
        api.release.set()
        writer.stop()
