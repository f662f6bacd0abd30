"""Plugin projects: create one (``init_project``), find its language, build it (``build_project``).

A project is a directory holding one plugin source — ``plugin.py`` (the wasmesh Python
SDK), ``plugin.ts`` (AssemblyScript) or ``plugin.c`` (C) — with ``tests/`` and a README.
It builds to ``build/plugin.wasm`` unless told otherwise. Builds are incremental: a stamp
next to the module holds the hash of the sources and the toolchain, and an unchanged
project is not compiled again.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from sdk.scaffold import _templates as templates

#: ``--lang`` value → plugin source file name.
LANGUAGES: dict[str, str] = {"python": "plugin.py", "assemblyscript": "plugin.ts", "c": "plugin.c"}
STAMP_DIR = ".stamps"
NPM_WORKDIR_ENV = "WASMESH_NPM_WORKDIR"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
_SDK_ROOT = Path(__file__).resolve().parent.parent


class ScaffoldError(Exception):
    """A project cannot be created or built; the message says which file or name and why."""


@dataclass(frozen=True)
class BuiltPlugin:
    """Where a project's module is, how big, and whether this call compiled it."""

    project: Path
    language: str
    module: Path
    size: int
    rebuilt: bool


def check_name(name: str) -> str:
    """A project name: a letter, then letters, digits, ``_`` or ``-`` (it names a directory
    and the plugin)."""
    if not _NAME.match(name):
        raise ScaffoldError(
            f"{name!r} is not a valid plugin name: start with a letter, then letters, digits, '_' or '-'"
        )
    return name


def _files(name: str, language: str) -> dict[str, str]:
    ident = name.replace("-", "_")
    common = {".gitignore": templates.GITIGNORE}
    if language == "python":
        files = {
            "plugin.py": templates.PYTHON_PLUGIN,
            "tests/test_plugin.py": templates.PYTHON_TESTS,
        }
        readme = {"__LANGUAGE__": "Python, wasmesh SDK", "__CONFIG__": 'JSON, `{"greeting": "hi"}`',
                  "__EXAMPLE__": '{"greeting": "hi"}', "__PLUGIN_CONFIG__": "{greeting: hi}",
                  "__MODES__": " (CPython and .wasm)", "__EXTRA__": templates.PYTHON_EXTRA}
    elif language == "assemblyscript":
        files = {"plugin.ts": templates.ASSEMBLYSCRIPT_PLUGIN, "tests/test_plugin.py": templates.WASM_TESTS}
        readme = {"__LANGUAGE__": "AssemblyScript, @solo-io/proxy-runtime", "__CONFIG__": "plain text, the greeting",
                  "__EXAMPLE__": "hi", "__PLUGIN_CONFIG__": "hi", "__MODES__": "",
                  "__EXTRA__": templates.ASSEMBLYSCRIPT_EXTRA}
    else:
        files = {
            "plugin.c": templates.C_PLUGIN,
            "proxy_wasm_abi.h": templates.C_HEADER,
            "tests/test_plugin.py": templates.WASM_TESTS,
        }
        readme = {"__LANGUAGE__": "C, clang wasm32-wasi", "__CONFIG__": "plain text, the greeting",
                  "__EXAMPLE__": "hi", "__PLUGIN_CONFIG__": "hi", "__MODES__": "", "__EXTRA__": templates.C_EXTRA}
    readme["__SOURCE__"] = LANGUAGES[language]
    text = templates.README
    for marker, value in readme.items():
        text = text.replace(marker, value)
    files["README.md"] = text
    files.update(common)
    return {path: body.replace("__NAME__", name).replace("__IDENT__", ident) for path, body in files.items()}


def init_project(name: str, language: str = "python", parent: str | Path = ".") -> Path:
    """Create ``parent/name`` with a buildable, tested plugin in ``language``; returns its path."""
    check_name(name)
    if language not in LANGUAGES:
        raise ScaffoldError(f"unknown language {language!r}: use one of {', '.join(LANGUAGES)}")
    project = Path(parent) / name
    if project.exists() and any(project.iterdir()):
        raise ScaffoldError(f"{project}: already exists and is not empty")
    for relative, body in _files(name, language).items():
        path = project / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
    return project


def project_language(project: str | Path) -> str:
    """The language of the project at ``project``, from its plugin source file."""
    root = Path(project)
    if not root.is_dir():
        raise ScaffoldError(f"{root}: not a directory")
    found = [lang for lang, source in LANGUAGES.items() if (root / source).is_file()]
    if len(found) != 1:
        names = ", ".join(LANGUAGES.values())
        what = "none" if not found else "several"
        raise ScaffoldError(f"{root}: expected exactly one plugin source ({names}), found {what}")
    return found[0]


