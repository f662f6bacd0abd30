"""A small subset of CEL for metric dimensions, access-log filters and span tags.

Istio's ``Telemetry`` overrides and ``stats.PluginConfig`` dimensions are CEL expressions
over Envoy's attributes. wasmesh evaluates the subset that covers how they are used in
practice, and refuses anything else when the configuration is loaded (naming the
expression), never at request time:

    request.host            request.headers['x-api-version']     response.code
    source.address          node.metadata['NAMESPACE']           'literal'   42
    a | b                   (the first side that is present and not empty)
    a == b   a != b         (for filters: response.code >= 500, ...)
    a && b   a || b   !a

Values are read through an ``Attributes`` object the caller provides, so the evaluator
knows nothing about the proxy (sans-io).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

_TOKEN = re.compile(r"""\s*(?:(?P<num>\d+)|(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|(?P<id>[A-Za-z_][A-Za-z_0-9]*)|(?P<op>==|!=|>=|<=|&&|\|\||[|.\[\]()<>!]))""")
MAX_EXPRESSION_CHARS = 1024


class ExpressionError(ValueError):
    """An expression outside the supported subset (the message says where)."""


class Attributes(Protocol):
    """Resolves an attribute path such as ``("request", "headers", "x-id")``; None when absent."""

    def lookup(self, path: tuple[str, ...]) -> Any: ...


Evaluator = Callable[[Attributes], Any]


@dataclass(frozen=True)
class Expression:
    """A compiled expression: ``evaluate(attributes)`` gives a str, int, bool or None."""

    source: str
    evaluate: Evaluator

    def text(self, attributes: Attributes, default: str = "unknown") -> str:
        """The value as a label: Istio prints failed or absent values as ``unknown``."""
        try:
            value = self.evaluate(attributes)
        except (TypeError, ValueError, KeyError):
            return default
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def truth(self, attributes: Attributes) -> bool:
        try:
            return bool(self.evaluate(attributes))
        except (TypeError, ValueError, KeyError):
            return False


def _tokens(source: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    position = 0
    while position < len(source):
        if source[position:].strip() == "":
            break
        match = _TOKEN.match(source, position)
        if match is None or match.end() == position:
            raise ExpressionError(f"unexpected {source[position:position + 10]!r} at offset {position}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        position = match.end()
    return out


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _tokens(source)
        self.index = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise ExpressionError("unexpected end of expression")
        if value is not None and token[1] != value:
            raise ExpressionError(f"expected {value!r}, found {token[1]!r}")
        self.index += 1
        return token

    def parse(self) -> Evaluator:
        result = self.disjunction()
        if self.peek() is not None:
            raise ExpressionError(f"unsupported syntax at {self.peek()[1]!r}")  # type: ignore[index]
        return result

    def disjunction(self) -> Evaluator:
        left = self.conjunction()
        while self.peek() == ("op", "||"):
            self.take()
            left = _either_true(left, self.conjunction())
        return left

    def conjunction(self) -> Evaluator:
        left = self.comparison()
        while self.peek() == ("op", "&&"):
            self.take()
            left = _both_true(left, self.comparison())
        return left

    def comparison(self) -> Evaluator:
        left = self.fallback()
        token = self.peek()
        if token is not None and token[1] in ("==", "!=", ">=", "<=", ">", "<"):
            op = self.take()[1]
            right = self.fallback()
            return _compare(op, left, right)
        return left

    def fallback(self) -> Evaluator:
        left = self.unary()
        while self.peek() == ("op", "|"):
            self.take()
            a, b = left, self.unary()

            def either(attrs: Attributes, a: Evaluator = a, b: Evaluator = b) -> Any:
                value = a(attrs)
                return b(attrs) if value is None or value == "" else value

            left = either
        return left

    def unary(self) -> Evaluator:
        token = self.peek()
        if token == ("op", "!"):
            self.take()
            inner = self.unary()
            return lambda attrs: not inner(attrs)
        if token == ("op", "("):
            self.take()
            inner = self.disjunction()
            self.take(")")
            return inner
        return self.primary()

    def primary(self) -> Evaluator:
        kind, value = self.take()
        if kind == "num":
            number = int(value)
            return lambda attrs: number
        if kind == "str":
            text = _unquote(value)
            return lambda attrs: text
        if kind == "id" and value in ("true", "false"):
            flag = value == "true"
            return lambda attrs: flag
        if kind != "id":
            raise ExpressionError(f"unsupported syntax at {value!r}")
        path = [value]
        while True:
            token = self.peek()
            if token == ("op", "."):
                self.take()
                name_kind, name = self.take()
                if name_kind != "id":
                    raise ExpressionError(f"expected a field name after '.', found {name!r}")
                if self.peek() == ("op", "("):
                    raise ExpressionError(f"function calls such as {name}() are not supported")
                path.append(name)
            elif token == ("op", "["):
                self.take()
                key_kind, key = self.take()
                if key_kind not in ("str", "num"):
                    raise ExpressionError("only literal keys are supported inside [...]")
                self.take("]")
                path.append(_unquote(key) if key_kind == "str" else key)
            else:
                break
        if self.peek() == ("op", "("):
            raise ExpressionError(f"function calls such as {'.'.join(path)}() are not supported")
        frozen = tuple(path)
        return lambda attrs: attrs.lookup(frozen)


def _either_true(a: Evaluator, b: Evaluator) -> Evaluator:
    return lambda attrs: bool(a(attrs)) or bool(b(attrs))


def _both_true(a: Evaluator, b: Evaluator) -> Evaluator:
    return lambda attrs: bool(a(attrs)) and bool(b(attrs))


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def _compare(op: str, left: Evaluator, right: Evaluator) -> Evaluator:
    def compare(attrs: Attributes) -> bool:
        a, b = left(attrs), right(attrs)
        if isinstance(a, int) != isinstance(b, int) and a is not None and b is not None:
            a, b = str(a), str(b)
        if op == "==":
            return bool(a == b)
        if op == "!=":
            return bool(a != b)
        if a is None or b is None:
            return False
        if op == ">=":
            return bool(a >= b)
        if op == "<=":
            return bool(a <= b)
        if op == ">":
            return bool(a > b)
        return bool(a < b)

    return compare


def compile_expression(source: str) -> Expression:
    """Compile ``source`` or raise ``ExpressionError`` saying what is not supported."""
    if not source.strip():
        raise ExpressionError("empty expression")
    if len(source) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        return Expression(source, _Parser(source).parse())
    except ExpressionError as err:
        raise ExpressionError(f"{source!r}: {err}") from None
