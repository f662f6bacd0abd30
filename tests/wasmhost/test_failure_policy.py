"""Failure policies: what streams see once a plugin's VM has trapped.

FAIL_CLOSED answers 503 ``wasm_fail_stream``; FAIL_OPEN answers the stream that trapped 503 (as Envoy) and passes later traffic through untouched;
FAIL_RELOAD fails the current stream closed, then builds a fresh VM (with backoff when the
rebuild itself fails). A failed VM is never entered again. The guest is
``data/lim_guest.wat``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import wasmtime

from wasmhost import FailurePolicy, Limits, Plugin, PluginSpec, Runtime, SendLocalReply, WasmVM
from wasmhost._filter_status import (
    DATA_CONTINUE,
    DATA_STOP_NO_BUFFER,
    HEADERS_CONTINUE,
    HEADERS_STOP_ALL_WATERMARK,
    TRAILERS_CONTINUE,
    TRAILERS_STOP,
)

DATA = Path(__file__).parent / "data"
MakePlugin = Callable[..., Plugin]


def lim_guest() -> bytes:
    return bytes(wasmtime.wat2wasm((DATA / "lim_guest.wat").read_text(encoding="utf-8")))


@pytest.fixture
def make_plugin() -> Iterator[MakePlugin]:
    runtimes: list[Runtime] = []

    def make(policy: FailurePolicy, limits: Limits | None = None) -> Plugin:
        runtime = Runtime(limits=limits or Limits())
        runtimes.append(runtime)
        plugin = Plugin(runtime, runtime.compile(lim_guest()), PluginSpec(name="lim", failure_policy=policy))
        plugin.start()
        return plugin

    try:
        yield make
    finally:
        for runtime in runtimes:
            runtime.close()


def guest_calls(vm: WasmVM) -> int:
    """How many times the guest's proxy_on_request_headers has been entered (its own counter)."""
    calls = vm.instance.exports(vm.store)["calls"]
    assert isinstance(calls, wasmtime.Global)
    value = calls.value(vm.store)
    assert isinstance(value, int)
    return value


