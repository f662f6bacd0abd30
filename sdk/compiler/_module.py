"""Assembles the compiled program, the runtime it needs and the ABI glue into one WAT module."""

from __future__ import annotations

import codecs
import re

from sdk.compiler import _rt_containers, _rt_core, _rt_extra, _rt_text
from sdk.compiler._compiler import Compiler
from sdk.compiler._hostcalls import import_signature, wrapper
from sdk.compiler._program import ClassInfo, FunctionInfo, Program
from sdk.compiler._rt_core import CLASS_ENTRY, CLASS_TABLE, GC_MIN_THRESHOLD
from sdk.compiler._statements import FunctionCompiler
from sdk.compiler._types import BOOL, INT, NONE

_CALL = re.compile(r"call \$([\w:.\-]+)")
_PLACEHOLDER = re.compile(r"\{\{(s|nfields|idend|slot|table):(.*?)\}\}")
ABI_MARKER = "proxy_abi_version_0_2_1"
ALWAYS_RUNTIME = ("rt_initialize", "rt_enter", "rt_leave", "rt_gc_collect", "malloc", "rt_uncaught")


def _runtime_functions() -> dict[str, str]:
    """Every runtime function by name, split out of the runtime WAT sources."""
    functions: dict[str, str] = {}
    for module in (_rt_core, _rt_text, _rt_containers, _rt_extra):
        text = "\n".join(line.split(";;")[0] if ";;" in line and "{{s:" not in line else line for line in module.WAT.splitlines())
        depth = 0
        start = -1
        for i, ch in enumerate(text):
            if ch == "(":
                if depth == 0:
                    start = i
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    chunk = text[start : i + 1]
                    match = re.match(r"\(func \$([\w.]+)", chunk)
                    if match is None:
                        raise AssertionError(f"unexpected runtime form: {chunk[:40]}")
                    functions[match.group(1)] = chunk
    return functions


RUNTIME = _runtime_functions()


def build_wat(program: Program) -> str:
    """Compile the program and return the module as WAT text."""
    c = Compiler(program)
    entry = program.entrypoint
    exports: list[FunctionInfo] = []
    for name, symbol in entry.symbols.items():
        if name.startswith("proxy_on_") and isinstance(symbol, FunctionInfo):
            exports.append(symbol)
            c.request(symbol)
    # every function of the plugin's own modules is compiled (and so checked), reachable or not
    for mod in program.modules.values():
        if mod.is_sdk:
            continue
        for symbol in mod.symbols.values():
            if isinstance(symbol, FunctionInfo) and symbol.module is mod:
                c.request(symbol)
            elif isinstance(symbol, ClassInfo) and symbol.module is mod:
                for method in symbol.methods.values():
                    c.request(method)
    inits: list[str] = []
    for mod in program.init_order():
        if mod.tree is None or not mod.init_body:
            continue
        name = f"$init:{mod.name}"
        c.functions[name] = FunctionCompiler(c, mod, None, NONE, module_level=True).compile_module_init(name)
        inits.append(name)
    vtables = _settle(c)
    wrappers = [_export_wrapper(c, f) for f in exports]
    hostcalls = []
    for name, spec in sorted(c.hostcalls.items()):
        error_for_status = program.errors.symbols["error_for_status"]
        assert isinstance(error_for_status, FunctionInfo)
        hostcalls.append(wrapper(name, spec, error_for_status.wasm_name, c.string(spec.import_name)))
    generated = [
        "(func $rt_init_modules " + " ".join(f"(call {n})" for n in inits) + ")",
        "(func $rt_mark_roots "
        + " ".join(
            f"(call $rt_mark (global.get {g.wasm_name}))"
            for g in sorted(c.globals.values(), key=lambda g: g.wasm_name)
            if g.constant() is None and g.type is not None and g.type.is_pointer
        )
        + ")",
        f"(func ${ABI_MARKER})",
        '(func $wasmesh_heap_size (export "wasmesh_heap_size") (result i32) '
        "(i32.sub (global.get $heap_top) (global.get $heap_base)))",
        '(func $wasmesh_heap_live (export "wasmesh_heap_live") (result i32) (global.get $gc_live))',
        "(func $rt_trap_method unreachable)",
    ]
    program_text = "\n".join([*c.functions.values(), *c.thunks.values(), *c.reprs.functions.values(), *wrappers, *hostcalls, *generated])
    runtime = _runtime_closure(program_text)
    runtime_text = "\n".join(RUNTIME[name] for name in runtime)
    text = program_text + "\n" + runtime_text
    text = _substitute(c, text)
    return _module_text(c, text, vtables)


def _settle(c: Compiler) -> dict[int, list[str]]:
    """Compile until every reachable function and every used vtable slot is filled."""
    while True:
        c.drain()
        before = len(c.queued)
        for root_id, slots in list(c.slots.items()):
            root = c.slot_owner[root_id]
            for cls in root.all_subclasses():
                for name in slots:
                    impl = cls.find_method(name)
                    if impl is not None:
                        c.request(impl)
        if not c.queue and len(c.queued) == before:
            break
    vtables: dict[int, list[str]] = {}
    for root_id, slots in c.slots.items():
        root = c.slot_owner[root_id]
        ordered = sorted(slots, key=lambda n: slots[n])
        for cls in root.all_subclasses():
            entries = []
            for name in ordered:
                impl = cls.find_method(name)
                entries.append(impl.wasm_name if impl is not None else "$rt_trap_method")
            vtables[cls.class_id] = entries
    return vtables


