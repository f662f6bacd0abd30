"""Registry throughput: our registry vs Debian's docker-registry (distribution 2.8), same run.

Measures (1) sequential push + pull of a 2 MB Wasm module and (2) 50 concurrent pulls
of it, with the same client (``registry.RegistryClient``) against both servers, and
prints each side's numbers and the ratio ours / distribution (target >= 0.5).
Both servers run as processes on 127.0.0.1 with temp storage and are stopped by PID.

    python benchmarks/registry_push_pull.py [--iterations 10] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from registry import Reference, RegistryClient, pull_module, push_module  # noqa: E402

MODULE_SIZE = 2 * 1024 * 1024


def make_module(size: int) -> bytes:
    """A real module (compiled from WAT) whose data segment makes it ``size`` bytes."""
    import random

    import wasmtime

    rng = random.Random(7)
    payload = "".join(f"\\{rng.getrandbits(8):02x}" for _ in range(size))
    return bytes(wasmtime.wat2wasm(f'(module (memory (export "memory") {size // 65536 + 2}) '
                                   f'(data (i32.const 0) "{payload}") (func (export "proxy_abi_version_0_2_1")))'))


def variant_of(module: bytes, i: int) -> bytes:
    """A distinct module per iteration (bytes inside the data segment), so pushes are not deduplicated."""
    mid = len(module) // 2
    return module[:mid] + i.to_bytes(8, "big") + module[mid + 8:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server on port {port} exited with {process.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server on port {port} did not start")


def start_ours(base: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cmd = [sys.executable, "-c", "import sys; from controlplane.cli import main; sys.exit(main())",
           "registry", "--data", str(base / "ours"), "--port", str(port)]
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port, process)
    return process, port


def start_distribution(base: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("docker-registry")
    if binary is None:
        raise SystemExit("docker-registry is not installed (apt-get install docker-registry)")
    port = free_port()
    config = base / "distribution.yml"
    config.write_text(json.dumps({"version": 0.1, "log": {"level": "error"},
                                  "storage": {"filesystem": {"rootdirectory": str(base / "distribution")}},
                                  "http": {"addr": f"127.0.0.1:{port}"}}))
    process = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port, process)
    return process, port


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(host: str, module: bytes, iterations: int, concurrency: int) -> dict[str, float]:
    push_times, pull_times = [], []
    for i in range(iterations):
        ref = Reference.parse(f"{host}/bench/module:v{i}")
        data = variant_of(module, i)
        with RegistryClient(host, scheme="http") as client:
            start = time.perf_counter()
            push_module(client, ref, data)
            push_times.append(time.perf_counter() - start)
        with RegistryClient(host, scheme="http") as client:
            start = time.perf_counter()
            assert pull_module(client, ref).module == data
            pull_times.append(time.perf_counter() - start)

    ref = Reference.parse(f"{host}/bench/module:v0")
    expected = variant_of(module, 0)

    def one_pull(_: int) -> float:
        with RegistryClient(host, scheme="http", timeout=60) as client:
            start = time.perf_counter()
            assert pull_module(client, ref).module == expected
            return time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        start = time.perf_counter()
        latencies = list(pool.map(one_pull, range(concurrency), timeout=300))
        wall = time.perf_counter() - start
    mb = len(module) / 1e6
    return {
        "push_ms": statistics.median(push_times) * 1000, "pull_ms": statistics.median(pull_times) * 1000,
        "push_MBps": mb / statistics.median(push_times), "pull_MBps": mb / statistics.median(pull_times),
        "concurrent_wall_s": wall, "concurrent_MBps": concurrency * mb / wall,
        "concurrent_p50_ms": statistics.median(latencies) * 1000,
        "concurrent_max_ms": max(latencies) * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--size", type=int, default=MODULE_SIZE)
    args = parser.parse_args()
    module = make_module(args.size)
    print(f"module: {len(module)} bytes; {args.iterations} push+pull rounds; {args.concurrency} concurrent pulls")
    with tempfile.TemporaryDirectory(prefix="registry-bench-") as tmp:
        base = Path(tmp)
        ours_proc, ours_port = start_ours(base)
        theirs_proc, theirs_port = start_distribution(base)
        try:
            results = {
                "ours": measure(f"127.0.0.1:{ours_port}", module, args.iterations, args.concurrency),
                "distribution": measure(f"127.0.0.1:{theirs_port}", module, args.iterations, args.concurrency),
            }
        finally:
            stop(ours_proc)
            stop(theirs_proc)
    keys = list(results["ours"])
    print(f"{'metric':<22}{'ours':>12}{'distribution':>14}{'ratio':>8}")
    for key in keys:
        ours, theirs = results["ours"][key], results["distribution"][key]
        # ratio is "ours relative to distribution" where higher is better for ours
        better_low = key.endswith(("_ms", "_s"))
        ratio = (theirs / ours) if better_low else (ours / theirs)
        print(f"{key:<22}{ours:>12.1f}{theirs:>14.1f}{ratio:>8.2f}")
    print("ratio = ours / distribution throughput (inverse for times); target >= 0.5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
