"""The ``envoy.filters.http.wasm`` adapter in-process: config translation, real plugins in the
sans-io filter chain, callout framing, the metrics mirror and the loop-thread hand-over.

Plugins are the repository's conformance plugins (built from source by ``plugin_path``); the
chain is the sidecar's own (``tests/wasmhost/sidecar/_core.py``). Where a worker is needed,
``FakeWorkerServices`` stands in for it (named as a fake: it records callouts and answers them
from a script instead of opening connections).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from envoy.extensions.wasm.v3 import wasm_pb2
from google.protobuf import json_format

from tests._tools import plugin_path
from tests.e2e._envoy import wasm_filter
from tests.wasmhost.sidecar._bootstrap import ROUTER_FILTER, bootstrap, cluster
from tests.wasmhost.sidecar._core import get_request, make_runtime, new_stream, take
from wasmhost import FailurePolicy, MetricType, Runtime
from wasmhost.sidecar import ConfigError, HeaderMap, StatsStore, load_plan
from wasmhost.sidecar import _wasm as wasm_adapter
from wasmhost.sidecar import _wasm_host as wasm_host_module
from wasmhost.sidecar import _wasm_module as wasm_modules
from wasmhost.sidecar._filter_api import HttpCallResult
from wasmhost.sidecar._stream import HttpStream


@pytest.fixture(autouse=True)
def fresh_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    """Each test gets its own process-wide host and module agent (and closes the runtime it made)."""
    monkeypatch.setenv("WASMESH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(wasm_host_module, "_HOST", None)
    monkeypatch.setattr(wasm_modules, "_AGENT", None)
    yield
    host = wasm_host_module._HOST
    if host is not None:
        host.runtime.close()


def plugin_config(data: dict[str, Any]) -> Any:
    return json_format.ParseDict(data, wasm_pb2.PluginConfig())


def string_value(text: str) -> dict[str, str]:
    return {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": text}


# --- configuration -----------------------------------------------------------------------------------


def test_plugin_config_becomes_a_spec() -> None:
    config = plugin_config({
        "name": "p", "root_id": "r", "configuration": string_value("cfg"), "failure_policy": "FAIL_OPEN",
        "vm_config": {
            "vm_id": "v", "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"inline_bytes": "AGFzbQ=="}},
            "configuration": {"@type": "type.googleapis.com/google.protobuf.BytesValue", "value": "AAE="},
            "environment_variables": {"key_values": {"B": "2", "A": "1",
                                                     "ISTIO_META_WASM_IMAGE_PULL_POLICY": "Always"}},
        },
    })
    spec, wasm = wasm_modules.plugin_spec_from_proto(config)
    assert wasm == b"\0asm"
    assert (spec.name, spec.root_id, spec.vm_id) == ("p", "r", "v")
    assert (spec.configuration, spec.vm_configuration) == (b"cfg", b"\x00\x01")
    assert spec.failure_policy is FailurePolicy.FAIL_OPEN
    # the agent's pull settings never reach the module; the rest arrive sorted
    assert spec.env == (("A", "1"), ("B", "2"))


def test_struct_configuration_is_handed_over_as_json() -> None:
    config = plugin_config({"configuration": {"@type": "type.googleapis.com/google.protobuf.Struct",
                                              "value": {"k": "v"}},
                            "vm_config": {"code": {"local": {"inline_string": "x"}}}})
    spec, _ = wasm_modules.plugin_spec_from_proto(config)
    assert spec.configuration == b'{"k": "v"}'


def test_legacy_fail_open_flag() -> None:
    config = plugin_config({"fail_open": True, "vm_config": {"code": {"local": {"inline_string": "x"}}}})
    spec, _ = wasm_modules.plugin_spec_from_proto(config)
    assert spec.fail_open and spec.failure_policy is FailurePolicy.FAIL_OPEN


@pytest.mark.parametrize("data,path,reason", [
    ({}, "config", "vm_config is required"),
    ({"vm_config": {"runtime": "envoy.wasm.runtime.null", "code": {"local": {"inline_string": "x"}}}},
     "config.vm_config.runtime", "unsupported runtime"),
    ({"vm_config": {}}, "config.vm_config.code", "no module given"),
    ({"vm_config": {"code": {"local": {"filename": "/nonexistent/plugin.wasm"}}}},
     "config.vm_config.code.local.filename", "cannot read module"),
    ({"configuration": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "1s"},
      "vm_config": {"code": {"local": {"inline_string": "x"}}}}, "config.configuration", "unsupported configuration"),
    ({"capability_restriction_config": {"allowed_capabilities": {"proxy_log": {}}},
      "vm_config": {"code": {"local": {"inline_string": "x"}}}}, "config.capability_restriction_config",
     "not supported"),
], ids=["no-vm-config", "runtime", "no-code", "unreadable", "config-type", "capabilities"])
def test_config_errors_name_the_field(data: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        wasm_modules.plugin_spec_from_proto(plugin_config(data), "config")
    assert caught.value.path == path and reason in str(caught.value)


def test_a_module_that_is_not_wasm_is_refused_at_load() -> None:
    entry = {"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"vm_config": {"code": {"local": {"inline_string": "not a module"}}}}}}
    with pytest.raises(ConfigError) as caught:
        load_plan(yaml.safe_dump(bootstrap(http_filters=[entry, ROUTER_FILTER])), "test", 1)
    assert caught.value.path.endswith("http_filters[0].typed_config.config.vm_config.code")
    assert "not a WebAssembly module" in str(caught.value)


# --- real plugins in the sans-io chain -----------------------------------------------------------------


def chain_with(*filters: dict[str, Any]) -> tuple[Any, Callable[[], HttpStream]]:
    config = bootstrap(http_filters=[*filters, ROUTER_FILTER], clusters=[cluster("backend", 9)])
    _, ctx, _ = make_runtime(config)
    return ctx, lambda: new_stream(ctx)


def sent_headers(commands: list[Any]) -> HeaderMap:
    found = [c for c in commands if type(c).__name__ == "SendHeaders"]
    assert found, [type(c).__name__ for c in commands]
    headers: HeaderMap = found[0].headers
    return headers


def test_a_plugin_that_never_saw_the_request_leaves_the_local_reply_alone() -> None:
    ctx, stream = chain_with(wasm_filter(plugin_path("local_reply"), name="gate"),
                             wasm_filter(plugin_path("headers"), name="decorate"))
    stream().on_request_headers(get_request(extra=[(b"x-deny", b"1")]), True)
    headers = sent_headers(take(ctx))
    assert headers.get(b":status") == b"403"
    # the gate's own response callback ran on its reply (as in Envoy) ...
    assert headers.get(b"x-local-reply-checked") == b"1"
    # ... but the later plugin has no context for this stream, so it did not touch the reply
    assert headers.get(b"x-pairs-roundtrip") is None


@pytest.mark.parametrize("policy", ["FAIL_CLOSED", "FAIL_OPEN"])
def test_a_trap_answers_503_through_the_failed_filter(policy: str) -> None:
    ctx, stream = chain_with(wasm_filter(plugin_path("trap"), failure_policy=policy))
    stream().on_request_headers(get_request(), True)
    assert sent_headers(take(ctx)).get(b":status") == b"503"
    # afterwards: FAIL_CLOSED keeps answering 503, FAIL_OPEN lets requests through to the router
    stream().on_request_headers(get_request(), True)
    commands = take(ctx)
    if policy == "FAIL_CLOSED":
        assert sent_headers(commands).get(b":status") == b"503"
    else:
        assert any(type(c).__name__ == "StartUpstream" for c in commands)


# --- callouts through worker services --------------------------------------------------------------------


class FakeWorkerServices:
    """A fake worker: records callouts and answers each at once with a scripted response."""

    def __init__(self, answer: HttpCallResult) -> None:
        self.stats = StatsStore()
        self.answer = answer
        self.calls: list[tuple[str, list[tuple[bytes, bytes]], bytes]] = []
        self.timers: list[tuple[float, Callable[[], None]]] = []
        self.clock = 100.0

    def now(self) -> float:
        return self.clock

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any:
        self.timers.append((delay, callback))
        return _Handle()

    def call_soon(self, callback: Callable[[], None]) -> None:
        callback()

    def dispatch_http_call(self, cluster: str, headers: Any, body: bytes, trailers: Any, timeout: float,
                           on_result: Callable[[HttpCallResult], None]) -> int:
        self.calls.append((cluster, list(headers), body))
        self.clock += 0.025
        on_result(self.answer)
        return len(self.calls)

    def cancel_http_call(self, token: int) -> None:
        pass


class _Handle:
    def cancel(self) -> None:
        pass


def test_callout_is_framed_as_envoy_frames_it() -> None:
    answer = HttpCallResult(HeaderMap([(b":status", b"200"), (b"content-length", b"4")]), b"pong", None)
    services = FakeWorkerServices(answer)
    config = bootstrap(http_filters=[wasm_filter(plugin_path("http_call"), configuration="auth"), ROUTER_FILTER],
                       clusters=[cluster("backend", 9), cluster("auth", 10)])
    plan = load_plan(yaml.safe_dump(config), "test", 1, services)
    from wasmhost.sidecar._context import PlanRuntime, WorkerRuntime

    runtime = PlanRuntime(plan, WorkerRuntime(clock=lambda: 1.0, wall=lambda: 1.0))
    ctx = runtime.listeners[plan.listeners[0].name]
    request = get_request()
    new_stream(ctx).on_request_headers(request, True)
    (cluster_name, headers, body), = services.calls
    assert cluster_name == "auth" and body == b"ping"
    assert (b"content-length", b"4") in headers
    # the answer reached the plugin as the worker delivered it (x-envoy-upstream-service-time is added
    # by the callout client for answers that came from an upstream; these fake services have none)
    assert request.get(b"x-callout-header-count") == b"2"
    assert request.get(b"x-callout-status") == b"200" and request.get(b"x-callout-body") == b"pong"
    # the plugin resumed the request: the router was asked for an upstream
    assert any(type(c).__name__ == "StartUpstream" for c in take(ctx))


# --- plugin metrics into the worker's stats ------------------------------------------------------------


def test_metrics_mirror_copies_counters_gauges_and_new_histogram_samples() -> None:
    runtime = Runtime()
    try:
        stats = StatsStore()
        mirror = wasm_host_module.PluginMetricsMirror()
        counter = runtime.metrics.define(MetricType.COUNTER, "requests")
        gauge = runtime.metrics.define(MetricType.GAUGE, "inflight")
        histogram = runtime.metrics.define(MetricType.HISTOGRAM, "sizes")
        counter.value, gauge.value = 3, -2
        histogram.record_sample(7)
        mirror.sync(runtime, stats)
        counter.value += 2
        gauge.value = 5
        histogram.record_sample(700)
        mirror.sync(runtime, stats)
        mirror.sync(runtime, stats)  # nothing new: nothing counted twice
        snapshot = stats.snapshot()
        assert snapshot["wasmcustom.requests"].value == 5
        assert snapshot["wasmcustom.inflight"].value == 5
        _, total, count = snapshot["wasmcustom.sizes"].value
        assert (total, count) == (707, 2)
    finally:
        runtime.close()


# --- the hand-over to the worker's loop thread -------------------------------------------------------------


class LoopServices:
    """Only the attribute the hand-over looks for: the worker's running event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop


