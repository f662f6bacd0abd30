"""WAT plugins: hand-written edge cases, assembled in-process by wasmtime."""

from __future__ import annotations

from pathlib import Path

import wasmtime

from sdk.toolchains._errors import compile_failure


def build_wat(src: Path, out: Path) -> Path:
    """Assemble one ``.wat`` file into ``out``; return ``out``."""
    try:
        binary = wasmtime.wat2wasm(src.read_text(encoding="utf-8"))
    except wasmtime.WasmtimeError as exc:
        raise compile_failure(src, "wat2wasm", str(exc)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(bytes(binary))
    tmp.replace(out)
    return out
