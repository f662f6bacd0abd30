"""Plugin projects: scaffold a new plugin in Python, AssemblyScript or C, and build any of them.

Part of the SDK, behind ``wasmesh plugin init`` / ``wasmesh plugin test``. A project is a
directory with one plugin source (``plugin.py``, ``plugin.ts`` or ``plugin.c``), ``tests/``
that run under ``sdk.testing`` and a README; ``build_project`` compiles it with the
language's real toolchain (the wasmesh compiler, ``asc`` with ``@solo-io/proxy-runtime``,
clang for wasm32-wasi) into ``build/plugin.wasm``, incrementally. ``build_plugin_tree``
builds a folder of projects (the ready plugins in ``plugins/``);
``python -m sdk.scaffold build-plugins --out build/plugins`` is its command line.
"""

from sdk.scaffold._project import (
    LANGUAGES,
    BuiltPlugin,
    ScaffoldError,
    build_plugin_tree,
    build_project,
    build_project_report,
    check_name,
    default_npm_workdir,
    init_project,
    project_language,
)

__all__ = [
    "LANGUAGES",
    "BuiltPlugin",
    "ScaffoldError",
    "build_plugin_tree",
    "build_project",
    "build_project_report",
    "check_name",
    "default_npm_workdir",
    "init_project",
    "project_language",
]
