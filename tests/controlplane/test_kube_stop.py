"""`KubernetesSource.stop()` cuts its idle watches instead of waiting out their long poll.

An idle watch only ends when the API server closes it after `timeoutSeconds`; these tests set that
to a minute and expect `stop()` to be done — threads ended — long before, with the fake API server
still holding the watches open. Events that arrive before the stop are all applied."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from controlplane._resources import ResourceKey
from controlplane._store import ConfigStore
from tests._tools import require_tool
from tests.controlplane._fake_kube import FakeKubeApiServer
from tests.controlplane._running import wait_for

try:
    import kubernetes

    from controlplane._kube import KubernetesSource
except ImportError:  # reported by the fixture: skipped, or failed under CI=true
    kubernetes = None

LONG_WATCH = 60  # seconds the fake server keeps an idle watch open
STOP_DEADLINE = 10.0  # generous, yet well inside LONG_WATCH
VS_PATH = "/apis/networking.istio.io/v1/virtualservices"


def virtual_service(name: str, timeout: str) -> dict[str, object]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"hosts": [name], "http": [{"route": [{"destination": {"host": name}}], "timeout": timeout}]}}


@pytest.fixture
def fake() -> Iterator[FakeKubeApiServer]:
    require_tool("kubernetes", lookup=lambda: kubernetes.__file__ if kubernetes else None,
                 hint="pip install kubernetes (the Python client)")
    server = FakeKubeApiServer().start()
    try:
        yield server
    finally:
        server.stop()


def long_watch_source(fake: FakeKubeApiServer, store: ConfigStore) -> KubernetesSource:
    configuration = kubernetes.client.Configuration()
    configuration.host = fake.url
    configuration.connection_pool_maxsize = 32
    return KubernetesSource(store, kubernetes.client.ApiClient(configuration), watch_timeout=LONG_WATCH,
                            relist_backoff=0.1)


def open_watches(fake: FakeKubeApiServer) -> int:
    return sum(1 for request in list(fake.requests) if request.endswith(" watch"))


def stop_within_deadline(source: KubernetesSource) -> None:
    """Call `source.stop()` on a helper thread and fail unless it and every watch thread ended in time."""
    stopper = threading.Thread(target=source.stop, daemon=True, name="kube-stop")
    stopper.start()
    stopper.join(STOP_DEADLINE)
    assert not stopper.is_alive(), "stop() still waiting on an idle watch"
    alive = [t.name for t in source._threads if t.is_alive()]
    assert alive == [], f"watch threads still running after stop(): {alive}"


def timeout_of(store: ConfigStore, name: str) -> str | None:
    resource = store.get(ResourceKey("VirtualService", "default", name))
    return None if resource is None else str(resource.spec["http"][0]["timeout"])


def test_stop_ends_idle_long_watches_while_the_server_holds_them_open(fake: FakeKubeApiServer) -> None:
    source = long_watch_source(fake, ConfigStore()).start()
    try:
        assert source.synced.wait(10)
        wait_for(lambda: open_watches(fake) >= len(source.collections), what="a watch open per collection")
    finally:
        stop_within_deadline(source)
    # the server never ended those watches: each was opened once and none was reopened or relisted
    assert open_watches(fake) == len(source.collections)


def test_events_before_stop_are_all_applied(fake: FakeKubeApiServer) -> None:
    store = ConfigStore()
    source = long_watch_source(fake, store).start()
    try:
        assert source.synced.wait(10)
        wait_for(lambda: open_watches(fake) >= len(source.collections), what="a watch open per collection")
        for i in range(20):
            fake.put(VS_PATH, virtual_service(f"vs-{i}", f"{i + 1}s"))
        wait_for(lambda: all(timeout_of(store, f"vs-{i}") == f"{i + 1}s" for i in range(20)),
                 what="every event applied")
    finally:
        stop_within_deadline(source)
    assert [timeout_of(store, f"vs-{i}") for i in range(20)] == [f"{i + 1}s" for i in range(20)]


def test_a_stopped_watch_is_not_reported_as_lost(fake: FakeKubeApiServer, caplog: pytest.LogCaptureFixture) -> None:
    source = long_watch_source(fake, ConfigStore()).start()
    try:
        assert source.synced.wait(10)
        wait_for(lambda: open_watches(fake) >= len(source.collections), what="a watch open per collection")
        caplog.clear()
        caplog.set_level(logging.WARNING, logger="wasmesh.controlplane.kube")
    finally:
        stop_within_deadline(source)
    assert [r.getMessage() for r in caplog.records if r.name == "wasmesh.controlplane.kube"] == []


def test_stop_before_the_first_watch_still_returns(fake: FakeKubeApiServer) -> None:
    """stop() right after start(): threads may be listing or just opening their watch."""
    source = long_watch_source(fake, ConfigStore()).start()
    stop_within_deadline(source)
