"""The plugin compiler: a typed subset of Python to a proxy-wasm ABI 0.2.1 module.

Part of the SDK. ``compile_file("plugin.py")`` returns the bytes of a ``.wasm`` module that
runs in our sidecar and in Envoy: no CPython inside, its own allocator and garbage
collector (see ``_rt_core``), exports for every ``proxy_on_*`` callback routed through
``sdk.entrypoint`` to the plugin's contexts. Source outside the subset is rejected with a
``CompileError`` naming ``file:line:col``, the construct and what to write instead.
``wasmesh plugin build`` is its command line.
"""

from __future__ import annotations

from pathlib import Path

import wasmtime

from sdk.compiler._errors import CompileError
from sdk.compiler._module import build_wat
from sdk.compiler._program import Program


def compile_to_wat(path: str | Path, source: str | None = None) -> str:
    """The module as WAT text (``source`` overrides reading ``path``)."""
    return build_wat(Program(Path(path), source))


def compile_file(path: str | Path, source: str | None = None) -> bytes:
    """Compile a plugin file (and the modules it imports) to a ``.wasm`` module."""
    wat = compile_to_wat(path, source)
    try:
        return bytes(wasmtime.wat2wasm(wat))
    except wasmtime.WasmtimeError as err:  # a compiler bug, not a user error
        raise RuntimeError(f"internal compiler error: generated WAT is invalid: {err}") from err


__all__ = ["CompileError", "compile_file", "compile_to_wat"]