def request(plugin: Plugin, action: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    headers = [(b"x-action", action)]
    status = plugin.new_http_stream().on_request_headers(headers, True)
    return status, headers


def replies(plugin: Plugin) -> list[SendLocalReply]:
    return [c for c in plugin.runtime.take_commands() if isinstance(c, SendLocalReply)]


# -- FAIL_CLOSED ---------------------------------------------------------------------------------

def test_fail_closed_answers_503_on_the_trapping_stream(make_plugin: MakePlugin) -> None:
    plugin = make_plugin(FailurePolicy.FAIL_CLOSED)
    status, headers = request(plugin, b"trap")
    assert status == HEADERS_STOP_ALL_WATERMARK
    assert headers == [(b"x-action", b"trap")]
    [reply] = replies(plugin)
    assert (reply.status, reply.details, reply.grpc_status, reply.body) == (503, "wasm_fail_stream", 14, b"")


def test_fail_closed_denies_every_later_stream_without_entering_the_vm(make_plugin: MakePlugin) -> None:
    plugin = make_plugin(FailurePolicy.FAIL_CLOSED)
    vm = plugin.vm
    assert vm is not None
    request(plugin, b"trap")
    replies(plugin)
    entered = guest_calls(vm)

    for _ in range(3):
        status, headers = request(plugin, b"ok")
        assert status == HEADERS_STOP_ALL_WATERMARK
        assert headers == [(b"x-action", b"ok")]
    assert [r.details for r in replies(plugin)] == ["wasm_fail_stream"] * 3
    assert guest_calls(vm) == entered
    assert plugin.vm is vm  # no reload under FAIL_CLOSED
    assert plugin.runtime.counters.reloads == 0


def test_fail_closed_later_stream_body_and_trailers_are_stopped(make_plugin: MakePlugin) -> None:
    plugin = make_plugin(FailurePolicy.FAIL_CLOSED)
    request(plugin, b"trap")
    stream = plugin.new_http_stream()
    assert stream.on_request_headers([], False) == HEADERS_STOP_ALL_WATERMARK
    verdict = stream.on_request_body(b"payload", False)
    assert (verdict.status, verdict.forward) == (DATA_STOP_NO_BUFFER, None)
    assert stream.on_request_trailers([(b"t", b"1")]) == TRAILERS_STOP
    assert len(replies(plugin)) == 2  # one for the trapping stream, one for this stream (not one per event)


# -- FAIL_OPEN -----------------------------------------------------------------------------------

def test_fail_open_still_answers_the_trapping_stream_503(make_plugin: MakePlugin) -> None:
    """Envoy 1.40: the stream whose callback trapped is failed closed even under FAIL_OPEN."""
    plugin = make_plugin(FailurePolicy.FAIL_OPEN)
    status, headers = request(plugin, b"trap")
    assert status == HEADERS_STOP_ALL_WATERMARK
    assert [r.details for r in replies(plugin)] == ["wasm_fail_stream"]
    assert plugin.vm is not None and plugin.vm.failure_kind == "trap"


def test_fail_open_later_streams_are_untouched(make_plugin: MakePlugin) -> None:
    plugin = make_plugin(FailurePolicy.FAIL_OPEN)
    vm = plugin.vm
    assert vm is not None
    request(plugin, b"trap")
    assert [r.details for r in replies(plugin)] == ["wasm_fail_stream"]  # the trapping stream only
    entered = guest_calls(vm)

    stream = plugin.new_http_stream()
    headers = [(b"x-action", b"ok")]
    assert stream.on_request_headers(headers, False) == HEADERS_CONTINUE
    body = stream.on_request_body(b"hello", True)
    assert stream.on_request_trailers([(b"t", b"1")]) == TRAILERS_CONTINUE
    response = [(b":status", b"200")]
    assert stream.on_response_headers(response, False) == HEADERS_CONTINUE
    out = stream.on_response_body(b"world", True)
    stream.finish()

    assert headers == [(b"x-action", b"ok")]  # the plugin would have added x-lim: ok
    assert response == [(b":status", b"200")]
    assert (body.status, body.forward) == (DATA_CONTINUE, b"hello")
    assert (out.status, out.forward) == (DATA_CONTINUE, b"world")
    assert replies(plugin) == []
    assert guest_calls(vm) == entered


# -- FAIL_RELOAD ---------------------------------------------------------------------------------

def test_fail_reload_fails_the_current_stream_closed_then_serves_from_a_fresh_vm(make_plugin: MakePlugin) -> None:
    plugin = make_plugin(FailurePolicy.FAIL_RELOAD, Limits(reload_backoff_initial_s=0.01))
    old_vm = plugin.vm
    assert old_vm is not None

    status, _ = request(plugin, b"trap")
    assert status == HEADERS_STOP_ALL_WATERMARK
    assert [r.details for r in replies(plugin)] == ["wasm_fail_stream"]
    entered_old = guest_calls(old_vm)

    time.sleep(0.02)  # the backoff runs from when the failed VM was loaded
    status, headers = request(plugin, b"ok")

    assert status == HEADERS_CONTINUE
    assert headers == [(b"x-action", b"ok"), (b"x-lim", b"ok")]
    assert plugin.vm is not None and plugin.vm is not old_vm
    assert plugin.vm.failed is None
    assert guest_calls(plugin.vm) == 1
    assert guest_calls(old_vm) == entered_old  # the failed VM was never entered again
    counters = plugin.runtime.counters
    assert (counters.traps, counters.reloads, counters.reload_failures, counters.vms_created) == (1, 1, 0, 2)
    assert counters.per_plugin["lim"] == {"traps": 1, "reloads": 1}
    assert plugin.reloads == 1


def test_fail_reload_after_a_deadline_hit(make_plugin: MakePlugin) -> None:
    plugin = make_plugin(
        FailurePolicy.FAIL_RELOAD, Limits(callback_deadline_ms=30, epoch_tick_ms=5, reload_backoff_initial_s=0.0)
    )
    request(plugin, b"loop")
    assert plugin.runtime.counters.deadline_hits == 1
    status, headers = request(plugin, b"ok")
    assert status == HEADERS_CONTINUE
    assert (b"x-lim", b"ok") in headers
    assert plugin.runtime.counters.reloads == 1


def test_fail_reload_backs_off_while_the_rebuild_keeps_failing(make_plugin: MakePlugin) -> None:
    """Action ``r`` makes every new VM refuse its configuration until the test clears the flag.

    As Envoy's reload_config: no rebuild before the backoff has passed since the failed VM
    was loaded, and none within the backoff after a failed rebuild; refused streams get 503.
    """
    backoff = 0.3
    plugin = make_plugin(FailurePolicy.FAIL_RELOAD, Limits(reload_backoff_initial_s=backoff, reload_backoff_max_s=5.0))
    loaded_at = time.monotonic()
    runtime = plugin.runtime
    request(plugin, b"r")  # traps after setting the refuse flag
    vms_before = runtime.counters.vms_created

    status, _ = request(plugin, b"ok")  # too soon after the VM was loaded: no attempt
    if time.monotonic() - loaded_at < backoff:
        assert status == HEADERS_STOP_ALL_WATERMARK
        assert runtime.counters.vms_created == vms_before
        assert runtime.counters.per_plugin["lim"]["reload_backoff"] >= 1

    time.sleep(backoff)
    attempted_at = time.monotonic()
    status, _ = request(plugin, b"ok")  # rebuild attempt 1: on_configure says no
    assert status == HEADERS_STOP_ALL_WATERMARK
    assert runtime.counters.reload_failures == 1
    vms_after_first_attempt = runtime.counters.vms_created

    status, _ = request(plugin, b"ok")  # within the backoff after a failed attempt: none
    if time.monotonic() - attempted_at < backoff:
        assert status == HEADERS_STOP_ALL_WATERMARK
        assert runtime.counters.reload_failures == 1
        assert runtime.counters.vms_created == vms_after_first_attempt

    runtime.shared.data("").set(b"lim-refuse-configure", b"0", 0)
    deadline = time.monotonic() + 20 * backoff
    while time.monotonic() < deadline:
        status, headers = request(plugin, b"ok")
        if status == HEADERS_CONTINUE:
            break
        time.sleep(backoff / 10)
    assert status == HEADERS_CONTINUE
    assert (b"x-lim", b"ok") in headers
    assert runtime.counters.reloads == 1
    assert runtime.counters.reload_failures == 1
    assert all(r.details == "wasm_fail_stream" for r in replies(plugin))


def test_fail_reload_repeats_for_each_new_failure(make_plugin: MakePlugin) -> None:
    plugin = make_plugin(FailurePolicy.FAIL_RELOAD, Limits(reload_backoff_initial_s=0.0))
    seen: list[WasmVM] = []
    for _ in range(3):
        assert plugin.vm is not None
        seen.append(plugin.vm)
        request(plugin, b"trap")
        assert request(plugin, b"ok")[0] == HEADERS_CONTINUE
    assert len({id(vm) for vm in seen}) == 3
    assert all(vm.failed is not None for vm in seen)
    assert plugin.runtime.counters.reloads == 3
    assert plugin.runtime.counters.traps == 3
