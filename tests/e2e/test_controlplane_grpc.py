"""gRPC's own xDS client (grpcio, `xds:///` target, GRPC_XDS_BOOTSTRAP) resolves a service
through the control plane: a second, independent xDS implementation accepts our resources,
and follows a routing change.

The client runs in a child process because grpcio reads the bootstrap once per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from controlplane._bootstrap import BootstrapOptions, grpc_bootstrap, parse_address
from tests.controlplane._running import RunningControlPlane, wait_for

pytestmark = pytest.mark.e2e
CLIENT = textwrap.dedent("""
    import sys, time, grpc
    channel = grpc.insecure_channel(sys.argv[1])
    ping = channel.unary_unary("/test.Echo/Ping")
    deadline = time.monotonic() + float(sys.argv[3])
    while True:
        answer = ping(b"hi", timeout=10, wait_for_ready=True).decode()
        print(answer, flush=True)
        if answer.startswith(sys.argv[2]) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
""")


def echo_server(name: str) -> tuple[grpc.Server, int]:
    def ping(request: bytes, context: grpc.ServicerContext) -> bytes:
        return f"{name}:".encode() + request

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "test.Echo", {"Ping": grpc.unary_unary_rpc_method_handler(ping)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture
def servers() -> Iterator[dict[str, int]]:
    started = {name: echo_server(name) for name in ("v1", "v2")}
    try:
        yield {name: port for name, (_, port) in started.items()}
    finally:
        for server, _ in started.values():
            server.stop(0)


def test_grpc_xds_client_resolves_and_follows_routes(tmp_path: Path, servers: dict[str, int]) -> None:
    folder = tmp_path / "config"
    folder.mkdir()
    endpoints = "\n".join(f"  - {{address: 127.0.0.1, ports: {{grpc: {port}}}, labels: {{version: {name}}}}}"
                          for name, port in servers.items())
    (folder / "echo.yaml").write_text(f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo}}
spec:
  hosts: [echo.default.svc.cluster.local]
  ports: [{{number: 7070, name: grpc, protocol: GRPC}}]
  resolution: STATIC
  endpoints:
{endpoints}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo}}
spec:
  host: echo
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo}}
spec:
  hosts: [echo.default.svc.cluster.local]
  http: [{{route: [{{destination: {{host: echo, subset: v1}}}}]}}]
""")
    with RunningControlPlane(folder) as plane:
        host, port = parse_address(plane.xds_address)
        bootstrap = tmp_path / "grpc-bootstrap.json"
        bootstrap.write_text(json.dumps(grpc_bootstrap(BootstrapOptions(name="client", xds_host=host, xds_port=port))))
        env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap)}
        target = "xds:///echo.default.svc.cluster.local:7070"
        first = subprocess.run([sys.executable, "-c", CLIENT, target, "v1", "0"], env=env, capture_output=True,
                               text=True, timeout=60)
        assert first.stdout.splitlines() == ["v1:hi"], first.stderr[-2000:]

        process = subprocess.Popen([sys.executable, "-c", CLIENT, target, "v2", "20"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: plane.api("GET", "/api/v1/proxies")[1]["proxies"], 20, what="gRPC client connected")
            text = (folder / "echo.yaml").read_text().replace("subset: v1}}]}]", "subset: v2}}]}]")
            (folder / "echo.yaml").write_text(text)
            out, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        lines = out.splitlines()
        assert lines and lines[-1] == "v2:hi", err[-2000:]
        assert set(lines[:-1]) <= {"v1:hi"}
