"""Per-plugin call statistics: every top-level call is counted and timed, traps count as errors."""

from __future__ import annotations

import wasmtime

from wasmhost import CALLBACK_LATENCY_BOUNDS_US, FailurePolicy, Plugin, PluginSpec, Runtime

GUEST = r"""
(module
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "x-trap")
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.eqz (call $get (i32.const 0) (i32.const 0) (i32.const 6) (i32.const 64) (i32.const 68)))
      (then unreachable))
    (i32.const 0)))
"""


def make(name: str) -> tuple[Runtime, Plugin]:
    runtime = Runtime()
    plugin = Plugin(runtime, runtime.compile(wasmtime.wat2wasm(GUEST)), PluginSpec(name=name,
                    failure_policy=FailurePolicy.FAIL_CLOSED))
    plugin.start()
    return runtime, plugin


def test_calls_are_counted_and_timed_per_plugin() -> None:
    runtime, plugin = make("counted")
    before = runtime.counters.calls["counted"].calls  # start: context create (root) etc.
    for _ in range(3):
        stream = plugin.new_http_stream()
        stream.on_request_headers([(b":path", b"/")], True)
        stream.finish()
    stats = runtime.counters.calls["counted"]
    assert stats.calls - before == 6  # per stream: proxy_on_context_create + proxy_on_request_headers
    assert stats.errors == 0
    assert sum(stats.latency_counts) == stats.calls
    assert len(stats.latency_counts) == len(CALLBACK_LATENCY_BOUNDS_US) + 1
    assert stats.latency_sum_us > 0


def test_a_trap_counts_as_an_error() -> None:
    runtime, plugin = make("trapping")
    stream = plugin.new_http_stream()
    stream.on_request_headers([(b":path", b"/"), (b"x-trap", b"1")], True)
    stats = runtime.counters.calls["trapping"]
    assert stats.errors == 1
    assert plugin.failed is not None
