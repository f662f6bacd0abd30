"""repr() of containers, generated per static type (lists, tuples and dicts of printable
values), matching CPython's output."""

from __future__ import annotations

from collections.abc import Callable

from sdk.compiler._types import (
    BOOL,
    INT,
    NONE,
    DictT,
    ListT,
    OptionalT,
    Text,
    TupleT,
    Type,
)


def printable(t: Type) -> bool:
    if t in (INT, BOOL, NONE) or isinstance(t, Text):
        return True
    if isinstance(t, OptionalT):
        return printable(t.inner)
    if isinstance(t, ListT):
        return printable(t.elem)
    if isinstance(t, TupleT):
        return all(printable(i) for i in t.items)
    if isinstance(t, DictT):
        return printable(t.key) and printable(t.value)
    return False


class ReprBuilder:
    """Creates ``$repr:<type>`` functions (value in its wasm form -> str object)."""

    def __init__(self, string: Callable[[str], int]) -> None:
        self.string = string
        self.functions: dict[str, str] = {}

    def value(self, t: Type, load: str) -> str:
        """A folded WAT expression turning ``load`` (a value of type ``t``) into its repr."""
        if t == INT:
            return f"(call $rt_int_to_str {load})"
        if t == BOOL:
            return f"(select (i32.const {self.string('True')}) (i32.const {self.string('False')}) {load})"
        if t == NONE:
            return f"(i32.const {self.string('None')})"
        if isinstance(t, Text):
            return f"(call $rt_repr {load})"
        return f"(call {self.function(t)} {load})"

    def function(self, t: Type) -> str:
        name = "$repr:" + "".join(ch if ch.isalnum() else "_" for ch in str(t))
        if name in self.functions:
            return name
        self.functions[name] = ""  # reserve (recursive types are impossible, but be safe)
        wasm = "i32"
        body: list[str]
        if isinstance(t, OptionalT):
            inner_load = "(local.get $v)" if t.inner.is_pointer else _from_slot(t.inner, "(i64.load offset=8 (local.get $v))")
            body = [
                f"(if (result i32) (local.get $v) (then {self.value(t.inner, inner_load)}) "
                f"(else (i32.const {self.string('None')})))"
            ]
        elif isinstance(t, ListT):
            item = _from_slot(t.elem, "(i64.load (call $rt_list_slot (local.get $v) (local.get $i)))")
            body = self._loop("[", "]", "(i32.load offset=8 (local.get $v))", self.value(t.elem, item))
        elif isinstance(t, DictT):
            key = _from_slot(t.key, "(call $rt_dict_key_at (local.get $v) (local.get $i))")
            val = _from_slot(t.value, "(call $rt_dict_value_at (local.get $v) (local.get $i))")
            body = [
                f"(local.set $sb (call $rt_sb_add (call $rt_sb_new (i32.const 16) (i32.const 1)) (i32.const {self.string('{')})))",
                "(local.set $i (i32.const 0))",
                "(block $done (loop $next",
                "  (local.set $i (call $rt_dict_next (local.get $v) (local.get $i)))",
                "  (br_if $done (i32.lt_s (local.get $i) (i32.const 0)))",
                f"  (if (local.get $n) (then (local.set $sb (call $rt_sb_add (local.get $sb) (i32.const {self.string(', ')})))))",
                f"  (local.set $sb (call $rt_sb_add (local.get $sb) {self.value(t.key, key)}))",
                f"  (local.set $sb (call $rt_sb_add (local.get $sb) (i32.const {self.string(': ')})))",
                f"  (local.set $sb (call $rt_sb_add (local.get $sb) {self.value(t.value, val)}))",
                "  (local.set $n (i32.add (local.get $n) (i32.const 1)))",
                "  (local.set $i (i32.add (local.get $i) (i32.const 1)))",
                "  (br $next)))",
                f"(call $rt_sb_add (local.get $sb) (i32.const {self.string('}')}))",
            ]
        elif isinstance(t, TupleT):
            parts = [self.value(item, _from_slot(item, f"(i64.load offset={16 + 8 * i} (local.get $v))")) for i, item in enumerate(t.items)]
            body = ["(local.set $sb (call $rt_sb_new (i32.const 16) (i32.const 1)))",
                    f"(local.set $sb (call $rt_sb_add (local.get $sb) (i32.const {self.string('(')})))"]
            for i, part in enumerate(parts):
                if i:
                    body.append(f"(local.set $sb (call $rt_sb_add (local.get $sb) (i32.const {self.string(', ')})))")
                body.append(f"(local.set $sb (call $rt_sb_add (local.get $sb) {part}))")
            closing = ",)" if len(parts) == 1 else ")"
            body.append(f"(call $rt_sb_add (local.get $sb) (i32.const {self.string(closing)}))")
        else:
            raise AssertionError(f"no repr for {t}")
        self.functions[name] = "\n".join(
            [f"(func {name} (param $v {wasm}) (result i32) (local $sb i32) (local $i i32) (local $n i32)", *body, ")"]
        )
        return name

    def _loop(self, open_: str, close: str, count: str, item: str) -> list[str]:
        return [
            f"(local.set $sb (call $rt_sb_add (call $rt_sb_new (i32.const 16) (i32.const 1)) (i32.const {self.string(open_)})))",
            f"(local.set $n {count})",
            "(block $done (loop $next",
            "  (br_if $done (i32.ge_u (local.get $i) (local.get $n)))",
            f"  (if (local.get $i) (then (local.set $sb (call $rt_sb_add (local.get $sb) (i32.const {self.string(', ')})))))",
            f"  (local.set $sb (call $rt_sb_add (local.get $sb) {item}))",
            "  (local.set $i (i32.add (local.get $i) (i32.const 1)))",
            "  (br $next)))",
            f"(call $rt_sb_add (local.get $sb) (i32.const {self.string(close)}))",
        ]


def _from_slot(t: Type, load: str) -> str:
    if t == INT:
        return load
    return f"(i32.wrap_i64 {load})"
