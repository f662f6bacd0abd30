"""What a live Wasm plugin swap costs the sidecar under load: wrk with and without reloads.

One bounded run against ``wasmesh sidecar`` (nginx upstream, proxy pinned to one CPU):

- ``steady-a`` / ``steady-b``: version a (the ``headers`` plugin, C) or version b (the
  ``as_add_header`` module, AssemblyScript) in front of the router, bootstrap untouched;
- ``swapping``: the same load while the bootstrap is rewritten every ``--swap-every`` seconds,
  alternating between versions a and b, so every swap compiles or re-instantiates a module, starts a plugin and retires the old one.

Prints req/s, p50/p99 latency, non-2xx responses and socket errors for each, and the ratio of
the swapping run to the mean of the two steady ones. A correct reload shows 0 non-2xx and 0 socket errors.

    python benchmarks/sidecar_wasm.py [--duration 20] [--swap-every 2] [--connections 50] [--concurrency 1]

Needs ``wrk``, ``nginx`` and ``taskset`` (Debian) and the built test plugins (``make plugins``).
Everything started here is stopped by PID before exit.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.sidecar_wrk import LAUNCH, free_port, nginx_config, process, wait_http  # noqa: E402

PLUGINS = ROOT / "build" / "plugins"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wasm_filter(plugin: Path, root_id: str, configuration: str) -> str:
    return f"""
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: versioned
                root_id: "{root_id}"
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: "{configuration}"
                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  code: {{local: {{filename: "{plugin}"}}}}"""


def bootstrap(listen: int, admin: int, upstream: int, wasm: str) -> str:
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
          http_filters:{wasm}
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}}}]}}]
"""


def run_wrk(port: int, seconds: float, connections: int, cpus: str) -> dict[str, float]:
    """req/s, p50/p99 ms, non-2xx responses and socket errors of one wrk run."""
    output = subprocess.run(
        ["taskset", "-c", cpus, "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
         f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout
    result = {"rate": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}  # type: ignore[union-attr]
    for name in ("50", "99"):
        match = re.search(rf"^\s+{name}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        result[f"p{name}"] = float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    result["non_2xx"] = float(non_2xx.group(1)) if non_2xx else 0.0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    result["socket_errors"] = float(sum(int(g) for g in errors.groups())) if errors else 0.0
    return result


def swap_until(stop: threading.Event, config: Path, versions: list[str], every: float, swaps: list[float]) -> None:
    """Rewrite the bootstrap (atomically) every ``every`` seconds, cycling through ``versions``."""
    index = 0
    while not stop.wait(every):
        index = (index + 1) % len(versions)
        write_atomically(config, versions[index])
        swaps.append(time.monotonic())


def write_atomically(config: Path, text: str) -> None:
    temporary = config.with_suffix(".tmp")
    temporary.write_text(text)
    temporary.replace(config)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--swap-every", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=1, help="sidecar worker processes")
    parser.add_argument("--proxy-cpu", default="0", help="CPU list for the sidecar")
    parser.add_argument("--load-cpus", default="1", help="CPUs for wrk and the upstream")
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed", file=sys.stderr)
            return 2
    headers, as_add_header = PLUGINS / "headers.wasm", PLUGINS / "as_add_header.wasm"
    for plugin in (headers, as_add_header):
        if not plugin.exists():
            print(f"{plugin} is missing (make plugins)", file=sys.stderr)
            return 2
    results: dict[str, dict[str, float]] = {}
    swaps: list[float] = []
    with tempfile.TemporaryDirectory(prefix="sidecar-wasm-bench-") as tmp:
        workdir = Path(tmp)
        upstream_port, port, admin = free_port(), free_port(), free_port()
        upstream_conf = nginx_config(workdir, "upstream", f"""
  server {{ listen 127.0.0.1:{upstream_port}; keepalive_requests 100000000;
           location / {{ return 200 "hello world\\n"; }} }}""")
        versions = [
            bootstrap(port, admin, upstream_port, wasm_filter(headers, "", "add response x-version a")),
            bootstrap(port, admin, upstream_port, wasm_filter(as_add_header, "as_add_header", "b")),
        ]
        config = workdir / "wasmesh.yaml"
        config.write_text(versions[0])
        command = [sys.executable, "-c", LAUNCH, "sidecar", "-c", str(config), "--concurrency",
                   str(args.concurrency), "-l", "error"]
        with process(["nginx", "-c", str(upstream_conf)], args.load_cpus, workdir / "upstream.log"), \
                process(command, args.proxy_cpu, workdir / "wasmesh.log", cwd=ROOT):
            wait_http(upstream_port)
            wait_http(port)
            for label, version in (("steady-a", versions[0]), ("steady-b", versions[1])):
                write_atomically(config, version)
                time.sleep(1.5)  # the watcher's poll plus the swap
                run_wrk(port, args.warmup, args.connections, args.load_cpus)
                results[label] = run_wrk(port, args.duration, args.connections, args.load_cpus)
            write_atomically(config, versions[0])
            time.sleep(1.5)
            stop = threading.Event()
            swapper = threading.Thread(target=swap_until,
                                       args=(stop, config, versions, args.swap_every, swaps), daemon=True)
            swapper.start()
            try:
                results["swapping"] = run_wrk(port, args.duration, args.connections, args.load_cpus)
            finally:
                stop.set()
                swapper.join(timeout=10)
            log = (workdir / "wasmesh.log").read_text(errors="replace")
    print(f"\nwasmesh sidecar --concurrency {args.concurrency} on CPU {args.proxy_cpu}, wrk -t1 "
          f"-c{args.connections} -d{args.duration:g}s on CPU {args.load_cpus}; "
          f"{len(swaps)} bootstrap swaps every {args.swap_every:g}s in the swapping run")
    print(f"{'run':9} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>8} {'sock err':>8}")
    for name, row in results.items():
        print(f"{name:9} {row['rate']:9.0f} {row['p50']:7.2f} {row['p99']:7.2f} {row['non_2xx']:8.0f} "
              f"{row['socket_errors']:8.0f}")
    steady = (results["steady-a"]["rate"] + results["steady-b"]["rate"]) / 2
    print(f"swapping / mean of the steady runs: {results['swapping']['rate'] / steady:.2f}x")
    rejected = log.count("config reload rejected")
    if rejected:
        print(f"warning: {rejected} reloads were rejected (see the sidecar log)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
