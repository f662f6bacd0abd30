"""Source outside the subset fails to compile with file:line:col, the construct and what to
write instead — never with a crash or a silently wrong module."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdk.compiler import CompileError, compile_file

HEADER = "from sdk import proxywasm\n\n\n"

# (name, source after HEADER, line, column, words the message must contain)
CASES: list[tuple[str, str, int, int, str]] = [
    ("lambda", "def main() -> None:\n    f = lambda x: x\n", 5, 9, "lambda is not supported; write a def function"),
    ("walrus", "def main() -> None:\n    if (n := 3) > 2:\n        pass\n", 5, 9, "walrus operator := is not supported"),
    ("with", "def main() -> None:\n    with open('x') as f:\n        pass\n", 5, 5, "with is not supported; write explicit calls"),
    ("generator", "def main() -> None:\n    g = (i for i in range(3))\n", 5, 9, "a generator expression is not supported"),
    ("set", "def main() -> None:\n    s = {1, 2}\n", 5, 9, "a set is not supported; write a dict[str, bool] or a list"),
    ("star args", "def f(*args: int) -> None:\n    pass\n", 4, 1, "*args / **kwargs is not supported"),
    ("nested def", "def main() -> None:\n    def inner() -> None:\n        pass\n", 5, 5, "a nested function is not supported"),
    ("method decorator", "class C:\n    @staticmethod\n    def f() -> None:\n        pass\n", 5, 6, "a method decorator"),
    ("class decorator", "from typing import Final\n\n\n@proxywasm\nclass C:\n    pass\n", 7, 2, "a class decorator (e.g. @dataclass)"),
    ("print", "def main() -> None:\n    print('x')\n", 5, 5, "print() is not supported; write proxywasm.log_info(...)"),
    ("import json", "import json\n", 4, 1, "import of module json is not supported"),
    ("async", "async def main() -> None:\n    pass\n", 4, 1, "async def is not supported"),
    ("yield", "def gen() -> int:\n    yield 1\n", 5, 5, "yield is not supported"),
    ("match", "def main(x: int) -> None:\n    match x:\n        case 1:\n            pass\n", 5, 5, "match is not supported; write if/elif/else"),
    ("slice step", "def main(s: str) -> str:\n    return s[::2]\n", 5, 16, "a slice step is not supported"),
    ("percent format", "def main(x: int) -> str:\n    return '%d' % x\n", 5, 12, "%-formatting is not supported; write an f-string"),
    ("multiple bases", "class A:\n    pass\n\n\nclass B:\n    pass\n\n\nclass C(A, B):\n    pass\n", 12, 12, "multiple inheritance is not supported"),
    ("missing annotation", "def f(x) -> int:\n    return 1\n", 4, 7, "annotate parameter x"),
    ("float to str", "def main() -> str:\n    return str(1.5)\n", 5, 12, "str() of a float is not supported"),
    ("empty list", "def main() -> None:\n    xs = []\n", 5, 10, "annotate the empty list"),
    ("type change", "def main() -> None:\n    x = 1\n    x = 'a'\n", 6, 5, "x holds int values; a str needs a name of its own"),
    ("return in finally", "def main() -> int:\n    try:\n        pass\n    finally:\n        return 1\n", 8, 9, "return inside a finally block is not supported"),
    ("while else", "def main() -> None:\n    while False:\n        pass\n    else:\n        pass\n", 5, 5, "while/else is not supported"),
    ("nonlocal", "def main() -> None:\n    nonlocal x\n", 5, 5, "nonlocal is not supported"),
    ("tuple ellipsis", "def main() -> None:\n    xs: tuple[int, ...] = (1,)\n", 5, 9, "tuple[T, ...] is not supported; write list[T]"),
    ("float keys", "def main() -> None:\n    d: dict[float, int] = {}\n", 5, 13, "dict keys of type float is not supported"),
    ("is on ints", "def main(a: int) -> bool:\n    return a is 2\n", 5, 12, "`is` on values is not supported"),
    ("undefined", "def main() -> None:\n    missing_function()\n", 5, 5, "missing_function is not defined"),
    ("unknown str method", "def main() -> str:\n    return 'a'.title()\n", 5, 12, "str has no method title"),
    ("kwargs call", "D: dict[str, int] = {}\n\n\ndef f(a: int) -> int:\n    return a\n\n\ndef main() -> int:\n    return f(**D)\n", 12, 14, "**kwargs is not supported"),
    ("raise non-exception", "def main() -> None:\n    raise 'oops'\n", 5, 5, "only exceptions can be raised"),
    ("bad except", "def main() -> None:\n    try:\n        pass\n    except 3:\n        pass\n", 7, 12, "except needs an exception class"),
    ("mutable default", "def f(xs: list[int] = []) -> None:\n    pass\n", 4, 23, "this default value is not supported"),
    ("assign to module attr", "def main() -> None:\n    proxywasm.x = 1\n", 5, 5, "assigning to a module or class attribute is not supported"),
    ("syntax error", "def main() -> None\n    pass\n", 4, 19, "syntax error"),
    ("too few args", "def f(a: int) -> int:\n    return a\n\n\ndef main() -> int:\n    return f()\n", 9, 12, "f() is missing argument a"),
    ("wrong arg type", "def f(a: int) -> int:\n    return a\n\n\ndef main() -> int:\n    return f('x')\n", 9, 14, "expected int, got str"),
    ("unknown field", "class C:\n    def __init__(self) -> None:\n        self.a = 1\n\n\ndef main() -> int:\n    return C().b\n", 10, 12, "C has no attribute b"),
]


@pytest.mark.parametrize(("name", "source", "line", "col", "words"), CASES, ids=[c[0] for c in CASES])
def test_unsupported_construct_is_a_clear_error(
    name: str, source: str, line: int, col: int, words: str, tmp_path: Path
) -> None:
    path = tmp_path / "plugin.py"
    full = HEADER + source
    if "def main" in source:
        full += _run_main(source) + _USE_MAIN
    path.write_text(full, encoding="utf-8")
    with pytest.raises(CompileError) as info:
        compile_file(path)
    err = info.value
    assert str(err).startswith(f"{path}:{line}:{col}: "), str(err)
    assert words in err.message


def _run_main(source: str) -> str:
    """A _run() that calls main with placeholder arguments of the right types."""
    signature = source.split("def main(", 1)[1].split(")", 1)[0]
    args = []
    for param in filter(None, (p.strip() for p in signature.split(","))):
        kind = param.split(":", 1)[1].strip()
        args.append({"int": "1", "str": "'s'"}.get(kind, "{}"))
    return f"\n\ndef _run() -> None:\n    main({', '.join(args)})\n"


# main() must be reachable for its body to be compiled: call it from the plugin's start.
_USE_MAIN = '''

from sdk.types import PluginContext, VMContext


class _Start(PluginContext):
    def on_plugin_start(self, plugin_configuration_size: int) -> bool:
        _run()
        return True


class _VM(VMContext):
    def new_plugin_context(self, context_id: int) -> PluginContext:
        return _Start()


proxywasm.set_vm_context(_VM())
'''


def test_an_error_in_a_sibling_module_names_it_like_the_plugin_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "helper.py").write_text("def f() -> int:\n    return lambda: 1\n", encoding="utf-8")
    (tmp_path / "plugin.py").write_text(HEADER + "import helper\n\nX = helper.f()\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path.parent)
    relative = Path(tmp_path.name) / "plugin.py"
    with pytest.raises(CompileError) as info:
        compile_file(relative)
    assert str(info.value).startswith(f"{Path(tmp_path.name) / 'helper.py'}:2:12: lambda is not supported")
