"""The bridge module: a small real proxy-wasm module that hands every callback to CPython.

CPython mode runs a plugin's Python source in this process, but the host must stay the real
``wasmhost`` (its lifecycle, context windows, header semantics, failure policy), so that a
test sees exactly what the compiled ``.wasm`` would see. The bridge makes that possible
with the host's public API only:

* it exports the same ``proxy_on_*`` callbacks as a compiled plugin (one per function of
  ``sdk.entrypoint``); each packs its arguments and calls the foreign function
  :data:`DISPATCH_FUNCTION`, which the emulator registers and which runs the plugin's
  Python code; the 4-byte answer is the callback's result, a failed dispatch traps;
* it exports one ``hc:<import>`` trampoline per host call the SDK lowers (the table is
  ``sdk.compiler._hostcalls.SPECS``, the one the compiler uses), so the Python side calls
  the real ``env.proxy_*`` imports with arguments it wrote into the bridge's memory;
* ``malloc`` is a bump allocator reset at every callback entry: everything the host hands
  over is copied out by the Python side before the callback returns, so memory stays flat.

The module is generated as WAT and assembled by wasmtime once per process.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass

import wasmtime

from sdk import entrypoint
from sdk.compiler._hostcalls import SPECS, import_signature

#: Name of the foreign function the bridge calls for every callback.
DISPATCH_FUNCTION = "wasmesh.cpython_dispatch"
#: Prefix of the exported host-call trampolines.
HOSTCALL_PREFIX = "hc:"

_NAME_ADDR = 1024
_ARGS_ADDR = 64  # callback index, then its arguments, as i32
_RET_PTR = 32
_RET_SIZE = 36
_HEAP_BASE = 65536


@dataclass(frozen=True)
class Callback:
    """One ``proxy_on_*`` export: its index in the dispatch table and how to convert values."""

    index: int
    name: str
    function: Callable[..., object]
    bool_params: tuple[bool, ...]
    has_result: bool


@functools.cache
def callbacks() -> tuple[Callback, ...]:
    """The callbacks of ``sdk.entrypoint`` (what a compiled plugin exports), in a fixed order."""
    found: list[Callback] = []
    for name, function in sorted(vars(entrypoint).items()):
        if not name.startswith("proxy_on_") or not inspect.isfunction(function):
            continue
        if function.__module__ != entrypoint.__name__:
            continue
        hints = typing.get_type_hints(function)
        params = [p for p in inspect.signature(function).parameters]
        flags = tuple(hints[p] is bool for p in params)
        found.append(Callback(len(found), name, function, flags, hints.get("return") is not type(None)))
    return tuple(found)


def _callback_export(callback: Callback) -> str:
    count = len(callback.bool_params)
    params = " ".join("i32" for _ in range(count))
    lines = [
        f'(func (export "{callback.name}")' + (f" (param {params})" if params else "")
        + (" (result i32)" if callback.has_result else ""),
        f"  (i32.store (i32.const {_ARGS_ADDR}) (i32.const {callback.index}))",
    ]
    lines += [f"  (i32.store (i32.const {_ARGS_ADDR + 4 * (i + 1)}) (local.get {i}))" for i in range(count)]
    call = f"(call $dispatch (i32.const {4 * (count + 1)}))"
    lines.append(f"  {call})" if callback.has_result else f"  (drop {call}))")
    return "\n".join(lines)


def _hostcall_export(import_name: str, signature: str) -> str:
    count = signature.count("i32") + signature.count("i64") - 1  # minus the status result
    args = " ".join(f"(local.get {i})" for i in range(count))
    return f'(func (export "{HOSTCALL_PREFIX}{import_name}") {signature} (call ${import_name} {args}))'


def bridge_wat() -> str:
    """The bridge module as WAT text."""
    imports: dict[str, str] = {}
    for spec in SPECS.values():
        imports[spec.import_name] = import_signature(spec)
    name = DISPATCH_FUNCTION.encode()
    parts = ["(module"]
    parts += [f'(import "env" "{n}" (func ${n} {sig}))' for n, sig in sorted(imports.items())]
    parts += [
        '(memory (export "memory") 2)',
        f'(data (i32.const {_NAME_ADDR}) "{DISPATCH_FUNCTION}")',
        f"(global $bump (mut i32) (i32.const {_HEAP_BASE}))",
        '(func (export "proxy_abi_version_0_2_1"))',
        # malloc: 8-byte aligned bump allocation, growing memory as needed; 0 when it cannot
        '(func $malloc (export "malloc") (param $size i32) (result i32) (local $p i32) (local $end i32)',
        "  (local.set $p (i32.and (i32.add (global.get $bump) (i32.const 7)) (i32.const -8)))",
        "  (local.set $end (i32.add (local.get $p) (local.get $size)))",
        "  (if (i32.lt_u (local.get $end) (local.get $p)) (then (return (i32.const 0))))",
        "  (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))",
        "    (then (if (i32.eq (memory.grow (i32.sub (i32.shr_u (i32.add (local.get $end) (i32.const 65535))",
        "                                                 (i32.const 16)) (memory.size))) (i32.const -1))",
        "            (then (return (i32.const 0))))))",
        "  (global.set $bump (local.get $end))",
        "  (local.get $p))",
        '(export "proxy_on_memory_allocate" (func $malloc))',
        # dispatch: reset the heap, ask CPython, trap when the plugin's code failed
        "(func $dispatch (param $nbytes i32) (result i32)",
        f"  (global.set $bump (i32.const {_HEAP_BASE}))",
        f"  (i64.store (i32.const {_RET_PTR}) (i64.const 0))",
        f"  (if (call $proxy_call_foreign_function (i32.const {_NAME_ADDR}) (i32.const {len(name)})",
        f"        (i32.const {_ARGS_ADDR}) (local.get $nbytes) (i32.const {_RET_PTR}) (i32.const {_RET_SIZE}))",
        "    (then (unreachable)))",
        f"  (if (i32.lt_u (i32.load (i32.const {_RET_SIZE})) (i32.const 4)) (then (return (i32.const 0))))",
        f"  (i32.load (i32.load (i32.const {_RET_PTR}))))",
    ]
    parts += [_callback_export(c) for c in callbacks()]
    parts += [_hostcall_export(n, sig) for n, sig in sorted(imports.items())]
    parts.append(")")
    return "\n".join(parts)


@functools.cache
def bridge_module() -> bytes:
    """The assembled bridge (built once per process)."""
    return bytes(wasmtime.wat2wasm(bridge_wat()))
