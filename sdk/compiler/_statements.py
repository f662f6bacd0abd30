"""Statements and whole functions: assignment, control flow, loops, exceptions."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from sdk.compiler._calls import CallCompiler
from sdk.compiler._codegen_base import Code
from sdk.compiler._errors import CompileError, unsupported
from sdk.compiler._program import MESSAGE_FIELD, ClassInfo, FieldInfo, GlobalInfo
from sdk.compiler._types import (
    BOOL,
    BYTES,
    INT,
    NONE,
    STR,
    ClassT,
    DictT,
    ListT,
    OptionalT,
    TupleT,
    Type,
    assignable,
)

_UNSUPPORTED_STMTS: dict[type, tuple[str, str]] = {
    ast.With: ("with", "explicit calls"),
    ast.AsyncWith: ("async with", "explicit calls"),
    ast.AsyncFor: ("async for", "a for loop"),
    ast.AsyncFunctionDef: ("async def", "a def"),
    ast.FunctionDef: ("a nested function", "a module-level function or a method"),
    ast.ClassDef: ("a nested class", "a module-level class"),
    ast.Import: ("an import inside a function", "a module-level import"),
    ast.ImportFrom: ("an import inside a function", "a module-level import"),
    ast.Nonlocal: ("nonlocal", "a field on self"),
    ast.Match: ("match", "if/elif/else"),
}


@dataclass
class _Finally:
    """A try/finally being compiled: its cleanup, and the handlers and loops outside it."""

    body: list[ast.stmt]
    handlers: list[str]
    loops: int


@dataclass
class IterPlan:
    """How a for loop walks an iterable: setup, test, current value(s), advance."""

    setup: Code
    test: Code
    values: list[ValueTree]
    advance: Code


@dataclass
class ValueTree:
    code: Code = field(default_factory=list)
    type: Type = NONE
    group: list[ValueTree] | None = None


def _assigned_names(body: list[ast.stmt]) -> set[str]:
    """Names a function body binds (without looking inside comprehensions)."""
    names: set[str] = set()

    def targets(node: ast.expr) -> None:
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for elt in node.elts:
                targets(elt)

    def visit(stmts: list[ast.stmt]) -> None:
        for stmt in stmts:
            if isinstance(stmt, ast.Assign):
                for t in stmt.targets:
                    targets(t)
            elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
                targets(stmt.target)
            elif isinstance(stmt, ast.For):
                targets(stmt.target)
            elif isinstance(stmt, ast.Try):
                for handler in stmt.handlers:
                    if handler.name:
                        names.add(handler.name)
            for child in ("body", "orelse", "finalbody"):
                visit(getattr(stmt, child, []) or [])
            if isinstance(stmt, ast.Try):
                for handler in stmt.handlers:
                    visit(handler.body)

    visit(body)
    return names


def _inherits(cls: ClassInfo, base: ClassInfo) -> bool:
    current: ClassInfo | None = cls
    while current is not None:
        if current is base:
            return True
        current = current.base
    return False


class FunctionCompiler(CallCompiler):
    """Compiles one function (or a module's top-level code) to a WAT ``func``."""

    # --- whole functions ------------------------------------------------------------

    def compile_function(self) -> str:
        func = self.func
        assert func is not None
        sig = self.c.signature(func)
        for param in sig.params:
            local = f"$p_{param.name}"
            self.vars[param.name] = self._var(local, param.type)
            self.params.append((local, param.type.wasm))
        body = func.node.body
        self.assigned = _assigned_names(body) - {p.name for p in sig.params}
        for node in ast.walk(func.node):
            if isinstance(node, ast.Global):
                self.declared_global.update(node.names)
        self.assigned -= self.declared_global
        code = self.block(body)
        return self.wrap(func.wasm_name, code)

    def compile_module_init(self, name: str) -> str:
        self.assigned = set()
        code: Code = []
        for stmt in self.mod.init_body:
            code += self.stmt(stmt)
        return self.wrap(name, code)

    def wrap(self, name: str, code: Code) -> str:
        params = "".join(f" (param {local} {wasm})" for local, wasm in self.params)
        result = f" (result {self.result.wasm})" if self.result != NONE else ""
        locals_ = "".join(f"\n  (local {local} {wasm})" for local, wasm in self.local_decls)
        lines = [f"(func {name}{params}{result}{locals_}", "  block $raise"]
        lines += [f"    {ins}" for ins in code]
        if self.result != NONE:
            lines += ["    unreachable", "  end", f"  {self.result.wasm}.const 0", ")"]
        else:
            lines += ["  end", ")"]
        return "\n".join(lines)

    @staticmethod
    def _var(local: str, t: Type):  # type: ignore[no-untyped-def]
        from sdk.compiler._codegen_base import Var

        return Var(local, t)

    # --- statements -----------------------------------------------------------------

    def block(self, stmts: list[ast.stmt]) -> Code:
        code: Code = []
        for stmt in stmts:
            code += self.stmt(stmt)
        return code

    def stmt(self, node: ast.stmt) -> Code:
        if type(node) in _UNSUPPORTED_STMTS:
            construct, alternative = _UNSUPPORTED_STMTS[type(node)]
            raise self.error(node, unsupported(construct, alternative))
        method = getattr(self, f"stmt_{type(node).__name__}", None)
        if method is None:
            raise self.error(node, unsupported(f"the statement {type(node).__name__}", "simpler code"))
        try:
            result: Code = method(node)
        except CompileError:
            raise
        except Exception as err:  # a compiler bug must still point at the source it choked on
            raise self.error(node, f"internal compiler error ({type(err).__name__}: {err}); please report it") from err
        return result

    def stmt_Pass(self, node: ast.Pass) -> Code:
        return []

    def stmt_Global(self, node: ast.Global) -> Code:
        if self.module_level:
            raise self.error(node, "global is only meaningful inside functions")
        return []

    def stmt_Expr(self, node: ast.Expr) -> Code:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return []  # docstring
        code, t = self.expr(node.value)
        return code if t == NONE else code + ["drop"]

    def stmt_If(self, node: ast.If) -> Code:
        test = self.cond(node.test)
        body = self.block(node.body)
        other = self.block(node.orelse)
        if other:
            return [*test, "if", *body, "else", *other, "end"]
        return [*test, "if", *body, "end"]

    def stmt_While(self, node: ast.While) -> Code:
        if node.orelse:
            raise self.error(node, unsupported("while/else", "a flag variable"))
        brk, top, cont = self.fresh("brk"), self.fresh("top"), self.fresh("cont")
        test = self.cond(node.test)
        self.loops.append((brk, cont))
        body = self.block(node.body)
        self.loops.pop()
        return [f"block {brk}", f"loop {top}", *test, "i32.eqz", f"br_if {brk}", f"block {cont}", *body, "end", f"br {top}", "end", "end"]

    def stmt_Break(self, node: ast.Break) -> Code:
        if not self.loops:
            raise self.error(node, "break outside a loop")
        return self.run_finally_blocks(self.loop_finally_depth()) + [f"br {self.loops[-1][0]}"]

    def stmt_Continue(self, node: ast.Continue) -> Code:
        if not self.loops:
            raise self.error(node, "continue outside a loop")
        return self.run_finally_blocks(self.loop_finally_depth()) + [f"br {self.loops[-1][1]}"]

    def stmt_Return(self, node: ast.Return) -> Code:
        if self.module_level:
            raise self.error(node, "return outside a function")
        if node.value is None:
            if self.result == NONE:
                return self.run_finally_blocks(0) + ["return"]
            if isinstance(self.result, OptionalT):
                return self.run_finally_blocks(0) + ["i32.const 0", "return"]
            raise self.error(node, f"this function must return a {self.result}")
        if self.result == NONE:
            code, t = self.expr(node.value)
            if t != NONE:
                raise self.error(node, "this function is annotated to return None")
            return code + self.run_finally_blocks(0) + ["return"]
        value = self.expr_as(node.value, self.result)
        if not self.finally_stack:
            return value + ["return"]
        tmp = self.temp(self.result.wasm, "ret")
        return value + [f"local.set {tmp}"] + self.run_finally_blocks(0) + [f"local.get {tmp}", "return"]

    # --- assignment -----------------------------------------------------------------

    def stmt_Assign(self, node: ast.Assign) -> Code:
        if len(node.targets) == 1:
            return self.assign(node.targets[0], node.value, None, node)
        code, t = self.expr(node.value)
        if t == NONE:
            raise self.error(node, "chained assignment of None needs annotated names; assign each one")
        tmp = self.temp(t.wasm)
        out = code + [f"local.set {tmp}"]
        holder = self.hold(tmp, t, node.value)
        try:
            for target in node.targets:
                out += self.assign(target, holder, None, node)
        finally:
            del self.vars[holder.id]
        return out

    def stmt_AnnAssign(self, node: ast.AnnAssign) -> Code:
        annotation = self.program.resolve_type(self.mod, node.annotation)
        if node.value is None:
            if isinstance(node.target, ast.Name) and not self.module_level:
                if node.target.id not in self.vars:
                    var = self.declare_var(node.target.id, annotation, node)
                    return self.zero(annotation) + [f"local.set {var.local}"]
                return []
            if self.module_level:
                return []
            raise self.error(node, unsupported("a bare field annotation in a method", "the class body"))
        return self.assign(node.target, node.value, annotation, node)

    def assign(self, target: ast.expr, value: ast.expr, annotation: Type | None, node: ast.stmt) -> Code:
        if isinstance(target, ast.Name):
            return self.assign_name(target.id, value, annotation, node)
        if isinstance(target, ast.Attribute):
            return self.assign_attribute(target, value, annotation, node)
        if isinstance(target, ast.Subscript):
            return self.assign_subscript(target, value, node)
        if isinstance(target, (ast.Tuple, ast.List)):
            code, t = self.expr(value)
            return self.unpack(target, code, t, node)
        raise self.error(target, unsupported("this assignment target", "a name, attribute, index or tuple"))

    def assign_name(self, name: str, value: ast.expr, annotation: Type | None, node: ast.AST) -> Code:
        if self.module_level or name in self.declared_global:
            symbol = self.mod.symbols.get(name)
            if not isinstance(symbol, GlobalInfo):
                raise self.error(node, f"{name} is not a module variable")
            gtype = self.c.global_type(symbol)
            if self.module_level and symbol.constant() is not None:
                return []
            self.c.use_global(symbol)
            return self.expr_as(value, gtype) + [f"global.set {symbol.wasm_name}"]
        var = self.vars.get(name)
        if var is None:
            if annotation is not None:
                code = self.expr_as(value, annotation)
                var = self.declare_var(name, annotation, node)
            else:
                code, t = self.expr(value)
                if t == NONE:
                    raise self.error(node, f"{name} needs a type: write {name}: <type> | None = None")
                var = self.declare_var(name, t, node)
            return code + [f"local.set {var.local}"]
        if annotation is not None and annotation != var.type:
            raise self.error(node, f"{name} was declared as {var.type}")
        if name.startswith("\0"):
            raise self.error(node, "cannot assign here")
        code, t = self.expr(value, var.type)
        if not assignable(t, var.type):
            raise self.error(node, f"{name} holds {var.type} values; a {t} needs a name of its own")
        return self.coerce(code, t, var.type, value) + [f"local.set {var.local}"]

    def assign_attribute(self, target: ast.Attribute, value: ast.expr, annotation: Type | None, node: ast.AST) -> Code:
        static = self.resolve_static(target.value)
        if static is not None:
            raise self.error(target, unsupported("assigning to a module or class attribute", "a module variable with `global`"))
        obj, ot = self.expr(target.value)
        if isinstance(ot, OptionalT):
            obj, ot = self.coerce(obj, ot, ot.inner, target), ot.inner
        if not isinstance(ot, ClassT):
            raise self.error(target, f"cannot set attributes on {ot}")
        cls = ot.cls
        self.c.ensure_layout(cls)
        if target.attr not in cls.fields:
            declaring = (
                cls.layout_state == "open"
                and self.func is not None
                and self.func.name == "__init__"
                and self.owner is cls
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
            )
            if not declaring:
                raise self.error(target, f"{cls.name} has no field {target.attr}; assign it in __init__ or declare it in the class body")
            if annotation is None:
                code, t = self.expr(value)
                if t == NONE:
                    raise self.error(node, f"annotate the field: self.{target.attr}: <type> | None = None")
                if isinstance(value, (ast.List, ast.Dict)) and not getattr(value, "elts", getattr(value, "keys", None)):
                    raise self.error(node, f"annotate the empty field: self.{target.attr}: <type> = ...")
            else:
                t = annotation
                code = self.expr_as(value, annotation)
            self.declare_field(cls, target.attr, t, node)
            offset, ftype = self.field_slot(cls, target.attr, target)
            return obj + code + self.to_slot(ftype) + [f"i64.store offset={offset}"]
        offset, ftype = self.field_slot(cls, target.attr, target)
        if annotation is not None and annotation != ftype:
            raise self.error(node, f"field {target.attr} was declared as {ftype}")
        return obj + self.expr_as(value, ftype) + self.to_slot(ftype) + [f"i64.store offset={offset}"]

    def declare_field(self, cls: ClassInfo, name: str, t: Type, node: ast.AST) -> None:
        if len(cls.fields) >= 32:
            raise self.error(node, "a class has at most 32 fields (group some into a helper class)")
        for sub in cls.all_subclasses()[1:]:
            if sub.layout_state != "none":
                raise self.error(node, f"field {name} must be declared before subclasses of {cls.name} are used")
        cls.fields[name] = FieldInfo(name, t, len(cls.fields), owner=cls)

    def assign_subscript(self, target: ast.Subscript, value: ast.expr, node: ast.AST) -> Code:
        if isinstance(target.slice, ast.Slice):
            raise self.error(target, unsupported("assigning to a slice", "building a new list"))
        base, bt = self.expr(target.value)
        if isinstance(bt, OptionalT):
            base, bt = self.coerce(base, bt, bt.inner, target), bt.inner
        if isinstance(bt, ListT):
            return base + self.expr_as(target.slice, INT) + self.expr_as(value, bt.elem) + self.to_slot(bt.elem) + ["call $rt_list_set"] + self.check_exc()
        if isinstance(bt, DictT):
            return base + self.expr_as(target.slice, bt.key) + self.to_slot(bt.key) + self.expr_as(value, bt.value) + self.to_slot(bt.value) + ["call $rt_dict_set"]
        raise self.error(target, f"{bt} does not support item assignment")

    def unpack(self, target: ast.Tuple | ast.List, code: Code, t: Type, node: ast.AST) -> Code:
        if not isinstance(t, TupleT):
            raise self.error(node, unsupported(f"unpacking a {t}", "indexing (x[0], x[1])"))
        if len(t.items) != len(target.elts):
            raise self.error(node, f"cannot unpack {len(t.items)} values into {len(target.elts)} names")
        tmp = self.temp("i32")
        out = code + [f"local.set {tmp}"]
        for i, (elt, item) in enumerate(zip(target.elts, t.items, strict=True)):
            load = [f"local.get {tmp}", f"i64.load offset={16 + 8 * i}"] + self.from_slot(item)
            out += self.bind_value(elt, load, item, node)
        return out

    def bind_value(self, target: ast.expr, code: Code, t: Type, node: ast.AST) -> Code:
        """Assign an already-computed value to a target."""
        if isinstance(target, (ast.Tuple, ast.List)):
            return self.unpack(target, code, t, node)
        tmp = self.temp(t.wasm)
        holder = self.hold(tmp, t, target)
        try:
            return code + [f"local.set {tmp}"] + self.assign(target, holder, None, ast.Expr(holder, lineno=getattr(node, "lineno", 1), col_offset=getattr(node, "col_offset", 0)))
        finally:
            del self.vars[holder.id]

    def stmt_AugAssign(self, node: ast.AugAssign) -> Code:
        target = node.target
        if isinstance(target, ast.Name):
            current, ct = self.expr(target)
            if isinstance(ct, ListT) and isinstance(node.op, ast.Add):
                return current + self.expr_as(node.value, ct) + ["call $rt_list_extend"]
            combined = ast.BinOp(left=target, op=node.op, right=node.value)
            ast.copy_location(combined, node)
            return self.assign_name(target.id, combined, None, node)
        if isinstance(target, ast.Attribute):
            obj, ot = self.expr(target.value)
            tmp = self.temp("i32")
            holder = self.hold(tmp, ot, target.value)
            try:
                new_target = ast.Attribute(value=holder, attr=target.attr, ctx=ast.Load())
                ast.copy_location(new_target, target)
                combined = ast.BinOp(left=new_target, op=node.op, right=node.value)
                ast.copy_location(combined, node)
                return obj + [f"local.set {tmp}"] + self.assign_attribute(new_target, combined, None, node)
            finally:
                del self.vars[holder.id]
        if isinstance(target, ast.Subscript) and not isinstance(target.slice, ast.Slice):
            base, bt = self.expr(target.value)
            key, kt = self.expr(target.slice)
            btmp, ktmp = self.temp(bt.wasm), self.temp(kt.wasm)
            bh, kh = self.hold(btmp, bt, target.value), self.hold(ktmp, kt, target.slice)
            try:
                new_item = ast.Subscript(value=bh, slice=kh, ctx=ast.Load())
                ast.copy_location(new_item, target)
                combined = ast.BinOp(left=new_item, op=node.op, right=node.value)
                ast.copy_location(combined, node)
                return base + [f"local.set {btmp}"] + key + [f"local.set {ktmp}"] + self.assign_subscript(new_item, combined, node)
            finally:
                del self.vars[bh.id]
                del self.vars[kh.id]
        raise self.error(target, unsupported("this augmented assignment target", "x = x + ..."))

    def stmt_Delete(self, node: ast.Delete) -> Code:
        code: Code = []
        for target in node.targets:
            if not isinstance(target, ast.Subscript) or isinstance(target.slice, ast.Slice):
                raise self.error(target, unsupported("del of this target", "del d[key] or del items[i]"))
            base, bt = self.expr(target.value)
            if isinstance(bt, DictT):
                code += base + self.expr_as(target.slice, bt.key) + self.to_slot(bt.key) + ["call $rt_dict_del"] + self.check_exc()
            elif isinstance(bt, ListT):
                code += base + self.expr_as(target.slice, INT) + ["call $rt_list_pop"] + self.check_exc() + ["drop"]
            else:
                raise self.error(target, f"cannot delete items of {bt}")
        return code

    # --- exceptions -----------------------------------------------------------------

    def stmt_Raise(self, node: ast.Raise) -> Code:
        if node.exc is None:
            if not self.active_exceptions:
                raise self.error(node, "bare raise outside an except block")
            return [f"local.get {self.active_exceptions[-1]}", "global.set $exc", *self.raise_code()]
        static = self.resolve_static(node.exc)
        if isinstance(static, ClassInfo):
            call = ast.Call(func=node.exc, args=[], keywords=[])
            ast.copy_location(call, node.exc)
            code, t = self.expr(call)
        else:
            code, t = self.expr(node.exc)
        if not (isinstance(t, ClassT) and t.cls.is_exception):
            raise self.error(node, f"only exceptions can be raised, not {t}")
        return code + ["global.set $exc", *self.raise_code()]

    def stmt_Assert(self, node: ast.Assert) -> Code:
        message = self.expr_as(node.msg, STR) if node.msg is not None else [f"i32.const {self.c.string('')}"]
        return [
            *self.cond(node.test),
            "i32.eqz",
            "if",
            f"i32.const {self.program.builtins['AssertionError'].class_id}",
            *message,
            "call $rt_raise_msg",
            *self.raise_code(),
            "end",
        ]

    def stmt_Try(self, node: ast.Try) -> Code:
        if node.finalbody:
            return self.try_finally(node)
        return self.try_except(node)

    def try_except(self, node: ast.Try) -> Code:
        done, handler = self.fresh("try_done"), self.fresh("try_handler")
        self.handlers.append(handler)
        body = self.block(node.body)
        self.handlers.pop()
        orelse = self.block(node.orelse)
        exc = self.temp("i32", "exc")
        code = [f"block {done}", f"block {handler}", *body, *orelse, f"br {done}", "end", "global.get $exc", f"local.set {exc}", "i32.const 0", "global.set $exc"]
        for clause in node.handlers:
            classes = self.handler_classes(clause)
            if classes:
                tests = [[f"local.get {exc}", f"i32.const {c.class_id}", f"i32.const {c.id_end}", "call $rt_isinstance"] for c in classes]
                test = tests[-1]
                for t in reversed(tests[:-1]):
                    test = t + ["if (result i32)", "i32.const 1", "else", *test, "end"]
            else:
                test = ["i32.const 1"]
            saved = None
            if clause.name:
                common = self.program.builtins["Exception"]
                if classes:
                    candidate: ClassInfo | None = classes[0]
                    while candidate is not None and not all(_inherits(c, candidate) for c in classes):
                        candidate = candidate.base
                    common = candidate or common
                saved = self.vars.get(clause.name)
                var = self.declare_var(clause.name, common.type, clause)
                bind = [f"local.get {exc}", f"local.set {var.local}"]
            else:
                bind = []
            self.active_exceptions.append(exc)
            body_code = self.block(clause.body)
            self.active_exceptions.pop()
            if clause.name and saved is not None:
                self.vars[clause.name] = saved
            code += [*test, "if", *bind, *body_code, f"br {done}", "end"]
        code += [f"local.get {exc}", "global.set $exc", *self.raise_code(), "end"]
        return code

    def run_finally_blocks(self, keep: int) -> Code:
        """Code for leaving every try/finally above depth ``keep`` (innermost first)."""
        code: Code = []
        stack, handlers = self.finally_stack, self.handlers
        try:
            for depth in range(len(stack) - 1, keep - 1, -1):
                entry = stack[depth]
                self.finally_stack, self.handlers = stack[:depth], entry.handlers
                code += self.block(entry.body)
        finally:
            self.finally_stack, self.handlers = stack, handlers
        return code

    def loop_finally_depth(self) -> int:
        """How many enclosing finally blocks are outside the innermost loop."""
        keep = len(self.finally_stack)
        while keep > 0 and self.finally_stack[keep - 1].loops >= len(self.loops):
            keep -= 1
        return keep

    def handler_classes(self, clause: ast.ExceptHandler) -> list[ClassInfo]:
        if clause.type is None:
            return []
        nodes = clause.type.elts if isinstance(clause.type, ast.Tuple) else [clause.type]
        classes = []
        for n in nodes:
            cls = self.resolve_static(n)
            if not isinstance(cls, ClassInfo) or not cls.is_exception:
                raise self.error(n, "except needs an exception class (sdk.errors, a builtin error, or your own subclass of Exception)")
            classes.append(cls)
        return classes

    def try_finally(self, node: ast.Try) -> Code:
        for inner in (n for part in node.finalbody for n in ast.walk(part)):
            if isinstance(inner, (ast.Return, ast.Break, ast.Continue)):
                raise self.error(inner, unsupported(f"{type(inner).__name__.lower()} inside a finally block", "code after the try"))
        escape = self.fresh("fin_handler")
        exc = self.temp("i32", "exc")
        self.finally_stack.append(_Finally(node.finalbody, list(self.handlers), len(self.loops)))
        self.handlers.append(escape)
        inner = ast.Try(body=node.body, handlers=node.handlers, orelse=node.orelse, finalbody=[])
        ast.copy_location(inner, node)
        protected = self.try_except(inner) if node.handlers else self.block(node.body) + self.block(node.orelse)
        self.handlers.pop()
        self.finally_stack.pop()
        final = self.block(node.finalbody)
        return [
            "i32.const 0",
            f"local.set {exc}",
            f"block {escape}",
            *protected,
            "end",
            "global.get $exc",
            f"local.set {exc}",
            "i32.const 0",
            "global.set $exc",
            *final,
            f"local.get {exc}",
            "if",
            f"local.get {exc}",
            "global.set $exc",
            *self.raise_code(),
            "end",
        ]

    # --- loops ----------------------------------------------------------------------

    def stmt_For(self, node: ast.For) -> Code:
        if node.orelse:
            raise self.error(node, unsupported("for/else", "a flag variable"))
        plan = self.iter_plan(node.iter)
        brk, top, cont = self.fresh("brk"), self.fresh("top"), self.fresh("cont")
        bind = self.bind_tree(node.target, plan.values, node)
        self.loops.append((brk, cont))
        body = self.block(node.body)
        self.loops.pop()
        return [
            *plan.setup,
            f"block {brk}",
            f"loop {top}",
            *plan.test,
            "i32.eqz",
            f"br_if {brk}",
            *bind,
            f"block {cont}",
            *body,
            "end",
            *plan.advance,
            f"br {top}",
            "end",
            "end",
        ]

    def bind_tree(self, target: ast.expr, values: list[ValueTree], node: ast.AST) -> Code:
        if len(values) == 1:
            if values[0].group is None:
                return self.bind_value(target, values[0].code, values[0].type, node)
            values = values[0].group
        if isinstance(target, (ast.Tuple, ast.List)) and len(target.elts) == len(values):
            code: Code = []
            for elt, value in zip(target.elts, values, strict=True):
                code += self.bind_tree(elt, [value], node)
            return code
        raise self.error(target, f"this loop produces {len(values)} values; unpack them, e.g. `for a, b in ...`")

    def iter_plan(self, it: ast.expr) -> IterPlan:
        if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id not in self.vars:
            name = it.func.id
            if self.program.lookup(self.mod, name) is None:
                if name == "range":
                    return self.range_plan(it)
                if name == "enumerate":
                    return self.enumerate_plan(it)
                if name == "zip":
                    return self.zip_plan(it)
                if name == "reversed":
                    return self.reversed_plan(it)
        if isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute) and it.func.attr in ("items", "keys", "values") and not it.args:
            code, t = self.expr(it.func.value)
            if isinstance(t, DictT):
                return self.dict_plan(code, t, it.func.attr)
        code, t = self.expr(it)
        if isinstance(t, OptionalT):
            code, t = self.coerce(code, t, t.inner, it), t.inner
        if isinstance(t, ListT):
            return self.list_plan(code, t)
        if isinstance(t, DictT):
            return self.dict_plan(code, t, "keys")
        if t in (STR, BYTES):
            return self.text_plan(code, t)
        raise self.error(it, unsupported(f"iterating over a {t}", "a list, dict, str, bytes or range()"))

    def range_plan(self, node: ast.Call) -> IterPlan:
        args = node.args
        if not 1 <= len(args) <= 3 or node.keywords:
            raise self.error(node, "range() takes 1 to 3 arguments")
        step = 1
        if len(args) == 3:
            literal = args[2]
            value = literal.value if isinstance(literal, ast.Constant) else None
            if isinstance(literal, ast.UnaryOp) and isinstance(literal.op, ast.USub) and isinstance(literal.operand, ast.Constant):
                value = -literal.operand.value if type(literal.operand.value) is int else None
            if type(value) is not int or value == 0:
                raise self.error(literal, "the range() step must be a non-zero integer literal")
            step = value
        start = self.expr_as(args[0], INT) if len(args) > 1 else ["i64.const 0"]
        stop = self.expr_as(args[1] if len(args) > 1 else args[0], INT)
        i, end = self.temp("i64", "i"), self.temp("i64", "end")
        return IterPlan(
            setup=[*start, f"local.set {i}", *stop, f"local.set {end}"],
            test=[f"local.get {i}", f"local.get {end}", "i64.lt_s" if step > 0 else "i64.gt_s"],
            values=[ValueTree([f"local.get {i}"], INT)],
            advance=[f"local.get {i}", f"i64.const {step}", "i64.add", f"local.set {i}"],
        )

    def list_plan(self, code: Code, t: ListT) -> IterPlan:
        lst, i = self.temp("i32", "list"), self.temp("i32", "i")
        return IterPlan(
            setup=[*code, f"local.set {lst}", "i32.const 0", f"local.set {i}"],
            test=[f"local.get {i}", f"local.get {lst}", "i32.load offset=8", "i32.lt_u"],
            values=[ValueTree([f"local.get {lst}", f"local.get {i}", "call $rt_list_slot", "i64.load", *self.from_slot(t.elem)], t.elem)],
            advance=[f"local.get {i}", "i32.const 1", "i32.add", f"local.set {i}"],
        )

    def reversed_plan(self, node: ast.Call) -> IterPlan:
        if len(node.args) != 1:
            raise self.error(node, "reversed() takes one list")
        code, t = self.expr(node.args[0])
        if not isinstance(t, ListT):
            raise self.error(node, unsupported(f"reversed() of {t}", "reversed() of a list"))
        lst, i = self.temp("i32", "list"), self.temp("i32", "i")
        return IterPlan(
            setup=[*code, f"local.tee {lst}", "i32.load offset=8", f"local.set {i}"],
            test=[f"local.get {i}", "i32.const 0", "i32.gt_s", "if (result i32)", f"local.get {i}", "i32.const 1", "i32.sub",
                  f"local.tee {i}", f"local.get {lst}", "i32.load offset=8", "i32.lt_u", "else", "i32.const 0", "end"],
            values=[ValueTree([f"local.get {lst}", f"local.get {i}", "call $rt_list_slot", "i64.load", *self.from_slot(t.elem)], t.elem)],
            advance=[],
        )

    def text_plan(self, code: Code, t: Type) -> IterPlan:
        s, i = self.temp("i32", "text"), self.temp("i32", "i")
        if t == BYTES:
            value = ValueTree([f"local.get {s}", f"local.get {i}", "i32.add", "i64.load8_u offset=16"], INT)
            advance = [f"local.get {i}", "i32.const 1", "i32.add", f"local.set {i}"]
        else:
            value = ValueTree([f"local.get {s}", f"local.get {i}", "call $rt_str_char_at"], STR)
            advance = [f"local.get {s}", f"local.get {i}", "call $rt_utf8_next", f"local.set {i}"]
        return IterPlan(
            setup=[*code, f"local.set {s}", "i32.const 0", f"local.set {i}"],
            test=[f"local.get {i}", f"local.get {s}", "i32.load offset=8", "i32.lt_u"],
            values=[value],
            advance=advance,
        )

    def dict_plan(self, code: Code, t: DictT, what: str) -> IterPlan:
        d, e = self.temp("i32", "dict"), self.temp("i32", "e")
        key = ValueTree([f"local.get {d}", f"local.get {e}", "call $rt_dict_key_at", *self.from_slot(t.key)], t.key)
        value = ValueTree([f"local.get {d}", f"local.get {e}", "call $rt_dict_value_at", *self.from_slot(t.value)], t.value)
        if what == "items":
            values = [ValueTree(group=[key, value])]
        else:
            values = [key if what == "keys" else value]
        return IterPlan(
            setup=[*code, f"local.set {d}", "i32.const 0", f"local.set {e}"],
            test=[f"local.get {d}", f"local.get {e}", "call $rt_dict_next", f"local.tee {e}", "i32.const 0", "i32.ge_s"],
            values=values,
            advance=[f"local.get {e}", "i32.const 1", "i32.add", f"local.set {e}"],
        )

    def enumerate_plan(self, node: ast.Call) -> IterPlan:
        if not 1 <= len(node.args) <= 2 or node.keywords:
            raise self.error(node, "enumerate() takes an iterable and an optional start")
        inner = self.iter_plan(node.args[0])
        start = self.expr_as(node.args[1], INT) if len(node.args) == 2 else ["i64.const 0"]
        n = self.temp("i64", "n")
        element = inner.values[0] if len(inner.values) == 1 else ValueTree(group=inner.values)
        return IterPlan(
            setup=[*start, f"local.set {n}", *inner.setup],
            test=inner.test,
            values=[ValueTree(group=[ValueTree([f"local.get {n}"], INT), element])],
            advance=[*inner.advance, f"local.get {n}", "i64.const 1", "i64.add", f"local.set {n}"],
        )

    def zip_plan(self, node: ast.Call) -> IterPlan:
        for kw in node.keywords:
            if kw.arg != "strict" or not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                raise self.error(kw, unsupported("zip() keywords other than strict=False", "comparing the lengths first"))
        if len(node.args) < 2:
            raise self.error(node, "zip() takes two or more iterables")
        plans = [self.iter_plan(a) for a in node.args]
        test = plans[-1].test
        for plan in reversed(plans[:-1]):
            test = plan.test + ["if (result i32)", *test, "else", "i32.const 0", "end"]
        items = [p.values[0] if len(p.values) == 1 else ValueTree(group=p.values) for p in plans]
        return IterPlan(
            setup=[c for p in plans for c in p.setup],
            test=test,
            values=[ValueTree(group=items)],
            advance=[c for p in plans for c in p.advance],
        )

    # --- comprehensions -------------------------------------------------------------

    def comprehension(self, node: ast.ListComp | ast.DictComp, expected: Type | None) -> tuple[Code, Type]:
        if len(node.generators) != 1:
            raise self.error(node, unsupported("a comprehension with several for clauses", "nested for loops"))
        gen = node.generators[0]
        if gen.is_async:
            raise self.error(node, unsupported("async comprehension", "a for loop"))
        names = sorted(_assigned_names([ast.For(target=gen.target, iter=gen.iter, body=[], orelse=[])]))
        saved = {name: self.vars.pop(name) for name in names if name in self.vars}
        saved_assigned = set(self.assigned)
        self.assigned -= set(names)
        try:
            plan = self.iter_plan(gen.iter)
            brk, top, cont = self.fresh("brk"), self.fresh("top"), self.fresh("cont")
            bind = self.bind_tree(gen.target, plan.values, node)
            filters = [self.cond(cond) for cond in gen.ifs]
            result = self.temp("i32", "comp")
            if isinstance(node, ast.ListComp):
                hint = expected.elem if isinstance(expected, ListT) else None
                code, t = self.expr(node.elt, hint)
                elem = hint if hint is not None else t
                if elem == NONE:
                    raise self.error(node.elt, "list items cannot be None without an annotated type")
                add = [f"local.get {result}", *self.coerce(code, t, elem, node.elt), *self.to_slot(elem), "call $rt_list_append"]
                create = ["i32.const 0", f"i32.const {int(elem.is_pointer)}", "call $rt_list_new", f"local.set {result}"]
                out_type: Type = ListT(elem)
            else:
                kh = expected.key if isinstance(expected, DictT) else None
                vh = expected.value if isinstance(expected, DictT) else None
                kc, kt = self.expr(node.key, kh)
                vc, vt = self.expr(node.value, vh)
                key_t = kh if kh is not None else kt
                val_t = vh if vh is not None else vt
                if key_t not in (STR, BYTES, INT, BOOL):
                    raise self.error(node.key, "dict keys must be str, bytes or int")
                add = [f"local.get {result}", *self.coerce(kc, kt, key_t, node.key), *self.to_slot(key_t),
                       *self.coerce(vc, vt, val_t, node.value), *self.to_slot(val_t), "call $rt_dict_set"]
                flags = (1 if key_t in (STR, BYTES) else 0) | (2 if val_t.is_pointer else 0)
                create = [f"i32.const {flags}", "call $rt_dict_new", f"local.set {result}"]
                out_type = DictT(key_t, val_t)
            body = add
            for f in reversed(filters):
                body = [*f, "if", *body, "end"]
        finally:
            for name in names:
                self.vars.pop(name, None)
            self.vars.update(saved)
            self.assigned = saved_assigned
        return [
            *create,
            *plan.setup,
            f"block {brk}",
            f"loop {top}",
            *plan.test,
            "i32.eqz",
            f"br_if {brk}",
            *bind,
            f"block {cont}",
            *body,
            "end",
            *plan.advance,
            f"br {top}",
            "end",
            "end",
            f"local.get {result}",
        ], out_type


__all__ = ["FunctionCompiler", "MESSAGE_FIELD", "BOOL", "TupleT"]
