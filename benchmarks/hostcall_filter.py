"""Per-request cost of a 6-hostcall proxy-wasm filter, through wasmhost and through wasmtime-py's
idiomatic API, on one pinned core.

The filter is ``bench_6hostcalls`` (C, built by ``make plugins`` into build/plugins/); its
``proxy_on_request_headers`` makes six host calls (get/add/replace header, get_property,
increment_metric, log). Without the built plugin an equivalent WAT filter is used and the
table says so. Three ways to run it:

1. **wasmhost**: the real host. Per request a stream is opened, request headers delivered,
   the stream finished and the commands drained (``Plugin`` / ``HttpStream``, C-API path).
2. **minimal host, C API**: the same six host calls implemented once (``MiniFilter``), on
   ``wasmhost._capi`` (unchecked calls, raw argument slots, cached memory view). The gap
   between 1 and 2 is what the lifecycle bookkeeping of the real host costs.
3. **minimal host, idiomatic API**: the same ``MiniFilter`` on ``Func.__call__``,
   ``Linker.define_func`` and ``Memory.read/write``: what wasmtime-py's convenience layer costs.

Each way is checked to produce the same upstream headers before it is timed. Run:
``python benchmarks/hostcall_filter.py [--seconds S] [--json]`` (``make bench``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import wasmtime

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# proxy-wasm numbers the minimal host needs (wasmhost is not imported where it is not measured)
OK, NOT_FOUND, INVALID_MEMORY_ACCESS = 0, 1, 6
LOG_WARN = 3

BUILT_PLUGIN = ROOT / "build" / "plugins" / "bench_6hostcalls.wasm"
TARGET_US = 40.0
REQUEST_HEADERS = [
    (b":method", b"GET"), (b":path", b"/bench/items?id=7"), (b":authority", b"svc.local"),
    (b"user-agent", b"bench/1.0"), (b"accept", b"*/*"), (b"x-bench-in", b"abc"),
]
EXPECTED_ADDED = [(b"x-bench", b"1"), (b"x-bench-replaced", b"yes")]

# The same filter in WAT, for machines where the C plugin has not been built.
FALLBACK_WAT = """
(module
  (import "env" "proxy_define_metric" (func $define_metric (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $increment_metric (param i32 i64) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $replace_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (global $counter (mut i32) (i32.const 0))
  (data (i32.const 100) "wasmesh_bench_requests")  ;; 100, 22
  (data (i32.const 130) "x-bench-in")              ;; 130, 10
  (data (i32.const 150) "x-bench")                 ;; 150, 7
  (data (i32.const 160) "1")                       ;; 160, 1
  (data (i32.const 170) "request\\00path")         ;; 170, 12
  (data (i32.const 190) "x-bench-replaced")        ;; 190, 16
  (data (i32.const 210) "yes")                     ;; 210, 3
  (data (i32.const 220) "bench")                   ;; 220, 5
  (func (export "proxy_abi_version_0_2_1"))
  ;; bump allocator reset per request (the filter frees everything it is handed)
  (func $malloc (export "malloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (local.get $ptr) (i32.and (i32.add (local.get $size) (i32.const 7)) (i32.const -8))))
    (if (i32.gt_u (global.get $heap) (i32.const 131072)) (then (global.set $heap (i32.const 65536)) (return (i32.const 0))))
    (local.get $ptr))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (i32.eqz (call $define_metric (i32.const 0) (i32.const 100) (i32.const 22) (i32.const 1024))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (global.set $heap (i32.const 65536))
    (drop (call $get_header (i32.const 0) (i32.const 130) (i32.const 10) (i32.const 1032) (i32.const 1036)))
    (drop (call $add_header (i32.const 0) (i32.const 150) (i32.const 7) (i32.const 160) (i32.const 1)))
    (drop (call $get_property (i32.const 170) (i32.const 12) (i32.const 1032) (i32.const 1036)))
    (drop (call $increment_metric (i32.load (i32.const 1024)) (i64.const 1)))
    (drop (call $replace_header (i32.const 0) (i32.const 190) (i32.const 16) (i32.const 210) (i32.const 3)))
    (drop (call $log (i32.const 1) (i32.const 220) (i32.const 5)))
    (i32.const 0))
)
"""


# -- the filter's module ----------------------------------------------------------------------------

def load_filter() -> tuple[bytes, str]:
    if BUILT_PLUGIN.exists():
        return BUILT_PLUGIN.read_bytes(), "bench_6hostcalls.wasm (C, clang wasm32-wasi)"
    return bytes(wasmtime.wat2wasm(FALLBACK_WAT)), "equivalent WAT filter (build/plugins not built)"


# -- 1. the real host ---------------------------------------------------------------------------------

def wasmhost_path(wasm: bytes) -> tuple[Callable[[], list[tuple[bytes, bytes]]], Callable[[], None]]:
    from wasmhost import LogLevel, Plugin, PluginSpec, Runtime

    runtime = Runtime()
    runtime.environment.log_level = LogLevel.WARN  # the filter's DEBUG line is dropped, as in production
    plugin = Plugin(runtime, runtime.compile(wasm), PluginSpec(name="bench", root_id="bench"))
    plugin.start()
    take = runtime.take_commands

    def one_request() -> list[tuple[bytes, bytes]]:
        headers = list(REQUEST_HEADERS)
        stream = plugin.new_http_stream()
        stream.on_request_headers(headers, True)
        stream.finish()
        take()
        return headers

    return one_request, runtime.close


# -- 2 and 3. a minimal host with the same six host calls -------------------------------------------

class MiniFilter:
    """Just enough of proxy-wasm for this filter; the transports only differ in how they reach it."""

    def __init__(self) -> None:
        self.read: Callable[[int, int], bytes | None] = lambda ptr, n: None
        self.write: Callable[[int, bytes], bool] = lambda ptr, data: False
        self.alloc: Callable[[int], int] = lambda n: 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.path = b""
        self.metrics: dict[int, int] = {}
        self.metric_names: dict[bytes, int] = {}
        self.log_level = LOG_WARN
        self.logs = 0

    def _return(self, data: bytes, ret_ptr: int, ret_size: int) -> int:
        ptr = self.alloc(len(data)) & 0xFFFFFFFF if data else 0
        if data and (ptr == 0 or not self.write(ptr, data)):
            return INVALID_MEMORY_ACCESS
        ok = self.write(ret_ptr, ptr.to_bytes(4, "little")) and self.write(ret_size, len(data).to_bytes(4, "little"))
        return OK if ok else INVALID_MEMORY_ACCESS

    def define_metric(self, kind: int, name_ptr: int, name_len: int, ret_id: int) -> int:
        name = self.read(name_ptr, name_len)
        if name is None:
            return INVALID_MEMORY_ACCESS
        metric = self.metric_names.setdefault(name, len(self.metric_names) + 1)
        self.metrics.setdefault(metric, 0)
        return OK if self.write(ret_id, metric.to_bytes(4, "little")) else INVALID_MEMORY_ACCESS

    def get_header_map_value(self, map_type: int, key_ptr: int, key_len: int, ret_ptr: int, ret_size: int) -> int:
        key = self.read(key_ptr, key_len)
        if key is None:
            return INVALID_MEMORY_ACCESS
        key = key.lower()
        for name, value in self.headers:
            if name == key:
                return self._return(value, ret_ptr, ret_size)
        return NOT_FOUND

    def add_header_map_value(self, map_type: int, key_ptr: int, key_len: int, val_ptr: int, val_len: int) -> int:
        key, value = self.read(key_ptr, key_len), self.read(val_ptr, val_len)
        if key is None or value is None:
            return INVALID_MEMORY_ACCESS
        self.headers.append((key.lower(), value))
        return OK

    def replace_header_map_value(self, map_type: int, key_ptr: int, key_len: int, val_ptr: int, val_len: int) -> int:
        key, value = self.read(key_ptr, key_len), self.read(val_ptr, val_len)
        if key is None or value is None:
            return INVALID_MEMORY_ACCESS
        key = key.lower()
        kept = [(n, v) for n, v in self.headers if n != key]
        kept.append((key, value))
        self.headers[:] = kept
        return OK

    def get_property(self, path_ptr: int, path_len: int, ret_ptr: int, ret_size: int) -> int:
        path = self.read(path_ptr, path_len)
        if path is None:
            return INVALID_MEMORY_ACCESS
        if path.rstrip(b"\0") != b"request\0path":
            return NOT_FOUND
        return self._return(self.path, ret_ptr, ret_size)

    def increment_metric(self, metric: int, offset: int) -> int:
        if metric not in self.metrics:
            return NOT_FOUND
        self.metrics[metric] += offset if offset < 1 << 63 else offset - (1 << 64)
        return OK

    def log(self, level: int, ptr: int, size: int) -> int:
        message = self.read(ptr, size)
        if message is None:
            return INVALID_MEMORY_ACCESS
        if level >= self.log_level:
            self.logs += 1
        return OK

    def impls(self) -> dict[str, Callable[..., int]]:
        return {
            "proxy_define_metric": self.define_metric,
            "proxy_get_header_map_value": self.get_header_map_value,
            "proxy_add_header_map_value": self.add_header_map_value,
            "proxy_replace_header_map_value": self.replace_header_map_value,
            "proxy_get_property": self.get_property,
            "proxy_increment_metric": self.increment_metric,
            "proxy_log": self.log,
        }


def _signature(ty: wasmtime.FuncType) -> tuple[str, str]:
    code = {"i32": "i", "i64": "I"}
    return "".join(code[str(p)] for p in ty.params), "".join(code[str(r)] for r in ty.results)


def _drive(mini: MiniFilter, call: Callable[..., int], exports: set[str]) -> Callable[[], list[tuple[bytes, bytes]]]:
    """Start the plugin like a host would, then return the per-request function."""
    for name, start_args in (("_initialize", ()), ("proxy_on_context_create", (1, 0)), ("proxy_on_vm_start", (1, 0)),
                             ("proxy_on_configure", (1, 0))):
        if name in exports:
            call(name, *start_args)
    next_id = [1]
    create = "proxy_on_context_create" in exports
    tail = [name for name in ("proxy_on_log", "proxy_on_done", "proxy_on_delete") if name in exports]

    def one_request() -> list[tuple[bytes, bytes]]:
        next_id[0] += 1
        ctx = next_id[0]
        headers = list(REQUEST_HEADERS)
        mini.headers = headers
        mini.path = headers[1][1]
        if create:
            call("proxy_on_context_create", ctx, 1)
        call("proxy_on_request_headers", ctx, len(headers), 1)
        for name in tail:
            call(name, ctx)
        return headers

    return one_request


def _engine() -> wasmtime.Engine:
    config = wasmtime.Config()
    config.epoch_interruption = True
    config.memory_may_move = False
    config.memory_reservation = 1 << 32
    return wasmtime.Engine(config)


def capi_path(wasm: bytes) -> tuple[Callable[[], list[tuple[bytes, bytes]]], Callable[[], None]]:
    from wasmhost._capi import Caller, GuestMemory, define_host_function

    engine = _engine()
    module = wasmtime.Module(engine, wasm)
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(1 << 40)
    caller = Caller(store)
    linker = wasmtime.Linker(engine)
    mini = MiniFilter()
    impls = mini.impls()
    keepalive: list[Any] = []
    for imp in module.imports:
        impl = impls.get(imp.name or "")
        if impl is not None and isinstance(imp.type, wasmtime.FuncType):
            params, results = _signature(imp.type)
            define_host_function(
                linker, imp.module, imp.name or "", params, results,
                lambda owner, *args, _impl=impl: _impl(*args), caller, keepalive, owner=mini,
            )
    linker.define_unknown_imports_as_traps(module)
    instance = linker.instantiate(store, module)
    exports = instance.exports(store)
    fast: dict[str, Callable[..., int]] = {}
    for export in module.exports:
        item = exports[export.name]
        if isinstance(item, wasmtime.Func):
            ty = item.type(store)
            fast[export.name] = caller.export(item, len(ty.params), len(ty.results))
    memory = exports["memory"]
    assert isinstance(memory, wasmtime.Memory)
    view = GuestMemory(store, memory)
    mini.read, mini.write, mini.alloc = view.read, view.write, fast["malloc"]

    def call(name: str, *args: int) -> int:
        return fast[name](*args)

    # the C side holds raw pointers to the callbacks: keep them (and the store) alive until closed
    alive: list[Any] = [keepalive, linker, instance, module, store]
    return _drive(mini, call, set(fast)), alive.clear


def idiomatic_path(wasm: bytes) -> tuple[Callable[[], list[tuple[bytes, bytes]]], Callable[[], None]]:
    engine = _engine()
    module = wasmtime.Module(engine, wasm)
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(1 << 40)
    linker = wasmtime.Linker(engine)
    mini = MiniFilter()
    impls = mini.impls()
    for imp in module.imports:
        impl = impls.get(imp.name or "")
        if impl is not None and isinstance(imp.type, wasmtime.FuncType):
            params, _ = _signature(imp.type)
            masks = [0xFFFFFFFF if p == "i" else 0xFFFFFFFFFFFFFFFF for p in params]

            def host(*args: int, _impl: Callable[..., int] = impl, _masks: list[int] = masks) -> int:
                return int(_impl(*[a & m for a, m in zip(args, _masks, strict=True)]))

            linker.define_func(imp.module, imp.name or "", imp.type, host)
    linker.define_unknown_imports_as_traps(module)
    instance = linker.instantiate(store, module)
    exports = instance.exports(store)
    funcs = {e.name: exports[e.name] for e in module.exports if isinstance(exports[e.name], wasmtime.Func)}
    memory = exports["memory"]
    assert isinstance(memory, wasmtime.Memory)

    def read(ptr: int, size: int) -> bytes | None:
        if ptr + size > memory.data_len(store):
            return None
        return bytes(memory.read(store, ptr, ptr + size))

    def write(ptr: int, data: bytes) -> bool:
        if ptr + len(data) > memory.data_len(store):
            return False
        memory.write(store, data, ptr)
        return True

    def call(name: str, *args: int) -> int:
        result = funcs[name](store, *args)  # type: ignore[operator]
        return int(result or 0)

    mini.read, mini.write = read, write
    mini.alloc = lambda size: call("malloc", size)
    alive: list[Any] = [linker, instance, module, store]
    return _drive(mini, call, set(funcs)), alive.clear


# -- timing -------------------------------------------------------------------------------------------

def pin_to_one_core() -> int | None:
    """Run on one CPU (the last one we may use), so the numbers are per core."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {allowed[-1]})
        return allowed[-1]
    except (AttributeError, OSError):
        return None


def measure(one_request: Callable[[], Any], seconds: float, rounds: int = 5) -> tuple[float, float]:
    """(median, best) µs per request over ``rounds`` timed rounds of about ``seconds / rounds`` each.

    The best round is the least disturbed by other load on the machine; the median is typical."""
    for _ in range(200):
        one_request()
    start = time.perf_counter()
    calibrate = 0
    while time.perf_counter() - start < 0.05:
        one_request()
        calibrate += 1
    per_round = max(100, int(calibrate / 0.05 * seconds / rounds))
    results = []
    for _ in range(rounds):
        gc.collect()
        t0 = time.perf_counter_ns()
        for _ in range(per_round):
            one_request()
        results.append((time.perf_counter_ns() - t0) / per_round / 1000.0)
    return statistics.median(results), min(results)


PATHS: dict[str, tuple[str, Callable[[bytes], tuple[Callable[[], list[tuple[bytes, bytes]]], Callable[[], None]]]]] = {
    "wasmhost": ("wasmhost (Plugin + HttpStream, C API)", wasmhost_path),
    "capi": ("minimal host, C API transport", capi_path),
    "idiomatic": ("minimal host, wasmtime-py idiomatic API", idiomatic_path),
}


def run_one(name: str, seconds: float) -> dict[str, Any]:
    """Time one path in this process (each path gets a fresh interpreter: see ``main``)."""
    label, make = PATHS[name]
    wasm, source = load_filter()
    one_request, close = make(wasm)
    try:
        headers = one_request()
        added = headers[len(REQUEST_HEADERS):]
        if added != EXPECTED_ADDED:
            raise SystemExit(f"{label}: the filter produced {added!r}, expected {EXPECTED_ADDED!r}")
        us, best = measure(one_request, seconds)
    finally:
        close()
    return {
        "path": label, "filter": source, "us_per_request": round(us, 2), "best_us_per_request": round(best, 2),
        "requests_per_s": round(1e6 / us),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per path (default 1.0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--path", choices=sorted(PATHS), help=argparse.SUPPRESS)  # internal: one path, JSON out
    args = parser.parse_args(argv)

    if args.path:
        print(json.dumps(run_one(args.path, args.seconds)))
        return 0

    # One interpreter per path: no path inherits another's heap, caches or ctypes state.
    cpu = pin_to_one_core()  # children inherit the affinity
    rows: list[dict[str, Any]] = []
    for name in PATHS:
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--path", name, "--seconds", str(args.seconds)],
            capture_output=True, text=True, timeout=60 + 10 * args.seconds, check=False,
        )
        if done.returncode != 0:
            print(f"{name}: benchmark failed:\n{done.stderr.strip()}", file=sys.stderr)
            return 1
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = rows[0]["us_per_request"]
    for row in rows:
        row["vs_wasmhost"] = round(row["us_per_request"] / base, 2)
    report = {
        "filter": rows[0]["filter"],
        "cpu": cpu,
        "target_us": TARGET_US,
        "target_met": base <= TARGET_US,
        "idiomatic_over_wasmhost": rows[-1]["vs_wasmhost"],
        "rows": rows,
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"6-hostcall filter: {report['filter']}; one core (CPU {cpu if cpu is not None else 'not pinned'})")
    print(f"{'path':<42} {'µs/request':>11} {'best':>6} {'req/s':>9} {'× wasmhost':>11}")
    for row in rows:
        print(f"{row['path']:<42} {row['us_per_request']:>11.1f} {row['best_us_per_request']:>6.1f} "
              f"{row['requests_per_s']:>9,} {row['vs_wasmhost']:>10.2f}×")
    verdict = "met" if report["target_met"] else "NOT met"
    print("µs/request: median of 5 rounds; best: fastest round; req/s from the median")
    print(f"target ≤ {TARGET_US:.0f} µs/request through wasmhost: {verdict}; "
          f"the idiomatic API path costs {report['idiomatic_over_wasmhost']:.1f}× wasmhost")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