def _sources(project: Path, language: str) -> list[Path]:
    patterns = {"python": ("*.py",), "assemblyscript": ("*.ts",), "c": ("*.c", "*.h")}[language]
    return sorted(p for pattern in patterns for p in project.glob(pattern) if p.is_file())


def _toolchain_identity(language: str, npm_workdir: Path) -> str:
    from sdk import toolchains

    if language == "python":
        digest = hashlib.sha256()
        for path in sorted(_SDK_ROOT.glob("*.py")) + sorted((_SDK_ROOT / "compiler").glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        return "wasmesh-compiler " + digest.hexdigest()
    if language == "c":
        from sdk.toolchains._c import C_FLAGS, clang_identity

        return " ".join([clang_identity(), *C_FLAGS])
    toolchains.ensure_npm_workdir(npm_workdir)
    from sdk.toolchains._assemblyscript import ASC_FLAGS, asc_identity

    return " ".join([asc_identity(npm_workdir), *ASC_FLAGS])


def default_npm_workdir(project: Path) -> Path:
    """Where the AssemblyScript packages go: ``$WASMESH_NPM_WORKDIR`` or ``<project>/build/npm``."""
    configured = os.environ.get(NPM_WORKDIR_ENV)
    return Path(configured) if configured else project / "build" / "npm"


def _compile(language: str, project: Path, output: Path, npm_workdir: Path) -> None:
    from sdk import toolchains

    source = project / LANGUAGES[language]
    if language == "python":
        from sdk.compiler import CompileError, compile_file

        try:
            module = compile_file(source)
        except CompileError as err:
            raise ScaffoldError(str(err)) from None
        output.parent.mkdir(parents=True, exist_ok=True)
        temporary = output.with_name(output.name + ".tmp")
        temporary.write_bytes(module)
        temporary.replace(output)
        return
    try:
        if language == "c":
            toolchains.build_c(source, output, include_dirs=[project])
        else:
            toolchains.build_assemblyscript(source, output, npm_workdir)
    except toolchains.ToolchainError as err:
        raise ScaffoldError(str(err)) from None


def build_project(
    project: str | Path, output: str | Path | None = None, *, npm_workdir: str | Path | None = None
) -> Path:
    """Build the project into ``output`` (default ``<project>/build/plugin.wasm``); returns it."""
    return build_project_report(project, output, npm_workdir=npm_workdir).module


def build_project_report(
    project: str | Path, output: str | Path | None = None, *, npm_workdir: str | Path | None = None
) -> BuiltPlugin:
    """As :func:`build_project`, saying whether it compiled and how big the module is.

    Raises ``ScaffoldError`` (a compile error with ``file:line:col``, a toolchain failure)
    or ``sdk.toolchains.ToolchainMissing`` when the language's toolchain is not installed.
    """
    root = Path(project).resolve()
    language = project_language(root)
    module = Path(output) if output is not None else root / "build" / "plugin.wasm"
    workdir = Path(npm_workdir) if npm_workdir is not None else default_npm_workdir(root)
    digest = hashlib.sha256(f"{language}\0{_toolchain_identity(language, workdir)}\0".encode())
    for path in _sources(root, language):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    fingerprint = digest.hexdigest()
    stamp = module.parent / STAMP_DIR / f"{module.stem}.sha256"
    if module.exists() and stamp.exists() and stamp.read_text().strip() == fingerprint:
        return BuiltPlugin(root, language, module, module.stat().st_size, rebuilt=False)
    stamp.unlink(missing_ok=True)
    _compile(language, root, module, workdir)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint + "\n")
    return BuiltPlugin(root, language, module, module.stat().st_size, rebuilt=True)


def build_plugin_tree(source_root: str | Path, out_dir: str | Path) -> list[BuiltPlugin]:
    """Build every project directory under ``source_root`` into ``out_dir/<name>.wasm``."""
    root = Path(source_root)
    projects = sorted(p for p in root.iterdir() if p.is_dir() and any((p / s).is_file() for s in LANGUAGES.values()))
    if not projects:
        raise ScaffoldError(f"{root}: no plugin projects (directories with {', '.join(LANGUAGES.values())})")
    return [build_project_report(p, Path(out_dir) / f"{p.name}.wasm") for p in projects]
