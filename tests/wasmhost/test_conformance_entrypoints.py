"""Conformance: module entry points and the AssemblyScript ``env.abort`` import.

cpp-host order: ``_initialize`` then ``main(0, 0)`` (or ``__main_void()`` when there is no
``main``); ``_start`` only when there is no ``_initialize``. Each entry logs through
``proxy_log`` (permitted during start). ``env.abort`` (AssemblyScript's default abort) is a
trap whose reason carries the UTF-16 message and the location. The modules are WAT source
below, assembled by wasmtime.
"""

from __future__ import annotations

import pytest
import wasmtime

from tests.wasmhost._conformance import ConformanceHost

_PREAMBLE = """
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32) (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $n))) (local.get $p))
  (data (i32.const 100) "_initialize")
  (data (i32.const 120) "main")
  (data (i32.const 130) "__main_void")
  (data (i32.const 150) "_start")
"""
_INITIALIZE = '(func (export "_initialize") (drop (call $log (i32.const 2) (i32.const 100) (i32.const 11))))'
_MAIN = """(func (export "main") (param $argc i32) (param $argv i32) (result i32)
    (if (i32.or (local.get $argc) (local.get $argv)) (then unreachable))
    (drop (call $log (i32.const 2) (i32.const 120) (i32.const 4))) (i32.const 0))"""
_MAIN_VOID = """(func (export "__main_void") (result i32)
    (drop (call $log (i32.const 2) (i32.const 130) (i32.const 11))) (i32.const 0))"""
_START = '(func (export "_start") (drop (call $log (i32.const 2) (i32.const 150) (i32.const 6))))'


def module(*parts: str, imports: str = "") -> bytes:
    return bytes(wasmtime.wat2wasm("(module " + imports + _PREAMBLE + "\n".join(parts) + ")"))


@pytest.mark.parametrize(
    ("exports", "expected"),
    [
        ((_INITIALIZE, _MAIN, _MAIN_VOID, _START), ["_initialize", "main"]),
        ((_INITIALIZE, _MAIN_VOID, _START), ["_initialize", "__main_void"]),
        ((_START, _MAIN), ["_start"]),
        ((_INITIALIZE,), ["_initialize"]),
    ],
    ids=["initialize-then-main", "initialize-then-main-void", "start-only-without-initialize", "initialize"],
)
def test_entry_points_run_in_cpp_hosts_order(exports: tuple[str, ...], expected: list[str]) -> None:
    with ConformanceHost(module(*exports)) as host:
        assert [e["message"] for e in host.startup_logs] == expected


def as_string(address: int, text: str) -> str:
    """An AssemblyScript string at ``address``: UTF-16LE, its byte length in the 4 bytes before."""
    data = len(text.encode("utf-16-le")).to_bytes(4, "little") + text.encode("utf-16-le")
    escaped = "".join(f"\\{byte:02x}" for byte in data)
    return f'(data (i32.const {address - 4}) "{escaped}")'


def test_assemblyscript_abort_is_a_trap_with_its_message() -> None:
    wasm = module(
        as_string(200, "bad input"),
        as_string(300, "a.ts"),
        """(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (call $abort (i32.const 200) (i32.const 300) (i32.const 7) (i32.const 3)) (i32.const 0))""",
        imports='(import "env" "abort" (func $abort (param i32 i32 i32 i32)))',
    )
    with ConformanceHost(wasm) as host:
        result = host.request()
        assert result["trap"] is not None and "abort: bad input at a.ts:7:3" in result["trap"]
        assert result["response"]["status"] == 503
