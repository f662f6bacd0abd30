"""Generated programs: random int and str expressions, evaluated by CPython and by the
compiled module, must print the same values (hypothesis shrinks any disagreement)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sdk.compiler._harness import MAIN_PLUGIN, differential

INT_LEAVES = st.one_of(st.sampled_from(["a", "b", "c"]), st.integers(-50, 50).map(str))
INT_BINARY = ["+", "-", "*", "//", "%", "&", "|", "^"]
COMPARE = ["<", "<=", ">", ">=", "==", "!="]


def int_expr(depth: int) -> st.SearchStrategy[str]:
    if depth == 0:
        return INT_LEAVES
    sub = int_expr(depth - 1)
    return st.one_of(
        INT_LEAVES,
        st.tuples(sub, st.sampled_from(INT_BINARY), sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(sub, st.integers(0, 6)).map(lambda t: f"({t[0]} << {t[1]})"),
        st.tuples(sub, st.integers(0, 6)).map(lambda t: f"({t[0]} >> {t[1]})"),
        sub.map(lambda e: f"(-{e})"),
        sub.map(lambda e: f"abs({e})"),
        st.tuples(sub, sub).map(lambda t: f"min({t[0]}, {t[1]})"),
        st.tuples(sub, st.sampled_from(COMPARE), sub, sub, sub).map(
            lambda t: f"({t[3]} if {t[0]} {t[1]} {t[2]} else {t[4]})"
        ),
    )


TEXT = st.text(alphabet="ab -,é€xyz", max_size=8).map(repr)
INDEX = st.integers(-10, 10).map(str)
STR_EXPRS = st.one_of(
    st.tuples(TEXT, INDEX, INDEX).map(lambda t: f"{t[0]}[{t[1]}:{t[2]}]"),
    st.tuples(TEXT, INDEX).map(lambda t: f"{t[0]}[{t[1]}:]"),
    st.tuples(TEXT, TEXT).map(lambda t: f"str({t[0]}.find({t[1]}))"),
    st.tuples(TEXT, TEXT).map(lambda t: f"str({t[0]}.count({t[1]}))"),
    st.tuples(TEXT, TEXT, TEXT).map(lambda t: f"{t[0]}.replace({t[1]}, {t[2]})"),
    st.tuples(TEXT, st.sampled_from(["' '", "','", "'a'", "'é'"])).map(lambda t: f"'|'.join({t[0]}.split({t[1]}))"),
    TEXT.map(lambda s: f"'|'.join({s}.split())"),
    st.tuples(TEXT, TEXT).map(lambda t: f"{t[0]}.strip({t[1]})" if t[1].isascii() else f"{t[0]}.strip()"),
    st.tuples(TEXT, TEXT).map(lambda t: f"str({t[0]} < {t[1]})"),
    st.tuples(TEXT, TEXT).map(lambda t: f"str({t[1]} in {t[0]})"),
    TEXT.map(lambda s: f"str(len({s}))"),
    TEXT.map(lambda s: f"repr({s})"),
    st.tuples(TEXT, st.integers(-3, 8)).map(lambda t: f"{t[0]}[{t[1]}] if -len({t[0]}) <= {t[1]} < len({t[0]}) else '-'"),
)


def program(int_exprs: list[str], str_exprs: list[str], a: int, b: int, c: int) -> str:
    lines = ["from sdk.proxywasm import log_info", "", "", "def main() -> None:"]
    lines += [f"    a = {a}", f"    b = {b}", f"    c = {c}"]
    for expr in int_exprs:
        lines += ["    try:", f"        log_info(str({expr}))", "    except ZeroDivisionError:", "        log_info('zde')"]
    for expr in str_exprs:
        lines.append(f"    log_info({expr})")
    return "\n".join(lines) + "\n" + MAIN_PLUGIN


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    int_exprs=st.lists(int_expr(3), min_size=1, max_size=12),
    str_exprs=st.lists(STR_EXPRS, min_size=1, max_size=12),
    a=st.integers(-1000, 1000),
    b=st.integers(-1000, 1000),
    c=st.integers(-1000, 1000),
)
def test_generated_expressions_agree(
    tmp_path: Path, int_exprs: list[str], str_exprs: list[str], a: int, b: int, c: int
) -> None:
    path = tmp_path / "generated.py"
    path.write_text(program(int_exprs, str_exprs, a, b, c), encoding="utf-8")
    python, wasm = differential(path)
    assert python.error is None
    assert wasm.state["logs"] == python.state["logs"]


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.integers(-20, 60), st.integers(0, 9)),
        st.tuples(st.just("del"), st.integers(-20, 60), st.just(0)),
        st.tuples(st.just("pop"), st.integers(-20, 60), st.just(0)),
        st.tuples(st.just("get"), st.integers(-20, 60), st.just(0)),
        st.tuples(st.just("dump"), st.just(0), st.just(0)),
        st.tuples(st.just("clear"), st.just(0), st.just(0)),
    ),
    min_size=1,
    max_size=120,
)


def dict_program(operations: list[tuple[str, int, int]], text_keys: bool) -> str:
    key_type = "str" if text_keys else "int"
    lines = ["from sdk.proxywasm import log_info", "", "", "def main() -> None:", f"    d: dict[{key_type}, int] = {{}}", "    xs: list[int] = []"]
    for op, key, value in operations:
        k = repr(f"k{key}") if text_keys else str(key)
        if op == "set":
            lines += [f"    d[{k}] = {value}", f"    xs.insert({key % 7}, {value})"]
        elif op == "del":
            lines += ["    try:", f"        del d[{k}]", "    except KeyError as err:", '        log_info(f"missing {err}")']
        elif op == "pop":
            lines += [f"    log_info(str(d.pop({k}, -1)))", "    if len(xs) > 2:", f"        xs.pop({key % 3 - 1})"]
        elif op == "get":
            lines.append(f'    log_info(f"{{d.get({k})}} {{{k} in d}} {{len(d)}}")')
        elif op == "dump":
            lines.append('    log_info(f"{d} {list(d.values())} {xs} {sorted(xs)}")')
        else:
            lines += ["    d.clear()", "    xs.clear()"]
    lines.append('    log_info(f"{d} {xs}")')
    return "\n".join(lines) + "\n" + MAIN_PLUGIN


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS, text_keys=st.booleans())
def test_generated_dict_and_list_operations_agree(
    tmp_path: Path, operations: list[tuple[str, int, int]], text_keys: bool
) -> None:
    path = tmp_path / "generated_dict.py"
    path.write_text(dict_program(operations, text_keys), encoding="utf-8")
    python, wasm = differential(path)
    assert python.error is None
    assert wasm.state["logs"] == python.state["logs"]
