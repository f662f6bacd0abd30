"""``wasmesh plugin init`` and ``wasmesh plugin test``: start a plugin project, and test it.

``init NAME --lang python|assemblyscript|c`` writes a buildable project with tests (see
``sdk.scaffold``). ``test DIR`` builds the project — so compile errors show before any test
runs — then runs its tests with pytest in a child process; tests written with
``sdk.testing.plugin_fixture`` run once on the Python source in CPython and once on the
built module (``--mode`` picks one).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from controlplane.cli import UsageError

_MODES_ENV = "WASMESH_TEST_MODES"


def register_plugin(plugin_subparsers: Any) -> None:
    """Add ``init`` and ``test`` under ``wasmesh plugin``."""
    init = plugin_subparsers.add_parser(
        "init",
        help="create a new plugin project (Python, AssemblyScript or C) with tests",
        description="Create NAME/ with a plugin that builds with `wasmesh plugin build` and tests that "
        "run with `wasmesh plugin test`.",
    )
    init.add_argument("name", metavar="NAME", help="project and plugin name (letters, digits, _ and -)")
    init.add_argument("--lang", choices=("python", "assemblyscript", "c"), default="python",
                      help="plugin language (default: python)")
    init.add_argument("--dir", metavar="PARENT", default=".", help="where to create NAME/ (default: here)")
    init.set_defaults(handler=_init)

    test = plugin_subparsers.add_parser(
        "test",
        help="build a plugin project and run its tests (Python plugins: on the source and on the .wasm)",
        description="Build DIR's plugin, then run its tests with pytest.",
    )
    test.add_argument("project", metavar="DIR", help="the plugin project (has plugin.py, plugin.ts or plugin.c)")
    test.add_argument("--tests", metavar="PATH",
                      help="tests to run (default: DIR/tests, else DIR/test_*.py; for plugins/NAME of the "
                      "wasmesh repository, tests/plugins/test_NAME.py)")
    test.add_argument("--mode", choices=("both", "python", "wasm"), default="both",
                      help="Python plugins: run tests on the source (python), the module (wasm) or both")
    test.add_argument("-k", metavar="EXPRESSION", help="only tests matching this pytest -k expression")
    test.add_argument("--pytest-args", metavar="ARGS", default="",
                      help="more arguments for pytest, as one string (e.g. '-x --tb=short')")
    test.set_defaults(handler=_test)


def _init(args: argparse.Namespace) -> int:
    from sdk.scaffold import ScaffoldError, init_project

    try:
        project = init_project(args.name, args.lang, args.dir)
    except ScaffoldError as err:
        raise UsageError(str(err)) from None
    print(f"created {project} ({args.lang})")
    for path in sorted(p for p in project.rglob("*") if p.is_file()):
        print(f"  {path.relative_to(project)}")
    print(f"next: wasmesh plugin test {project}")
    return 0


def _find_tests(project: Path, explicit: str | None) -> list[str]:
    if explicit is not None:
        if not Path(explicit).exists():
            raise UsageError(f"{explicit}: no such file or directory")
        return [explicit]
    if (project / "tests").is_dir():
        return [str(project / "tests")]
    found = sorted(str(p) for p in project.glob("test_*.py"))
    # a ready plugin of this repository (plugins/NAME) keeps its tests in tests/plugins/test_NAME.py
    ready = project.resolve().parent.parent / "tests" / "plugins" / f"test_{project.resolve().name}.py"
    if not found and project.resolve().parent.name == "plugins" and ready.is_file():
        found = [str(ready)]
    if not found:
        raise UsageError(f"{project}: no tests (expected {project / 'tests'}/ or test_*.py; or pass --tests)")
    return found


def _test(args: argparse.Namespace) -> int:
    from sdk.scaffold import ScaffoldError, build_project_report
    from sdk.toolchains import ToolchainMissing

    project = Path(args.project)
    if not project.is_dir():
        raise UsageError(f"{project}: not a directory")
    tests = _find_tests(project, args.tests)
    if args.mode != "python":
        try:
            built = build_project_report(project)
        except (ScaffoldError, ToolchainMissing) as err:
            raise UsageError(str(err)) from None
        state = "built" if built.rebuilt else "up to date"
        print(f"{built.language} plugin: {built.module} ({built.size} bytes, {state})", flush=True)
    extra = shlex.split(args.pytest_args)
    if args.k:
        extra += ["-k", args.k]
    env = dict(os.environ)
    sdk_home = str(Path(__file__).resolve().parents[2])  # the checkout or site-packages holding sdk/
    env["PYTHONPATH"] = os.pathsep.join(p for p in (sdk_home, env.get("PYTHONPATH", "")) if p)
    if args.mode != "both":
        env[_MODES_ENV] = args.mode
    command = [sys.executable, "-m", "pytest", *tests, "-q", *extra]
    return subprocess.run(command, env=env, check=False).returncode
