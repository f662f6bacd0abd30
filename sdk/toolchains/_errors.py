"""Errors raised by the toolchain builders."""

from __future__ import annotations

from pathlib import Path

FIRST_ERROR_LINES = 12


class ToolchainError(Exception):
    """A plugin failed to build; the message names the source and the compiler's first errors."""


class ToolchainMissing(ToolchainError):
    """A compiler or runtime needed for a build is not installed on this machine."""


def compile_failure(source: Path, tool: str, output: str) -> ToolchainError:
    """Summarise compiler output so the first real error is visible without scrolling."""
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    error_lines = [line for line in lines if "error" in line.lower()]
    if error_lines:
        first = lines.index(error_lines[0])
        shown = lines[first : first + FIRST_ERROR_LINES]
    else:
        shown = lines[:FIRST_ERROR_LINES]
    detail = "\n".join(f"  {line}" for line in shown) or "  (no compiler output)"
    return ToolchainError(f"{source}: {tool} failed:\n{detail}")
