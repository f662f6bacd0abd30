"""Expressions: names, attributes, operators, comparisons, subscripts, displays, f-strings."""

from __future__ import annotations

import ast

from sdk.compiler._codegen_base import Code, CodegenBase
from sdk.compiler._errors import unsupported
from sdk.compiler._program import (
    ClassInfo,
    FunctionInfo,
    GlobalInfo,
    ModuleInfo,
    PackageRef,
)
from sdk.compiler._types import (
    BOOL,
    BYTES,
    FLOAT,
    INT,
    NONE,
    STR,
    CallableT,
    ClassT,
    DictT,
    ListT,
    OptionalT,
    Text,
    TupleT,
    Type,
    assignable,
    slot_kind,
)

_INT_OPS = {
    ast.Add: "i64.add",
    ast.Sub: "i64.sub",
    ast.Mult: "i64.mul",
    ast.BitAnd: "i64.and",
    ast.BitOr: "i64.or",
    ast.BitXor: "i64.xor",
}
_FLOAT_OPS = {ast.Add: "f64.add", ast.Sub: "f64.sub", ast.Mult: "f64.mul"}
_INT_CMP = {ast.Lt: "i64.lt_s", ast.LtE: "i64.le_s", ast.Gt: "i64.gt_s", ast.GtE: "i64.ge_s", ast.Eq: "i64.eq", ast.NotEq: "i64.ne"}
_FLOAT_CMP = {ast.Lt: "f64.lt", ast.LtE: "f64.le", ast.Gt: "f64.gt", ast.GtE: "f64.ge", ast.Eq: "f64.eq", ast.NotEq: "f64.ne"}
_ORDER_CMP = {ast.Lt: "i32.lt_s", ast.LtE: "i32.le_s", ast.Gt: "i32.gt_s", ast.GtE: "i32.ge_s"}
_UNSUPPORTED_EXPRS: dict[type, tuple[str, str]] = {
    ast.Lambda: ("lambda", "a def function or method"),
    ast.NamedExpr: ("the walrus operator :=", "a separate assignment"),
    ast.SetComp: ("a set comprehension", "a dict[str, bool] or a list"),
    ast.GeneratorExp: ("a generator expression", "a list comprehension or a for loop"),
    ast.Await: ("await", "synchronous code (the host calls the plugin back)"),
    ast.Yield: ("yield", "building a list"),
    ast.YieldFrom: ("yield from", "building a list"),
    ast.Starred: ("*unpacking", "passing the items one by one"),
    ast.Set: ("a set", "a dict[str, bool] or a list"),
}


def unify(a: Type, b: Type) -> Type | None:
    """The type that can hold values of both ``a`` and ``b`` (for branches and displays)."""
    if a == b:
        return a
    if assignable(a, b) and not isinstance(a, OptionalT):
        return b
    if assignable(b, a) and not isinstance(b, OptionalT):
        return a
    if a == NONE and b != NONE:
        return b if isinstance(b, OptionalT) else OptionalT(b)
    if b == NONE and a != NONE:
        return a if isinstance(a, OptionalT) else OptionalT(a)
    if isinstance(a, OptionalT) and assignable(b, a):
        return a
    if isinstance(b, OptionalT) and assignable(a, b):
        return b
    if isinstance(a, ClassT) and isinstance(b, ClassT):
        cls: ClassInfo | None = a.cls
        while cls is not None:
            if assignable(b, cls.type):
                return cls.type
            cls = cls.base
    return None


