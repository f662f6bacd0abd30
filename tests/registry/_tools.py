"""Helpers for tests that need external tools or generated modules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests._tools import require_tool as _shared_require_tool

DATA = Path(__file__).parent / "data"


def require_tool(name: str, hint: str) -> str:
    """Path of ``name``; skip when missing, but fail under CI=true (the suite-wide rule)."""
    return _shared_require_tool(name, hint=hint)


def require_module(name: str, hint: str) -> None:
    try:
        __import__(name)
    except ImportError:
        message = f"python package {name} is not installed ({hint})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def build_wat(source: str) -> bytes:
    """Compile WAT text with wasmtime's compiler (the real toolchain for WAT)."""
    import wasmtime

    return bytes(wasmtime.wat2wasm(source))


def sized_module(size: int, seed: int = 1) -> bytes:
    """A valid module of about ``size`` bytes: a data segment of pseudo-random bytes."""
    import random

    rng = random.Random(seed)
    payload = bytes(rng.getrandbits(8) for _ in range(size))
    escaped = "".join(f"\\{b:02x}" for b in payload)
    pages = size // 65536 + 2
    return build_wat(f'(module (memory (export "memory") {pages}) (data (i32.const 0) "{escaped}") '
                     f'(func (export "proxy_abi_version_0_2_1")))')
