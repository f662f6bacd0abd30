"""Build a whole plugin tree incrementally.

Layout of a tree (``tests/data/plugins`` in this repository)::

    c/*.c       C plugins; headers in c/include/ are on the include path
    as/*.ts     AssemblyScript plugins (@solo-io/proxy-runtime)
    wat/*.wat   hand-written WebAssembly text

Naming rule: every source ``<lang>/<stem>.<ext>`` becomes ``<out_dir>/<stem>.wasm``; stems must
be unique across the three folders (a clash is an error). A build is skipped when the stamp
``<out_dir>/.stamps/<stem>.sha256`` matches the hash of the source, the shared headers and the
toolchain identity, and the module exists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from sdk.toolchains._assemblyscript import ASC_FLAGS, asc_identity, build_assemblyscript, ensure_npm_workdir
from sdk.toolchains._c import C_FLAGS, build_c, clang_identity, find_clang
from sdk.toolchains._errors import ToolchainError
from sdk.toolchains._wat import build_wat

LANGUAGES = {"c": ".c", "as": ".ts", "wat": ".wat"}
STAMP_DIR = ".stamps"


@dataclass(frozen=True)
class BuildResult:
    """Outcome for one plugin: where its module is and whether this run compiled it."""

    name: str
    language: str
    source: Path
    module: Path
    rebuilt: bool


def discover_plugins(src_root: Path) -> list[tuple[str, Path]]:
    """All ``(language, source)`` pairs under ``src_root``, sorted; raises on duplicate stems."""
    found: list[tuple[str, Path]] = []
    seen: dict[str, Path] = {}
    for language, suffix in LANGUAGES.items():
        folder = src_root / language
        if not folder.is_dir():
            continue
        for source in sorted(folder.glob(f"*{suffix}")):
            if source.stem in seen:
                raise ToolchainError(
                    f"{source}: plugin name {source.stem!r} already used by {seen[source.stem]}"
                )
            seen[source.stem] = source
            found.append((language, source))
    return found


def _hash_files(digest: hashlib._Hash, paths: list[Path]) -> None:
    for path in paths:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")


def _fingerprint(language: str, source: Path, identity: str, extra: list[Path]) -> str:
    digest = hashlib.sha256(f"{language}\0{identity}\0".encode())
    _hash_files(digest, [source, *extra])
    return digest.hexdigest()


def build_tree(
    out_dir: Path,
    src_root: Path = Path("tests/data/plugins"),
    npm_workdir: Path = Path("build/npm"),
    console: Console | None = None,
) -> list[BuildResult]:
    """Build every plugin under ``src_root`` into ``out_dir``; raise one error listing failures."""
    plugins = discover_plugins(src_root)
    if not plugins:
        raise ToolchainError(f"{src_root}: no plugin sources found (expected c/, as/ or wat/)")
    languages = {language for language, _ in plugins}
    identities: dict[str, str] = {"wat": "wasmtime.wat2wasm"}
    include_dir = src_root / "c" / "include"
    headers = sorted(include_dir.glob("*.h")) if include_dir.is_dir() else []
    # Fail fast on a missing toolchain, before anything is compiled.
    if "c" in languages:
        find_clang()
        identities["c"] = " ".join([clang_identity(), *C_FLAGS])
    if "as" in languages:
        ensure_npm_workdir(npm_workdir)
        identities["as"] = " ".join([asc_identity(npm_workdir), *ASC_FLAGS])
    builders: dict[str, Callable[[Path, Path], Path]] = {
        "c": lambda src, out: build_c(src, out, include_dirs=[include_dir]),
        "as": lambda src, out: build_assemblyscript(src, out, npm_workdir),
        "wat": build_wat,
    }
    stamps = out_dir / STAMP_DIR
    stamps.mkdir(parents=True, exist_ok=True)
    results: list[BuildResult] = []
    failures: list[str] = []
    progress = Progress(
        TextColumn("[bold]plugins"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        console=console or Console(stderr=True),
        transient=False,
    )
    with progress:
        task = progress.add_task("", total=len(plugins))
        for language, source in plugins:
            progress.update(task, description=f"{language}/{source.name}")
            module = out_dir / f"{source.stem}.wasm"
            stamp = stamps / f"{source.stem}.sha256"
            fingerprint = _fingerprint(
                language, source, identities[language], headers if language == "c" else []
            )
            if module.exists() and stamp.exists() and stamp.read_text().strip() == fingerprint:
                results.append(BuildResult(source.stem, language, source, module, rebuilt=False))
            else:
                try:
                    builders[language](source, module)
                except ToolchainError as exc:
                    failures.append(str(exc))
                    stamp.unlink(missing_ok=True)
                else:
                    stamp.write_text(fingerprint + "\n")
                    results.append(BuildResult(source.stem, language, source, module, rebuilt=True))
            progress.advance(task)
    if failures:
        raise ToolchainError(
            f"{len(failures)} of {len(plugins)} plugins failed to build:\n" + "\n".join(failures)
        )
    return results
