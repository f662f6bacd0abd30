"""Compiled copies of the request-path modules, used only while they match their sources.

Why: about two thirds of the sidecar's CPU per proxied request is Python work, and the same
source compiled by Cython runs it about a third faster. The copies are built by
``python -m wasmhost._native_build`` (``make native``) into ``wasmhost/_compiled/<package>/``
with a manifest of the sha256 of each source they came from. A package puts that directory
first on its ``__path__`` only when the manifest was made for this interpreter and every
source still hashes the same, so an edited module is never shadowed by a stale build: the
package then runs as plain Python. ``WASMESH_PURE_PYTHON=1`` turns the copies off.
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parent
COMPILED_ROOT = PACKAGE_ROOT / "_compiled"
MANIFEST_NAME = "manifest.json"
#: how the copies are built (directives, flags, module list): copies from another builder are stale
BUILDER = PACKAGE_ROOT / "_native_build.py"
DISABLE_ENV = "WASMESH_PURE_PYTHON"

#: package name -> (its source directory, the subdirectory of ``_compiled`` holding its copies)
PACKAGES: dict[str, tuple[Path, str]] = {
    "wasmhost": (PACKAGE_ROOT, "core"),
    "wasmhost.sidecar": (PACKAGE_ROOT / "sidecar", "sidecar"),
}

#: what each package's compiled copies are active for, after its ``activate`` ran
ACTIVE: dict[str, bool] = {}


def extension_suffix() -> str:
    """The file suffix this interpreter loads extension modules from."""
    return str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")


def module_source(source_dir: Path, name: str) -> Path:
    """A module's source: Python compiled by Cython, Cython written for the purpose, or C."""
    python = source_dir / f"{name}.py"
    if python.exists():
        return python
    for suffix in (".pyx", ".c"):
        other = source_dir / f"{name}{suffix}"
        if other.exists():
            return other
    return python


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def builder_digest() -> str | None:
    try:
        return source_digest(BUILDER)
    except OSError:
        return None


def read_manifest(compiled_dir: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((compiled_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def stale_modules(source_dir: Path, compiled_dir: Path) -> list[str] | None:
    """Modules whose compiled copy no longer matches its source; None when nothing is built.

    A copy built for another interpreter or by another version of the builder counts as stale,
    as does a missing copy or source.
    """
    manifest = read_manifest(compiled_dir)
    if manifest is None:
        return None
    modules = manifest.get("modules")
    if not isinstance(modules, dict) or not modules:
        return None
    suffix = extension_suffix()
    if manifest.get("ext_suffix") != suffix or manifest.get("builder") != builder_digest():
        return sorted(modules)
    stale = []
    for name, digest in modules.items():
        source = module_source(source_dir, name)
        try:
            current = source_digest(source)
        except OSError:
            current = None
        if current != digest or not (compiled_dir / f"{name}{suffix}").is_file():
            stale.append(name)
    return stale


def activate(package_path: list[str], package: str) -> bool:
    """Put the package's compiled copies first on its ``__path__`` when all of them are current."""
    ACTIVE[package] = False
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return False
    source_dir, subdir = PACKAGES[package]
    compiled_dir = COMPILED_ROOT / subdir
    if stale_modules(source_dir, compiled_dir) != []:
        return False
    package_path.insert(0, str(compiled_dir))
    ACTIVE[package] = True
    return True


def status() -> dict[str, Any]:
    """Which packages run compiled copies, and which modules are stale (for benchmarks and tools)."""
    report: dict[str, Any] = {}
    for package, (source_dir, subdir) in PACKAGES.items():
        stale = stale_modules(source_dir, COMPILED_ROOT / subdir)
        report[package] = {
            "active": ACTIVE.get(package, False),
            "built": stale is not None,
            "stale": stale or [],
        }
    return report
