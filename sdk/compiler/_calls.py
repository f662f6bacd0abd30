"""Calls: functions, constructors, methods (direct or through the vtable), closures, host
calls, builtin functions and the methods of str, bytes, list and dict."""

from __future__ import annotations

import ast

from sdk.compiler._codegen_base import Code
from sdk.compiler._errors import unsupported
from sdk.compiler._expressions import ExpressionCompiler
from sdk.compiler._program import (
    MESSAGE_FIELD,
    ClassInfo,
    FunctionInfo,
    GlobalInfo,
    IntrinsicFunction,
    ModuleInfo,
    Param,
)
from sdk.compiler._repr import printable
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
    slot_kind,
)

_STR_TESTS = {"isdigit": 0, "isalpha": 1, "isalnum": 2, "isspace": 3, "islower": 4, "isupper": 5}
_NOT_BUILTINS = {
    "print": "proxywasm.log_info(...)",
    "eval": "ordinary code",
    "exec": "ordinary code",
    "open": "plugin configuration (proxywasm.get_plugin_configuration())",
    "input": "plugin configuration",
    "getattr": "attribute access",
    "setattr": "attribute assignment",
    "hasattr": "a field with a default value",
    "type": "isinstance()",
    "id": "`is`",
    "hash": "a dict",
    "iter": "a for loop",
    "next": "a for loop",
    "map": "a list comprehension",
    "filter": "a list comprehension",
    "set": "a dict[str, bool]",
    "frozenset": "a dict[str, bool]",
    "round": "int arithmetic",
    "divmod": "// and %",
}


