"""The whole program: modules, their symbols, classes, functions and module variables.

The plugin file is loaded first; every module it imports is loaded the same way. The SDK's
own modules (``sdk.types``, ``sdk.proxywasm``, ``sdk.errors``, ``sdk.entrypoint``,
``sdk.jsonvalue``, ``sdk.encoding``, ``sdk.config``) are written in the subset and compiled from their source, so CPython and
WebAssembly run the same SDK code. ``sdk._hostabi`` is special: its functions become ABI
imports. Other imports are limited to typing helpers and to plugin files next to the
plugin.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from sdk.compiler._errors import CompileError, error_at, unsupported
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
    TupleT,
    Type,
)

SDK_DIR = Path(__file__).resolve().parent.parent
SDK_SOURCE_MODULES = ("types", "proxywasm", "errors", "entrypoint", "jsonvalue", "encoding", "config")
HOSTABI_MODULE = "sdk._hostabi"
TYPING_NAMES = {
    "typing": {"Optional", "Callable", "List", "Dict", "Tuple", "Union", "TYPE_CHECKING", "Final"},
    "collections.abc": {"Callable"},
    "enum": {"IntEnum"},
}

# Builtin exception classes and their bases, in CPython's hierarchy (subset).
BUILTIN_EXCEPTIONS: tuple[tuple[str, str | None], ...] = (
    ("Exception", None),
    ("ArithmeticError", "Exception"),
    ("ZeroDivisionError", "ArithmeticError"),
    ("OverflowError", "ArithmeticError"),
    ("LookupError", "Exception"),
    ("KeyError", "LookupError"),
    ("IndexError", "LookupError"),
    ("ValueError", "Exception"),
    ("UnicodeError", "ValueError"),
    ("UnicodeDecodeError", "UnicodeError"),
    ("TypeError", "Exception"),
    ("AttributeError", "Exception"),
    ("AssertionError", "Exception"),
    ("RuntimeError", "Exception"),
    ("NotImplementedError", "RuntimeError"),
)
MESSAGE_FIELD = "__message__"


@dataclass(eq=False)
class FunctionInfo:
    """A ``def`` at module level or in a class."""

    module: ModuleInfo
    name: str
    node: ast.FunctionDef
    owner: ClassInfo | None = None
    signature: Signature | None = None

    @property
    def qualname(self) -> str:
        return f"{self.owner.name}.{self.name}" if self.owner else self.name

    @property
    def wasm_name(self) -> str:
        return f"$f:{self.module.name}.{self.qualname}"


@dataclass
class Param:
    name: str
    type: Type
    default: ast.expr | None


@dataclass
class Signature:
    params: list[Param]
    result: Type


@dataclass
class FieldInfo:
    name: str
    type: Type
    index: int
    default: ast.expr | None = None
    owner: ClassInfo | None = None


@dataclass(eq=False)
class ClassInfo:
    """A class: user, SDK or builtin exception. IntEnum subclasses only carry members."""

    module: ModuleInfo | None
    name: str
    node: ast.ClassDef | None
    base_node: ast.expr | None = None
    base: ClassInfo | None = None
    methods: dict[str, FunctionInfo] = field(default_factory=dict)
    field_decls: list[tuple[str, ast.expr, ast.expr | None, ast.AST]] = field(default_factory=list)
    consts: dict[str, ast.expr] = field(default_factory=dict)
    fields: dict[str, FieldInfo] = field(default_factory=dict)
    layout_state: str = "none"  # none -> open (compiling __init__) -> done
    is_enum: bool = False
    enum_members: dict[str, int] = field(default_factory=dict)
    builtin: bool = False
    subclasses: list[ClassInfo] = field(default_factory=list)
    class_id: int = -1
    id_end: int = -1

    @property
    def type(self) -> ClassT:
        return ClassT(self)

    @property
    def is_exception(self) -> bool:
        cls: ClassInfo | None = self
        while cls is not None:
            if cls.builtin and cls.name == "Exception":
                return True
            cls = cls.base
        return False

    def find_method(self, name: str) -> FunctionInfo | None:
        cls: ClassInfo | None = self
        while cls is not None:
            if name in cls.methods:
                return cls.methods[name]
            cls = cls.base
        return None

    def find_const(self, name: str) -> tuple[ClassInfo, ast.expr] | None:
        cls: ClassInfo | None = self
        while cls is not None:
            if name in cls.consts:
                return cls, cls.consts[name]
            cls = cls.base
        return None

    def all_subclasses(self) -> list[ClassInfo]:
        out = [self]
        for sub in self.subclasses:
            out.extend(sub.all_subclasses())
        return out


@dataclass(eq=False)
class GlobalInfo:
    """A module-level variable; constants (one literal assignment, never rebound) are inlined."""

    module: ModuleInfo
    name: str
    annotation: ast.expr | None
    value: ast.expr | None
    node: ast.stmt
    assignments: int = 1
    type: Type | None = None

    @property
    def wasm_name(self) -> str:
        return f"$g:{self.module.name}.{self.name}"

    def constant(self) -> ast.Constant | None:
        if self.assignments != 1 or self.name in self.module.rebound:
            return None
        value = self.value
        if isinstance(value, ast.Constant) and isinstance(value.value, (int, str, bytes, bool)):
            return value
        if (
            isinstance(value, ast.UnaryOp)
            and isinstance(value.op, ast.USub)
            and isinstance(value.operand, ast.Constant)
            and type(value.operand.value) is int
        ):
            folded = ast.Constant(-value.operand.value)
            ast.copy_location(folded, value)
            return folded
        return None


@dataclass(frozen=True)
class ImportedName:
    module: ModuleInfo
    name: str
    node: ast.AST


@dataclass(frozen=True)
class TypingName:
    name: str


@dataclass(frozen=True)
class IntrinsicFunction:
    name: str


@dataclass(frozen=True)
class PackageRef:
    """``import sdk.x`` binds ``sdk``; attribute access reaches the submodule."""

    name: str


@dataclass(eq=False)
class ModuleInfo:
    name: str
    path: str
    tree: ast.Module | None
    is_sdk: bool = False
    is_intrinsic: bool = False
    symbols: dict[str, Symbol] = field(default_factory=dict)
    init_body: list[ast.stmt] = field(default_factory=list)
    rebound: set[str] = field(default_factory=set)  # names some function declares global
    dependencies: list[ModuleInfo] = field(default_factory=list)

    def error(self, node: ast.AST | None, message: str) -> CompileError:
        return error_at(self.path, node, message)


Symbol = Union[  # noqa: UP007 (a runtime alias over forward-declared classes)
    FunctionInfo, ClassInfo, GlobalInfo, ImportedName, TypingName, IntrinsicFunction, PackageRef, ModuleInfo
]


class Program:
    """Loads and indexes every module of one plugin."""

    def __init__(self, path: Path, source: str | None = None) -> None:
        self.modules: dict[str, ModuleInfo] = {}
        self.classes: list[ClassInfo] = []
        self.builtins: dict[str, ClassInfo] = {}
        self.plugin_dir = path.parent  # siblings are named like the plugin file in errors
        self._make_builtin_exceptions()
        text = source if source is not None else path.read_text(encoding="utf-8")
        self.main = self._load(path.stem, str(path), text, is_sdk=False)
        self.entrypoint = self.module("sdk.entrypoint", None, self.main)
        self.errors = self.module("sdk.errors", None, self.main)
        self._resolve_bases()
        self._assign_class_ids()

    # --- loading --------------------------------------------------------------------

    def _make_builtin_exceptions(self) -> None:
        for name, base in BUILTIN_EXCEPTIONS:
            cls = ClassInfo(module=None, name=name, node=None, builtin=True)
            if base is not None:
                cls.base = self.builtins[base]
                cls.base.subclasses.append(cls)
            else:
                cls.fields[MESSAGE_FIELD] = FieldInfo(MESSAGE_FIELD, STR, 0, owner=cls)
            cls.layout_state = "done"
            self.builtins[name] = cls
            self.classes.append(cls)
        for cls in self.classes:
            if cls.base is not None:
                cls.fields = dict(cls.base.fields)

    def module(self, name: str, node: ast.AST | None, importer: ModuleInfo) -> ModuleInfo:
        """The module called ``name`` (loading it on first use)."""
        if name in self.modules:
            return self.modules[name]
        if name == HOSTABI_MODULE:
            info = ModuleInfo(name, str(SDK_DIR / "_hostabi.py"), None, is_sdk=True, is_intrinsic=True)
            self.modules[name] = info
            return info
        if name.startswith("sdk."):
            short = name[4:]
            if short not in SDK_SOURCE_MODULES:
                raise importer.error(
                    node,
                    unsupported(
                        f"import of {name}",
                        "imports from sdk.types, sdk.proxywasm, sdk.errors, sdk.jsonvalue, sdk.encoding or sdk.config",
                    ),
                )
            path = SDK_DIR / f"{short}.py"
            return self._load(name, str(path), path.read_text(encoding="utf-8"), is_sdk=True)
        sibling = self.plugin_dir / f"{name}.py"
        if "." not in name and sibling.is_file() and not importer.is_sdk:
            return self._load(name, str(sibling), sibling.read_text(encoding="utf-8"), is_sdk=False)
        raise importer.error(
            node,
            unsupported(
                f"import of module {name}",
                "code in the plugin file, a module next to it, or the sdk modules",
            ),
        )

    def _load(self, name: str, path: str, text: str, is_sdk: bool) -> ModuleInfo:
        try:
            tree = ast.parse(text, filename=path)
        except SyntaxError as err:
            raise CompileError(path, err.lineno or 1, err.offset or 1, f"syntax error: {err.msg}") from None
        info = ModuleInfo(name, path, tree, is_sdk=is_sdk)
        self.modules[name] = info
        self._collect(info)
        return info

    def _collect(self, mod: ModuleInfo) -> None:
        assert mod.tree is not None
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.Global):
                mod.rebound.update(node.names)
        for stmt in mod.tree.body:
            self._collect_statement(mod, stmt)

    def _collect_statement(self, mod: ModuleInfo, stmt: ast.stmt) -> None:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            return  # docstring
        if isinstance(stmt, ast.ImportFrom):
            self._import_from(mod, stmt)
        elif isinstance(stmt, ast.Import):
            self._import(mod, stmt)
        elif isinstance(stmt, ast.FunctionDef):
            if stmt.decorator_list:
                raise mod.error(stmt.decorator_list[0], unsupported("a function decorator", "a plain function"))
            self._define(mod, stmt.name, FunctionInfo(mod, stmt.name, stmt), stmt)
        elif isinstance(stmt, ast.AsyncFunctionDef):
            raise mod.error(stmt, unsupported("async def", "a plain def"))
        elif isinstance(stmt, ast.ClassDef):
            self._define(mod, stmt.name, self._class(mod, stmt), stmt)
        elif isinstance(stmt, ast.If) and _is_type_checking(stmt.test):
            return  # imports for type checkers only
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            self._module_assignment(mod, stmt)
        else:
            mod.init_body.append(stmt)

    def _define(self, mod: ModuleInfo, name: str, symbol: Symbol, node: ast.AST) -> None:
        if name in mod.symbols and not isinstance(mod.symbols[name], GlobalInfo):
            raise mod.error(node, f"{name} is defined twice; give each definition its own name")
        mod.symbols[name] = symbol

    def _module_assignment(self, mod: ModuleInfo, stmt: ast.Assign | ast.AnnAssign) -> None:
        targets: list[ast.expr]
        if isinstance(stmt, ast.AnnAssign):
            targets = [stmt.target]
            value = stmt.value
            annotation: ast.expr | None = stmt.annotation
        else:
            targets = stmt.targets
            value = stmt.value
            annotation = None
        if len(targets) == 1 and isinstance(targets[0], ast.Name) and targets[0].id == "__all__":
            return
        if len(targets) != 1 or not isinstance(targets[0], ast.Name):
            raise mod.error(stmt, unsupported("this module-level assignment", "one `name = value` per line"))
        name = targets[0].id
        existing = mod.symbols.get(name)
        if isinstance(existing, GlobalInfo):
            existing.assignments += 1
            if annotation is not None and existing.annotation is None:
                existing.annotation = annotation
        elif existing is not None:
            raise mod.error(stmt, f"{name} is already defined in this module")
        else:
            mod.symbols[name] = GlobalInfo(mod, name, annotation, value, stmt)
        if value is not None:
            mod.init_body.append(stmt)

    def _import_from(self, mod: ModuleInfo, stmt: ast.ImportFrom) -> None:
        source = stmt.module or ""
        if stmt.level:
            if mod.is_sdk:
                raise mod.error(stmt, "relative imports are not supported in the sdk")
            if source == "":
                for alias in stmt.names:
                    target = self.module(alias.name, stmt, mod)
                    mod.dependencies.append(target)
                    mod.symbols[alias.asname or alias.name] = target
                return
        if source == "__future__":
            return
        if source in TYPING_NAMES:
            for alias in stmt.names:
                if alias.name not in TYPING_NAMES[source]:
                    raise mod.error(stmt, unsupported(f"{source}.{alias.name}", "the builtin types and Optional / Callable"))
                mod.symbols[alias.asname or alias.name] = TypingName(alias.name)
            return
        if source == "sdk":
            for alias in stmt.names:
                target = self.module(f"sdk.{alias.name}", stmt, mod)
                mod.dependencies.append(target)
                mod.symbols[alias.asname or alias.name] = target
            return
        target = self.module(source, stmt, mod)
        mod.dependencies.append(target)
        for alias in stmt.names:
            if alias.name == "*":
                raise mod.error(stmt, unsupported("import *", "importing the names you use"))
            if target.is_intrinsic:
                mod.symbols[alias.asname or alias.name] = IntrinsicFunction(alias.name)
            else:
                mod.symbols[alias.asname or alias.name] = ImportedName(target, alias.name, stmt)

    def _import(self, mod: ModuleInfo, stmt: ast.Import) -> None:
        for alias in stmt.names:
            name = alias.name
            if name in ("typing", "enum", "collections.abc"):
                raise mod.error(stmt, unsupported(f"import {name}", f"from {name} import <name>"))
            target = self.module(name, stmt, mod)
            mod.dependencies.append(target)
            if alias.asname:
                mod.symbols[alias.asname] = target
            elif "." in name:
                mod.symbols[name.split(".")[0]] = PackageRef(name.split(".")[0])
            else:
                mod.symbols[name] = target

    def _class(self, mod: ModuleInfo, node: ast.ClassDef) -> ClassInfo:
        if node.decorator_list:
            raise mod.error(node.decorator_list[0], unsupported("a class decorator (e.g. @dataclass)", "an __init__ method"))
        if node.keywords:
            raise mod.error(node, unsupported("class keywords (metaclass=...)", "a plain class"))
        if len(node.bases) > 1:
            raise mod.error(node.bases[1], unsupported("multiple inheritance", "a single base class"))
        cls = ClassInfo(mod, node.name, node, base_node=node.bases[0] if node.bases else None)
        for item in node.body:
            if isinstance(item, ast.Expr) and isinstance(item.value, ast.Constant) and isinstance(item.value.value, str):
                continue
            if isinstance(item, ast.Pass):
                continue
            if isinstance(item, ast.FunctionDef):
                if item.decorator_list:
                    raise mod.error(
                        item.decorator_list[0],
                        unsupported("a method decorator (@staticmethod, @property, ...)", "a plain method"),
                    )
                if item.name in cls.methods:
                    raise mod.error(item, f"method {item.name} is defined twice")
                cls.methods[item.name] = FunctionInfo(mod, item.name, item, owner=cls)
            elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                cls.field_decls.append((item.target.id, item.annotation, item.value, item))
            elif isinstance(item, ast.Assign) and len(item.targets) == 1 and isinstance(item.targets[0], ast.Name):
                cls.consts[item.targets[0].id] = item.value
            else:
                raise mod.error(
                    item, unsupported("this statement in a class body", "fields (`name: type = value`) and methods")
                )
        self.classes.append(cls)
        return cls

    # --- resolution -----------------------------------------------------------------

    def lookup(self, mod: ModuleInfo, name: str) -> Symbol | None:
        """A module-level name, following imports; builtin exception classes last."""
        symbol = mod.symbols.get(name)
        seen = 0
        while isinstance(symbol, ImportedName):
            seen += 1
            if seen > 20:
                raise mod.error(symbol.node, f"cannot resolve {name}: circular import")
            target = symbol.module
            if target.is_intrinsic:
                return IntrinsicFunction(symbol.name)
            found = target.symbols.get(symbol.name)
            if found is None:
                raise mod.error(symbol.node, f"module {target.name} has no name {symbol.name}")
            symbol = found
        if symbol is None and name in self.builtins:
            return self.builtins[name]
        return symbol

    def member(self, mod: ModuleInfo, target: ModuleInfo | PackageRef, name: str, node: ast.AST) -> Symbol:
        """``target.name`` for a module or package reference."""
        if isinstance(target, PackageRef):
            return self.module(f"{target.name}.{name}", node, mod)
        if target.is_intrinsic:
            return IntrinsicFunction(name)
        found = self.lookup(target, name)
        if found is None:
            raise mod.error(node, f"module {target.name} has no name {name}")
        return found

    def _resolve_bases(self) -> None:
        for cls in self.classes:
            if cls.builtin or cls.base_node is None:
                continue
            assert cls.module is not None
            base = self.resolve_class_ref(cls.module, cls.base_node)
            if isinstance(base, TypingName) and base.name == "IntEnum":
                cls.is_enum = True
                self._enum_members(cls)
                continue
            if not isinstance(base, ClassInfo):
                raise cls.module.error(cls.base_node, "the base class must be a class defined in the plugin or the sdk")
            if base.is_enum:
                raise cls.module.error(cls.base_node, unsupported("subclassing an IntEnum", "a new IntEnum"))
            cls.base = base
            base.subclasses.append(cls)

    def resolve_class_ref(self, mod: ModuleInfo, node: ast.expr) -> Symbol | None:
        if isinstance(node, ast.Name):
            if node.id == "object":
                return None
            return self.lookup(mod, node.id)
        if isinstance(node, ast.Attribute):
            target = self.resolve_class_ref(mod, node.value)
            if isinstance(target, (ModuleInfo, PackageRef)):
                return self.member(mod, target, node.attr, node)
        raise mod.error(node, "expected a class name")

    def _enum_members(self, cls: ClassInfo) -> None:
        assert cls.module is not None
        if cls.methods or cls.field_decls:
            raise cls.module.error(cls.node, unsupported("methods or fields on an IntEnum", "plain members NAME = <int>"))
        for name, value in cls.consts.items():
            if not (isinstance(value, ast.Constant) and type(value.value) is int):
                raise cls.module.error(value, "IntEnum members must be int literals")
            cls.enum_members[name] = value.value

    def _assign_class_ids(self) -> None:
        next_id = 0

        def visit(cls: ClassInfo) -> None:
            nonlocal next_id
            cls.class_id = next_id
            next_id += 1
            for sub in cls.subclasses:
                visit(sub)
            cls.id_end = next_id - 1

        for cls in self.classes:
            if cls.base is None and not cls.is_enum:
                visit(cls)
        if next_id > 65535:
            raise CompileError(self.main.path, 1, 1, "too many classes (at most 65535)")

    def object_classes(self) -> list[ClassInfo]:
        """Classes that have instances, ordered by class id."""
        return sorted((c for c in self.classes if not c.is_enum), key=lambda c: c.class_id)

    def init_order(self) -> list[ModuleInfo]:
        """Modules in the order Python would finish importing them."""
        order: list[ModuleInfo] = []
        seen: set[str] = set()

        def visit(mod: ModuleInfo) -> None:
            if mod.name in seen:
                return
            seen.add(mod.name)
            for dep in mod.dependencies:
                visit(dep)
            order.append(mod)

        for name in ("sdk.errors", "sdk.types", "sdk.entrypoint"):
            visit(self.modules[name]) if name in self.modules else None
        visit(self.main)
        for mod in list(self.modules.values()):
            visit(mod)
        return order

    # --- types ----------------------------------------------------------------------

    def resolve_type(self, mod: ModuleInfo, node: ast.expr | None) -> Type:
        """The type an annotation denotes."""
        if node is None:
            raise mod.error(node, "a type annotation is required here")
        if isinstance(node, ast.Constant):
            if node.value is None:
                return NONE
            if isinstance(node.value, str):
                try:
                    parsed = ast.parse(node.value, mode="eval").body
                except SyntaxError:
                    raise mod.error(node, f"cannot parse the annotation {node.value!r}") from None
                ast.copy_location(parsed, node)
                for child in ast.walk(parsed):
                    ast.copy_location(child, node)
                return self.resolve_type(mod, parsed)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            left = self.resolve_type(mod, node.left)
            right = self.resolve_type(mod, node.right)
            if right == NONE and left != NONE:
                return _optional(mod, node, left)
            if left == NONE and right != NONE:
                return _optional(mod, node, right)
            raise mod.error(node, unsupported("a union of two types", "T | None"))
        if isinstance(node, ast.Name):
            simple = {"int": INT, "bool": BOOL, "float": FLOAT, "str": STR, "bytes": BYTES}
            if node.id in simple:
                return simple[node.id]
            if node.id in ("list", "dict", "tuple", "List", "Dict", "Tuple"):
                raise mod.error(node, f"say what {node.id} holds, e.g. list[str] or dict[str, int]")
        if isinstance(node, ast.Subscript):
            return self._generic(mod, node)
        symbol = self._type_symbol(mod, node)
        if isinstance(symbol, ClassInfo):
            if symbol.is_enum:
                return INT
            return ClassT(symbol)
        raise mod.error(node, f"{ast.unparse(node)} is not a type the compiler knows")

    def _type_symbol(self, mod: ModuleInfo, node: ast.expr) -> Symbol | None:
        if isinstance(node, ast.Name):
            return self.lookup(mod, node.id)
        if isinstance(node, ast.Attribute):
            target = self._type_symbol(mod, node.value)
            if isinstance(target, (ModuleInfo, PackageRef)):
                return self.member(mod, target, node.attr, node)
        return None

    def _generic(self, mod: ModuleInfo, node: ast.Subscript) -> Type:
        head = node.value
        name = head.id if isinstance(head, ast.Name) else None
        symbol = self._type_symbol(mod, head)
        if isinstance(symbol, TypingName):
            name = {"List": "list", "Dict": "dict", "Tuple": "tuple"}.get(symbol.name, symbol.name)
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if name == "list" and len(args) == 1:
            return ListT(self.resolve_type(mod, args[0]))
        if name == "dict" and len(args) == 2:
            key = self.resolve_type(mod, args[0])
            if key not in (STR, BYTES, INT, BOOL):
                raise mod.error(args[0], unsupported(f"dict keys of type {key}", "str, bytes or int keys"))
            return DictT(key, self.resolve_type(mod, args[1]))
        if name == "tuple":
            if any(isinstance(a, ast.Constant) and a.value is Ellipsis for a in args):
                raise mod.error(node, unsupported("tuple[T, ...]", "list[T]"))
            if len(args) > 32:
                raise mod.error(node, "tuples have at most 32 items")
            return TupleT(tuple(self.resolve_type(mod, a) for a in args))
        if name == "Optional" and len(args) == 1:
            return _optional(mod, node, self.resolve_type(mod, args[0]))
        if name == "Union" and len(args) == 2:
            return self.resolve_type(mod, ast.BinOp(args[0], ast.BitOr(), args[1], lineno=node.lineno, col_offset=node.col_offset))
        if name == "Callable" and len(args) == 2 and isinstance(args[0], ast.List):
            params = tuple(self.resolve_type(mod, a) for a in args[0].elts)
            return CallableT(params, self.resolve_type(mod, args[1]))
        if name == "Final" and len(args) == 1:
            return self.resolve_type(mod, args[0])
        raise mod.error(node, f"{ast.unparse(node)} is not a type the compiler knows")


def _optional(mod: ModuleInfo, node: ast.AST, inner: Type) -> Type:
    if isinstance(inner, OptionalT):
        return inner
    if inner == NONE:
        raise mod.error(node, "None | None is not a useful type")
    return OptionalT(inner)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )
