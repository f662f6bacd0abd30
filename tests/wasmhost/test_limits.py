"""Isolation and resource limits: CPU deadline, memory cap, module size, header and body sizes.

The guest is ``data/lim_guest.wat`` (its header comment lists the actions). Every limit is
set small through :class:`wasmhost.Limits` so a violation is quick to reach.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import wasmtime

from wasmhost import (
    FailurePolicy,
    HttpStream,
    Limits,
    ModuleError,
    Plugin,
    PluginSpec,
    PluginStartError,
    Runtime,
    SendLocalReply,
    VmFailed,
    WasmVM,
)
from wasmhost._filter_status import DATA_STOP_NO_BUFFER, HEADERS_CONTINUE, HEADERS_STOP_ALL_WATERMARK

DATA = Path(__file__).parent / "data"
MakePlugin = Callable[..., Plugin]
#: How long a test waits for a callback that must be stopped by the deadline before it calls
#: the host broken. Generous on purpose: it only keeps a broken deadline from hanging the suite.
HANG_GUARD_S = 30.0


def lim_guest() -> bytes:
    return bytes(wasmtime.wat2wasm((DATA / "lim_guest.wat").read_text(encoding="utf-8")))


@pytest.fixture
def make_plugin() -> Iterator[MakePlugin]:
    runtimes: list[Runtime] = []

    def make(limits: Limits, policy: FailurePolicy = FailurePolicy.FAIL_CLOSED) -> Plugin:
        runtime = Runtime(limits=limits)
        runtimes.append(runtime)
        plugin = Plugin(runtime, runtime.compile(lim_guest()), PluginSpec(name="lim", failure_policy=policy))
        plugin.start()
        return plugin

    try:
        yield make
    finally:
        for runtime in runtimes:
            runtime.close()


def run_guarded(stream: HttpStream, headers: list[tuple[bytes, bytes]]) -> int:
    """Deliver request headers on a helper thread, so a missing deadline fails instead of hanging."""
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(stream.on_request_headers(headers, True)), daemon=True)
    worker.start()
    worker.join(HANG_GUARD_S)
    if worker.is_alive():
        pytest.fail(f"guest still running after {HANG_GUARD_S}s: the CPU deadline did not stop it")
    return result[0]


def vm_of(plugin: Plugin) -> WasmVM:
    assert plugin.vm is not None, "plugin not started"
    return plugin.vm


def guest_calls(vm: WasmVM) -> int:
    calls = vm.instance.exports(vm.store)["calls"]
    assert isinstance(calls, wasmtime.Global)
    value = calls.value(vm.store)
    assert isinstance(value, int)
    return value


def local_replies(runtime: Runtime) -> list[SendLocalReply]:
    return [c for c in runtime.take_commands() if isinstance(c, SendLocalReply)]


# -- CPU deadline -------------------------------------------------------------------------------

def test_infinite_loop_is_stopped_by_the_epoch_deadline(make_plugin: MakePlugin) -> None:
    plugin = make_plugin(Limits(callback_deadline_ms=50, epoch_tick_ms=5))
    runtime = plugin.runtime
    vm = vm_of(plugin)

    status = run_guarded(plugin.new_http_stream(), [(b"x-action", b"loop")])

    assert status == HEADERS_STOP_ALL_WATERMARK
    assert vm.failure_kind == "deadline"
    assert "50 ms CPU deadline" in (vm.failed or "")
    assert runtime.counters.deadline_hits == 1
    assert runtime.counters.traps == 1
    assert runtime.counters.per_plugin["lim"] == {"traps": 1, "deadline_hits": 1}
    assert [r.details for r in local_replies(runtime)] == ["wasm_fail_stream"]


def test_deadline_is_per_callback_not_per_vm_lifetime(make_plugin: MakePlugin) -> None:
    """Many quick callbacks in a row never add up to a deadline hit."""
    plugin = make_plugin(Limits(callback_deadline_ms=20, epoch_tick_ms=5))
    for _ in range(200):
        headers = [(b"x-action", b"ok")]
        assert plugin.new_http_stream().on_request_headers(headers, True) == HEADERS_CONTINUE
    assert vm_of(plugin).failed is None
    assert plugin.runtime.counters.deadline_hits == 0


def test_deadline_hit_fails_the_vm_for_good(make_plugin: MakePlugin) -> None:
    plugin = make_plugin(Limits(callback_deadline_ms=30, epoch_tick_ms=5))
    vm = vm_of(plugin)
    run_guarded(plugin.new_http_stream(), [(b"x-action", b"loop")])
    calls_after_failure = guest_calls(vm)

    with pytest.raises(VmFailed) as failed:
        vm.call(plugin.root, "proxy_on_request_headers", 1, 0, 1)
    assert failed.value.kind == "deadline"
    headers = [(b"x-action", b"ok")]
    assert plugin.new_http_stream().on_request_headers(headers, True) == HEADERS_STOP_ALL_WATERMARK
    assert guest_calls(vm) == calls_after_failure


# -- memory cap ---------------------------------------------------------------------------------

def test_memory_bomb_hits_the_cap_and_fails_the_vm(make_plugin: MakePlugin) -> None:
    cap = 4 * 1024 * 1024
    plugin = make_plugin(Limits(max_vm_memory=cap))
    vm = vm_of(plugin)

    status = plugin.new_http_stream().on_request_headers([(b"x-action", b"bomb")], True)

    assert status == HEADERS_STOP_ALL_WATERMARK
    assert vm.failure_kind == "memory"
    assert f"{cap}-byte memory cap" in (vm.failed or "")
    assert vm.memory.refresh() <= cap
    assert plugin.runtime.counters.memory_cap_hits == 1
    assert plugin.runtime.counters.per_plugin["lim"] == {"traps": 1, "memory_hits": 1}


def test_memory_cap_applies_to_the_initial_memory(make_plugin: MakePlugin) -> None:
    """A module whose declared minimum memory exceeds the cap never instantiates."""
    with pytest.raises(PluginStartError, match="cannot instantiate module: memory minimum size of 4 pages"):
        make_plugin(Limits(max_vm_memory=2 * 65536))


def test_plain_trap_is_not_counted_as_a_limit_hit(make_plugin: MakePlugin) -> None:
    plugin = make_plugin(Limits())
    plugin.new_http_stream().on_request_headers([(b"x-action", b"trap")], True)
    counters = plugin.runtime.counters
    assert vm_of(plugin).failure_kind == "trap"
    assert (counters.traps, counters.deadline_hits, counters.memory_cap_hits) == (1, 0, 0)


# -- module size ---------------------------------------------------------------------------------

def test_module_over_the_size_limit_is_refused_before_compiling() -> None:
    module = lim_guest()
    runtime = Runtime(limits=Limits(max_module_size=len(module) - 1))
    try:
        with pytest.raises(ModuleError, match=f"module is {len(module)} bytes, over the {len(module) - 1}-byte limit"):
            runtime.compile(module)
    finally:
        runtime.close()


def test_module_at_the_size_limit_is_accepted() -> None:
    module = lim_guest()
    runtime = Runtime(limits=Limits(max_module_size=len(module)))
    try:
        assert runtime.compile(module).size == len(module)
    finally:
        runtime.close()


# -- header and body sizes -----------------------------------------------------------------------

def test_plugin_adding_a_huge_header_is_refused(make_plugin: MakePlugin) -> None:
    plugin = make_plugin(Limits(max_header_map_bytes=96 * 1024))
    headers = [(b"x-action", b"h")]

    status = plugin.new_http_stream().on_request_headers(headers, True)

    assert status == HEADERS_CONTINUE
    assert headers == [(b"x-action", b"h"), (b"x-add-status", b"2")]  # 2 = BAD_ARGUMENT
    assert vm_of(plugin).failed is None


def test_huge_header_fits_when_the_limit_allows_it(make_plugin: MakePlugin) -> None:
    plugin = make_plugin(Limits(max_header_map_bytes=256 * 1024))
    headers = [(b"x-action", b"h")]
    plugin.new_http_stream().on_request_headers(headers, True)
    assert [name for name, _ in headers] == [b"x-action", b"x-huge", b"x-add-status"]
    assert len(headers[1][1]) == 128 * 1024
    assert headers[2] == (b"x-add-status", b"0")


def test_request_body_over_the_limit_gets_413(make_plugin: MakePlugin) -> None:
    plugin = make_plugin(Limits(max_body_bytes=1024))
    stream = plugin.new_http_stream()
    stream.on_request_headers([(b"content-length", b"1200")], False)

    first = stream.on_request_body(b"a" * 600, False)  # the plugin buffers until end_of_stream
    second = stream.on_request_body(b"b" * 600, True)

    assert first.forward is None
    assert second.status == DATA_STOP_NO_BUFFER
    assert second.forward is None
    [reply] = local_replies(plugin.runtime)
    assert (reply.status, reply.details) == (413, "request_payload_too_large")
    assert vm_of(plugin).failed is None


def test_request_body_at_the_limit_passes(make_plugin: MakePlugin) -> None:
    plugin = make_plugin(Limits(max_body_bytes=1024))
    stream = plugin.new_http_stream()
    stream.on_request_headers([], False)
    stream.on_request_body(b"a" * 512, False)
    verdict = stream.on_request_body(b"b" * 512, True)
    assert verdict.forward == b"a" * 512 + b"b" * 512
    assert local_replies(plugin.runtime) == []


def test_response_body_over_the_limit_gets_500(make_plugin: MakePlugin) -> None:
    plugin = make_plugin(Limits(max_body_bytes=1024))
    stream = plugin.new_http_stream()
    stream.on_request_headers([], True)
    stream.on_response_headers([(b":status", b"200")], False)
    verdict = stream.on_response_body(b"z" * 2000, True)
    assert verdict.forward is None
    [reply] = local_replies(plugin.runtime)
    assert (reply.status, reply.details) == (500, "response_payload_too_large")
