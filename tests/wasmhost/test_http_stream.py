"""``HttpStream``: a module that exports only some callbacks, and header statuses out of range."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import wasmtime

from wasmhost import Plugin, PluginSpec, Runtime
from wasmhost._filter_status import HEADERS_CONTINUE, HEADERS_STOP_ALL_WATERMARK

# No proxy_on_context_create, on_done or on_delete. on_request_headers returns the i32 at
# address 16 (set by each test); on_log records that it ran with proxy_set_property.
GUEST = r"""
(module
  (import "env" "proxy_set_property" (func $set_property (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "logged")
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.load (i32.const 16)))
  (func (export "proxy_on_log") (param i32)
    (drop (call $set_property (i32.const 0) (i32.const 6) (i32.const 0) (i32.const 6)))))
"""


@pytest.fixture
def plugin() -> Iterator[Plugin]:
    runtime = Runtime()
    try:
        started = Plugin(runtime, runtime.compile(bytes(wasmtime.wat2wasm(GUEST))), PluginSpec(name="partial"))
        started.start()
        yield started
    finally:
        runtime.close()


def set_status(plugin: Plugin, status: int) -> None:
    assert plugin.vm is not None
    plugin.vm.memory.write(16, status.to_bytes(4, "little", signed=True))


def test_callbacks_run_without_on_context_create(plugin: Plugin) -> None:
    set_status(plugin, 0)
    stream = plugin.new_http_stream()
    assert stream.on_request_headers([(b":path", b"/")], True) == HEADERS_CONTINUE
    stream.finish()
    assert stream.ctx is not None and stream.ctx.done
    assert stream.ctx.filter_state == {b"logged": b"logged"}  # on_log ran, on_done/on_delete were not there
    assert plugin.vm is not None and plugin.vm.active_streams == 0


@pytest.mark.parametrize("status", [-1, 5, 1 << 30])
def test_a_header_status_out_of_range_stops_all_iteration(plugin: Plugin, status: int) -> None:
    set_status(plugin, status)
    stream = plugin.new_http_stream()
    assert stream.on_request_headers([(b":path", b"/")], True) == HEADERS_STOP_ALL_WATERMARK
