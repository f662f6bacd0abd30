"""The compilation driver: a worklist of reachable functions, class layouts, vtables,
thunks for function values, host-call wrappers, and string constants.

Only what is reachable from the ``proxy_on_*`` exports and the modules' top-level code is
compiled, so the whole SDK costs a plugin only the parts it uses.
"""

from __future__ import annotations

import ast

from sdk.compiler._errors import error_at, unsupported
from sdk.compiler._hostcalls import SPECS, HostcallSpec
from sdk.compiler._program import (
    ClassInfo,
    FieldInfo,
    FunctionInfo,
    GlobalInfo,
    ModuleInfo,
    Param,
    Program,
    Signature,
)
from sdk.compiler._repr import ReprBuilder
from sdk.compiler._rt_core import CLASS_ENTRY, CLASS_TABLE
from sdk.compiler._statements import FunctionCompiler
from sdk.compiler._types import NONE, Type


class Compiler:
    """Holds everything generated for one program."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.functions: dict[str, str] = {}
        self.queue: list[FunctionInfo] = []
        self.queued: set[str] = set()
        self.strings: dict[tuple[type, str | bytes], int] = {}
        self.classes = program.object_classes()
        self.static_base = (CLASS_TABLE + CLASS_ENTRY * len(self.classes) + 15) & ~15
        self.data = bytearray()
        self.func_types: dict[str, str] = {}
        self.table: list[str] = []
        self.table_index: dict[str, int] = {}
        self.thunks: dict[str, str] = {}
        self.slots: dict[int, dict[str, int]] = {}
        self.slot_owner: dict[int, ClassInfo] = {}
        self.hostcalls: dict[str, HostcallSpec] = {}
        self.globals: dict[str, GlobalInfo] = {}
        self.reprs = ReprBuilder(self.string)

    # --- functions ------------------------------------------------------------------

    def signature(self, func: FunctionInfo) -> Signature:
        if func.signature is not None:
            return func.signature
        mod = func.module
        node = func.node
        args = node.args
        if args.vararg or args.kwarg:
            raise mod.error(node, unsupported("*args / **kwargs", "explicit parameters"))
        if args.kwonlyargs or args.posonlyargs:
            raise mod.error(node, unsupported("keyword-only or positional-only parameters", "plain parameters"))
        defaults: list[ast.expr | None] = [None] * (len(args.args) - len(args.defaults)) + list(args.defaults)
        params: list[Param] = []
        for i, (arg, default) in enumerate(zip(args.args, defaults, strict=True)):
            if i == 0 and func.owner is not None:
                if arg.arg != "self":
                    raise mod.error(arg, "the first parameter of a method must be self")
                params.append(Param("self", func.owner.type, None))
                continue
            if arg.annotation is None:
                raise mod.error(arg, f"annotate parameter {arg.arg}, e.g. {arg.arg}: int")
            if default is not None:
                self.check_constant(mod, default)
            params.append(Param(arg.arg, self.program.resolve_type(mod, arg.annotation), default))
        if node.returns is not None:
            result = self.program.resolve_type(mod, node.returns)
        elif func.name == "__init__" or not any(
            isinstance(n, ast.Return) and n.value is not None for n in ast.walk(node)
        ):
            result = NONE
        else:
            raise mod.error(node, f"annotate the return type of {func.name}, e.g. -> int")
        func.signature = Signature(params, result)
        return func.signature

    def request(self, func: FunctionInfo) -> str:
        """Make sure ``func`` is compiled; returns its WAT name."""
        name = func.wasm_name
        if name not in self.queued:
            self.queued.add(name)
            self.signature(func)
            self.queue.append(func)
        return name

    def compile_function(self, func: FunctionInfo) -> None:
        if func.wasm_name in self.functions:
            return
        sig = self.signature(func)
        compiler = FunctionCompiler(self, func.module, func, sig.result)
        self.functions[func.wasm_name] = compiler.compile_function()

    def drain(self) -> None:
        while self.queue:
            func = self.queue.pop()
            if func.owner is not None:
                self.ensure_layout(func.owner)
            self.compile_function(func)

    # --- classes --------------------------------------------------------------------

    def ensure_layout(self, cls: ClassInfo) -> None:
        if cls.layout_state != "none":
            return
        assert cls.module is not None
        if cls.base is not None:
            self.ensure_layout(cls.base)
            cls.fields = dict(cls.base.fields)
        for name, annotation, default, node in cls.field_decls:
            t = self.program.resolve_type(cls.module, annotation)
            if default is not None:
                self.check_constant(cls.module, default)
            if name in cls.fields:
                if cls.fields[name].type != t:
                    raise cls.module.error(node, f"field {name} is already declared as {cls.fields[name].type}")
                continue
            if len(cls.fields) >= 32:
                raise cls.module.error(node, "a class has at most 32 fields (group some into a helper class)")
            cls.fields[name] = FieldInfo(name, t, len(cls.fields), default, cls)
        cls.layout_state = "open"
        init = cls.methods.get("__init__")
        if init is not None:
            self.queued.add(init.wasm_name)
            self.compile_function(init)
        cls.layout_state = "done"

    def implementations(self, cls: ClassInfo, name: str, node: ast.AST) -> list[FunctionInfo]:
        base = cls.find_method(name)
        assert base is not None
        base_sig = self.signature(base)
        found: list[FunctionInfo] = []
        for sub in cls.all_subclasses():
            impl = sub.find_method(name)
            if impl is None or impl in found:
                continue
            sig = self.signature(impl)
            if [p.type.wasm for p in sig.params[1:]] != [p.type.wasm for p in base_sig.params[1:]] or (
                sig.result.wasm if sig.result != NONE else None
            ) != (base_sig.result.wasm if base_sig.result != NONE else None):
                raise impl.module.error(
                    impl.node, f"{impl.qualname} must take and return the same kinds of values as {base.qualname}"
                )
            found.append(impl)
        return found

    def method_slot(self, cls: ClassInfo, name: str) -> int:
        root = cls
        while root.base is not None:
            root = root.base
        slots = self.slots.setdefault(root.class_id, {})
        self.slot_owner[root.class_id] = root
        if name not in slots:
            slots[name] = len(slots)
        return slots[name]

    # --- function values ------------------------------------------------------------

    def func_type(self, params: list[str], result: Type) -> str:
        res = result.wasm if result != NONE else ""
        name = "$sig:" + ".".join(params) + "->" + res
        if name not in self.func_types:
            param_text = f" (param {' '.join(params)})" if params else ""
            result_text = f" (result {res})" if res else ""
            self.func_types[name] = f"(type {name} (func{param_text}{result_text}))"
        return name

    def _table_slot(self, name: str) -> int:
        if name not in self.table_index:
            self.table_index[name] = len(self.table)
            self.table.append(name)
        return self.table_index[name]

    def function_thunk(self, func: FunctionInfo) -> int:
        target = self.request(func)
        sig = self.signature(func)
        name = f"$thunk:{func.module.name}.{func.qualname}"
        if name not in self.thunks:
            params = "".join(f" (param $a{i} {p.type.wasm})" for i, p in enumerate(sig.params))
            result = f" (result {sig.result.wasm})" if sig.result != NONE else ""
            args = " ".join(f"(local.get $a{i})" for i in range(len(sig.params)))
            self.thunks[name] = f"(func {name} (param $env i32){params}{result} (call {target} {args}))"
        return self._table_slot(name)

    def method_thunk(self, cls: ClassInfo, method_name: str, node: ast.AST) -> int:
        base = cls.find_method(method_name)
        assert base is not None
        sig = self.signature(base)
        name = f"$mthunk:{cls.module.name if cls.module else 'builtins'}.{cls.name}.{method_name}"
        if name not in self.thunks:
            impls = self.implementations(cls, method_name, node)
            params = "".join(f" (param $a{i} {p.type.wasm})" for i, p in enumerate(sig.params[1:]))
            result = f" (result {sig.result.wasm})" if sig.result != NONE else ""
            args = " ".join(f"(local.get $a{i})" for i in range(len(sig.params) - 1))
            if len(impls) == 1:
                body = f"(call {self.request(impls[0])} (local.get $self) {args})"
            else:
                slot = self.method_slot(cls, method_name)
                type_name = self.func_type([p.type.wasm for p in sig.params], sig.result)
                body = (
                    f"(call_indirect (type {type_name}) (local.get $self) {args} "
                    f"(i32.add (call $rt_vtable (local.get $self)) (i32.const {slot})))"
                )
            self.thunks[name] = f"(func {name} (param $self i32){params}{result} {body})"
        return self._table_slot(name)

    # --- host calls, globals, constants ---------------------------------------------

    def hostcall(self, name: str, node: ast.AST, mod: ModuleInfo) -> tuple[str, list[Param], Type]:
        spec = SPECS.get(name)
        if spec is None:
            raise mod.error(node, f"sdk._hostabi.{name} is not available in compiled plugins")
        self.hostcalls[name] = spec
        error_for_status = self.program.errors.symbols["error_for_status"]
        assert isinstance(error_for_status, FunctionInfo)
        self.request(error_for_status)
        self.string(spec.import_name)
        return f"$hc:{name}", spec.python_params, spec.result

    def global_type(self, symbol: GlobalInfo) -> Type:
        self.globals[symbol.wasm_name] = symbol
        if symbol.type is not None:
            return symbol.type
        mod = symbol.module
        if symbol.annotation is not None:
            symbol.type = self.program.resolve_type(mod, symbol.annotation)
        elif symbol.value is not None:
            scratch = FunctionCompiler(self, mod, None, NONE, module_level=True)
            _, t = scratch.expr(symbol.value)
            if t == NONE:
                raise mod.error(symbol.node, f"annotate {symbol.name}, e.g. {symbol.name}: str | None = None")
            symbol.type = t
        else:
            raise mod.error(symbol.node, f"{symbol.name} needs a value")
        return symbol.type

    def use_global(self, symbol: GlobalInfo) -> None:
        self.globals[symbol.wasm_name] = symbol

    def check_constant(self, mod: ModuleInfo, node: ast.expr) -> None:
        ok = isinstance(node, (ast.Constant, ast.Name, ast.Attribute)) or (
            isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant)
        )
        if not ok:
            raise mod.error(node, unsupported("this default value", "a constant (build lists and dicts in the body)"))

    def constant_expr(self, mod: ModuleInfo, node: ast.expr, t: Type) -> list[str]:
        self.check_constant(mod, node)
        scratch = FunctionCompiler(self, mod, None, NONE, module_level=True)
        code = scratch.expr_as(node, t)
        if scratch.local_decls:
            raise error_at(mod.path, node, "default values must be constants")
        return code

    def string(self, value: str | bytes) -> int:
        key = (type(value), value)
        if key in self.strings:
            return self.strings[key]
        raw = value.encode("utf-8") if isinstance(value, str) else value
        if isinstance(value, str):
            tag, flags = 1, (1 if value.isascii() else 3)
        else:
            tag, flags = 2, 0
        address = self.static_base + len(self.data)
        self.data += bytes([0, 0, 0, 0, tag, flags, 0, 0])
        self.data += len(raw).to_bytes(4, "little") + bytes(4) + raw
        self.data += bytes(-len(self.data) % 8)
        self.strings[key] = address
        return address
