"""Scale benchmark: N simulated proxies on one control plane; time to push one VirtualService
change to all of them, and the control plane's memory.

The control plane runs as its own process (`controlplane --config-dir`), so its RSS is its
own; the simulated proxies are lightweight ADS clients (`controlplane._adsclient`) in this
process that subscribe like Envoy (CDS/LDS, then EDS/RDS) and ACK. The change is a file edit
in the watched folder, as an operator would make it; the clock stops when the last proxy has
received the new routes. Bounded: the run gives up after --deadline seconds.

    python benchmarks/controlplane_scale.py --proxies 1000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controlplane._adsclient import AdsClient  # noqa: E402
from controlplane._protos import ROUTE  # noqa: E402

SERVICES = 20
APPS = 10


def manifests(timeout: str) -> str:
    docs = []
    for i in range(SERVICES):
        docs.append(f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc{i}}}
spec:
  hosts: [svc{i}.default.svc.cluster.local]
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {20000 + i}}}, labels: {{version: v1}}}}]
""")
    return "---\n".join(docs)


def virtual_service(timeout: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc0}}
spec:
  hosts: [svc0]
  http: [{{route: [{{destination: {{host: svc0}}}}], timeout: {timeout}}}]
"""


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def run(proxies: int, channels: int, deadline: float) -> None:
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        (folder / "services.yaml").write_text(manifests("1s"))
        (folder / "vs.yaml").write_text(virtual_service("1s"))
        command = [sys.executable, "-m", "controlplane.cli._controlplane", "controlplane", "--config-dir", str(folder),
                   "--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0"]
        server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            banner = server.stdout.readline()
            match = re.search(r"xDS (\S+):(\d+)", banner)
            if match is None:
                raise SystemExit(f"control plane did not start: {banner!r}")
            address = f"{match.group(1)}:{match.group(2)}"
            idle_rss = rss_mib(server.pid)
            pool = [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(channels)]
            clients = [AdsClient(address, f"sidecar~127.0.0.1~app{i}.default~default.svc.cluster.local",
                                 {"NAME": f"app{i}", "NAMESPACE": "default", "LABELS": {"app": f"app{i % APPS}"},
                                  "OUTBOUND_PORTS": '{"9080": 0}'}, channel=pool[i % channels])
                       for i in range(proxies)]
            started = time.monotonic()
            for client in clients:
                await client.start()
            while sum(1 for c in clients if ROUTE in c.versions) < proxies:
                if time.monotonic() - started > deadline:
                    raise SystemExit(f"only {sum(1 for c in clients if ROUTE in c.versions)} of {proxies} got routes")
                await asyncio.sleep(0.05)
            connected = time.monotonic() - started
            await asyncio.sleep(1.0)  # let ACKs and the connect-triggered pushes settle
            before = {id(c): c.versions[ROUTE] for c in clients}
            loaded_rss = rss_mib(server.pid)

            changed_at = time.monotonic()
            temporary = folder / "vs.tmp"
            temporary.write_text(virtual_service("2s"))
            temporary.replace(folder / "vs.yaml")
            while any(c.versions[ROUTE] == before[id(c)] for c in clients):
                if time.monotonic() - changed_at > deadline:
                    late = sum(1 for c in clients if c.versions[ROUTE] == before[id(c)])
                    raise SystemExit(f"{late} of {proxies} proxies never received the change")
                await asyncio.sleep(0.01)
            last = max(c.updated_at[ROUTE] for c in clients) - changed_at
            first = min(c.updated_at[ROUTE] for c in clients) - changed_at
            peak_rss = rss_mib(server.pid)
            print(f"proxies: {proxies} over {channels} HTTP/2 connections, {SERVICES} services, {APPS} scopes")
            print(f"all connected and configured in {connected:.2f} s")
            print(f"VirtualService change -> first proxy {first * 1000:.0f} ms, all {proxies} proxies {last * 1000:.0f} ms"
                  " (includes the folder poll interval of 0.2 s and the 0.1 s debounce)")
            print(f"control plane RSS: idle {idle_rss:.0f} MiB, with {proxies} proxies {loaded_rss:.0f} MiB, "
                  f"after the push {peak_rss:.0f} MiB")
            for client in clients:
                await client.stop()
            for channel in pool:
                await channel.close()
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--proxies", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=50, help="client HTTP/2 connections the streams share")
    parser.add_argument("--deadline", type=float, default=120.0, help="give up after this many seconds per phase")
    args = parser.parse_args()
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
    asyncio.run(run(args.proxies, args.channels, args.deadline))


if __name__ == "__main__":
    main()
