"""The C-API fast path (``wasmhost._capi``): argument and result marshalling, bounds checks,
traps, host exceptions and re-entrant calls, tested directly on a small WAT module."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import wasmtime

from wasmhost._capi import (
    Caller,
    ExitRequested,
    GuestMemory,
    GuestTrap,
    args_struct,
    define_host_function,
    func_type,
)

PAGE = 65536

# i32/i64 host imports echo through; "call_*" exports call them; "reenter" calls a host function
# that calls back into the guest's "add" export.
PROBE = """
(module
  (import "host" "echo32" (func $echo32 (param i32 i32) (result i32)))
  (import "host" "echo64" (func $echo64 (param i64) (result i64)))
  (import "host" "sink" (func $sink (param i32 i64 i32)))
  (import "host" "reenter" (func $reenter (param i32) (result i32)))
  (memory (export "memory") 1 4)
  (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
  (func (export "neg") (param i32) (result i32) (i32.sub (i32.const 0) (local.get 0)))
  (func (export "nothing") (param i32))
  (func (export "call_echo32") (param i32 i32) (result i32) (call $echo32 (local.get 0) (local.get 1)))
  (func (export "call_echo64") (param i32 i32) (result i32)
    (i32.wrap_i64 (i64.shr_u
      (call $echo64 (i64.or (i64.extend_i32_u (local.get 0)) (i64.shl (i64.extend_i32_u (local.get 1)) (i64.const 32))))
      (i64.const 32))))
  (func (export "call_sink") (param i32 i32) (result i32)
    (call $sink (local.get 0)
                (i64.or (i64.extend_i32_u (local.get 1)) (i64.shl (i64.extend_i32_u (local.get 1)) (i64.const 32)))
                (local.get 1))
    (i32.const 7))
  (func (export "call_reenter") (param i32 i32) (result i32)
    (i32.add (call $reenter (local.get 0)) (local.get 1)))
  (func (export "trap") unreachable)
  (func (export "spin") (loop $l (br $l)))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
)
"""


@dataclass
class Probe:
    store: wasmtime.Store
    caller: Caller
    memory: GuestMemory
    exports: dict[str, Callable[..., int]]
    engine: wasmtime.Engine
    calls: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    restricted: int = 0  # read by the trampoline of functions with an ``allowed`` window
    host_result: dict[str, Any] = field(default_factory=dict)
    keepalive: list[Any] = field(default_factory=list)


@pytest.fixture
def probe() -> Iterator[Probe]:
    config = wasmtime.Config()
    config.epoch_interruption = True
    config.memory_may_move = False
    config.memory_reservation = 1 << 32
    engine = wasmtime.Engine(config)
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(1_000_000)
    caller = Caller(store)
    linker = wasmtime.Linker(engine)
    p = Probe(store, caller, None, {}, engine)  # type: ignore[arg-type]

    def host(name: str, default: Callable[..., Any]) -> Callable[..., Any]:
        def impl(owner: Probe, *args: int) -> Any:
            assert owner is p
            p.calls.append((name, args))
            behaviour = p.host_result.get(name, default)
            return behaviour(*args) if callable(behaviour) else behaviour
        return impl

    def define(name: str, params: str, results: str, default: Callable[..., Any], **window: Any) -> None:
        define_host_function(
            linker, "host", name, params, results, host(name, default), caller, p.keepalive, owner=p, **window
        )

    define("echo32", "ii", "i", lambda a, b: a ^ b, allowed=lambda owner: owner.restricted == 1, denied_result=10)
    define("echo64", "I", "I", lambda a: a)
    define("sink", "iIi", "", lambda *a: None)
    define("reenter", "i", "i", lambda a: p.exports["add"](a, 1000))
    instance = linker.instantiate(store, wasmtime.Module(engine, PROBE))
    exports = instance.exports(store)
    for name in ("add", "neg", "nothing", "call_echo32", "call_echo64", "call_sink", "call_reenter", "trap",
                 "spin", "grow"):
        func = exports[name]
        assert isinstance(func, wasmtime.Func)
        ty = func.type(store)
        p.exports[name] = caller.export(func, len(ty.params), len(ty.results))
    memory = exports["memory"]
    assert isinstance(memory, wasmtime.Memory)
    p.memory = GuestMemory(store, memory)
    yield p


# -- calling exports ---------------------------------------------------------------------------------

def test_export_call_passes_arguments_and_returns_the_i32_result(probe: Probe) -> None:
    assert probe.exports["add"](2, 40) == 42
    assert probe.exports["add"](0x7FFFFFFF, 1) == -0x80000000  # the result is read as a signed i32
    assert probe.exports["neg"](5) == -5


def test_export_arguments_are_truncated_to_32_bits(probe: Probe) -> None:
    assert probe.exports["add"](-1, 1) == 0
    assert probe.exports["add"](0x1_0000_0002, 3) == 5


def test_export_without_result_returns_zero(probe: Probe) -> None:
    assert probe.exports["nothing"](1) == 0


# -- host functions -----------------------------------------------------------------------------------

def test_host_function_receives_unsigned_i32_arguments(probe: Probe) -> None:
    probe.host_result["echo32"] = lambda a, b: 0
    probe.exports["call_echo32"](-1, 0x80000000)
    assert probe.calls == [("echo32", (0xFFFFFFFF, 0x80000000))]


@pytest.mark.parametrize("value", [0, 1, 15, 16, 12345, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])
def test_host_function_i32_results_reach_the_guest(probe: Probe, value: int) -> None:
    probe.host_result["echo32"] = value
    assert probe.exports["call_echo32"](0, 0) & 0xFFFFFFFF == value


def test_host_function_none_result_is_zero(probe: Probe) -> None:
    probe.host_result["echo32"] = None
    assert probe.exports["call_echo32"](1, 2) == 0


def test_host_function_i64_arguments_and_results(probe: Probe) -> None:
    result = probe.exports["call_echo64"](0x89ABCDEF, 0xFEDCBA98)
    assert probe.calls == [("echo64", (0xFEDCBA98_89ABCDEF,))]
    assert result & 0xFFFFFFFF == 0xFEDCBA98  # the high word survived the round trip


def test_host_function_mixed_signature_and_no_result(probe: Probe) -> None:
    assert probe.exports["call_sink"](3, 0xFFFFFFFF) == 7
    assert probe.calls == [("sink", (3, 0xFFFFFFFF_FFFFFFFF, 0xFFFFFFFF))]


def test_restricted_window_answers_without_running_the_function(probe: Probe) -> None:
    probe.host_result["echo32"] = 3
    probe.restricted = 2  # a window echo32 is not allowed in
    assert probe.exports["call_echo32"](1, 2) == 10
    assert probe.calls == []
    probe.restricted = 1  # a window it is allowed in
    assert probe.exports["call_echo32"](1, 2) == 3
    probe.restricted = 0  # no window: always runs
    assert probe.exports["call_echo32"](1, 2) == 3
    assert len(probe.calls) == 2


def test_reentrant_call_keeps_the_outer_call_intact(probe: Probe) -> None:
    """The host function calls back into the guest; the outer export's slots are not clobbered."""
    assert probe.exports["call_reenter"](5, 20) == 5 + 1000 + 20
    assert probe.calls == [("reenter", (5,))]


# -- traps -------------------------------------------------------------------------------------------

def test_guest_trap_becomes_guest_trap(probe: Probe) -> None:
    with pytest.raises(GuestTrap, match="unreachable") as trapped:
        probe.exports["trap"]()
    assert not trapped.value.interrupted
    assert trapped.value.exit_code is None
    assert probe.exports["add"](1, 1) == 2  # the store stays usable for the caller to decide


def test_host_exception_traps_the_guest_and_is_chained(probe: Probe) -> None:
    def explode(a: int, b: int) -> int:
        raise KeyError("no such thing")

    probe.host_result["echo32"] = explode
    with pytest.raises(GuestTrap, match="host function failed: KeyError") as trapped:
        probe.exports["call_echo32"](1, 2)
    assert isinstance(trapped.value.__cause__, KeyError)
    assert probe.caller.on_trap_exception is None  # consumed: the next trap is not blamed on it
    with pytest.raises(GuestTrap) as plain:
        probe.exports["trap"]()
    assert plain.value.__cause__ is None


def test_exit_request_carries_the_exit_code(probe: Probe) -> None:
    def exit_now(a: int, b: int) -> int:
        raise ExitRequested(3)

    probe.host_result["echo32"] = exit_now
    with pytest.raises(GuestTrap) as trapped:
        probe.exports["call_echo32"](0, 0)
    assert trapped.value.exit_code == 3


def test_epoch_deadline_interrupts_a_spinning_guest(probe: Probe) -> None:
    probe.caller.set_deadline(2)
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.005):
            probe.engine.increment_epoch()

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        with pytest.raises(GuestTrap) as trapped:
            probe.exports["spin"]()
    finally:
        stop.set()
        ticker.join()
    assert trapped.value.interrupted


