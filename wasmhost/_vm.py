"""The runtime (engine, epoch ticker, shared state) and one VM (a module instance).

A VM is one module instantiated in one wasmtime store, identified like cpp-host does by
vm_id + VM configuration + code. It owns the context table and the fast call path; the
proxy-wasm lifecycle on top of it lives in :mod:`wasmhost._plugin`.

Rules:

1. A trap, an epoch deadline or a memory-cap hit marks the VM failed; a failed VM is
   never called again (its plugins apply their failure policy).
2. Only status codes cross the boundary; host exceptions become traps (see ``_capi``).
3. While the VM runs its start functions or its allocator, only the imports cpp-host
   permits there run; others return the "restricted capability" result.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

import wasmtime

from . import (  # noqa: F401 - importing registers the host functions
    _hostcalls_core,
    _hostcalls_extra,
    _hostcalls_foreign,
    _hostcalls_metrics,
    _properties,
    _wasi,
)
from ._abi import AbiVersion, LogLevel, Status
from ._capi import Caller, GuestMemory, GuestTrap, define_host_function
from ._commands import CommandQueue
from ._environment import Environment
from ._registry import HOST_FUNCTIONS, HostFunction
from .limits import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:
    from ._context import AnyContext
    from ._plugin import PluginSpec

WASM_MAGIC = b"\0asm"

RESTRICT_NONE = 0
RESTRICT_START = 1
RESTRICT_ALLOC = 2


class ModuleError(Exception):
    """A module cannot be used: not wasm, no ABI marker, no allocator, link failure."""


class VmFailed(Exception):
    """The VM trapped, hit its deadline or its memory cap; the message says which."""

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.kind = kind  # "trap" | "deadline" | "memory" | "start"


@dataclass(frozen=True, slots=True)
class CompiledModule:
    """A validated, compiled module ready to instantiate any number of times."""

    module: wasmtime.Module
    sha256: str
    abi: AbiVersion
    exports: frozenset[str]
    size: int


#: callback latency histogram bounds (microseconds)
CALLBACK_LATENCY_BOUNDS_US: tuple[int, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000, 100000)


@dataclass(slots=True)
class CallStats:
    """Calls into one plugin's VM: how many, how many failed, and how long they took."""

    calls: int = 0
    errors: int = 0
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(CALLBACK_LATENCY_BOUNDS_US) + 1))
    latency_sum_us: float = 0.0

    def record(self, elapsed_ns: int) -> None:
        self.calls += 1
        micros = elapsed_ns / 1000.0
        self.latency_sum_us += micros
        self.latency_counts[bisect.bisect_left(CALLBACK_LATENCY_BOUNDS_US, micros)] += 1


@dataclass(slots=True)
class RuntimeCounters:
    """Failure and lifecycle counters of every VM of one runtime (exported as metrics)."""

    vms_created: int = 0
    traps: int = 0
    deadline_hits: int = 0
    memory_cap_hits: int = 0
    reloads: int = 0
    reload_failures: int = 0
    per_plugin: dict[str, dict[str, int]] = field(default_factory=dict)
    calls: dict[str, CallStats] = field(default_factory=dict)

    def call_stats(self, plugin: str) -> CallStats:
        stats = self.calls.get(plugin)
        if stats is None:
            stats = self.calls[plugin] = CallStats()
        return stats

    def bump(self, plugin: str, name: str) -> None:
        per = self.per_plugin.setdefault(plugin, {})
        per[name] = per.get(name, 0) + 1


class EpochClock:
    """Epoch ticks for a deadline on CPU time, not wall time.

    A tick is due only when the process has both lived and run ``interval`` seconds since the
    last one (the smaller of the two deltas counts): a guest spinning on the CPU trips its
    deadline on time, but a process the machine has not scheduled (a loaded box, a stopped
    process) does not fail a callback that never got to run, and threads compiling modules
    beside a guest cannot make its deadline come sooner than by the clock.
    """

    __slots__ = ("interval", "_credit", "_wall", "_cpu")

    def __init__(self, interval: float, wall: float | None = None, cpu: float | None = None) -> None:
        self.interval = interval
        self._credit = 0.0
        self._wall = time.monotonic() if wall is None else wall
        self._cpu = time.process_time() if cpu is None else cpu

    def ticks(self, wall: float, cpu: float) -> int:
        """How many ticks are due now, given the wall clock and the process's CPU time."""
        self._credit += max(0.0, min(wall - self._wall, cpu - self._cpu))
        self._wall, self._cpu = wall, cpu
        due = int(self._credit / self.interval)
        self._credit -= due * self.interval
        return due


