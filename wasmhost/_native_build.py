"""Builds the compiled copies :mod:`wasmhost._native` loads: Cython, then the C compiler, per module.

Why Cython on unchanged source rather than hand-written C: the ``.py`` files stay the one
truth (tests, mypy and the pure-Python fallback all read them); compiling only removes the
interpreter's dispatch. Directives keep Python semantics: annotations are not turned into
C types, and functions stay Python function objects (``binding=True``: attributes, binding as
methods, introspection).

    python -m wasmhost._native_build [--jobs N] [--force] [--check]

Idempotent: a module whose source hashes the same as in the manifest is not rebuilt.
Needs Cython (the ``native`` extra) and a C compiler with the Python headers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import _native

#: the modules every proxied request runs through; the rest of wasmhost stays interpreted
MODULES: dict[str, tuple[str, ...]] = {
    "wasmhost": (
        "_abi", "_capi", "_commands", "_context", "_fastcall", "_filter_status", "_hostcalls_core", "_hostcalls_metrics",
        "_http_stream", "_metrics", "_plugin", "_properties", "_vm",
    ),
    "wasmhost.sidecar": (
        "_access_log", "_attributes", "_buffer", "_cluster", "_commands", "_context", "_downstream",
        "_downstream_h2", "_errors", "_fault", "_filter_api", "_h1", "_h2", "_hcm_headers", "_header_ops",
        "_headers", "_lane", "_router", "_routes", "_stats", "_stream", "_timers", "_upstream", "_upstream_h2",
        "_upstream_sink", "_wasm", "_wasm_host", "_wasm_info", "_worker",
    ),
}

DIRECTIVES = ("language_level=3", "binding=True", "annotation_typing=False", "embedsignature=False")
C_FLAGS = ("-O2", "-fPIC", "-fwrapv", "-fno-strict-aliasing", "-DNDEBUG", "-w")


class BuildError(Exception):
    """Cython or the C compiler refused a module; the message carries its output."""


@dataclass(frozen=True, slots=True)
class Job:
    package: str
    name: str
    source: Path
    digest: str
    target: Path


def plan(force: bool = False) -> tuple[list[Job], dict[str, dict[str, str]]]:
    """What must be (re)built, and the manifest each package will have afterwards."""
    suffix = _native.extension_suffix()
    jobs: list[Job] = []
    manifests: dict[str, dict[str, str]] = {}
    for package, names in MODULES.items():
        source_dir, subdir = _native.PACKAGES[package]
        compiled_dir = _native.COMPILED_ROOT / subdir
        previous = _native.read_manifest(compiled_dir) or {}
        same_build = previous.get("ext_suffix") == suffix and previous.get("builder") == _native.builder_digest()
        built = previous.get("modules", {}) if same_build else {}
        manifests[package] = {}
        for name in names:
            source = _native.module_source(source_dir, name)
            digest = _native.source_digest(source)
            manifests[package][name] = digest
            target = compiled_dir / f"{name}{suffix}"
            if force or built.get(name) != digest or not target.is_file():
                jobs.append(Job(package, name, source, digest, target))
    return jobs, manifests


def compile_module(job: Job, workdir: Path) -> None:
    """Cython to C (a ``.c`` source is used as it is), C to an extension module, then into place."""
    c_file = job.source
    if job.source.suffix in (".py", ".pyx"):
        c_file = workdir / f"{job.package}.{job.name}.c"
        # a .pyx is written for Cython: its own header says how it is compiled
        directives = [arg for d in DIRECTIVES for arg in ("-X", d)] if job.source.suffix == ".py" else []
        cython = [sys.executable, "-m", "cython", "-3", *directives, "--module-name",
                  f"{job.package}.{job.name}", "-o", str(c_file), str(job.source)]
        _run(cython, f"cython {job.package}.{job.name}")
    built = workdir / f"{job.package}.{job.name}{_native.extension_suffix()}"
    compiler = os.environ.get("CC", "cc").split()
    include = sysconfig.get_paths()["include"]
    _run([*compiler, *C_FLAGS, "-shared", f"-I{include}", str(c_file), "-o", str(built)],
         f"compiling {job.package}.{job.name}")
    job.target.parent.mkdir(parents=True, exist_ok=True)
    staging = job.target.with_name(job.target.name + ".tmp")
    shutil.copyfile(built, staging)
    os.replace(staging, job.target)


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()[-20:]
        raise BuildError(f"{what} failed:\n" + "\n".join(output))


def write_manifests(manifests: dict[str, dict[str, str]]) -> None:
    """Record what was built; copies of modules no longer listed are removed."""
    suffix = _native.extension_suffix()
    for package, modules in manifests.items():
        compiled_dir = _native.COMPILED_ROOT / _native.PACKAGES[package][1]
        compiled_dir.mkdir(parents=True, exist_ok=True)
        for leftover in compiled_dir.glob(f"*{suffix}"):
            if leftover.name.removesuffix(suffix) not in modules:
                leftover.unlink()
        manifest = {"ext_suffix": suffix, "builder": _native.builder_digest(), "modules": modules}
        staging = compiled_dir / (_native.MANIFEST_NAME + ".tmp")
        staging.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        os.replace(staging, compiled_dir / _native.MANIFEST_NAME)


def build(jobs: list[Job], workers: int, advance: Callable[[Job], None]) -> None:
    with tempfile.TemporaryDirectory(prefix="wasmesh-native-") as tmp, ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(compile_module, job, Path(tmp)) for job in jobs]
        for job, future in zip(jobs, futures, strict=True):
            future.result()
            advance(job)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wasmhost._native_build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="modules compiled at once")
    parser.add_argument("--force", action="store_true", help="rebuild every module")
    parser.add_argument("--check", action="store_true", help="only say whether the copies are current")
    args = parser.parse_args(argv)
    jobs, manifests = plan(force=args.force)
    total = sum(len(names) for names in MODULES.values())
    if args.check:
        print(f"{total - len(jobs)} of {total} compiled modules are current")
        return 0 if not jobs else 1
    if not jobs:
        write_manifests(manifests)
        print(f"compiled modules: all {total} current")
        return 0
    try:
        import Cython  # noqa: F401
    except ImportError:
        print("Cython is not installed (pip install 'wasmesh[native]'); the sidecar runs as plain Python",
              file=sys.stderr)
        return 2
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("compiling request-path modules", total=len(jobs))
        try:
            build(jobs, max(1, args.jobs), lambda job: progress.advance(task))
        except BuildError as err:
            progress.stop()
            print(err, file=sys.stderr)
            return 1
    write_manifests(manifests)
    print(f"compiled {len(jobs)} of {total} modules into {_native.COMPILED_ROOT.name}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