class CallCompiler(ExpressionCompiler):
    """Everything that looks like ``f(...)`` or ``x.m(...)``."""

    def call(self, node: ast.Call, expected: Type | None) -> tuple[Code, Type]:
        func = node.func
        if (
            isinstance(func, ast.Name)
            and func.id not in self.vars
            and (func.id not in self.assigned or func.id in self.declared_global)
        ):
            symbol = self.program.lookup(self.mod, func.id)
            if symbol is None:
                return self.builtin_call(func.id, node, expected)
            return self.call_symbol(symbol, func.id, node, expected)
        if isinstance(func, ast.Attribute):
            target = self.resolve_static(func)
            if target is not None and not isinstance(target, GlobalInfo):
                return self.call_symbol(target, func.attr, node, expected)
            if isinstance(func.value, ast.Call) and isinstance(func.value.func, ast.Name) and func.value.func.id == "super":
                return self.super_call(func.attr, node)
            static = self.resolve_static(func.value)
            if isinstance(static, ClassInfo) and not static.is_enum:
                method = static.find_method(func.attr)
                if method is None:
                    raise self.error(func, f"{static.name} has no method {func.attr}")
                sig = self.c.signature(method)
                args = self.bind_args(method.module, sig.params, node, method.name)
                return args + [f"call {self.c.request(method)}"] + self.check_exc(), sig.result
            if func.attr == "format" and isinstance(func.value, ast.Constant) and isinstance(func.value.value, str):
                return self.format_call(func.value.value, node)
            recv, rt = self.expr(func.value)
            return self.method_call(recv, rt, func.attr, node, expected)
        code, t = self.expr(func)
        return self.closure_call(code, t, node)

    def call_symbol(self, symbol: object, name: str, node: ast.Call, expected: Type | None) -> tuple[Code, Type]:
        if isinstance(symbol, FunctionInfo):
            sig = self.c.signature(symbol)
            args = self.bind_args(symbol.module, sig.params, node, symbol.name)
            return args + [f"call {self.c.request(symbol)}"] + self.check_exc(), sig.result
        if isinstance(symbol, ClassInfo):
            if symbol.is_enum:
                raise self.error(node, f"{symbol.name} members are used as {symbol.name}.NAME")
            return self.construct(symbol, node)
        if isinstance(symbol, IntrinsicFunction):
            wasm, params, result = self.c.hostcall(symbol.name, node, self.mod)
            args = self.bind_args(None, params, node, symbol.name)
            return args + [f"call {wasm}"] + self.check_exc(), result
        if isinstance(symbol, GlobalInfo):
            code, t = self.symbol_value(symbol, name, node)
            return self.closure_call(code, t, node)
        if isinstance(symbol, ModuleInfo):
            raise self.error(node, f"module {symbol.name} is not callable")
        raise self.error(node, f"{name} is not callable")

    # --- arguments ------------------------------------------------------------------

    def bind_args(self, callee: ModuleInfo | None, params: list[Param], node: ast.Call, name: str) -> Code:
        """Code pushing the arguments of ``node`` in parameter order (defaults filled in)."""
        slots: list[ast.expr | None] = [None] * len(params)
        if len(node.args) > len(params):
            raise self.error(node, f"{name}() takes {len(params)} arguments but {len(node.args)} were given")
        for i, arg in enumerate(node.args):
            if isinstance(arg, ast.Starred):
                raise self.error(arg, unsupported("*args", "passing the arguments one by one"))
            slots[i] = arg
        names = [p.name for p in params]
        for kw in node.keywords:
            if kw.arg is None:
                raise self.error(kw, unsupported("**kwargs", "keyword arguments one by one"))
            if kw.arg not in names:
                raise self.error(kw, f"{name}() has no parameter {kw.arg}")
            index = names.index(kw.arg)
            if slots[index] is not None:
                raise self.error(kw, f"{name}() got {kw.arg} twice")
            slots[index] = kw.value
        code: Code = []
        for param, given in zip(params, slots, strict=True):
            if given is not None:
                code += self.argument(given, param.type)
            elif param.default is not None and callee is not None:
                code += self.c.constant_expr(callee, param.default, param.type)
            else:
                raise self.error(node, f"{name}() is missing argument {param.name}")
        return code

    def argument(self, arg: ast.expr, target: Type) -> Code:
        # s.encode() passed where bytes are only read: the str's bytes are already UTF-8
        if (
            target == BYTES
            and isinstance(arg, ast.Call)
            and isinstance(arg.func, ast.Attribute)
            and arg.func.attr == "encode"
            and not arg.args
            and not arg.keywords
        ):
            code, t = self.expr(arg.func.value)
            if t == STR:
                return code
        return self.expr_as(arg, target)

    # --- classes and methods --------------------------------------------------------

    def construct(self, cls: ClassInfo, node: ast.Call) -> tuple[Code, Type]:
        self.c.ensure_layout(cls)
        obj = self.temp("i32", "obj")
        code = [
            f"i32.const {cls.class_id}",
            f"i32.const {{{{nfields:{cls.class_id}}}}}",
            "call $rt_new_object",
            f"local.set {obj}",
        ]
        for field in cls.fields.values():
            if field.default is not None and field.owner is not None and field.owner.module is not None:
                code += [f"local.get {obj}"]
                code += self.c.constant_expr(field.owner.module, field.default, field.type)
                code += self.to_slot(field.type) + [f"i64.store offset={8 + 8 * field.index}"]
        code += self.init_call(cls, [f"local.get {obj}"], node)
        return code + [f"local.get {obj}"], cls.type

    def init_call(self, cls: ClassInfo, receiver: Code, node: ast.Call) -> Code:
        """Call the ``__init__`` that applies to ``cls`` on ``receiver``."""
        owner: ClassInfo | None = cls
        while owner is not None and "__init__" not in owner.methods and not (owner.builtin and owner.base is None):
            owner = owner.base
        if owner is None:
            if node.args or node.keywords:
                raise self.error(node, f"{cls.name}() takes no arguments")
            return []
        if owner.builtin:
            params = [Param("message", STR, ast.Constant(""))]
            msg = self.bind_args(self.mod, params, node, cls.name)
            if cls.name == "KeyError" or (owner is not cls and _is_key_error(cls)):
                msg = msg + ["call $rt_repr"]
            return receiver + msg + ["i64.extend_i32_u", "i64.store offset=8"]
        method = owner.methods["__init__"]
        sig = self.c.signature(method)
        args = self.bind_args(method.module, sig.params[1:], node, f"{cls.name}")
        return receiver + args + [f"call {self.c.request(method)}"] + self.check_exc()

    def super_call(self, name: str, node: ast.Call) -> tuple[Code, Type]:
        if self.owner is None or "self" not in self.vars:
            raise self.error(node, "super() is only available in methods")
        base = self.owner.base
        if base is None:
            if name == "__init__":
                return [], NONE
            raise self.error(node, f"{self.owner.name} has no base class")
        receiver = [f"local.get {self.vars['self'].local}"]
        if name == "__init__":
            return self.init_call(base, receiver, node), NONE
        method = base.find_method(name)
        if method is None:
            raise self.error(node, f"{base.name} has no method {name}")
        sig = self.c.signature(method)
        args = self.bind_args(method.module, sig.params[1:], node, name)
        return receiver + args + [f"call {self.c.request(method)}"] + self.check_exc(), sig.result

    def method_call(self, recv: Code, rt: Type, name: str, node: ast.Call, expected: Type | None) -> tuple[Code, Type]:
        if isinstance(rt, OptionalT):
            recv, rt = self.coerce(recv, rt, rt.inner, node), rt.inner
        if isinstance(rt, ClassT):
            cls = rt.cls
            self.c.ensure_layout(cls)
            if name in cls.fields:
                return self.closure_call(*self.field_load(recv, cls, name, node), node)
            method = cls.find_method(name)
            if method is None:
                raise self.error(node.func, f"{cls.name} has no method {name}")
            sig = self.c.signature(method)
            args = self.bind_args(method.module, sig.params[1:], node, name)
            impls = self.c.implementations(cls, name, node)
            if len(impls) == 1:
                return recv + args + [f"call {self.c.request(impls[0])}"] + self.check_exc(), sig.result
            tmp = self.temp("i32", "recv")
            slot = self.c.method_slot(cls, name)
            type_name = self.c.func_type([p.type.wasm for p in sig.params], sig.result)
            return [
                *recv,
                f"local.tee {tmp}",
                *args,
                f"local.get {tmp}",
                "call $rt_vtable",
                f"i32.const {{{{slot:{slot}}}}}",
                "i32.add",
                f"call_indirect (type {type_name})",
                *self.check_exc(),
            ], sig.result
        if isinstance(rt, Text):
            return self.text_method(recv, rt, name, node)
        if isinstance(rt, ListT):
            return self.list_method(recv, rt, name, node)
        if isinstance(rt, DictT):
            return self.dict_method(recv, rt, name, node, expected)
        raise self.error(node.func, f"{rt} has no method {name}")

    def closure_call(self, code: Code, t: Type, node: ast.Call) -> tuple[Code, Type]:
        if isinstance(t, OptionalT) and isinstance(t.inner, CallableT):
            code, t = self.coerce(code, t, t.inner, node), t.inner
        if not isinstance(t, CallableT):
            raise self.error(node, f"a {t} is not callable")
        params = [Param(f"arg{i}", p, None) for i, p in enumerate(t.params)]
        if node.keywords:
            raise self.error(node, "callbacks take positional arguments only")
        args = self.bind_args(None, params, node, "callback")
        tmp = self.temp("i32", "fn")
        type_name = self.c.func_type(["i32"] + [p.wasm for p in t.params], t.result)
        return [
            *code,
            f"local.tee {tmp}",
            "i32.load offset=12",
            *args,
            f"local.get {tmp}",
            "i32.load offset=8",
            f"call_indirect (type {type_name})",
            *self.check_exc(),
        ], t.result

    def closure_for(self, func: FunctionInfo, receiver: Code | None, node: ast.AST) -> tuple[Code, Type]:
        sig = self.c.signature(func)
        params = sig.params[1:] if func.owner is not None else sig.params
        callable_type = CallableT(tuple(p.type for p in params), sig.result)
        if func.owner is not None:
            if receiver is None:
                raise self.error(node, f"{func.name} must be bound to an instance (self.{func.name})")
            index = self.c.method_thunk(func.owner, func.name, node)
            return [f"i32.const {{{{table:{index}}}}}", *receiver, "call $rt_closure_new"], callable_type
        index = self.c.function_thunk(func)
        return [f"i32.const {{{{table:{index}}}}}", "i32.const 0", "call $rt_closure_new"], callable_type

    # --- builtin functions ----------------------------------------------------------

    def builtin_call(self, name: str, node: ast.Call, expected: Type | None) -> tuple[Code, Type]:
        args = node.args
        if name in _NOT_BUILTINS:
            raise self.error(node, unsupported(f"{name}()", _NOT_BUILTINS[name]))
        if node.keywords and name not in ("sorted",):
            raise self.error(node, f"{name}() takes no keyword arguments here")
        if name == "len" and len(args) == 1:
            code, t = self.expr(args[0])
            if isinstance(t, OptionalT):
                code, t = self.coerce(code, t, t.inner, node), t.inner
            if t == STR:
                return code + ["call $rt_str_len"], INT
            if isinstance(t, (Text, ListT, DictT, TupleT)):
                return code + ["i32.load offset=8", "i64.extend_i32_u"], INT
            raise self.error(node, f"len() of {t}")
        if name == "str":
            if not args:
                return [f"i32.const {self.c.string('')}"], STR
            code, t = self.expr(args[0])
            return self.to_str(code, t, node), STR
        if name == "repr" and len(args) == 1:
            code, t = self.expr(args[0])
            return self.to_str(code, t, node, conversion=114), STR
        if name == "bool":
            if not args:
                return ["i32.const 0"], BOOL
            return self.cond(args[0]), BOOL
        if name == "int" and len(args) == 1:
            code, t = self.expr(args[0])
            if t == INT:
                return code, INT
            if t == BOOL:
                return code + ["i64.extend_i32_u"], INT
            if t == FLOAT:
                return code + ["call $rt_f64_to_int"] + self.check_exc(), INT
            if isinstance(t, Text):
                return code + ["call $rt_str_to_int"] + self.check_exc(), INT
            raise self.error(node, f"int() of {t}")
        if name == "float" and len(args) == 1:
            code, t = self.expr(args[0])
            if t in (INT, BOOL, FLOAT):
                return self.coerce(code, t, FLOAT, node), FLOAT
            raise self.error(node, unsupported(f"float() of {t}", "int() and integer arithmetic"))
        if name == "abs" and len(args) == 1:
            code, t = self.expr(args[0])
            if t == BOOL:
                code, t = code + ["i64.extend_i32_u"], INT
            if t == INT:
                tmp = self.temp("i64")
                return code + [f"local.set {tmp}", "i64.const 0", f"local.get {tmp}", "i64.sub",
                               f"local.get {tmp}", f"local.get {tmp}", "i64.const 0", "i64.lt_s", "select"], INT
            if t == FLOAT:
                return code + ["f64.abs"], FLOAT
            raise self.error(node, f"abs() of {t}")
        if name in ("min", "max") and args:
            return self.min_max(name == "max", node)
        if name in ("sum", "any", "all") and len(args) == 1:
            return self.fold_list(name, node)
        if name == "ord" and len(args) == 1:
            return self.expr_as(args[0], STR) + ["call $rt_str_ord"] + self.check_exc(), INT
        if name == "chr" and len(args) == 1:
            return self.expr_as(args[0], INT) + ["call $rt_str_chr"] + self.check_exc(), STR
        if name == "isinstance" and len(args) == 2:
            return self.isinstance_call(node), BOOL
        if name == "sorted" and len(args) == 1:
            code, t = self.expr(args[0])
            if not isinstance(t, ListT):
                raise self.error(node, "sorted() takes a list here")
            copy = code + ["i64.const 0", "i64.const 0", "i32.const 0", "call $rt_list_slice"]
            return self.sort_code(copy, t, node, return_list=True), t
        if name == "list" and len(args) == 1:
            code, t = self.expr(args[0], expected)
            if isinstance(t, ListT):
                return code + ["i64.const 0", "i64.const 0", "i32.const 0", "call $rt_list_slice"], t
            if isinstance(t, DictT):
                return code + ["i32.const 0", f"i32.const {int(t.key.is_pointer)}", "i32.const 0", "call $rt_dict_list"], ListT(t.key)
            raise self.error(node, f"list() of {t}")
        if name == "bytes":
            if not args:
                return [f"i32.const {self.c.string(b'')}"], BYTES
            code, t = self.expr(args[0], ListT(INT))
            if t == INT:
                return code + ["call $rt_bytes_zeros"] + self.check_exc(), BYTES
            if t == ListT(INT):
                return code + ["call $rt_bytes_from_list"] + self.check_exc(), BYTES
            raise self.error(node, unsupported(f"bytes() of {t}", "bytes(list_of_ints) or s.encode()"))
        if name == "dict" and len(args) == 1:
            code, t = self.expr(args[0], expected)
            if isinstance(t, DictT):
                return code + ["call $rt_dict_copy"], t
            raise self.error(node, f"dict() of {t}")
        if name in ("range", "enumerate", "zip", "reversed"):
            raise self.error(node, f"{name}() is only supported as the iterable of a for loop")
        if name == "super":
            raise self.error(node, "super() is only supported as super().method(...)")
        raise self.error(node, f"{name} is not defined")

    def fold_list(self, name: str, node: ast.Call) -> tuple[Code, Type]:
        """sum() of a list of numbers; any()/all() of a list (truth of each item)."""
        code, t = self.expr(node.args[0])
        if not isinstance(t, ListT):
            raise self.error(node, unsupported(f"{name}() of a {t}", f"{name}() of a list, e.g. {name}([... for x in xs])"))
        lst, i = self.temp("i32"), self.temp("i32")
        item = [f"local.get {lst}", f"local.get {i}", "call $rt_list_slot", "i64.load", *self.from_slot(t.elem)]
        if name == "sum":
            if t.elem not in (INT, BOOL, FLOAT):
                raise self.error(node, f"sum() needs numbers, not {t.elem}")
            result: Type = FLOAT if t.elem == FLOAT else INT
            acc = self.temp(result.wasm)
            step = [f"local.get {acc}", *self.coerce(item, t.elem, result, node), f"{result.wasm}.add", f"local.set {acc}"]
            init = [f"{result.wasm}.const 0", f"local.set {acc}"]
            done: Code = []
        else:
            result = BOOL
            acc = self.temp("i32")
            want = 1 if name == "any" else 0
            init = [f"i32.const {1 - want}", f"local.set {acc}"]
            truth = self.truth(item, t.elem, node)
            test = truth if want else truth + ["i32.eqz"]
            step = [*test, "if", f"i32.const {want}", f"local.set {acc}", "br $fold_done", "end"]
            done = []
        return [
            *code, f"local.set {lst}", *init, "i32.const 0", f"local.set {i}",
            "block $fold_done", "loop $fold_next",
            f"local.get {i}", f"local.get {lst}", "i32.load offset=8", "i32.ge_u", "br_if $fold_done",
            *step,
            f"local.get {i}", "i32.const 1", "i32.add", f"local.set {i}", "br $fold_next", "end", "end", *done,
            f"local.get {acc}",
        ], result

    def isinstance_call(self, node: ast.Call) -> Code:
        code, t = self.expr(node.args[0])
        targets = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
        base = t.inner if isinstance(t, OptionalT) else t
        if not isinstance(base, ClassT):
            raise self.error(node, unsupported(f"isinstance() on a {t}", "the static type"))
        tmp = self.temp("i32")
        tests: list[Code] = []
        for target in targets:
            cls = self.resolve_static(target)
            if not isinstance(cls, ClassInfo) or cls.is_enum:
                raise self.error(target, "isinstance() needs a class defined in the plugin, the sdk or an exception")
            tests.append([f"local.get {tmp}", f"i32.const {cls.class_id}", f"i32.const {{{{idend:{cls.class_id}}}}}", "call $rt_isinstance"])
        result = tests[-1]
        for test in reversed(tests[:-1]):
            result = test + ["if (result i32)", "i32.const 1", "else", *result, "end"]
        return code + [f"local.set {tmp}"] + result

    def min_max(self, want_max: bool, node: ast.Call) -> tuple[Code, Type]:
        if len(node.args) == 1:
            code, t = self.expr(node.args[0])
            if not isinstance(t, ListT) or t.elem not in (INT, STR, BYTES, FLOAT):
                raise self.error(node, "min()/max() of one argument needs a list of int, float or str")
            kind = 3 if t.elem == FLOAT else slot_kind(t.elem)
            return code + [f"i32.const {kind}", f"i32.const {int(want_max)}", "call $rt_list_extreme"] + self.check_exc() + self.from_slot(t.elem), t.elem
        compiled = [self.expr(a) for a in node.args]
        result: Type | None = None
        for _, t in compiled:
            t = INT if t == BOOL else t
            result = t if result is None else (FLOAT if {result, t} == {INT, FLOAT} else result if result == t else None)
            if result is None:
                raise self.error(node, "min()/max() arguments must have one type")
        assert result is not None
        if result not in (INT, FLOAT, STR, BYTES):
            raise self.error(node, f"min()/max() of {result}")
        best = self.temp(result.wasm)
        code = self.coerce(compiled[0][0], compiled[0][1], result, node) + [f"local.set {best}"]
        for (c, t), arg in zip(compiled[1:], node.args[1:], strict=True):
            value = self.temp(result.wasm)
            code += self.coerce(c, t, result, arg) + [f"local.set {value}"]
            if result == INT:
                better = [f"local.get {value}", f"local.get {best}", "i64.gt_s" if want_max else "i64.lt_s"]
            elif result == FLOAT:
                better = [f"local.get {value}", f"local.get {best}", "f64.gt" if want_max else "f64.lt"]
            else:
                better = [f"local.get {value}", f"local.get {best}", "call $rt_str_cmp", "i32.const 0", "i32.gt_s" if want_max else "i32.lt_s"]
            code += [*better, "if", f"local.get {value}", f"local.set {best}", "end"]
        return code + [f"local.get {best}"], result

    # --- methods of builtin types ---------------------------------------------------

    def nargs(self, node: ast.Call, low: int, high: int, name: str) -> None:
        if node.keywords and name not in ("split", "sort", "decode", "encode", "pop", "get"):
            raise self.error(node, f"{name}() takes no keyword arguments here")
        if not low <= len(node.args) <= high:
            raise self.error(node, f"{name}() takes {low}..{high} arguments here")

    def format_call(self, template: str, node: ast.Call) -> tuple[Code, Type]:
        """``"...{}...".format(...)`` with a literal template: compiled like an f-string."""
        import string

        code: Code = []
        holders: list[ast.expr] = []
        keywords: dict[str, ast.expr] = {}

        def keep(arg: ast.expr) -> ast.expr:
            nonlocal code
            value, vt = self.expr(arg)
            if vt == NONE:
                return ast.Constant(None)
            tmp = self.temp(vt.wasm)
            code += value + [f"local.set {tmp}"]
            return self.hold(tmp, vt, arg)

        try:
            for arg in node.args:
                holders.append(keep(arg))
            for kw in node.keywords:
                if kw.arg is None:
                    raise self.error(kw, unsupported("**kwargs", "keyword arguments one by one"))
                keywords[kw.arg] = keep(kw.value)
            parts: list[ast.expr] = []
            auto = 0
            try:
                parsed = list(string.Formatter().parse(template))
            except ValueError as err:
                raise self.error(node, f"bad format template: {err}") from None
            fields = [f for _, f, _, _ in parsed if f is not None]
            if "" in fields and any(f.isdigit() for f in fields):
                raise self.error(node, "a format template cannot mix {} and {0} fields")
            for literal, field, spec, conversion in parsed:
                if literal:
                    parts.append(ast.Constant(literal))
                if field is None:
                    continue
                if field == "":
                    index, auto = auto, auto + 1
                    target = holders[index] if index < len(holders) else None
                elif field.isdigit():
                    target = holders[int(field)] if int(field) < len(holders) else None
                else:
                    target = keywords.get(field)
                if target is None:
                    raise self.error(node, f"format field {{{field}}} has no argument")
                if spec and "{" in spec:
                    raise self.error(node, unsupported("nested format fields", "a literal spec"))
                value_node = ast.FormattedValue(
                    value=target,
                    conversion=ord(conversion) if conversion else -1,
                    format_spec=ast.JoinedStr([ast.Constant(spec)]) if spec else None,
                )
                ast.copy_location(value_node, node)
                parts.append(value_node)
            joined = ast.JoinedStr(parts)
            ast.copy_location(joined, node)
            text, _ = self.expr_JoinedStr(joined, STR)
        finally:
            for holder in holders + list(keywords.values()):
                if isinstance(holder, ast.Name):
                    self.vars.pop(holder.id, None)
        return code + text, STR

    def text_method(self, recv: Code, t: Type, name: str, node: ast.Call) -> tuple[Code, Type]:
        args = node.args
        if name == "splitlines":
            self.nargs(node, 0, 0, name)
            return recv + ["call $rt_str_splitlines"], ListT(t)
        simple: dict[str, tuple[int, str, Type]] = {
            "endswith": (1, "$rt_str_endswith", BOOL),
            "startswith": (1, "$rt_str_startswith", BOOL),
            "count": (1, "$rt_str_count", INT),
            "rfind": (1, "$rt_str_rfind", INT),
        }
        if name in ("startswith", "endswith") and len(args) == 1 and isinstance(args[0], ast.Tuple):
            tmp = self.temp("i32")
            tests = [[f"local.get {tmp}", *self.expr_as(e, t), f"call {simple[name][1]}"] for e in args[0].elts]
            code = tests[-1] if tests else ["i32.const 0"]
            for test in reversed(tests[:-1]):
                code = test + ["if (result i32)", "i32.const 1", "else", *code, "end"]
            return recv + [f"local.set {tmp}"] + code, BOOL
        if name in simple:
            count, fn, result = simple[name]
            self.nargs(node, count, count, name)
            return recv + self.expr_as(args[0], t) + [f"call {fn}"], result
        if name in ("find", "index"):
            self.nargs(node, 1, 2, name)
            start = self.expr_as(args[1], INT) if len(args) == 2 else ["i64.const 0"]
            code = recv + self.expr_as(args[0], t) + start + ["call $rt_str_find"]
            if name == "index":
                code += ["call $rt_str_index_check"] + self.check_exc()
            return code, INT
        if name == "replace":
            self.nargs(node, 2, 2, name)
            return recv + self.expr_as(args[0], t) + self.expr_as(args[1], t) + ["call $rt_str_replace"], t
        if name in ("strip", "lstrip", "rstrip"):
            self.nargs(node, 0, 1, name)
            which = {"strip": 3, "lstrip": 1, "rstrip": 2}[name]
            chars = self.expr_as(args[0], OptionalT(t)) if args else ["i32.const 0"]
            return recv + chars + [f"i32.const {which}", "call $rt_str_strip"], t
        if name in ("lower", "upper"):
            self.nargs(node, 0, 0, name)
            return recv + [f"i32.const {int(name == 'upper')}", "call $rt_str_case"], t
        if name == "split":
            self.nargs(node, 0, 2, name)
            sep_node = args[0] if args else _keyword(node, "sep")
            max_node = args[1] if len(args) > 1 else _keyword(node, "maxsplit")
            sep = self.expr_as(sep_node, OptionalT(t)) if sep_node is not None else ["i32.const 0"]
            maxsplit = self.expr_as(max_node, INT) if max_node is not None else ["i64.const -1"]
            return recv + sep + maxsplit + ["call $rt_str_split"] + self.check_exc(), ListT(t)
        if name == "join":
            self.nargs(node, 1, 1, name)
            return recv + self.expr_as(args[0], ListT(t)) + ["call $rt_str_join"], t
        if name in _STR_TESTS:
            self.nargs(node, 0, 0, name)
            return recv + [f"i32.const {_STR_TESTS[name]}", "call $rt_str_is"], BOOL
        if name in ("removeprefix", "removesuffix"):
            self.nargs(node, 1, 1, name)
            return recv + self.expr_as(args[0], t) + [f"call $rt_str_{name}"], t
        if name in ("partition", "rpartition"):
            self.nargs(node, 1, 1, name)
            return recv + self.expr_as(args[0], t) + [f"i32.const {int(name == 'rpartition')}", "call $rt_str_partition"] + self.check_exc(), TupleT((t, t, t))
        if t == STR and name == "encode":
            self.nargs(node, 0, 1, name)
            self.check_codec(node)
            return recv + ["call $rt_str_encode"], BYTES
        if t == BYTES and name == "decode":
            self.nargs(node, 0, 2, name)
            self.check_codec(node)
            errors = args[1] if len(args) > 1 else _keyword(node, "errors")
            mode = 0
            if errors is not None:
                if not isinstance(errors, ast.Constant) or errors.value not in ("strict", "replace"):
                    raise self.error(errors, unsupported("this error handler", "'strict' or 'replace'"))
                mode = int(errors.value == "replace")
            return recv + [f"i32.const {mode}", "call $rt_utf8_decode"] + self.check_exc(), STR
        raise self.error(node.func, f"{t} has no method {name} in the supported subset")

    def check_codec(self, node: ast.Call) -> None:
        codec = node.args[0] if node.args else _keyword(node, "encoding")
        if codec is not None and not (
            isinstance(codec, ast.Constant) and str(codec.value).lower().replace("_", "-") in ("utf-8", "utf8")
        ):
            raise self.error(codec, unsupported("this encoding", "utf-8"))

    def list_method(self, recv: Code, t: ListT, name: str, node: ast.Call) -> tuple[Code, Type]:
        args = node.args
        elem = t.elem
        kind = slot_kind(elem)
        if name == "append":
            self.nargs(node, 1, 1, name)
            return recv + self.expr_as(args[0], elem) + self.to_slot(elem) + ["call $rt_list_append"], NONE
        if name == "extend":
            self.nargs(node, 1, 1, name)
            return recv + self.expr_as(args[0], t) + ["call $rt_list_extend"], NONE
        if name == "pop":
            self.nargs(node, 0, 1, name)
            index = self.expr_as(args[0], INT) if args else ["i64.const -1"]
            return recv + index + ["call $rt_list_pop"] + self.check_exc() + self.from_slot(elem), elem
        if name == "insert":
            self.nargs(node, 2, 2, name)
            return recv + self.expr_as(args[0], INT) + self.expr_as(args[1], elem) + self.to_slot(elem) + ["call $rt_list_insert"], NONE
        if name in ("index", "count", "remove"):
            self.nargs(node, 1, 1, name)
            fn = {"index": "$rt_list_index_or_raise", "count": "$rt_list_count", "remove": "$rt_list_remove"}[name]
            code = recv + self.expr_as(args[0], elem) + self.to_slot(elem) + [f"i32.const {kind}", f"call {fn}"]
            if name != "count":
                code += self.check_exc()
            return code, NONE if name == "remove" else INT
        if name == "clear":
            self.nargs(node, 0, 0, name)
            return recv + ["i32.const 0", "i32.store offset=8"], NONE
        if name == "reverse":
            self.nargs(node, 0, 0, name)
            return recv + ["call $rt_list_reverse"], NONE
        if name == "copy":
            self.nargs(node, 0, 0, name)
            return recv + ["i64.const 0", "i64.const 0", "i32.const 0", "call $rt_list_slice"], t
        if name == "sort":
            self.nargs(node, 0, 0, name)
            return self.sort_code(recv, t, node, return_list=False), NONE
        raise self.error(node.func, f"list has no method {name} in the supported subset")

    def sort_code(self, code: Code, t: ListT, node: ast.Call, return_list: bool) -> Code:
        reverse: Code = ["i32.const 0"]
        for kw in node.keywords:
            if kw.arg != "reverse":
                raise self.error(kw, unsupported(f"sort argument {kw.arg}", "sorting a list of int or str"))
            reverse = self.cond(kw.value)
        if t.elem not in (INT, BOOL, FLOAT, STR, BYTES):
            raise self.error(node, unsupported(f"sorting a list of {t.elem}", "a list of int, float or str"))
        kind = 3 if t.elem == FLOAT else slot_kind(t.elem)
        if return_list:
            tmp = self.temp("i32")
            return code + [f"local.tee {tmp}", f"i32.const {kind}", *reverse, "call $rt_list_sort", f"local.get {tmp}"]
        return code + [f"i32.const {kind}", *reverse, "call $rt_list_sort"]

    def dict_method(self, recv: Code, t: DictT, name: str, node: ast.Call, expected: Type | None) -> tuple[Code, Type]:
        args = node.args
        key, value = t.key, t.value
        if name == "get":
            self.nargs(node, 1, 2, name)
            if len(args) == 2:
                return recv + self.expr_as(args[0], key) + self.to_slot(key) + self.expr_as(args[1], value) + self.to_slot(value) + ["call $rt_dict_get_or"] + self.from_slot(value), value
            result = value if isinstance(value, OptionalT) else OptionalT(value)
            d, e = self.temp("i32"), self.temp("i32")
            found = [f"local.get {d}", f"local.get {e}", "call $rt_dict_value_at"] + self.from_slot(value)
            found = self.coerce(found, value, result, node)
            return recv + [f"local.tee {d}"] + self.expr_as(args[0], key) + self.to_slot(key) + [
                "call $rt_dict_find", f"local.tee {e}", "i32.const 0", "i32.lt_s",
                "if (result i32)", "i32.const 0", "else", *found, "end",
            ], result
        if name in ("keys", "values", "items"):
            self.nargs(node, 0, 0, name)
            if name == "keys":
                return recv + ["i32.const 0", f"i32.const {int(key.is_pointer)}", "i32.const 0", "call $rt_dict_list"], ListT(key)
            if name == "values":
                return recv + ["i32.const 1", f"i32.const {int(value.is_pointer)}", "i32.const 0", "call $rt_dict_list"], ListT(value)
            mask = int(key.is_pointer) | (2 * int(value.is_pointer))
            return recv + ["i32.const 2", "i32.const 1", f"i32.const {mask}", "call $rt_dict_list"], ListT(TupleT((key, value)))
        if name == "pop":
            self.nargs(node, 1, 2, name)
            if len(args) == 2:
                return recv + self.expr_as(args[0], key) + self.to_slot(key) + self.expr_as(args[1], value) + self.to_slot(value) + ["i32.const 0", "call $rt_dict_pop_or"] + self.from_slot(value), value
            return recv + self.expr_as(args[0], key) + self.to_slot(key) + ["call $rt_dict_pop"] + self.check_exc() + self.from_slot(value), value
        if name == "setdefault":
            self.nargs(node, 2, 2, name)
            return recv + self.expr_as(args[0], key) + self.to_slot(key) + self.expr_as(args[1], value) + self.to_slot(value) + ["call $rt_dict_setdefault"] + self.from_slot(value), value
        if name == "update":
            self.nargs(node, 1, 1, name)
            return recv + self.expr_as(args[0], t) + ["call $rt_dict_update"], NONE
        if name == "clear":
            self.nargs(node, 0, 0, name)
            return recv + ["call $rt_dict_clear"], NONE
        if name == "copy":
            self.nargs(node, 0, 0, name)
            return recv + ["call $rt_dict_copy"], t
        raise self.error(node.func, f"dict has no method {name} in the supported subset")

    # --- conversion to str ----------------------------------------------------------

    def to_str(self, code: Code, t: Type, node: ast.AST, conversion: int = -1) -> Code:
        if conversion == 97:
            raise self.error(node, unsupported("!a", "!r"))
        if t == STR:
            return code + ["call $rt_repr"] if conversion == 114 else code
        if t == BYTES:
            return code + ["call $rt_repr"]
        if t == INT:
            return code + ["call $rt_int_to_str"]
        if t == BOOL:
            return code + ["if (result i32)", f"i32.const {self.c.string('True')}", "else", f"i32.const {self.c.string('False')}", "end"]
        if t == NONE:
            return code + [f"i32.const {self.c.string('None')}"]
        if t == FLOAT:
            raise self.error(node, unsupported("str() of a float", "a format with a precision, e.g. f'{x:.2f}'"))
        if isinstance(t, OptionalT):
            tmp = self.temp("i32")
            inner = [f"local.get {tmp}"]
            if not t.inner.is_pointer:
                inner = inner + ["i64.load offset=8"] + self.from_slot(t.inner)
            return code + [
                f"local.tee {tmp}",
                "if (result i32)",
                *self.to_str(inner, t.inner, node, conversion),
                "else",
                f"i32.const {self.c.string('None')}",
                "end",
            ]
        if isinstance(t, ClassT):
            cls = t.cls
            method = cls.find_method("__str__") if conversion != 114 else cls.find_method("__repr__")
            if method is not None:
                sig = self.c.signature(method)
                if sig.result != STR or len(sig.params) != 1:
                    raise self.error(node, f"{cls.name}.{method.name} must take only self and return str")
                impls = self.c.implementations(cls, method.name, node)
                if len(impls) == 1:
                    return code + [f"call {self.c.request(impls[0])}"] + self.check_exc()
                tmp = self.temp("i32")
                slot = self.c.method_slot(cls, method.name)
                type_name = self.c.func_type(["i32"], STR)
                return code + [f"local.tee {tmp}", f"local.get {tmp}", "call $rt_vtable", f"i32.const {{{{slot:{slot}}}}}",
                               "i32.add", f"call_indirect (type {type_name})"] + self.check_exc()
            if cls.is_exception and conversion != 114:
                self.c.ensure_layout(cls)
                return code + [f"i64.load offset={8 + 8 * cls.fields[MESSAGE_FIELD].index}", "i32.wrap_i64"]
            raise self.error(node, f"define {cls.name}.__str__ to turn it into text")
        if isinstance(t, (ListT, TupleT, DictT)) and printable(t):
            return code + [f"call {self.c.reprs.function(t)}"]
        raise self.error(node, unsupported(f"converting a {t} to str", "formatting its parts"))

    def format_spec(self, code: Code, t: Type, spec: str, node: ast.AST) -> Code:
        parsed = _parse_spec(spec)
        if parsed is None:
            raise self.error(node, unsupported(f"the format spec {spec!r}", "[[fill]align][0][width][d|x|X|o|b] or .Nf"))
        fill, align, zero, width, precision, kind = parsed
        if t == BOOL:
            code, t = code + ["i64.extend_i32_u"], INT
        if kind == "f":
            if t not in (INT, FLOAT) or precision is None:
                raise self.error(node, "the f format needs a number and a precision, e.g. {x:.2f}")
            text = self.coerce(code, t, FLOAT, node) + [f"i32.const {precision}", "call $rt_f64_fixed"]
            numeric = True
        elif t == INT:
            if precision is not None:
                raise self.error(node, "integers take no precision")
            base = {"d": 10, "": 10, "x": 16, "X": 16, "o": 8, "b": 2}.get(kind)
            if base is None:
                raise self.error(node, unsupported(f"the format type {kind!r} for int", "d, x, X, o or b"))
            text = code + [f"i32.const {base}", f"i32.const {int(kind == 'X')}", "call $rt_int_to_base"]
            numeric = True
        elif isinstance(t, (Text, OptionalT)) or t == NONE:
            if kind not in ("", "s") or zero or precision is not None:
                raise self.error(node, unsupported(f"the format spec {spec!r} for str", "[[fill]align][width]"))
            text = self.to_str(code, t, node)
            numeric = False
        else:
            raise self.error(node, unsupported(f"a format spec on {t}", "str() first"))
        if zero and not align:
            fill, align = "0", "="
        if not align:
            align = ">" if numeric else "<"
        if width == 0:
            return text
        return text + [f"i64.const {width}", f"i32.const {ord(fill)}", f"i32.const {ord(align)}", "call $rt_str_pad"]


