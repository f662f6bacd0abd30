"""What compiling the sidecar's request-path modules would buy: ``sidecar_core.py`` interpreted vs compiled.

Copies ``wasmhost/`` and ``sidecar_core.py`` into a temporary directory, compiles the
request-path modules there with Cython as they are (plain Python source, no type
declarations), and runs ``sidecar_core.py`` against both trees with this interpreter.
Nothing in the repository is changed or built. Bounded: about a minute (compiling
included). Prints µs of CPU per request, without and with the ``bench_6hostcalls`` plugin.

    python benchmarks/sidecar_compiled.py [--seconds 3]

Needs Cython (``pip install cython``, not a project dependency) and a C compiler.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "build" / "plugins" / "bench_6hostcalls.wasm"
#: the modules every proxied request runs through (codecs, stream, router, pools, worker, stats)
MODULES = ("_h1", "_stream", "_router", "_headers", "_hcm_headers", "_routes", "_upstream", "_downstream",
           "_worker", "_timers", "_stats", "_cluster", "_context", "_commands", "_buffer")
COMPILE = """
from setuptools import setup
from Cython.Build import cythonize
setup(ext_modules=cythonize({paths!r}, compiler_directives={{"language_level": 3, "binding": False}}, quiet=True))
"""


def compile_tree(tree: Path) -> None:
    paths = [f"wasmhost/sidecar/{name}.py" for name in MODULES]
    subprocess.run([sys.executable, "-c", COMPILE.format(paths=paths), "build_ext", "--inplace"], cwd=tree,
                   check=True, capture_output=True, timeout=900)
    missing = [name for name in MODULES if not list((tree / "wasmhost" / "sidecar").glob(f"{name}.*.so"))]
    if missing:
        raise SystemExit(f"Cython did not build: {', '.join(missing)}")


def core_us(tree: Path, seconds: float, plugin: bool) -> float:
    """Median µs per request from sidecar_core.py run in ``tree`` (other packages from the repository)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), str(ROOT)]))
    command = [sys.executable, str(tree / "benchmarks" / "sidecar_core.py"), "--seconds", str(seconds)]
    output = subprocess.run(command + (["--plugin"] if plugin else []), cwd=tree, env=env, check=True,
                            capture_output=True, text=True, timeout=seconds * 10 + 60).stdout
    match = re.search(r"([\d.]+) µs CPU per request", output)
    if match is None:
        raise SystemExit(f"unexpected sidecar_core output: {output!r}")
    return float(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per sidecar_core run")
    args = parser.parse_args()
    if importlib.util.find_spec("Cython") is None:
        print("Cython is not installed (pip install cython); nothing measured", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="sidecar-compiled-") as tmp:
        tree = Path(tmp)
        shutil.copytree(ROOT / "wasmhost", tree / "wasmhost", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        (tree / "benchmarks").mkdir()
        shutil.copy2(ROOT / "benchmarks" / "sidecar_core.py", tree / "benchmarks")
        if PLUGIN.exists():
            (tree / "build" / "plugins").mkdir(parents=True)
            shutil.copy2(PLUGIN, tree / "build" / "plugins")
        rows = [("without plugin", False)] + ([("with plugin", True)] if PLUGIN.exists() else [])
        interpreted = {label: core_us(tree, args.seconds, plugin) for label, plugin in rows}
        compile_tree(tree)
        compiled = {label: core_us(tree, args.seconds, plugin) for label, plugin in rows}
    print(f"sidecar_core.py, µs of CPU per request ({len(MODULES)} request-path modules compiled by Cython, "
          "source unchanged)")
    print(f"{'':16} {'interpreted':>11} {'compiled':>9} {'ratio':>6}")
    for label, _ in rows:
        print(f"{label:16} {interpreted[label]:11.1f} {compiled[label]:9.1f} {compiled[label] / interpreted[label]:6.2f}")
    if not PLUGIN.exists():
        print(f"{PLUGIN} is missing (make plugins): the plugin row was skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
