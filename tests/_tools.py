"""Helpers shared by the whole suite: external tools and the built test plugins.

- ``require_tool(name)``: path of an external tool, or skip — and under ``CI=true`` fail,
  because CI must never pass by skipping.
- ``plugin_path(name)``: the conformance plugin ``tests/data/plugins/*/<name>.*`` compiled
  into ``build/plugins/<name>.wasm`` by the repository's own toolchains (built once per
  session, incrementally; ``make test`` has already built them).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_SOURCES = ROOT / "tests" / "data" / "plugins"
PLUGIN_BUILD = ROOT / "build" / "plugins"

_build_lock = threading.Lock()
_built = False


def require_tool(name: str, *, lookup: Callable[[], str | None] | None = None, hint: str = "") -> str:
    """Path of an external tool, or skip the test (fail it when CI=true) if it is missing.

    ``lookup`` replaces the default search on PATH (e.g. for a binary inside a wheel).
    """
    path = lookup() if lookup is not None else shutil.which(name)
    if path:
        return path
    reason = f"{name} is not installed" + (f": {hint}" if hint else "")
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a missing tool fails the run)")
    pytest.skip(reason)


def plugin_path(name: str) -> Path:
    """The compiled conformance plugin ``name`` (building the tree on first use)."""
    global _built
    with _build_lock:
        if not _built:
            from sdk.toolchains import ToolchainMissing, build_tree

            try:
                build_tree(PLUGIN_BUILD, PLUGIN_SOURCES, ROOT / "build" / "npm")
            except ToolchainMissing as err:
                require_tool(str(err.args[0]) if err.args else "toolchain", lookup=lambda: None, hint=str(err))
            _built = True
    path = PLUGIN_BUILD / f"{name}.wasm"
    if not path.exists():
        raise FileNotFoundError(f"no test plugin named {name!r} in {PLUGIN_SOURCES}")
    return path