@pytest.fixture
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


def test_plugin_work_runs_on_the_loop_thread(loop_thread: asyncio.AbstractEventLoop) -> None:
    seen: list[threading.Thread] = []

    def action() -> int:
        seen.append(threading.current_thread())
        return 42

    assert wasm_adapter._call_on_loop(LoopServices(loop_thread), action) == 42
    assert seen and seen[0] is not threading.current_thread()

    def failing() -> int:
        raise ValueError("from the loop")

    with pytest.raises(ValueError, match="from the loop"):
        wasm_adapter._call_on_loop(LoopServices(loop_thread), failing)
    # without a loop to hand over to, the action runs here
    assert wasm_adapter._call_on_loop(None, action) == 42 and seen[-1] is threading.current_thread()


# --- code.remote that cannot be fetched ----------------------------------------------------------------


@pytest.mark.parametrize("fail_open", [False, True])
def test_unfetchable_remote_module_applies_the_fail_strategy(tmp_path: Any, fail_open: bool) -> None:
    entry = wasm_filter(plugin_path("headers"), name="remote", failure_policy="FAIL_OPEN" if fail_open else
                        "FAIL_CLOSED", configuration="add request x-ran yes")
    missing = tmp_path / "missing.wasm"
    entry["typed_config"]["config"]["vm_config"]["code"] = {
        "remote": {"http_uri": {"uri": missing.as_uri(), "cluster": "x", "timeout": "1s"}, "sha256": "ab" * 32}}
    ctx, stream = chain_with(entry)
    request = get_request()
    stream().on_request_headers(request, True)
    commands = take(ctx)
    if fail_open:
        assert any(type(c).__name__ == "StartUpstream" for c in commands) and request.get(b"x-ran") is None
    else:
        assert sent_headers(commands).get(b":status") == b"403"
    status = wasm_modules.MODULE_STATUS["remote"]
    assert status["ok"] is False and status["url"] == missing.as_uri() and status["message"]


