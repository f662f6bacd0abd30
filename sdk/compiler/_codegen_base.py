"""State and helpers shared by expression, call and statement code generation.

Code is a flat list of WAT instructions. Exceptions are values in the ``$exc`` global:
after anything that can raise, ``check_exc`` branches to the innermost ``try`` handler or
to the function's ``$raise`` exit, which returns a zero value to a caller that checks in
turn. No WebAssembly exception-handling proposal is needed, so every engine runs it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdk.compiler._errors import CompileError, error_at
from sdk.compiler._program import ClassInfo, FunctionInfo, ModuleInfo
from sdk.compiler._types import (
    BOOL,
    FLOAT,
    INT,
    NONE,
    CallableT,
    ClassT,
    DictT,
    ListT,
    OptionalT,
    Text,
    TupleT,
    Type,
    assignable,
)

if TYPE_CHECKING:
    from sdk.compiler._compiler import Compiler

Code = list[str]


@dataclass
class Var:
    local: str
    type: Type


class CodegenBase:
    """Per-function state: locals, labels, the handler stack."""

    def __init__(
        self,
        compiler: Compiler,
        module: ModuleInfo,
        func: FunctionInfo | None,
        result: Type,
        module_level: bool = False,
    ) -> None:
        self.c = compiler
        self.program = compiler.program
        self.mod = module
        self.func = func
        self.owner: ClassInfo | None = func.owner if func else None
        self.result = result
        self.module_level = module_level
        self.vars: dict[str, Var] = {}
        self.local_decls: list[tuple[str, str]] = []
        self.params: list[tuple[str, str]] = []
        self.assigned: set[str] = set()
        self.declared_global: set[str] = set()
        self.handlers: list[str] = ["$raise"]
        self.loops: list[tuple[str, str]] = []
        self.active_exceptions: list[str] = []
        self.finally_stack: list[Any] = []  # _statements._Finally entries, innermost last
        self.counter = 0

    # --- errors, names, locals ------------------------------------------------------

    def error(self, node: ast.AST | None, message: str) -> CompileError:
        return error_at(self.mod.path, node, message)

    def fresh(self, hint: str) -> str:
        self.counter += 1
        return f"${hint}{self.counter}"

    def temp(self, wasm_type: str, hint: str = "t") -> str:
        name = self.fresh(hint)
        self.local_decls.append((name, wasm_type))
        return name

    def declare_var(self, name: str, t: Type, node: ast.AST) -> Var:
        if t == NONE:
            raise self.error(node, f"{name} would only ever hold None; annotate it, e.g. {name}: str | None = None")
        var = Var(self.temp(t.wasm, f"v_{name}_"), t)
        self.vars[name] = var
        return var

    # --- exceptions -----------------------------------------------------------------

    def check_exc(self) -> Code:
        return ["global.get $exc", f"br_if {self.handlers[-1]}"]

    def raise_code(self) -> Code:
        """Branch to the current handler; ``$exc`` is already set."""
        return [f"br {self.handlers[-1]}"]

    # --- value representation -------------------------------------------------------

    @staticmethod
    def to_slot(t: Type) -> Code:
        if t == INT:
            return []
        if t == FLOAT:
            return ["i64.reinterpret_f64"]
        return ["i64.extend_i32_u"]

    @staticmethod
    def from_slot(t: Type) -> Code:
        if t == INT:
            return []
        if t == FLOAT:
            return ["f64.reinterpret_i64"]
        return ["i32.wrap_i64"]

    @staticmethod
    def zero(t: Type) -> Code:
        if t == NONE:
            return []
        return [f"{t.wasm}.const 0"]

    def coerce(self, code: Code, src: Type, dst: Type, node: ast.AST) -> Code:
        """Convert a value of type ``src`` (computed by ``code``) to ``dst``."""
        if src == dst:
            return code
        if not assignable(src, dst):
            raise self.error(node, f"expected {dst}, got {src}")
        if src == BOOL and dst == INT:
            return code + ["i64.extend_i32_u"]
        if src == INT and dst == FLOAT:
            return code + ["f64.convert_i64_s"]
        if src == BOOL and dst == FLOAT:
            return code + ["f64.convert_i32_u"]
        if isinstance(dst, OptionalT):
            if src == NONE:
                return code + ["i32.const 0"]
            if isinstance(src, OptionalT):
                return code
            if src.is_pointer:
                return code
            inner = self.coerce(code, src, dst.inner, node)
            return inner + self.to_slot(dst.inner) + ["call $rt_box"]
        if isinstance(src, OptionalT):
            checked = code + ["call $rt_check_some"] + self.check_exc()
            if src.inner.is_pointer:
                return self.coerce(checked, src.inner, dst, node)
            unboxed = checked + ["i64.load offset=8"] + self.from_slot(src.inner)
            return self.coerce(unboxed, src.inner, dst, node)
        if isinstance(src, ClassT) and isinstance(dst, ClassT):
            return code
        raise self.error(node, f"expected {dst}, got {src}")

    def truth(self, code: Code, t: Type, node: ast.AST) -> Code:
        """An i32 that is non-zero when the value is truthy, as CPython decides."""
        if t == BOOL:
            return code
        if t == INT:
            return code + ["i64.const 0", "i64.ne"]
        if t == FLOAT:
            return code + ["f64.const 0", "f64.ne"]
        if t == NONE:
            return code + ["i32.const 0"]
        if isinstance(t, (Text, ListT, DictT, TupleT)):
            return code + ["i32.load offset=8"]
        if isinstance(t, OptionalT):
            tmp = self.temp("i32")
            inner_code = [f"local.get {tmp}"]
            if not t.inner.is_pointer:
                inner_code = inner_code + ["i64.load offset=8"] + self.from_slot(t.inner)
            inner_truth = self.truth(inner_code, t.inner, node)
            return code + [f"local.tee {tmp}", "if (result i32)", *inner_truth, "else", "i32.const 0", "end"]
        if isinstance(t, (ClassT, CallableT)):
            return code + ["drop", "i32.const 1"]
        raise self.error(node, f"cannot test the truth of a {t}")

    # --- classes --------------------------------------------------------------------

    def field_load(self, obj: Code, cls: ClassInfo, name: str, node: ast.AST) -> tuple[Code, Type]:
        """Read a field. A pointer field that was never assigned raises AttributeError, as
        reading an unset attribute does in CPython (Optional fields may hold None)."""
        offset, ftype = self.field_slot(cls, name, node)
        code = obj + [f"i64.load offset={offset}"] + self.from_slot(ftype)
        if ftype.is_pointer and not isinstance(ftype, OptionalT):
            message = self.c.string(f"'{cls.name}' object has no attribute '{name}'")
            code += [f"i32.const {message}", "call $rt_check_field", *self.check_exc()]
        return code, ftype

    def field_slot(self, cls: ClassInfo, name: str, node: ast.AST) -> tuple[int, Type]:
        self.c.ensure_layout(cls)
        info = cls.fields.get(name)
        if info is None:
            raise self.error(
                node,
                f"{cls.name} has no field {name}; declare it in the class body "
                f"(`{name}: type`) or assign it in __init__",
            )
        return 8 + 8 * info.index, info.type