class Runtime:
    """One per process: the wasmtime engine, the epoch ticker, shared data and metrics."""

    def __init__(
        self,
        *,
        limits: Limits = DEFAULT_LIMITS,
        environment: Environment | None = None,
        cache_dir: str | None = None,
    ) -> None:

        from ._metrics import MetricStore
        from ._shared import SharedRegistry

        self.limits = limits
        self.environment = environment or Environment()
        config = wasmtime.Config()
        config.epoch_interruption = True
        config.memory_may_move = False
        config.memory_reservation = 1 << 32
        self.engine = wasmtime.Engine(config)
        self.commands = CommandQueue()
        self.shared = SharedRegistry(limits)
        self.metrics = MetricStore()
        self.counters = RuntimeCounters()
        self.cache = _module_cache(cache_dir, self.engine) if cache_dir else None
        self._deadline_ticks = max(1, -(-limits.callback_deadline_ms // limits.epoch_tick_ms)) + 1
        self.epoch = 0
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick_epochs, name="wasm-epoch", daemon=True)
        self._ticker.start()

    def _tick_epochs(self) -> None:
        clock = EpochClock(self.limits.epoch_tick_ms / 1000.0)
        while not self._stop.wait(clock.interval):
            for _ in range(clock.ticks(time.monotonic(), time.process_time())):
                self.epoch += 1
                self.engine.increment_epoch()

    def close(self) -> None:
        self._stop.set()

    def compile(self, wasm: bytes) -> CompiledModule:
        """Validate and compile a module (through the on-disk cache when configured)."""
        if len(wasm) > self.limits.max_module_size:
            raise ModuleError(f"module is {len(wasm)} bytes, over the {self.limits.max_module_size}-byte limit")
        if not wasm.startswith(WASM_MAGIC):
            raise ModuleError("not a WebAssembly module (missing \\0asm magic)")
        digest = hashlib.sha256(wasm).hexdigest()
        try:
            if self.cache is not None:
                module = self.cache.load_or_compile(wasm, digest)
            else:
                module = wasmtime.Module(self.engine, wasm)
        except wasmtime.WasmtimeError as err:
            raise ModuleError(f"invalid module: {str(err).splitlines()[0]}") from None
        exports = frozenset(e.name for e in module.exports)
        abi = AbiVersion.detect(exports)
        if abi is None:
            raise ModuleError("missing or unknown Proxy-Wasm ABI version (no proxy_abi_version_* export)")
        if "malloc" not in exports and "proxy_on_memory_allocate" not in exports:
            raise ModuleError("module exports no allocator (malloc or proxy_on_memory_allocate)")
        if "memory" not in exports:
            raise ModuleError("module exports no linear memory named 'memory'")
        return CompiledModule(module, digest, abi, exports, len(wasm))

    def take_commands(self) -> list[Any]:
        """Drain the deferred effects every VM produced since the last call."""
        return self.commands.take()

    @property
    def deadline_ticks(self) -> int:
        return self._deadline_ticks


class WasmVM:
    """One instance of a module: store, memory, exports, contexts."""

    def __init__(
        self,
        runtime: Runtime,
        compiled: CompiledModule,
        *,
        vm_id: str = "",
        vm_configuration: bytes = b"",
        env: dict[str, str] | None = None,
        log_spec: PluginSpec | None = None,
    ) -> None:
        self.runtime = runtime
        self.compiled = compiled
        self.abi = compiled.abi
        self.vm_id = vm_id
        self.vm_configuration = vm_configuration
        self.env = dict(env or {})
        self.environment = runtime.environment
        self.limits = runtime.limits
        self.failed: str | None = None
        self.failure_kind: str | None = None
        self.contexts: dict[int, AnyContext] = {}
        self._ids = itertools.count(1)
        self._tokens = itertools.count(1)
        self.current: AnyContext | None = None
        self.effective: AnyContext | None = None
        self.restricted = RESTRICT_NONE
        self.log_spec = log_spec  # whose name start-time logs carry
        self.active_streams = 0
        self._stats = runtime.counters.call_stats(log_spec.name if log_spec else vm_id)
        self.store = wasmtime.Store(runtime.engine)
        self.store.set_limits(memory_size=runtime.limits.max_vm_memory)
        self.store.set_epoch_deadline(runtime.deadline_ticks)
        self.caller = Caller(self.store)
        self._deadline_epoch = -1
        self._keepalive: list[Any] = []
        linker = wasmtime.Linker(runtime.engine)
        for hf in HOST_FUNCTIONS.values():
            define_host_function(
                linker, hf.module, hf.name, hf.params, hf.results, hf.impl, self.caller, self._keepalive,
                owner=self, allowed=_window_check(hf), denied_result=hf.restricted_result,
            )
        unknown = [
            f"{imp.module}.{imp.name}"
            for imp in compiled.module.imports
            if (imp.module, imp.name or "") not in HOST_FUNCTIONS
        ]
        linker.define_unknown_imports_as_traps(compiled.module)
        try:
            self.instance = linker.instantiate(self.store, compiled.module)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as err:
            raise ModuleError(f"cannot instantiate module: {str(err).splitlines()[0]}") from None
        if unknown:
            self.log(LogLevel.WARN, "module imports functions this host does not provide (they trap if called): "
                     + ", ".join(sorted(unknown)))
        exports = self.instance.exports(self.store)
        memory = exports["memory"]
        if not isinstance(memory, wasmtime.Memory):
            raise ModuleError("export 'memory' is not a linear memory")
        self.memory = GuestMemory(self.store, memory)
        self._exports: dict[str, Callable[..., int]] = {}
        for name in compiled.exports:
            item = exports[name]
            if isinstance(item, wasmtime.Func):
                ty = item.type(self.store)
                self._exports[name] = self.caller.export(item, len(ty.params), len(ty.results))
        alloc = self._exports.get("malloc") or self._exports.get("proxy_on_memory_allocate")
        if alloc is None:
            raise ModuleError("module exports no allocator function")
        self._alloc = alloc
        runtime.counters.vms_created += 1

    # -- lifecycle ----------------------------------------------------------------------
    def has_export(self, name: str) -> bool:
        return name in self._exports

    def start(self) -> None:
        """Run the module's initialiser (``_initialize`` + ``main``/``__main_void``, or ``_start``)."""
        self.restricted = RESTRICT_START
        try:
            if "_initialize" in self._exports:
                self.call(None, "_initialize")
                if "main" in self._exports:
                    self.call(None, "main", 0, 0)
                elif "__main_void" in self._exports:
                    self.call(None, "__main_void")
            elif "_start" in self._exports:
                self.call(None, "_start")
        except VmFailed as err:
            if err.kind != "exit0":
                raise
        finally:
            self.restricted = RESTRICT_NONE

    def next_context_id(self) -> int:
        return next(self._ids)

    def next_token(self) -> int:
        """Callout tokens are unique per VM (SDKs key their callbacks by token alone)."""
        return next(self._tokens)

    def call(self, ctx: AnyContext | None, export: str, *args: int) -> int | None:
        """Call a guest export on behalf of ``ctx``; None when the module does not export it."""
        fn = self._exports.get(export)
        if fn is None:
            return None
        if self.failed is not None:
            raise VmFailed(self.failed, self.failure_kind or "trap")
        prev_current, prev_effective = self.current, self.effective
        self.current = self.effective = ctx
        stats = None
        if prev_current is None:
            runtime = self.runtime
            if self._deadline_epoch != runtime.epoch:
                self._deadline_epoch = runtime.epoch
                self.caller.set_deadline(runtime._deadline_ticks)
            stats = self._stats if ctx is None else self.runtime.counters.call_stats(ctx.root.spec.name)
        started = perf_counter_ns()
        try:
            return fn(*args)
        except GuestTrap as trap:
            if stats is not None:
                stats.errors += 1
            if trap.exit_code == 0 and self.restricted == RESTRICT_START:
                raise VmFailed("guest exited during start", "exit0") from None
            self._mark_failed(trap, export)
            raise VmFailed(self.failed or str(trap), self.failure_kind or "trap") from None
        finally:
            self.current, self.effective = prev_current, prev_effective
            if stats is not None:
                stats.record(perf_counter_ns() - started)

    def _mark_failed(self, trap: GuestTrap, export: str) -> None:
        counters = self.runtime.counters
        plugin = self.log_spec.name if self.log_spec else self.vm_id
        if trap.interrupted:
            kind = "deadline"
            counters.deadline_hits += 1
            reason = f"{export} exceeded the {self.limits.callback_deadline_ms} ms CPU deadline"
        elif self.memory.refresh() * 4 >= self.limits.max_vm_memory * 3:
            # wasmtime does not report a refused memory.grow; a trap with three quarters of
            # the cap in use is, in practice, a guest that ran out of memory
            kind = "memory"
            counters.memory_cap_hits += 1
            reason = f"{export} hit the {self.limits.max_vm_memory}-byte memory cap: {trap}"
        else:
            kind = "trap"
            reason = f"{export} trapped: {str(trap).splitlines()[0] if str(trap) else 'trap'}"
        counters.traps += 1
        counters.bump(plugin, "traps")
        if kind != "trap":
            counters.bump(plugin, kind + "_hits")
        self.failed = reason
        self.failure_kind = kind
        self.log(LogLevel.CRITICAL, f"VM failed: {reason}")

    # -- helpers for host functions ----------------------------------------------------------
    def allocate(self, size: int) -> int:
        """Ask the guest allocator for ``size`` bytes; 0 on failure."""
        previous = self.restricted
        self.restricted = RESTRICT_ALLOC
        try:
            ptr = self._alloc(size) & 0xFFFFFFFF
        finally:
            self.restricted = previous
        if ptr == 0 or not self.memory.fits(ptr, size):
            return 0
        return ptr

    def return_bytes(self, data: bytes, ret_ptr: int, ret_size: int) -> int:
        """Hand variable-length data to the guest: allocate, copy, write pointer and size."""
        memory = self.memory
        if not memory.fits(ret_ptr, 4) or not memory.fits(ret_size, 4):
            return Status.INVALID_MEMORY_ACCESS
        if not data:
            memory.write_u32(ret_ptr, 0)
            memory.write_u32(ret_size, 0)
            return Status.OK
        ptr = self.allocate(len(data))
        if ptr == 0:
            return Status.INVALID_MEMORY_ACCESS
        memory.view[ptr : ptr + len(data)] = data
        memory.write_u32(ret_ptr, ptr)
        memory.write_u32(ret_size, len(data))
        return Status.OK

    def read(self, ptr: int, length: int) -> bytes | None:
        return self.memory.read(ptr, length)

    def log(self, level: LogLevel, message: str) -> None:
        from ._plugin import PluginSpec

        spec = self.log_spec or PluginSpec(name=self.vm_id, vm_id=self.vm_id)
        if level >= self.environment.log_level:
            self.environment.log(spec, level, message)

    def spec_for_current(self) -> PluginSpec | None:
        ctx = self.effective or self.current
        return ctx.root.spec if ctx is not None else self.log_spec


def _module_cache(cache_dir: str, engine: wasmtime.Engine) -> Any:
    from ._cache import ModuleCache

    return ModuleCache(cache_dir, engine)


def _window_check(hf: HostFunction) -> Callable[[WasmVM], bool] | None:
    """How a host function behaves in the restricted windows (None: allowed everywhere)."""
    if hf.during_start and hf.during_alloc:
        return None
    start_ok, alloc_ok, name = hf.during_start, hf.during_alloc, hf.name

    def allowed(vm: WasmVM) -> bool:
        window = vm.restricted
        if (window == RESTRICT_START and start_ok) or (window == RESTRICT_ALLOC and alloc_ok):
            return True
        where = "starting" if window == RESTRICT_START else "inside its allocator"
        vm.log(LogLevel.ERROR, f"{name} is not allowed while the VM is {where}")
        return False

    return allowed
