"""Toolchains: build proxy-wasm modules from source with real compilers.

Part of the SDK. The test and sample plugins of this repository are never checked in as
binaries; they are compiled here from C (clang ``--target=wasm32-wasi``), AssemblyScript
(``asc`` with the ``@solo-io/proxy-runtime`` SDK, pinned in ``assemblyscript/package.json``)
and WAT (``wasmtime.wat2wasm``). ``build_tree`` builds the conformance plugin tree
incrementally; ``python -m sdk.toolchains build-tree --out build/plugins`` is its CLI.
"""

from sdk.toolchains._assemblyscript import build_assemblyscript, ensure_npm_workdir
from sdk.toolchains._c import build_c
from sdk.toolchains._errors import ToolchainError, ToolchainMissing
from sdk.toolchains._tree import BuildResult, build_tree, discover_plugins
from sdk.toolchains._wat import build_wat

__all__ = [
    "BuildResult",
    "ToolchainError",
    "ToolchainMissing",
    "build_assemblyscript",
    "build_c",
    "build_tree",
    "build_wat",
    "discover_plugins",
    "ensure_npm_workdir",
]