def _export_wrapper(c: Compiler, func: FunctionInfo) -> str:
    sig = c.signature(func)
    params = " ".join("i32" for _ in sig.params)
    param_text = f" (param {params})" if params else ""
    result = "" if sig.result == NONE else " (result i32)"
    body = ["(call $rt_enter)"]
    args = []
    for i, p in enumerate(sig.params):
        if p.type == INT:
            args.append(f"(i64.extend_i32_u (local.get {i}))")
        elif p.type == BOOL:
            args.append(f"(i32.ne (local.get {i}) (i32.const 0))")
        else:
            raise AssertionError(f"unexpected export parameter type {p.type}")
    call = f"(call {func.wasm_name} {' '.join(args)})"
    if sig.result == NONE:
        body += [call, "(call $rt_leave)"]
    else:
        value = f"(i32.wrap_i64 {call})" if sig.result == INT else call
        body += [f"{value}", "(call $rt_leave)"]
    return f'(func $export:{func.name} (export "{func.name}"){param_text}{result}\n  ' + "\n  ".join(body) + ")"


def _runtime_closure(text: str) -> list[str]:
    needed: list[str] = []
    seen: set[str] = set()
    pending = [n for n in _CALL.findall(text) if n in RUNTIME] + list(ALWAYS_RUNTIME)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        needed.append(name)
        pending.extend(n for n in _CALL.findall(RUNTIME[name]) if n in RUNTIME and n not in seen)
    return sorted(needed)


def _substitute(c: Compiler, text: str) -> str:
    by_id = {cls.class_id: cls for cls in c.classes}

    def replace(match: re.Match[str]) -> str:
        kind, value = match.group(1), match.group(2)
        if kind == "s":
            return f"(i32.const {c.string(codecs.decode(value, 'unicode_escape'))})"
        if kind == "nfields":
            c.ensure_layout(by_id[int(value)])
            return str(len(by_id[int(value)].fields))
        if kind == "idend":
            return str(by_id[int(value)].id_end)
        return value

    return _PLACEHOLDER.sub(replace, text)


def _wat_bytes(data: bytes) -> str:
    out = []
    for b in data:
        if 32 <= b < 127 and b not in (34, 92):
            out.append(chr(b))
        else:
            out.append(f"\\{b:02x}")
    return "".join(out)


def _module_text(c: Compiler, body: str, vtables: dict[int, list[str]]) -> str:
    program = c.program
    # table: thunks first (their indexes are already in the code), then vtables
    vtable_base: dict[int, int] = {}
    for cls in c.classes:
        if cls.class_id in vtables:
            vtable_base[cls.class_id] = len(c.table)
            c.table.extend(vtables[cls.class_id])
    names = {cls.class_id: c.string(cls.name) for cls in c.classes}
    table = bytearray()
    for cls in c.classes:
        mask = sum(1 << f.index for f in cls.fields.values() if f.type.is_pointer)
        for value in (len(cls.fields), mask, vtable_base.get(cls.class_id, 0), names[cls.class_id]):
            table += value.to_bytes(4, "little")
    static = bytes(table) + bytes(c.static_base - CLASS_TABLE - len(table)) + bytes(c.data)
    heap_base = (CLASS_TABLE + len(static) + 15) & ~15
    pages = (heap_base + 65536 + 65535) // 65536
    imports = []
    from sdk.compiler._hostcalls import SPECS

    used = set(_CALL.findall(body))
    by_import = {spec.import_name: spec for spec in SPECS.values()}
    for name in sorted(used):
        if name in by_import:
            imports.append(f'(import "env" "{name}" (func ${name} {import_signature(by_import[name])}))')
    builtin_ids = "\n".join(
        f"(global $cid.{name} i32 (i32.const {cls.class_id}))" for name, cls in program.builtins.items()
    )
    user_globals = "\n".join(
        f"(global {g.wasm_name} (mut {g.type.wasm}) ({g.type.wasm}.const 0))"
        for g in sorted(c.globals.values(), key=lambda g: g.wasm_name)
        if g.constant() is None and g.type is not None
    )
    elem = ""
    if c.table:
        elem = "(elem (i32.const 0) func " + " ".join(c.table) + ")"
    return "\n".join(
        [
            "(module",
            *c.func_types.values(),
            *imports,
            f'(memory (export "memory") {pages})',
            f"(table {max(len(c.table), 1)} funcref)",
            elem,
            f"(global $heap_base i32 (i32.const {heap_base}))",
            f"(global $heap_top (mut i32) (i32.const {heap_base}))",
            "(global $gc_allocated (mut i32) (i32.const 0))",
            f"(global $gc_threshold (mut i32) (i32.const {GC_MIN_THRESHOLD}))",
            "(global $gc_live (mut i32) (i32.const 0))",
            "(global $exc (mut i32) (i32.const 0))",
            "(global $mark_stack (mut i32) (i32.const 0))",
            "(global $mark_sp (mut i32) (i32.const 0))",
            "(global $mark_cap (mut i32) (i32.const 0))",
            "(global $depth (mut i32) (i32.const 0))",
            "(global $initialized (mut i32) (i32.const 0))",
            builtin_ids,
            user_globals,
            body,
            f'(export "{ABI_MARKER}" (func ${ABI_MARKER}))',
            '(export "_initialize" (func $rt_initialize))',
            '(export "proxy_on_memory_allocate" (func $malloc))',
            '(export "malloc" (func $malloc))',
            f'(data (i32.const {CLASS_TABLE}) "{_wat_bytes(static)}")',
            ")",
        ]
    )


__all__ = ["build_wat", "CLASS_ENTRY"]
