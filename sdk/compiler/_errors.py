"""The one error the compiler reports: where, what, and what to write instead."""

from __future__ import annotations

import ast


class CompileError(Exception):
    """Source outside the compilable subset (or ill-typed): ``file:line:col: message``."""

    def __init__(self, path: str, line: int, col: int, message: str) -> None:
        super().__init__(f"{path}:{line}:{col}: {message}")
        self.path = path
        self.line = line
        self.col = col
        self.message = message


def unsupported(construct: str, alternative: str) -> str:
    """The standard wording for a construct outside the subset."""
    return f"{construct} is not supported; write {alternative} instead"


def error_at(path: str, node: ast.AST | None, message: str) -> CompileError:
    line = getattr(node, "lineno", 1) if node is not None else 1
    col = getattr(node, "col_offset", 0) if node is not None else 0
    return CompileError(path, line, col + 1, message)