def _keyword(node: ast.Call, name: str) -> ast.expr | None:
    for kw in node.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _is_key_error(cls: ClassInfo) -> bool:
    owner: ClassInfo | None = cls
    while owner is not None:
        if owner.builtin and owner.name == "KeyError":
            return "__init__" not in {m for c in _chain(cls, owner) for m in c.methods}
        owner = owner.base
    return False


def _chain(start: ClassInfo, stop: ClassInfo) -> list[ClassInfo]:
    out = []
    cls: ClassInfo | None = start
    while cls is not None and cls is not stop:
        out.append(cls)
        cls = cls.base
    return out


def _parse_spec(spec: str) -> tuple[str, str, bool, int, int | None, str] | None:
    """[[fill]align][0][width][.precision][type] -> parts, or None if outside the subset."""
    fill, align = " ", ""
    i = 0
    if len(spec) >= 2 and spec[1] in "<>^=":
        fill, align, i = spec[0], spec[1], 2
    elif spec[:1] in ("<", ">", "^", "="):
        align, i = spec[0], 1
    zero = False
    if spec[i : i + 1] == "0":
        zero, i = True, i + 1
    start = i
    while i < len(spec) and spec[i].isdigit():
        i += 1
    width = int(spec[start:i]) if i > start else 0
    precision: int | None = None
    if spec[i : i + 1] == ".":
        i += 1
        start = i
        while i < len(spec) and spec[i].isdigit():
            i += 1
        if i == start:
            return None
        precision = int(spec[start:i])
    kind = spec[i:]
    if len(kind) > 1 or (kind and kind not in "sdxXobf"):
        return None
    return fill, align, zero, width, precision, kind


__all__ = ["CallCompiler"]