class ExpressionCompiler(CodegenBase):
    """Compiles expressions to (code, type)."""

    # entry points implemented by later layers
    def call(self, node: ast.Call, expected: Type | None) -> tuple[Code, Type]:
        raise NotImplementedError

    def comprehension(self, node: ast.ListComp | ast.DictComp, expected: Type | None) -> tuple[Code, Type]:
        raise NotImplementedError

    def closure_for(self, func: FunctionInfo, receiver: Code | None, node: ast.AST) -> tuple[Code, Type]:
        raise NotImplementedError

    def to_str(self, code: Code, t: Type, node: ast.AST, conversion: int = -1) -> Code:
        raise NotImplementedError

    # --- dispatch -------------------------------------------------------------------

    def expr(self, node: ast.expr, expected: Type | None = None) -> tuple[Code, Type]:
        method = getattr(self, f"expr_{type(node).__name__}", None)
        if method is None:
            construct, alternative = _UNSUPPORTED_EXPRS.get(type(node), (f"the expression {type(node).__name__}", "simpler code"))
            raise self.error(node, unsupported(construct, alternative))
        result: tuple[Code, Type] = method(node, expected)
        return result

    def expr_as(self, node: ast.expr, target: Type) -> Code:
        code, t = self.expr(node, target)
        return self.coerce(code, t, target, node)

    def cond(self, node: ast.expr) -> Code:
        """An i32 truth value, short-circuiting and/or/not without unifying types."""
        if isinstance(node, ast.BoolOp):
            parts = [self.cond(v) for v in node.values]
            code = parts[-1]
            for part in reversed(parts[:-1]):
                if isinstance(node.op, ast.And):
                    code = part + ["if (result i32)", *code, "else", "i32.const 0", "end"]
                else:
                    code = part + ["if (result i32)", "i32.const 1", "else", *code, "end"]
            return code
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return self.cond(node.operand) + ["i32.eqz"]
        code, t = self.expr(node)
        return self.truth(code, t, node)

    # --- leaves ---------------------------------------------------------------------

    def expr_Constant(self, node: ast.Constant, expected: Type | None) -> tuple[Code, Type]:
        value = node.value
        if value is None:
            return [], NONE
        if isinstance(value, bool):
            return [f"i32.const {int(value)}"], BOOL
        if isinstance(value, int):
            if not -(2**63) <= value < 2**63:
                raise self.error(node, "integers must fit in 64 bits")
            if expected == FLOAT:
                return [f"f64.const {float(value)!r}"], FLOAT
            return [f"i64.const {value}"], INT
        if isinstance(value, float):
            return [f"f64.const {value!r}" if value == value else "f64.const nan"], FLOAT
        if isinstance(value, str):
            return [f"i32.const {self.c.string(value)}"], STR
        if isinstance(value, bytes):
            return [f"i32.const {self.c.string(value)}"], BYTES
        raise self.error(node, unsupported(f"the constant {value!r}", "a str, bytes, int, float, bool or None"))

    def expr_Name(self, node: ast.Name, expected: Type | None) -> tuple[Code, Type]:
        name = node.id
        var = self.vars.get(name)
        if var is not None:
            return [f"local.get {var.local}"], var.type
        if name in self.assigned and name not in self.declared_global:
            raise self.error(node, f"{name} is used before it is assigned")
        symbol = self.program.lookup(self.mod, name)
        return self.symbol_value(symbol, name, node)

    def symbol_value(self, symbol: object, name: str, node: ast.AST) -> tuple[Code, Type]:
        if isinstance(symbol, GlobalInfo):
            const = symbol.constant()
            if const is not None:
                return self.expr_Constant(const, None)
            return [f"global.get {symbol.wasm_name}"], self.c.global_type(symbol)
        if isinstance(symbol, FunctionInfo):
            return self.closure_for(symbol, None, node)
        if symbol is None:
            raise self.error(node, f"{name} is not defined")
        raise self.error(node, f"{name} cannot be used as a value here")

    def resolve_static(self, node: ast.expr) -> object | None:
        """The module, class or module-level symbol an expression names, if it names one."""
        if isinstance(node, ast.Name):
            if node.id in self.vars or (node.id in self.assigned and node.id not in self.declared_global):
                return None
            return self.program.lookup(self.mod, node.id)
        if isinstance(node, ast.Attribute):
            target = self.resolve_static(node.value)
            if isinstance(target, (ModuleInfo, PackageRef)):
                return self.program.member(self.mod, target, node.attr, node)
        return None

    def expr_Attribute(self, node: ast.Attribute, expected: Type | None) -> tuple[Code, Type]:
        target = self.resolve_static(node.value)
        if isinstance(target, (ModuleInfo, PackageRef)):
            symbol = self.program.member(self.mod, target, node.attr, node)
            if isinstance(symbol, GlobalInfo):
                const = symbol.constant()
                if const is not None:
                    return self.expr_Constant(const, None)
                return [f"global.get {symbol.wasm_name}"], self.c.global_type(symbol)
            return self.symbol_value(symbol, node.attr, node)
        if isinstance(target, ClassInfo):
            if target.is_enum:
                if node.attr not in target.enum_members:
                    raise self.error(node, f"{target.name} has no member {node.attr}")
                return [f"i64.const {target.enum_members[node.attr]}"], INT
            return self.class_constant(target, node.attr, node)
        code, t = self.expr(node.value)
        if isinstance(t, OptionalT) and isinstance(t.inner, ClassT):
            code = self.coerce(code, t, t.inner, node)
            t = t.inner
        if isinstance(t, ClassT):
            cls = t.cls
            self.c.ensure_layout(cls)
            if node.attr in cls.fields:
                return self.field_load(code, cls, node.attr, node)
            if cls.find_const(node.attr) is not None:
                return self.instance_constant(code, cls, node.attr, node)
            method = cls.find_method(node.attr)
            if method is not None:
                return self.closure_for(method, code, node)
            raise self.error(node, f"{cls.name} has no attribute {node.attr}")
        raise self.error(node, f"{t} has no attribute {node.attr} (methods must be called)")

    def instance_constant(self, code: Code, cls: ClassInfo, name: str, node: ast.AST) -> tuple[Code, Type]:
        """``obj.CONST``: the constant of the object's dynamic class, as in CPython."""
        base_code, t = self.class_constant(cls, name, node)
        overrides = [sub for sub in cls.all_subclasses()[1:] if name in sub.consts]
        if not overrides:
            return code + ["drop"] + base_code, t
        cid = self.temp("i32", "cid")
        result = base_code
        for sub in sorted(overrides, key=lambda c: c.id_end - c.class_id, reverse=True):
            sub_code, sub_t = self.class_constant(sub, name, node)
            if sub_t != t:
                raise self.error(node, f"{sub.name}.{name} must have the same type as {cls.name}.{name}")
            result = [f"local.get {cid}", f"i32.const {sub.class_id}", "i32.ge_u", f"local.get {cid}",
                      f"i32.const {sub.id_end}", "i32.le_u", "i32.and", f"if (result {t.wasm})", *sub_code,
                      "else", *result, "end"]
        return code + ["i32.load16_u offset=6", f"local.set {cid}"] + result, t

    def class_constant(self, cls: ClassInfo, name: str, node: ast.AST) -> tuple[Code, Type]:
        found = cls.find_const(name)
        if found is None:
            raise self.error(node, f"{cls.name} has no constant {name}")
        owner, value = found
        if not isinstance(value, ast.Constant) or not isinstance(value.value, (int, str, bytes, bool, float)):
            raise self.error(value, "class constants must be literals")
        return self.expr_Constant(value, None)

    # --- operators ------------------------------------------------------------------

    def expr_UnaryOp(self, node: ast.UnaryOp, expected: Type | None) -> tuple[Code, Type]:
        if isinstance(node.op, ast.Not):
            return self.cond(node.operand) + ["i32.eqz"], BOOL
        code, t = self.unwrap(*self.expr(node.operand, expected), node.operand)
        if t == BOOL:
            code, t = code + ["i64.extend_i32_u"], INT
        if t == INT:
            if isinstance(node.op, ast.USub):
                return ["i64.const 0", *code, "i64.sub"], INT
            if isinstance(node.op, ast.UAdd):
                return code, INT
            if isinstance(node.op, ast.Invert):
                return code + ["i64.const -1", "i64.xor"], INT
        if t == FLOAT:
            if isinstance(node.op, ast.USub):
                return code + ["f64.neg"], FLOAT
            if isinstance(node.op, ast.UAdd):
                return code, FLOAT
        raise self.error(node, f"unary {type(node.op).__name__} is not defined for {t}")

    def unwrap(self, code: Code, t: Type, node: ast.AST) -> tuple[Code, Type]:
        """Use an Optional value as its inner type (None raises TypeError at run time)."""
        if isinstance(t, OptionalT):
            return self.coerce(code, t, t.inner, node), t.inner
        return code, t

    def expr_BinOp(self, node: ast.BinOp, expected: Type | None) -> tuple[Code, Type]:
        left, lt = self.unwrap(*self.expr(node.left), node.left)
        right, rt = self.unwrap(*self.expr(node.right), node.right)
        op = node.op
        if lt == BOOL and rt in (INT, BOOL, FLOAT):
            left, lt = left + ["i64.extend_i32_u"], INT
        if rt == BOOL and lt in (INT, FLOAT):
            right, rt = right + ["i64.extend_i32_u"], INT
        if isinstance(op, ast.Mod) and isinstance(lt, Text):
            raise self.error(node, unsupported("%-formatting", "an f-string"))
        if lt == INT and rt == INT:
            return self.int_binop(node, op, left, right)
        if lt in (INT, FLOAT) and rt in (INT, FLOAT):
            return self.float_binop(node, op, self.coerce(left, lt, FLOAT, node), self.coerce(right, rt, FLOAT, node))
        if isinstance(op, ast.Add):
            if isinstance(lt, Text) and lt == rt:
                return left + right + ["call $rt_str_concat"], lt
            if isinstance(lt, ListT) and lt == rt:
                return left + right + ["call $rt_list_concat"], lt
        if isinstance(op, ast.Mult):
            if isinstance(lt, Text) and rt == INT:
                return left + right + ["call $rt_str_repeat"], lt
            if lt == INT and isinstance(rt, Text):
                return right + left + ["call $rt_str_repeat"], rt
            if isinstance(lt, ListT) and rt == INT:
                return left + right + ["call $rt_list_repeat"], lt
            if lt == INT and isinstance(rt, ListT):
                return right + left + ["call $rt_list_repeat"], rt
        raise self.error(node, f"{type(op).__name__} is not defined for {lt} and {rt}")

    def int_binop(self, node: ast.AST, op: ast.operator, left: Code, right: Code) -> tuple[Code, Type]:
        if type(op) in _INT_OPS:
            return left + right + [_INT_OPS[type(op)]], INT
        if isinstance(op, ast.FloorDiv):
            return left + right + ["call $rt_i64_floordiv"] + self.check_exc(), INT
        if isinstance(op, ast.Mod):
            return left + right + ["call $rt_i64_mod"] + self.check_exc(), INT
        if isinstance(op, ast.Pow):
            return left + right + ["call $rt_i64_pow"] + self.check_exc(), INT
        if isinstance(op, ast.LShift):
            return left + right + ["call $rt_i64_shl"] + self.check_exc(), INT
        if isinstance(op, ast.RShift):
            return left + right + ["call $rt_i64_shr"] + self.check_exc(), INT
        if isinstance(op, ast.Div):
            return self.float_binop(node, op, left + ["f64.convert_i64_s"], right + ["f64.convert_i64_s"])
        raise self.error(node, f"{type(op).__name__} is not supported on int")

    def float_binop(self, node: ast.AST, op: ast.operator, left: Code, right: Code) -> tuple[Code, Type]:
        if type(op) in _FLOAT_OPS:
            return left + right + [_FLOAT_OPS[type(op)]], FLOAT
        if isinstance(op, ast.Div):
            return left + right + ["call $rt_f64_div"] + self.check_exc(), FLOAT
        if isinstance(op, ast.FloorDiv):
            return left + right + ["call $rt_f64_div"] + self.check_exc() + ["f64.floor"], FLOAT
        if isinstance(op, ast.Mod):
            return left + right + ["call $rt_f64_mod"] + self.check_exc(), FLOAT
        raise self.error(node, f"{type(op).__name__} is not supported on float")

    def expr_BoolOp(self, node: ast.BoolOp, expected: Type | None) -> tuple[Code, Type]:
        compiled = [self.expr(v, expected) for v in node.values]
        types = [t for _, t in compiled]
        if all(t == BOOL for t in types):
            return self.cond(node), BOOL
        is_or = isinstance(node.op, ast.Or)
        result: Type | None = types[-1]
        for t in types[:-1]:
            if result is None:
                break
            if is_or and isinstance(t, OptionalT) and assignable(t.inner, result):
                continue
            if t == NONE:
                result = unify(t, result) if not is_or else result
                continue
            result = unify(t, result)
        if result is None or result == NONE:
            raise self.error(node, "the operands of and/or must have one type; use if/else instead")
        code = self.coerce(compiled[-1][0], types[-1], result, node.values[-1])
        for (part, t), value in zip(reversed(compiled[:-1]), reversed(node.values[:-1]), strict=True):
            if t == NONE:
                code = code if is_or else self.coerce([], NONE, result, value)
                continue
            tmp = self.temp(t.wasm)
            keep = self.coerce([f"local.get {tmp}"], t, result, value)
            truth = self.truth([f"local.get {tmp}"], t, value)
            first, second = (keep, code) if is_or else (code, keep)
            code = [*part, f"local.set {tmp}", *truth, f"if (result {result.wasm})", *first, "else", *second, "end"]
        return code, result

    def expr_IfExp(self, node: ast.IfExp, expected: Type | None) -> tuple[Code, Type]:
        test = self.cond(node.test)
        body, bt = self.expr(node.body, expected)
        other, ot = self.expr(node.orelse, expected)
        result = expected if expected is not None and assignable(bt, expected) and assignable(ot, expected) else unify(bt, ot)
        if result is None or result == NONE:
            raise self.error(node, f"both branches must have one type (got {bt} and {ot})")
        return [
            *test,
            f"if (result {result.wasm})",
            *self.coerce(body, bt, result, node.body),
            "else",
            *self.coerce(other, ot, result, node.orelse),
            "end",
        ], result

    # --- comparisons ----------------------------------------------------------------

    def expr_Compare(self, node: ast.Compare, expected: Type | None) -> tuple[Code, Type]:
        if len(node.ops) == 1:
            return self.compare(node.left, node.ops[0], node.comparators[0], node), BOOL
        # a < b < c: each middle operand is evaluated once, and only when needed
        parts: list[Code] = []
        holders: list[str] = []
        left_node: ast.expr = node.left
        try:
            for i, (op, right_node) in enumerate(zip(node.ops, node.comparators, strict=True)):
                if i == len(node.ops) - 1:
                    parts.append(self.compare(left_node, op, right_node, node))
                    break
                rcode, rtype = self.expr(right_node)
                if rtype == NONE:
                    raise self.error(right_node, "None cannot be chained in a comparison")
                tmp = self.temp(rtype.wasm)
                holder = self.hold(tmp, rtype, right_node)
                holders.append(holder.id)
                parts.append(rcode + [f"local.set {tmp}"] + self.compare(left_node, op, holder, node))
                left_node = holder
        finally:
            for name in holders:
                del self.vars[name]
        code = parts[-1]
        for part in reversed(parts[:-1]):
            code = part + ["if (result i32)", *code, "else", "i32.const 0", "end"]
        return code, BOOL

    def hold(self, local: str, t: Type, node: ast.AST) -> ast.Name:
        """A synthetic name bound to ``local``, so a value can be reused as an expression."""
        from sdk.compiler._codegen_base import Var

        holder = ast.Name(id=f"\0{local}", ctx=ast.Load())
        ast.copy_location(holder, node)
        self.vars[holder.id] = Var(local, t)
        return holder

    def compare(self, left_node: ast.expr, op: ast.cmpop, right_node: ast.expr, node: ast.AST) -> Code:
        if isinstance(op, (ast.Is, ast.IsNot)):
            return self.identity(left_node, right_node, isinstance(op, ast.IsNot), node)
        if isinstance(op, (ast.In, ast.NotIn)):
            code = self.membership(left_node, right_node, node)
            return code + ["i32.eqz"] if isinstance(op, ast.NotIn) else code
        left, lt = self.expr(left_node)
        right, rt = self.expr(right_node, lt)
        if not isinstance(op, (ast.Eq, ast.NotEq)):
            left, lt = self.unwrap(left, lt, left_node)
            right, rt = self.unwrap(right, rt, right_node)
        elif isinstance(lt, OptionalT) != isinstance(rt, OptionalT) and NONE not in (lt, rt):
            if isinstance(lt, OptionalT) and not lt.inner.is_pointer and rt in (INT, BOOL, FLOAT):
                pass  # boxed comparison below
        if lt == BOOL and rt in (INT, FLOAT):
            left, lt = left + ["i64.extend_i32_u"], INT
        if rt == BOOL and lt in (INT, FLOAT):
            right, rt = right + ["i64.extend_i32_u"], INT
        if lt == BOOL and rt == BOOL:
            left, right, lt, rt = left + ["i64.extend_i32_u"], right + ["i64.extend_i32_u"], INT, INT
        if lt == INT and rt == INT:
            return left + right + [_INT_CMP[type(op)]]
        if lt in (INT, FLOAT) and rt in (INT, FLOAT):
            return self.coerce(left, lt, FLOAT, node) + self.coerce(right, rt, FLOAT, node) + [_FLOAT_CMP[type(op)]]
        if isinstance(op, (ast.Eq, ast.NotEq)):
            eq = self.equality(left, lt, right, rt, node)
            return eq if isinstance(op, ast.Eq) else eq + ["i32.eqz"]
        base_l = lt.inner if isinstance(lt, OptionalT) else lt
        if isinstance(base_l, Text) and isinstance(rt, Text) and base_l == rt and not isinstance(lt, OptionalT):
            return left + right + ["call $rt_str_cmp", "i32.const 0", _ORDER_CMP[type(op)]]
        raise self.error(node, f"cannot order {lt} and {rt}")

    def equality(self, left: Code, lt: Type, right: Code, rt: Type, node: ast.AST) -> Code:
        if lt == NONE or rt == NONE:
            other, ot = (right, rt) if lt == NONE else (left, lt)
            if ot == NONE:
                return ["i32.const 1"]
            if not ot.is_pointer:
                return other + ["drop", "i32.const 0"]
            return other + ["i32.eqz"]
        bl = lt.inner if isinstance(lt, OptionalT) else lt
        br = rt.inner if isinstance(rt, OptionalT) else rt
        if isinstance(bl, Text) and bl == br:
            return left + right + ["call $rt_str_eq"]
        if bl == br and bl in (INT, BOOL, FLOAT) and (isinstance(lt, OptionalT) or isinstance(rt, OptionalT)):
            boxed_l = self.coerce(left, lt, OptionalT(bl), node)
            boxed_r = self.coerce(right, rt, OptionalT(bl), node)
            return boxed_l + boxed_r + ["call $rt_box_eq"]
        if isinstance(bl, ListT) and bl == br and slot_kind(bl.elem) != 2:
            return left + right + [f"i32.const {slot_kind(bl.elem)}", "call $rt_list_eq"]
        if isinstance(bl, TupleT) and bl == br and not isinstance(lt, OptionalT) and not isinstance(rt, OptionalT):
            return self.tuple_equality(left, right, bl, node)
        if isinstance(bl, ClassT) and isinstance(br, ClassT):
            return left + right + ["i32.eq"]
        raise self.error(node, f"cannot compare {lt} with {rt}")

    def tuple_equality(self, left: Code, right: Code, t: TupleT, node: ast.AST) -> Code:
        a, b = self.temp("i32"), self.temp("i32")
        code: Code = ["i32.const 1"]
        for i, item in enumerate(t.items):
            off = 16 + 8 * i
            la = [f"local.get {a}", f"i64.load offset={off}"] + self.from_slot(item)
            lb = [f"local.get {b}", f"i64.load offset={off}"] + self.from_slot(item)
            if item == BOOL:
                item_eq = la + lb + ["i32.eq"]
            elif item in (INT, FLOAT):
                item_eq = la + lb + [f"{item.wasm}.eq"]
            else:
                item_eq = self.equality(la, item, lb, item, node)
            code = code + ["if (result i32)", *item_eq, "else", "i32.const 0", "end"]
        return left + [f"local.set {a}"] + right + [f"local.set {b}"] + code

    def identity(self, left_node: ast.expr, right_node: ast.expr, negate: bool, node: ast.AST) -> Code:
        left, lt = self.expr(left_node)
        right, rt = self.expr(right_node)
        if lt == NONE or rt == NONE:
            code = self.equality(left, lt, right, rt, node)
        elif lt.is_pointer and rt.is_pointer:
            code = left + right + ["i32.eq"]
        else:
            raise self.error(node, unsupported("`is` on values", "== (or `is None`)"))
        return code + ["i32.eqz"] if negate else code

    def membership(self, item_node: ast.expr, container_node: ast.expr, node: ast.AST) -> Code:
        if isinstance(container_node, (ast.Tuple, ast.List, ast.Set)):
            tests = [self.compare(item_node, ast.Eq(), element, node) for element in container_node.elts]
            if not tests:
                return ["i32.const 0"]
            if isinstance(item_node, (ast.Name, ast.Constant)):
                code = tests[-1]
                for test in reversed(tests[:-1]):
                    code = test + ["if (result i32)", "i32.const 1", "else", *code, "end"]
                return code
            value, vt = self.expr(item_node)
            tmp = self.temp(vt.wasm)
            holder = self.hold(tmp, vt, item_node)
            try:
                return value + [f"local.set {tmp}"] + self.membership(holder, container_node, node)
            finally:
                del self.vars[holder.id]
        container, ct = self.expr(container_node)
        if isinstance(ct, OptionalT):
            container, ct = self.coerce(container, ct, ct.inner, node), ct.inner
        if isinstance(ct, Text):
            item = self.expr_as(item_node, ct)
            return container + item + ["call $rt_str_contains"]
        if isinstance(ct, ListT):
            item = self.expr_as(item_node, ct.elem)
            return container + item + self.to_slot(ct.elem) + [
                f"i32.const {slot_kind(ct.elem)}",
                "call $rt_list_index",
                "i64.const 0",
                "i64.ge_s",
            ]
        if isinstance(ct, DictT):
            item = self.expr_as(item_node, ct.key)
            return container + item + self.to_slot(ct.key) + ["call $rt_dict_contains"]
        raise self.error(node, f"`in` is not supported on {ct}")

    # --- subscripts -----------------------------------------------------------------

    def expr_Subscript(self, node: ast.Subscript, expected: Type | None) -> tuple[Code, Type]:
        base, bt = self.expr(node.value)
        if isinstance(bt, OptionalT):
            base, bt = self.coerce(base, bt, bt.inner, node), bt.inner
        if isinstance(node.slice, ast.Slice):
            return self.slice(node, base, bt, node.slice)
        if isinstance(bt, ListT):
            index = self.expr_as(node.slice, INT)
            return base + index + ["call $rt_list_get"] + self.check_exc() + self.from_slot(bt.elem), bt.elem
        if isinstance(bt, DictT):
            key = self.expr_as(node.slice, bt.key)
            return base + key + self.to_slot(bt.key) + ["call $rt_dict_get"] + self.check_exc() + self.from_slot(bt.value), bt.value
        if bt == STR:
            return base + self.expr_as(node.slice, INT) + ["call $rt_str_getitem"] + self.check_exc(), STR
        if bt == BYTES:
            return base + self.expr_as(node.slice, INT) + ["call $rt_bytes_getitem"] + self.check_exc(), INT
        if isinstance(bt, TupleT):
            position = _constant_int(node.slice)
            if position is None:
                raise self.error(node.slice, "tuple indexes must be integer literals")
            if position < 0:
                position += len(bt.items)
            if not 0 <= position < len(bt.items):
                raise self.error(node.slice, "tuple index out of range")
            item = bt.items[position]
            return base + [f"i64.load offset={16 + 8 * position}"] + self.from_slot(item), item
        raise self.error(node, f"{bt} cannot be indexed")

    def slice(self, node: ast.AST, base: Code, bt: Type, sl: ast.Slice) -> tuple[Code, Type]:
        if sl.step is not None:
            raise self.error(sl.step, unsupported("a slice step", "a loop"))
        flags = 0
        start: Code = ["i64.const 0"]
        stop: Code = ["i64.const 0"]
        if sl.lower is not None:
            flags |= 1
            start = self.expr_as(sl.lower, INT)
        if sl.upper is not None:
            flags |= 2
            stop = self.expr_as(sl.upper, INT)
        if isinstance(bt, Text):
            return base + start + stop + [f"i32.const {flags}", "call $rt_str_slice"], bt
        if isinstance(bt, ListT):
            return base + start + stop + [f"i32.const {flags}", "call $rt_list_slice"], bt
        raise self.error(node, f"{bt} cannot be sliced")

    # --- displays -------------------------------------------------------------------

    def expr_List(self, node: ast.List, expected: Type | None) -> tuple[Code, Type]:
        elem: Type | None = expected.elem if isinstance(expected, ListT) else None
        items = [self.expr(e, elem) for e in node.elts]
        if elem is None:
            for (_, t), e in zip(items, node.elts, strict=True):
                elem = t if elem is None else unify(elem, t)
                if elem is None:
                    raise self.error(e, "list items must have one type")
        if elem is None:
            raise self.error(node, "annotate the empty list, e.g. items: list[str] = []")
        lt = ListT(elem)
        tmp = self.temp("i32")
        code = [f"i32.const {len(items)}", f"i32.const {int(elem.is_pointer)}", "call $rt_list_new", f"local.set {tmp}"]
        for (c, t), e in zip(items, node.elts, strict=True):
            code += [f"local.get {tmp}", *self.coerce(c, t, elem, e), *self.to_slot(elem), "call $rt_list_append"]
        return code + [f"local.get {tmp}"], lt

    def expr_Dict(self, node: ast.Dict, expected: Type | None) -> tuple[Code, Type]:
        kt: Type | None = expected.key if isinstance(expected, DictT) else None
        vt: Type | None = expected.value if isinstance(expected, DictT) else None
        keys = []
        for k in node.keys:
            if k is None:
                raise self.error(node, unsupported("**unpacking in a dict", "dict.update()"))
            keys.append(self.expr(k, kt))
        values = [self.expr(v, vt) for v in node.values]
        for (_, t), k in zip(keys, node.keys, strict=True):
            kt = t if kt is None else unify(kt, t)
            if kt is None:
                raise self.error(k, "dict keys must have one type")
        for (_, t), v in zip(values, node.values, strict=True):
            vt = t if vt is None else unify(vt, t)
            if vt is None:
                raise self.error(v, "dict values must have one type")
        if kt is None or vt is None:
            raise self.error(node, "annotate the empty dict, e.g. counts: dict[str, int] = {}")
        if kt not in (STR, BYTES, INT, BOOL):
            raise self.error(node, unsupported(f"dict keys of type {kt}", "str, bytes or int keys"))
        dt = DictT(kt, vt)
        tmp = self.temp("i32")
        flags = (1 if isinstance(kt, Text) else 0) | (2 if vt.is_pointer else 0)
        code = [f"i32.const {flags}", "call $rt_dict_new", f"local.set {tmp}"]
        for (kc, ktype), (vc, vtype), k, v in zip(keys, values, node.keys, node.values, strict=True):
            assert k is not None
            code += [
                f"local.get {tmp}",
                *self.coerce(kc, ktype, kt, k),
                *self.to_slot(kt),
                *self.coerce(vc, vtype, vt, v),
                *self.to_slot(vt),
                "call $rt_dict_set",
            ]
        return code + [f"local.get {tmp}"], dt

    def expr_Tuple(self, node: ast.Tuple, expected: Type | None) -> tuple[Code, Type]:
        hints = expected.items if isinstance(expected, TupleT) and len(expected.items) == len(node.elts) else None
        items = [self.expr(e, hints[i] if hints else None) for i, e in enumerate(node.elts)]
        types: list[Type] = []
        for i, ((_, t), e) in enumerate(zip(items, node.elts, strict=True)):
            target = hints[i] if hints and assignable(t, hints[i]) else t
            if target == NONE:
                raise self.error(e, "a tuple item that is None needs an annotated type, e.g. tuple[str | None, int]")
            types.append(target)
        if len(types) > 32:
            raise self.error(node, "tuples have at most 32 items")
        tt = TupleT(tuple(types))
        mask = sum(1 << i for i, t in enumerate(types) if t.is_pointer)
        tmp = self.temp("i32")
        code = [f"i32.const {len(types)}", f"i32.const {mask}", "call $rt_tuple_new", f"local.set {tmp}"]
        for i, ((c, t), e) in enumerate(zip(items, node.elts, strict=True)):
            code += [f"local.get {tmp}", *self.coerce(c, t, types[i], e), *self.to_slot(types[i]), f"i64.store offset={16 + 8 * i}"]
        return code + [f"local.get {tmp}"], tt

    def expr_Call(self, node: ast.Call, expected: Type | None) -> tuple[Code, Type]:
        return self.call(node, expected)

    def expr_ListComp(self, node: ast.ListComp, expected: Type | None) -> tuple[Code, Type]:
        return self.comprehension(node, expected)

    def expr_DictComp(self, node: ast.DictComp, expected: Type | None) -> tuple[Code, Type]:
        return self.comprehension(node, expected)

    # --- f-strings ------------------------------------------------------------------

    def expr_JoinedStr(self, node: ast.JoinedStr, expected: Type | None) -> tuple[Code, Type]:
        parts: list[Code] = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append([f"i32.const {self.c.string(str(value.value))}"])
            elif isinstance(value, ast.FormattedValue):
                parts.append(self.formatted(value))
            else:
                raise self.error(value, "unexpected f-string part")
        if not parts:
            return [f"i32.const {self.c.string('')}"], STR
        if len(parts) == 1:
            return parts[0], STR
        sb = self.temp("i32")
        code = ["i32.const 32", "i32.const 1", "call $rt_sb_new", f"local.set {sb}"]
        for part in parts:
            code += [f"local.get {sb}", *part, "call $rt_sb_add", f"local.set {sb}"]
        return code + [f"local.get {sb}"], STR

    def formatted(self, node: ast.FormattedValue) -> Code:
        code, t = self.expr(node.value)
        if node.format_spec is not None:
            spec = node.format_spec
            assert isinstance(spec, ast.JoinedStr)
            if not (len(spec.values) == 1 and isinstance(spec.values[0], ast.Constant)):
                raise self.error(spec, unsupported("a computed format spec", "a literal spec such as {x:>8}"))
            return self.format_spec(code, t, str(spec.values[0].value), node)
        return self.to_str(code, t, node, node.conversion)

    def format_spec(self, code: Code, t: Type, spec: str, node: ast.AST) -> Code:
        raise NotImplementedError


def _constant_int(node: ast.expr) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _constant_int(node.operand)
        return -inner if inner is not None else None
    return None


__all__ = ["ExpressionCompiler", "unify"]
_ = (CallableT,)