# --- the stream facts plugins read ---------------------------------------------------------------------


def test_plugins_read_the_stream_facts_live() -> None:
    """What the router and the connection learn after the plugin's stream opened is what it reads."""
    from wasmhost._properties import _address, _connection
    from wasmhost.sidecar._wasm_info import plugin_stream_info

    _, ctx, _ = make_runtime()
    stream = new_stream(ctx)
    info = plugin_stream_info(stream.info)
    assert (info.cluster_name, info.upstream_address, info.upstream_port, info.mtls, info.extra) == ("", "", 0, False, {})
    assert info.start_time_ns == int(stream.info.start_time * 1e9) > 0
    stream.info.cluster_name = "backend"
    stream.info.upstream_host = ("10.0.0.9", 8080)
    stream.info.downstream_tls = {"peer_certificate_presented": True, "uri_san_peer_certificate": ["spiffe://a/b"],
                                  "subject_peer_certificate": "CN=b"}
    assert info.cluster_name == "backend"
    assert _address(info, "upstream", "address") == "10.0.0.9:8080"
    assert _connection(info, "mtls") is True
    assert info.extra == {"source.principal": "spiffe://a/b", "connection.subject_peer_certificate": "CN=b"}


# --- plugin health metrics -------------------------------------------------------------------------------


def test_plugin_health_metrics_follow_the_running_plugins() -> None:
    from wasmhost.sidecar._istio_stats import sync_plugin_health

    ctx, stream = chain_with(wasm_filter(plugin_path("trap"), failure_policy="FAIL_OPEN", name="broken"),
                             wasm_filter(plugin_path("headers"), name="decorate"))
    stream().on_request_headers(get_request(), True)
    take(ctx)
    store = StatsStore()
    sync_plugin_health(store)
    healthy = {name: sample for name, sample in store.snapshot().items() if "wasmesh_wasm_plugin_healthy" in name}
    by_plugin = {("broken" if "broken" in name else "decorate" if "decorate" in name else name): sample.value
                 for name, sample in healthy.items()}
    assert by_plugin == {"broken": 0, "decorate": 1}