# -- guest memory --------------------------------------------------------------------------------------

def test_memory_reads_and_writes_inside_bounds(probe: Probe) -> None:
    mem = probe.memory
    assert mem.size == PAGE
    assert mem.write(100, b"hello")
    assert mem.read(100, 5) == b"hello"
    assert mem.write_u32(200, 0xDEADBEEF)
    assert mem.read_u32(200) == 0xDEADBEEF
    assert mem.write_u64(300, 0x0123456789ABCDEF)
    assert mem.read(300, 8) == (0x0123456789ABCDEF).to_bytes(8, "little")
    assert mem.write_u32(400, -1) and mem.read_u32(400) == 0xFFFFFFFF  # values are masked


@pytest.mark.parametrize(
    ("ptr", "length", "ok"),
    [
        (0, PAGE, True),
        (PAGE - 1, 1, True),
        (PAGE, 0, True),
        (PAGE, 1, False),
        (PAGE - 1, 2, False),
        (0, PAGE + 1, False),
        (0xFFFFFFFF, 1, False),
        (0xFFFFFFFF, 0xFFFFFFFF, False),
        (1, 0xFFFFFFFF, False),
    ],
)
def test_memory_bounds_are_checked(probe: Probe, ptr: int, length: int, ok: bool) -> None:
    mem = probe.memory
    assert mem.fits(ptr, length) is ok
    assert (mem.read(ptr, length) is not None) is ok
    if length <= PAGE:
        assert mem.write(ptr, b"\1" * length) is ok


