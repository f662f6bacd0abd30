"""C plugins: clang targeting wasm32-wasi as a WASI reactor (exports ``_initialize``)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from sdk.toolchains._errors import ToolchainMissing, compile_failure

CLANG_NAMES = ("clang-14", "clang")
C_FLAGS = (
    "--target=wasm32-wasi",
    "-O2",
    "-mexec-model=reactor",
    "-std=gnu11",
    "-Wall",
    "-Werror=implicit-function-declaration",
    # Every proxy-wasm host needs an allocator export to hand data back to the guest.
    "-Wl,--export=malloc",
    "-Wl,--export=free",
)


def find_clang() -> str:
    """Return the clang executable to use, or raise ``ToolchainMissing`` with the install hint."""
    for name in CLANG_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise ToolchainMissing(
        "C toolchain missing: no clang-14/clang on PATH "
        "(Debian: apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32)"
    )


def clang_identity() -> str:
    """Version line of the compiler, folded into build stamps so a compiler change rebuilds."""
    result = subprocess.run([find_clang(), "--version"], capture_output=True, text=True, check=False)
    return result.stdout.splitlines()[0] if result.stdout else "unknown clang"


def build_c(src: Path, out: Path, include_dirs: Sequence[Path] = ()) -> Path:
    """Compile one C source into a proxy-wasm module at ``out``; return ``out``."""
    clang = find_clang()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    cmd = [clang, *C_FLAGS, *(f"-I{d}" for d in include_dirs), "-o", str(tmp), str(src)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        output = result.stderr + result.stdout
        if "wasm-ld" in output and ("not found" in output.lower() or "No such file" in output):
            raise ToolchainMissing("C toolchain missing: wasm-ld not found (Debian: apt-get install lld)")
        if "libclang_rt.builtins-wasm32" in output:
            raise ToolchainMissing(
                "C toolchain missing: wasm32 compiler-rt (Debian: apt-get install libclang-rt-14-dev-wasm32)"
            )
        if "'stdlib.h' file not found" in output or "'stdint.h' file not found" in output:
            raise ToolchainMissing("C toolchain missing: WASI sysroot (Debian: apt-get install wasi-libc)")
        raise compile_failure(src, "clang", output)
    tmp.replace(out)
    return out
