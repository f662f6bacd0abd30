"""``wasmesh plugin build``: turn plugin source into a proxy-wasm module.

Python plugins go through the SDK's compiler (no CPython inside the module); C and WAT
sources go through the SDK's toolchains. A compile error is one line,
``file:line:col: what is wrong; what to write instead``, and exit status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from controlplane.cli import UsageError


def register_plugin(plugin_subparsers: Any) -> None:
    """Add ``build`` under ``wasmesh plugin``."""
    parser = plugin_subparsers.add_parser(
        "build",
        help="compile a plugin (Python, AssemblyScript, C or WAT, or a project directory) to a .wasm module",
        description="Compile a plugin to a proxy-wasm ABI 0.2.1 module. Python plugins use the "
        "wasmesh SDK (sdk.types, sdk.proxywasm) and are compiled without CPython inside.",
    )
    parser.add_argument("source", metavar="SOURCE",
                        help="plugin.py, plugin.ts, plugin.c, plugin.wat, or a project made by `wasmesh plugin init`")
    parser.add_argument("-o", "--output", metavar="OUT.wasm", help="where to write the module (default: SOURCE with .wasm)")
    parser.add_argument("--wat", action="store_true", help="Python only: write the generated WAT text instead")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    source = Path(args.source)
    if source.is_dir():
        return _build_project(source, args)
    if not source.is_file():
        raise UsageError(f"{source}: no such file")
    output = Path(args.output) if args.output else source.with_suffix(".wat" if args.wat else ".wasm")
    suffix = source.suffix.lower()
    if suffix == ".py":
        _build_python(source, output, args.wat)
    elif args.wat:
        raise UsageError("--wat applies to Python plugins only")
    elif suffix == ".c":
        _build_with_toolchain("build_c", source, output)
    elif suffix == ".ts":
        from sdk.scaffold import default_npm_workdir

        _build_with_toolchain("build_assemblyscript", source, output, default_npm_workdir(source.parent))
    elif suffix == ".wat":
        _build_with_toolchain("build_wat", source, output)
    else:
        raise UsageError(f"{source}: unknown plugin language (expected .py, .ts, .c or .wat)")
    print(f"wrote {output} ({output.stat().st_size} bytes)")
    return 0


def _build_python(source: Path, output: Path, wat: bool) -> None:
    from sdk.compiler import CompileError, compile_file, compile_to_wat

    try:
        if wat:
            output.write_text(compile_to_wat(source), encoding="utf-8")
        else:
            output.write_bytes(compile_file(source))
    except CompileError as err:
        raise UsageError(str(err)) from None


def _build_with_toolchain(builder: str, source: Path, output: Path, *extra: Any) -> None:
    from sdk import toolchains

    try:
        getattr(toolchains, builder)(source, output, *extra)
    except toolchains.ToolchainError as err:
        raise UsageError(str(err)) from None


def _build_project(project: Path, args: argparse.Namespace) -> int:
    """A project directory (``wasmesh plugin init``): its language decides the toolchain."""
    from sdk.scaffold import ScaffoldError, build_project_report
    from sdk.toolchains import ToolchainMissing

    if args.wat:
        raise UsageError("--wat applies to a Python source file, not a project")
    output = Path(args.output) if args.output else project / "build" / "plugin.wasm"
    try:
        built = build_project_report(project, output)
    except (ScaffoldError, ToolchainMissing) as err:
        raise UsageError(str(err)) from None
    print(f"wrote {built.module} ({built.size} bytes, {built.language})")
    return 0