@pytest.mark.parametrize("ptr", [PAGE - 3, PAGE, 0xFFFFFFFD, 0xFFFFFFFF])
def test_memory_word_access_at_the_edge_is_refused(probe: Probe, ptr: int) -> None:
    mem = probe.memory
    assert mem.read_u32(ptr) is None
    assert mem.write_u32(ptr, 1) is False
    assert mem.write_u64(ptr, 1) is False


def test_memory_growth_is_seen_without_moving(probe: Probe) -> None:
    mem = probe.memory
    base = mem.base
    assert mem.read(PAGE, 4) is None
    assert probe.exports["grow"](2) == 1
    assert mem.read(PAGE, 4) == b"\0\0\0\0"  # the failed check refreshed the size
    assert mem.size == 3 * PAGE
    assert mem.write(3 * PAGE - 4, b"edge")
    assert mem.read(3 * PAGE - 3, 4) is None
    assert mem.base == base


def test_memory_growth_beyond_the_module_maximum_fails_in_the_guest(probe: Probe) -> None:
    assert probe.exports["grow"](4) == -1
    assert probe.memory.refresh() == PAGE


# -- helpers -------------------------------------------------------------------------------------------

def test_func_type_and_args_struct_follow_the_signature() -> None:
    ty = func_type("iIi", "I")
    assert [str(p) for p in ty.params] == ["i32", "i64", "i32"]
    assert [str(r) for r in ty.results] == ["i64"]
    layout = args_struct("iIi")
    assert layout.size == 3 * 16
    raw = (7).to_bytes(16, "little") + (2**40 + 3).to_bytes(16, "little") + (0xFFFFFFFF).to_bytes(16, "little")
    assert layout.unpack(raw) == (7, 2**40 + 3, 0xFFFFFFFF)


# -- coexistence with wasmtime-py ------------------------------------------------------------------------

def test_the_fast_path_leaves_wasmtime_py_usable() -> None:
    """Embedders and tests may still use the idiomatic API in the same process."""
    import wasmhost._capi  # noqa: F401 - the import is what is under test

    store = wasmtime.Store(wasmtime.Engine())
    memory = wasmtime.Memory(store, wasmtime.MemoryType(wasmtime.Limits(1, None)))
    memory.write(store, b"hi", 0)
    assert bytes(memory.read(store, 0, 2)) == b"hi"
    assert wasmtime.Trap("boom").message == "boom"
