"""The static types of the compilable subset and how each is laid out in WebAssembly.

``int`` is a 64-bit signed integer (wraps on overflow, unlike CPython), ``bool`` an i32,
``float`` an f64. Everything else is an i32 pointer to a heap object; 0 is ``None``.
Containers store every element in an 8-byte slot, so one list/dict/tuple runtime serves
all element types; ``slot_kind`` tells the runtime how to compare and trace a slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sdk.compiler._program import ClassInfo


class Type:
    """A static type. Subclasses are immutable and compare by value."""

    wasm: str = "i32"  # the wasm value type of a value of this type
    is_pointer: bool = True  # traced by the garbage collector

    def __str__(self) -> str:
        return self.name()

    def name(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Prim(Type):
    """int, bool, float: unboxed values."""

    kind: str

    @property
    def wasm(self) -> str:  # type: ignore[override]
        return {"int": "i64", "bool": "i32", "float": "f64"}[self.kind]

    @property
    def is_pointer(self) -> bool:  # type: ignore[override]
        return False

    def name(self) -> str:
        return self.kind


@dataclass(frozen=True)
class NoneType(Type):
    """The type of the ``None`` literal and of functions that return nothing."""

    @property
    def is_pointer(self) -> bool:  # type: ignore[override]
        return False

    def name(self) -> str:
        return "None"


@dataclass(frozen=True)
class Text(Type):
    """str (code points, stored as UTF-8) or bytes."""

    kind: str

    def name(self) -> str:
        return self.kind


@dataclass(frozen=True)
class ListT(Type):
    elem: Type

    def name(self) -> str:
        return f"list[{self.elem}]"


@dataclass(frozen=True)
class DictT(Type):
    key: Type
    value: Type

    def name(self) -> str:
        return f"dict[{self.key}, {self.value}]"


@dataclass(frozen=True)
class TupleT(Type):
    items: tuple[Type, ...]

    def name(self) -> str:
        return "tuple[" + ", ".join(str(t) for t in self.items) + "]"


@dataclass(frozen=True)
class OptionalT(Type):
    """``T | None``. For int/bool/float the value is boxed; for pointers 0 means None."""

    inner: Type

    def name(self) -> str:
        return f"{self.inner} | None"


@dataclass(frozen=True)
class CallableT(Type):
    """A function or bound method used as a value (HTTP call callbacks)."""

    params: tuple[Type, ...]
    result: Type

    def name(self) -> str:
        params = ", ".join(str(p) for p in self.params)
        return f"Callable[[{params}], {self.result}]"


@dataclass(frozen=True, eq=False)
class ClassT(Type):
    """An instance of a class defined in the program (or a builtin exception class)."""

    cls: ClassInfo

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClassT) and other.cls is self.cls

    def __hash__(self) -> int:
        return id(self.cls)

    def name(self) -> str:
        return self.cls.name


INT = Prim("int")
BOOL = Prim("bool")
FLOAT = Prim("float")
NONE = NoneType()
STR = Text("str")
BYTES = Text("bytes")

# Slot kinds tell runtime container functions how to compare elements.
SLOT_INT = 0  # compare as i64 (int, bool, float bits)
SLOT_TEXT = 1  # compare str/bytes contents
SLOT_REF = 2  # compare by identity


def slot_kind(t: Type) -> int:
    if isinstance(t, Text):
        return SLOT_TEXT
    if t.is_pointer:
        return SLOT_REF
    return SLOT_INT


def is_subclass(sub: ClassInfo, base: ClassInfo) -> bool:
    cls: ClassInfo | None = sub
    while cls is not None:
        if cls is base:
            return True
        cls = cls.base
    return False


def assignable(source: Type, target: Type) -> bool:
    """Whether a value of ``source`` type can be stored where ``target`` is expected."""
    if source == target:
        return True
    if source == BOOL and target == INT:
        return True
    if source == INT and target == FLOAT:
        return True
    if isinstance(target, OptionalT):
        if source == NONE:
            return True
        if isinstance(source, OptionalT):
            return assignable(source.inner, target.inner) and (
                source.inner.is_pointer == target.inner.is_pointer
            )
        return assignable(source, target.inner) and (
            source.is_pointer or source == target.inner
        )
    if isinstance(source, OptionalT):
        # Unwrapped with a runtime None check (mypy has already narrowed it).
        return assignable(source.inner, target)
    if isinstance(source, ClassT) and isinstance(target, ClassT):
        return is_subclass(source.cls, target.cls)
    return False
