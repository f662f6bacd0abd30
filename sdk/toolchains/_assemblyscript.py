"""AssemblyScript plugins: ``asc`` 0.14 with the ``@solo-io/proxy-runtime`` SDK.

The npm packages are pinned in ``assemblyscript/package.json`` (and its lock file) next to
this module and installed into a build work directory, never into the source tree. ``asc``
resolves ``@solo-io/...`` imports from ``node_modules`` of its working directory, so each
build runs with that directory as cwd and the plugin source passed by absolute path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from sdk.toolchains._errors import ToolchainError, ToolchainMissing, compile_failure

PACKAGE_DIR = Path(__file__).resolve().parent / "assemblyscript"
ASC_FLAGS = ("--use", "abort=abort_proc_exit", "-O3")
NPM_TIMEOUT_S = 600
ASC_TIMEOUT_S = 300


def pinned_versions() -> dict[str, str]:
    """Package name → exact version, as committed in ``package.json``."""
    manifest = json.loads((PACKAGE_DIR / "package.json").read_text(encoding="utf-8"))
    deps: dict[str, str] = manifest["dependencies"]
    return dict(deps)


def _installed_version(workdir: Path, package: str) -> str | None:
    manifest = workdir / "node_modules" / package / "package.json"
    try:
        version = json.loads(manifest.read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError):
        return None
    return version if isinstance(version, str) else None


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolchainMissing(f"AssemblyScript toolchain missing: no {tool} on PATH ({hint})")
    return path


def ensure_npm_workdir(workdir: Path) -> Path:
    """Install the pinned npm packages into ``workdir`` unless they are already there."""
    _require("node", "Debian: apt-get install nodejs npm")
    workdir = workdir.resolve()
    wanted = pinned_versions()
    if all(_installed_version(workdir, name) == version for name, version in wanted.items()):
        return workdir
    npm = _require("npm", "Debian: apt-get install nodejs npm")
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        if (PACKAGE_DIR / name).exists():
            shutil.copyfile(PACKAGE_DIR / name, workdir / name)
    verb = "ci" if (workdir / "package-lock.json").exists() else "install"
    cmd = [npm, verb, "--no-audit", "--no-fund", "--loglevel=error"]
    try:
        result = subprocess.run(
            cmd, cwd=workdir, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise ToolchainError(f"npm {verb} in {workdir} did not finish within {NPM_TIMEOUT_S}s") from None
    if result.returncode != 0:
        raise compile_failure(PACKAGE_DIR / "package.json", f"npm {verb}", result.stderr + result.stdout)
    for name, version in wanted.items():
        if _installed_version(workdir, name) != version:
            raise ToolchainError(f"npm {verb} in {workdir} did not install {name}@{version}")
    return workdir


def asc_identity(workdir: Path) -> str:
    """Pinned package versions, folded into build stamps so an SDK bump rebuilds."""
    return ",".join(f"{name}@{version}" for name, version in sorted(pinned_versions().items()))


def build_assemblyscript(src: Path, out: Path, workdir: Path) -> Path:
    """Compile one AssemblyScript plugin into ``out`` using packages installed in ``workdir``."""
    workdir = ensure_npm_workdir(workdir.resolve())
    node = _require("node", "Debian: apt-get install nodejs npm")
    asc = workdir / "node_modules" / "assemblyscript" / "bin" / "asc"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    cmd = [node, str(asc), str(src.resolve()), "-b", str(tmp.resolve()), *ASC_FLAGS]
    try:
        result = subprocess.run(
            cmd, cwd=workdir, capture_output=True, text=True, timeout=ASC_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise ToolchainError(f"{src}: asc did not finish within {ASC_TIMEOUT_S}s") from None
    if result.returncode != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        raise compile_failure(src, "asc", result.stderr + result.stdout)
    tmp.replace(out)
    return out
