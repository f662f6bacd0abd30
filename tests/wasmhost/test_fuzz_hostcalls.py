"""Fuzz every host function with raw guest values: the host answers with a status, never a crash.

The guest (``data/fuzz_dispatch.wat``) imports every function of the registry, so host
functions added later are fuzzed automatically. For each example the test writes a phase,
a function index, raw argument words and scratch bytes into guest memory, then drives a
real stream (or a tick) through the public API; the chosen callback makes the call. The VM
must come out healthy: a host exception would have become a trap and failed it.

Examples per function: ``WASMESH_FUZZ_EXAMPLES`` (default 20; raise it for a deep run).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import wasmtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wasmhost  # noqa: F401 - importing the package registers every host function
from wasmhost import FailurePolicy, Plugin, PluginSpec, Runtime, Status, WasmVM, encode_pairs
from wasmhost._registry import HOST_FUNCTIONS, WASI_MODULES, HostFunction

DATA = Path(__file__).parent / "data"
EXAMPLES = int(os.environ.get("WASMESH_FUZZ_EXAMPLES", "20"))

#: Functions that end the guest on purpose (they trap by design, as the ABI says).
TRAP_BY_DESIGN = {("env", "abort")} | {(module, "proc_exit") for module in WASI_MODULES}

# guest memory layout (see the WAT header)
ARGS, ARGS_END = 264, 512
SCRATCH, SCRATCH_SIZE = 4096, 4096
ARENA = 16384
MEMORY_SIZE = 2 * 65536
PHASES = {1: "request headers", 2: "request body", 3: "request trailers", 4: "response headers",
          5: "response body", 6: "on_log", 7: "on_tick"}
WASI_ERRNO_MAX = 76


@dataclass(frozen=True)
class Target:
    index: int
    function: HostFunction

    @property
    def name(self) -> str:
        return f"{self.function.module}.{self.function.name}"

    @property
    def slots(self) -> int:
        return sum(2 if p == "I" else 1 for p in self.function.params)


def fuzz_targets() -> list[Target]:
    """One target per distinct host function (WASI's two module names share one implementation)."""
    targets: list[Target] = []
    seen: set[tuple[object, str]] = set()
    for key, function in sorted(HOST_FUNCTIONS.items()):
        identity = (function.impl, function.params)
        if key in TRAP_BY_DESIGN or identity in seen:
            continue
        seen.add(identity)
        targets.append(Target(len(targets), function))
    return targets


TARGETS = fuzz_targets()
MAX_SLOTS = max(t.slots for t in TARGETS)
assert ARGS + 4 * MAX_SLOTS <= ARGS_END, "too many argument slots for the control block"


def _wat_type(code: str) -> str:
    return {"i": "i32", "I": "i64"}[code]


def _arm(target: Target) -> str:
    """Load the target's arguments from the slots, call it, store its result."""
    loads: list[str] = []
    slot = 0
    for code in target.function.params:
        low = f"(i32.load (i32.const {ARGS + 4 * slot}))"
        if code == "I":
            high = f"(i32.load (i32.const {ARGS + 4 * (slot + 1)}))"
            loads.append(f"(i64.or (i64.extend_i32_u {low}) (i64.shl (i64.extend_i32_u {high}) (i64.const 32)))")
            slot += 2
        else:
            loads.append(low)
            slot += 1
    call = f"(call $h{target.index} {' '.join(loads)})"
    results = target.function.results
    if results == "":
        store = f"{call} (global.set $result (i32.const 0))"
    elif results == "I":
        store = f"(global.set $result (i32.wrap_i64 {call}))"
    else:
        store = f"(global.set $result {call})"
    return store


def fuzz_guest(targets: list[Target]) -> bytes:
    imports = []
    for t in targets:
        fn = t.function
        params = " ".join(_wat_type(c) for c in fn.params)
        result = f" (result {_wat_type(fn.results)})" if fn.results else ""
        imports.append(f'(import "{fn.module}" "{fn.name}" (func $h{t.index} (param {params}){result}))')
    # nested blocks: br_table index i jumps to the end of block $a{i}, where arm i follows
    dispatch = "(block $done\n"
    for t in reversed(targets):
        dispatch += f"(block $a{t.index}\n"
    labels = " ".join(f"$a{t.index}" for t in targets)
    dispatch += f"(br_table {labels} $done (global.get $index)))\n"
    for t in targets:
        dispatch += f"{_arm(t)} (br $done))\n"  # closes the next arm's block ($done after the last)
    text = (DATA / "fuzz_dispatch.wat").read_text(encoding="utf-8")
    text = text.replace(";;@IMPORTS@", "\n  ".join(imports)).replace(";;@DISPATCH@", dispatch)
    return bytes(wasmtime.wat2wasm(text))


# -- strategies ------------------------------------------------------------------------------------

BOUNDARIES = [
    0, 1, 2, 3, 4, 7, 8, 9, 12, 16, 255, 256, 0xFFFF, 0x10000,
    MEMORY_SIZE - 8, MEMORY_SIZE - 4, MEMORY_SIZE - 1, MEMORY_SIZE, MEMORY_SIZE + 1,
    ARGS, SCRATCH, SCRATCH + SCRATCH_SIZE - 4, ARENA,
    0x7FFFFFFF, 0x80000000, 0xFFFFFFF0, 0xFFFFFFFC, 0xFFFFFFFE, 0xFFFFFFFF,
]
word = st.one_of(
    st.integers(0, 9),  # enums, small lengths, context ids (listed first: hypothesis favours it)
    st.sampled_from(BOUNDARIES),
    st.integers(SCRATCH, SCRATCH + SCRATCH_SIZE),  # pointers to meaningful bytes
    st.integers(0, 0xFFFFFFFF),
)
pairs = st.lists(st.tuples(st.binary(max_size=24), st.binary(max_size=24)), max_size=6).map(encode_pairs)
scratch = st.one_of(st.binary(max_size=256), pairs, st.just(b"request\0path"), st.just(b"uncompress"))


# -- driving ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_module() -> bytes:
    return fuzz_guest(TARGETS)


class FuzzHost:
    """A healthy fuzz plugin on demand: a VM a failing example broke is replaced, so every
    example (and hypothesis' shrinking) starts from a working VM that already served others."""

    def __init__(self, module: bytes) -> None:
        self.module = module
        self.runtimes: list[Runtime] = []
        self._plugin: Plugin | None = None

    @property
    def plugin(self) -> Plugin:
        plugin = self._plugin
        if plugin is None or plugin.vm is None or plugin.vm.failed is not None:
            runtime = Runtime()
            self.runtimes.append(runtime)
            plugin = Plugin(runtime, runtime.compile(self.module), PluginSpec(
                name="fuzz", vm_id="fuzz", failure_policy=FailurePolicy.FAIL_CLOSED,
                configuration=b"fuzz-config", vm_configuration=b"fuzz-vm-config",
            ))
            plugin.start()
            self._plugin = plugin
        return plugin

    def close(self) -> None:
        for runtime in self.runtimes:
            runtime.close()


@pytest.fixture
def fuzz_host(fuzz_module: bytes) -> Iterator[FuzzHost]:
    host = FuzzHost(fuzz_module)
    try:
        yield host
    finally:
        host.close()


def guest_global(vm: WasmVM, name: str) -> wasmtime.Global:
    item = vm.instance.exports(vm.store)[name]
    assert isinstance(item, wasmtime.Global)
    return item


def arm(vm: WasmVM, phase: int, target: Target, words: list[int], data: bytes) -> None:
    memory = vm.memory
    memory.write(SCRATCH, data.ljust(SCRATCH_SIZE, b"\0")[:SCRATCH_SIZE])
    for i, value in enumerate(words):
        assert memory.write_u32(ARGS + 4 * i, value)
    controls = (("phase", phase), ("index", target.index), ("result", -0x21524111), ("fired", 0), ("heap", ARENA))
    for name, value in controls:  # result starts as 0xDEADBEEF
        guest_global(vm, name).set_value(vm.store, wasmtime.Val.i32(value))


def read_global(vm: WasmVM, name: str) -> int:
    value = guest_global(vm, name).value(vm.store)
    assert isinstance(value, int)
    return value & 0xFFFFFFFF


def drive(plugin: Plugin, phase: int) -> None:
    """One full stream (the armed callback makes the call), or one tick for the root phase."""
    if phase == 7:
        plugin.on_tick()
        return
    stream = plugin.new_http_stream()
    stream.on_request_headers([(b":method", b"POST"), (b":path", b"/fuzz"), (b"x-fuzz", b"1")], False)
    stream.on_request_body(b"request-body", False)
    stream.on_request_trailers([(b"x-trailer", b"t")])
    stream.on_response_headers([(b":status", b"200"), (b"x-up", b"u")], False)
    stream.on_response_body(b"response-body", True)
    stream.finish()


def allowed_results(function: HostFunction) -> range:
    if function.module in WASI_MODULES:
        return range(0, WASI_ERRNO_MAX + 1)
    if function.name.startswith("proxy_"):
        return range(0, max(Status) + 1)
    return range(0, 2**32)


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_random_arguments_never_break_the_host(target: Target, fuzz_host: FuzzHost) -> None:
    first_vm = fuzz_host.plugin.vm
    allowed = allowed_results(target.function)

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(phase=st.sampled_from(sorted(PHASES)), words=st.lists(word, min_size=MAX_SLOTS, max_size=MAX_SLOTS),
           data=scratch)
    def example(phase: int, words: list[int], data: bytes) -> None:
        plugin = fuzz_host.plugin
        vm = plugin.vm
        assert vm is not None
        arm(vm, phase, target, words, data)
        drive(plugin, phase)
        plugin.runtime.take_commands()
        assert vm.failed is None, f"{target.name} in {PHASES[phase]} broke the VM: {vm.failed}"
        assert read_global(vm, "fired") == 1, f"{target.name} was not called in {PHASES[phase]}"
        result = read_global(vm, "result")
        assert result in allowed, f"{target.name} in {PHASES[phase]} returned {result}"

    example()
    assert fuzz_host.plugin.vm is first_vm  # one VM served every example


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_small_values_sweep(target: Target, fuzz_host: FuzzHost) -> None:
    """Deterministic complement to the random search: every small value (enums, ids, lengths) in
    the first slot, in every phase, with the other slots all small or alternating pointer/length."""
    allowed = allowed_results(target.function)
    blob = encode_pairs([(b"x-fuzz", b"1"), (b":path", b"/")])
    rest = MAX_SLOTS - 1
    patterns = {
        "small": lambda v: [v] * rest,
        "ptr/len": lambda v: [SCRATCH if i % 2 == 0 else len(blob) for i in range(rest)],
    }
    failures: list[str] = []
    for phase in sorted(PHASES):
        for first in range(10):
            for label, pattern in patterns.items():
                plugin = fuzz_host.plugin
                vm = plugin.vm
                assert vm is not None
                arm(vm, phase, target, [first, *pattern(first)], blob)
                drive(plugin, phase)
                plugin.runtime.take_commands()
                where = f"{PHASES[phase]}, first={first}, {label}"
                if vm.failed is not None:
                    failures.append(f"{where}: VM broke: {vm.failed}")
                elif read_global(vm, "fired") != 1:
                    failures.append(f"{where}: not called")
                elif read_global(vm, "result") not in allowed:
                    failures.append(f"{where}: returned {read_global(vm, 'result')}")
    assert not failures, f"{target.name}:\n" + "\n".join(failures[:10])


def test_every_registered_host_function_is_fuzzed() -> None:
    """New host functions are picked up from the registry; only trap-by-design ones are left out."""
    fuzzed = {(t.function.module, t.function.name) for t in TARGETS}
    for key, function in HOST_FUNCTIONS.items():
        if key in TRAP_BY_DESIGN:
            continue
        twin = key in fuzzed or any(
            t.function.impl is function.impl and t.function.params == function.params for t in TARGETS
        )
        assert twin, f"{key} is not fuzzed"
    assert any(name.startswith("proxy_") for _, name in fuzzed)
