"""sdk.scaffold and `wasmesh plugin init` / `wasmesh plugin test`: every scaffold builds and passes its tests."""

from __future__ import annotations

import argparse
import os
import re
import shutil
from pathlib import Path

import pytest

from controlplane.cli import UsageError
from controlplane.cli._plugin_project import register_plugin
from sdk.scaffold import (
    LANGUAGES,
    ScaffoldError,
    build_plugin_tree,
    build_project_report,
    init_project,
    project_language,
)
from sdk.testing import HostEmulator
from tests._tools import ROOT, require_tool

EXPECTED_FILES = {
    "python": [".gitignore", "README.md", "plugin.py", "tests/test_plugin.py"],
    "assemblyscript": [".gitignore", "README.md", "plugin.ts", "tests/test_plugin.py"],
    "c": [".gitignore", "README.md", "plugin.c", "proxy_wasm_abi.h", "tests/test_plugin.py"],
}


def cli(*argv: str) -> int:
    """The plugin commands as `wasmesh plugin ...` parses them."""
    parser = argparse.ArgumentParser(prog="wasmesh plugin")
    register_plugin(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    return int(args.handler(args))


def need_toolchain(language: str) -> None:
    if language == "c":
        require_tool("clang", lookup=lambda: shutil.which("clang-14") or shutil.which("clang"),
                     hint="apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32")
    elif language == "assemblyscript":
        require_tool("npm", hint="apt-get install nodejs npm")


@pytest.fixture
def npm_workdir(monkeypatch: pytest.MonkeyPatch) -> None:
    """AssemblyScript projects share the repository's pinned npm install (build/npm)."""
    monkeypatch.setenv("WASMESH_NPM_WORKDIR", str(ROOT / "build" / "npm"))


@pytest.mark.parametrize("language", LANGUAGES)
def test_init_writes_the_project(tmp_path: Path, language: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("init", "my-plugin", "--lang", language, "--dir", str(tmp_path)) == 0
    project = tmp_path / "my-plugin"
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()) == EXPECTED_FILES[language]
    assert project_language(project) == language
    assert f"created {project} ({language})" in capsys.readouterr().out
    readme = (project / "README.md").read_text()
    assert readme.startswith("# my-plugin\n") and "wasmesh plugin test ." in readme
    assert "__NAME__" not in "".join(p.read_text() for p in project.rglob("*") if p.is_file())


@pytest.mark.parametrize("language", LANGUAGES)
def test_each_scaffold_builds_and_its_tests_pass(tmp_path: Path, language: str, npm_workdir: None,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    need_toolchain(language)
    project = init_project("greeter", language, tmp_path)
    assert cli("test", str(project)) == 0
    out = capfd.readouterr().out
    assert f"{language} plugin: {project / 'build' / 'plugin.wasm'}" in out
    passed = {"python": "6 passed", "assemblyscript": "3 passed", "c": "3 passed"}[language]
    assert passed in out  # python: every test once on the source, once on the module
    # the module is a real proxy-wasm plugin: it runs in the host and does what the README says
    with HostEmulator.load(project / "build" / "plugin.wasm", plugin_config="" if language == "python" else "yo") as host:
        host.start_plugin()
        stream = host.initialize_http_context()
        host.call_on_request_headers(stream, {":path": "/"}, True)
        greeting = "hello" if language == "python" else "yo"
        assert ("x-greeting", greeting) in host.current_request_headers(stream)


def test_a_failing_test_fails_the_command(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    project = init_project("greeter", "python", tmp_path)
    plugin = project / "plugin.py"
    plugin.write_text(plugin.read_text().replace('"x-plugin", "greeter"', '"x-plugin", "someone else"'))
    assert cli("test", str(project)) == 1
    assert "2 failed, 4 passed" in capfd.readouterr().out


def test_a_compile_error_stops_before_the_tests(tmp_path: Path) -> None:
    project = init_project("greeter", "python", tmp_path)
    plugin = project / "plugin.py"
    plugin.write_text(plugin.read_text().replace("        self.greeting = \"hello\"\n",
                                                 "        self.greeting = \"hello\"\n        f = lambda: 1\n"))
    with pytest.raises(UsageError, match=r"plugin\.py:\d+:\d+: .*lambda"):
        cli("test", str(project))


def test_mode_python_runs_the_source_only_without_building(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    project = init_project("greeter", "python", tmp_path)
    assert cli("test", str(project), "--mode", "python") == 0
    assert "3 passed" in capfd.readouterr().out
    assert not (project / "build").exists()


def test_builds_are_incremental(tmp_path: Path) -> None:
    project = init_project("greeter", "python", tmp_path)
    first = build_project_report(project)
    assert first.rebuilt and first.size == first.module.stat().st_size > 0
    assert not build_project_report(project).rebuilt
    (project / "helper.py").write_text("VALUE = 1\n")  # any source of the project counts
    assert build_project_report(project).rebuilt


def test_the_ready_plugins_build_as_a_tree(tmp_path: Path) -> None:
    built = build_plugin_tree(ROOT / "plugins", tmp_path)
    names = sorted(p.module.name for p in built)
    assert len(names) >= 8 and "rate_limit.wasm" in names
    for plugin in built:
        assert plugin.language == "python"
        assert plugin.module.read_bytes()[:4] == b"\0asm"


@pytest.mark.parametrize(("name", "message"), [
    ("1abc", "'1abc' is not a valid plugin name"),
    ("a b", "'a b' is not a valid plugin name"),
    ("../x", "'../x' is not a valid plugin name"),
])
def test_bad_names_are_refused(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(ScaffoldError, match=message.replace(".", r"\.")):
        init_project(name, "python", tmp_path)


def test_an_existing_project_is_not_overwritten(tmp_path: Path) -> None:
    init_project("greeter", "c", tmp_path)
    with pytest.raises(UsageError, match="already exists and is not empty"):
        cli("init", "greeter", "--dir", str(tmp_path))


def test_unknown_language_and_sourceless_directories(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match="unknown language 'rust'"):
        init_project("x", "rust", tmp_path)
    with pytest.raises(ScaffoldError, match="expected exactly one plugin source"):
        project_language(tmp_path)
    with pytest.raises(UsageError, match="no tests"):
        cli("test", str(tmp_path))


def test_npm_workdir_defaults_inside_the_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sdk.scaffold import default_npm_workdir

    monkeypatch.delenv("WASMESH_NPM_WORKDIR", raising=False)
    assert default_npm_workdir(tmp_path) == tmp_path / "build" / "npm"
    monkeypatch.setenv("WASMESH_NPM_WORKDIR", os.fspath(tmp_path / "shared"))
    assert default_npm_workdir(tmp_path) == tmp_path / "shared"


def test_selecting_tests_and_passing_pytest_arguments(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    project = init_project("greeter", "python", tmp_path)
    assert cli("test", str(project), "--mode", "wasm", "-k", "greeting", "--pytest-args", "-x -p no:cacheprovider") == 0
    assert "1 passed, 2 deselected" in capfd.readouterr().out


def test_a_ready_plugin_is_tested_with_its_tests_from_tests_plugins(capfd: pytest.CaptureFixture[str]) -> None:
    assert cli("test", str(ROOT / "plugins" / "cors"), "--mode", "python") == 0
    out = capfd.readouterr().out
    assert re.search(r"\b[1-9]\d* passed", out) and "failed" not in out
    assert not (ROOT / "plugins" / "cors" / "build").exists()  # python mode builds nothing
