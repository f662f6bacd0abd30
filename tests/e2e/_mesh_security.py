"""A secured mesh on 127.0.0.1 for the security e2e tests: a control plane running its CA and
secure port, real Envoy sidecars started from `wasmesh bootstrap --token-file --xds-ca`
(tokens from `wasmesh token`), and scripted applications behind them.

Topology: workload `server` (namespace `shop`, service account `server`) runs a scripted app
behind its Envoy's inbound listener; service `server.shop.svc.cluster.local:8080` selects it.
Workload `client` (service account `client`) reaches that service through its Envoy's
outbound listener. Tests write policies into the control plane's folder.
"""

from __future__ import annotations

import datetime as dt
import http.client
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from controlplane._meshconfig import MeshConfig
from controlplane._security import SecuritySettings
from tests.controlplane._running import RunningControlPlane, free_port
from tests.e2e._envoy import EnvoyProcess
from tests.e2e._upstream import ScriptedUpstream

NAMESPACE = "shop"
SERVICE_HOST = "server.shop.svc.cluster.local"
SERVICE_PORT = 8080
#: STRICT mTLS in the namespace, and client connections recycled every 5 requests (so that new
#: handshakes keep happening while certificates rotate)
STRICT_SHORT_CONNECTIONS = f"""\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: {NAMESPACE}}}
spec: {{mtls: {{mode: STRICT}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: server, namespace: {NAMESPACE}}}
spec:
  host: {SERVICE_HOST}
  trafficPolicy: {{connectionPool: {{http: {{maxRequestsPerConnection: 5}}}}}}
"""


def cli(*args: str, check: bool = True) -> str:
    """Run a `wasmesh` control-plane command; its stdout (empty if it failed and `check` is off)."""
    command = [sys.executable, "-m", "controlplane.cli._controlplane", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        if check:
            raise AssertionError(f"wasmesh {' '.join(args)} failed: {done.stderr}")
        return ""
    return done.stdout


class SecurePlane(RunningControlPlane):
    """The test control plane with its CA in `ca_dir` and the secure port on port 0."""

    def __init__(self, folder: Path, ca_dir: Path, lifetime: float, mesh_config: MeshConfig | None = None) -> None:
        super().__init__(folder)
        if mesh_config is not None:
            self.settings.mesh_config = mesh_config
        self.settings.security = SecuritySettings(ca_dir, secure_port=0,
                                                  workload_lifetime=dt.timedelta(seconds=lifetime))

    @property
    def secure_address(self) -> str:
        assert self.plane is not None
        return f"127.0.0.1:{self.plane.secure_port}"


class SecureMesh:
    def __init__(self, root: Path, envoy_binary: str, *, lifetime: float = 3600.0,
                 mesh_config: MeshConfig | None = None) -> None:
        self.root = root
        self.binary = envoy_binary
        self.folder = root / "config"
        self.folder.mkdir()
        self.ca_dir = root / "ca"
        self.plane = SecurePlane(self.folder, self.ca_dir, lifetime, mesh_config)
        self.plane.start()
        self.app = ScriptedUpstream(200, (("x-app", "server"),), "hello from server").start()
        self.app_port = self.app.port
        self.inbound_port = free_port()
        self.outbound_port = free_port()
        self.envoys: list[EnvoyProcess] = []
        self.write("service.yaml", f"""\
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {{name: server, namespace: {NAMESPACE}}}
            spec:
              hosts: [{SERVICE_HOST}]
              location: MESH_INTERNAL
              resolution: STATIC
              ports: [{{number: {SERVICE_PORT}, name: http, protocol: HTTP, targetPort: {self.app_port}}}]
              workloadSelector: {{labels: {{app: server}}}}
            """)

    def write(self, name: str, text: str) -> None:
        path = self.folder / name
        temporary = path.with_suffix(".tmp")
        temporary.write_text(textwrap.dedent(text))
        temporary.replace(path)

    def remove(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)

    def token(self, service_account: str, namespace: str = NAMESPACE) -> Path:
        path = self.root / f"{namespace}-{service_account}.token"
        cli("token", namespace, service_account, "--ca-dir", str(self.ca_dir), "-o", str(path))
        return path

    def envoy(self, name: str, *args: str, service_account: str | None = None, token: bool = True) -> EnvoyProcess:
        account = service_account or name
        security = ["--token-file", str(self.token(account)), "--xds-ca", str(self.ca_dir / "trust-bundle.pem"),
                    "--xds", self.plane.secure_address] if token else ["--xds", self.plane.xds_address]
        text = cli("bootstrap", "--name", name, "--namespace", NAMESPACE, "--service-account", account,
                   "--labels", f"app={name}", "--admin-port", "0", *security, *args)
        proxy = EnvoyProcess(text, workdir=self.root / name, binary=self.binary,
                             component_log_level="upstream:info,config:debug,connection:debug")
        self.envoys.append(proxy)
        return proxy.start()

    def server(self) -> EnvoyProcess:
        return self.envoy("server", "--port", str(self.app_port), "--inbound", f"{self.app_port}={self.inbound_port}")

    def client(self, **kwargs: object) -> EnvoyProcess:
        return self.envoy("client", "--outbound", f"{SERVICE_PORT}={self.outbound_port}", **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        for proxy in self.envoys:
            proxy.stop()
        self.plane.stop()
        self.app.stop()


def request(port: int, path: str = "/", *, method: str = "GET", host: str = SERVICE_HOST,
            headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """One HTTP/1.1 request; (status, body). Raises OSError/HTTPException if the connection fails."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, headers={"host": host, **(headers or {})})
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def plaintext_refused(port: int) -> bool:
    """True when a plaintext request to `port` gets no HTTP answer (the connection is closed)."""
    try:
        request(port, host="server")
    except (OSError, http.client.HTTPException):
        return True
    return False


@dataclass
class LoadResult:
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def check(self, at_least: int) -> None:
        assert self.failed == 0, f"{self.failed} of {self.sent} requests failed: {self.errors[:5]}"
        assert self.sent > at_least, self.sent


def keep_asking(port: int, seconds: float, every_50: Callable[[], object] = lambda: None) -> LoadResult:
    """GET / through `port` on one keep-alive connection (a new one after an error) for `seconds`;
    every answer must be the server app's. `every_50` runs after every 50 requests."""
    result = LoadResult()
    deadline = time.monotonic() + seconds
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        while time.monotonic() < deadline:
            result.sent += 1
            try:
                connection.request("GET", "/", headers={"host": SERVICE_HOST})
                reply = connection.getresponse()
                body = reply.read()
                if reply.status != 200 or body != b"hello from server":
                    result.failed += 1
                    result.errors.append(f"{reply.status} {body[:80]!r}")
            except (OSError, http.client.HTTPException) as err:
                result.failed += 1
                result.errors.append(repr(err))
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            if result.sent % 50 == 0:
                every_50()
            time.sleep(0.005)
    finally:
        connection.close()
    return result
