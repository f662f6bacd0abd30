"""What the compiled request path buys: ``sidecar_core.py`` as plain Python vs compiled.

``make native`` compiles the request-path modules with Cython (source unchanged) and builds
the C guest-call/host-call trampoline (``wasmhost/_fastcall.c``) into ``wasmhost/_compiled/``;
the packages use them only while they match their sources. This script makes sure they are
current (building what changed), then runs ``sidecar_core.py`` twice with this interpreter:
once with ``WASMESH_PURE_PYTHON=1`` (the sources as they are) and once compiled. Prints µs of
CPU per request, without and with the ``bench_6hostcalls`` plugin. Bounded: about a minute
when the copies are current.

    python benchmarks/sidecar_compiled.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "build" / "plugins" / "bench_6hostcalls.wasm"


def core_us(seconds: float, plugin: bool, pure: bool) -> float:
    """Median µs per request from sidecar_core.py, plain Python or compiled."""
    env = dict(os.environ, WASMESH_PURE_PYTHON="1" if pure else "")
    command = [sys.executable, str(ROOT / "benchmarks" / "sidecar_core.py"), "--seconds", str(seconds)]
    output = subprocess.run(command + (["--plugin"] if plugin else []), cwd=ROOT, env=env, check=True,
                            capture_output=True, text=True, timeout=seconds * 10 + 60).stdout
    match = re.search(r"([\d.]+) µs CPU per request", output)
    if match is None:
        raise SystemExit(f"unexpected sidecar_core output: {output!r}")
    return float(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per sidecar_core run")
    args = parser.parse_args()
    built = subprocess.run([sys.executable, "-m", "wasmhost._native_build"], cwd=ROOT, timeout=1800)
    if built.returncode != 0:
        print("the compiled copies could not be built (see above); nothing measured", file=sys.stderr)
        return 2
    rows = [("without plugin", False)] + ([("with plugin", True)] if PLUGIN.exists() else [])
    print("sidecar_core.py, µs of CPU per request (WASMESH_PURE_PYTHON=1 vs the compiled copies)")
    print(f"{'':16} {'plain Python':>12} {'compiled':>9} {'ratio':>6}")
    for label, plugin in rows:
        plain = core_us(args.seconds, plugin, pure=True)
        compiled = core_us(args.seconds, plugin, pure=False)
        print(f"{label:16} {plain:12.1f} {compiled:9.1f} {compiled / plain:6.2f}")
    if not PLUGIN.exists():
        print(f"{PLUGIN} is missing (make plugins): the plugin row was skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
