"""The processes of `wasmesh demo`: control plane, registry, bookinfo services and their sidecars.

Everything binds 127.0.0.1. Ports are picked free up front because a sidecar's listener ports
are part of its bootstrap. Each child runs in its own session with its output in a log file;
`DemoMesh.stop` ends exactly the children it started, by PID, SIGTERM first, SIGKILL after a
grace period, whatever happened before (Ctrl-C, a failed step, the end of `--duration`).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import yaml

from controlplane._bootstrap import BootstrapOptions, bootstrap

ROOT = Path(__file__).resolve().parents[1]
BOOKINFO = ROOT / "examples" / "bookinfo"
WASMESH = [sys.executable, "-m", "controlplane.cli"]
STOP_GRACE_S = 10.0


class DemoError(Exception):
    """A part of the demo could not start or a step could not run; the message says which."""


class ChildExited(DemoError):
    """A process the demo started is gone."""


_PICKED: set[int] = set()


def _ephemeral_range() -> range:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def free_port() -> int:
    """A free port outside the kernel's ephemeral range, so no outgoing connection or port-0
    listener (of this demo or anything else) takes it between now and the bind in a child."""
    ephemeral = _ephemeral_range()
    candidates = [p for p in range(20000, 32768) if p not in ephemeral and p not in _PICKED]
    for port in random.sample(candidates, min(200, len(candidates))):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PICKED.add(port)
        return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Workload:
    """One bookinfo service version, its sidecar's inbound listener and (if it calls out) outbound one."""

    app: str
    version: str
    calls_out: bool
    app_port: int = 0  # the application binds port 0 and says which port it got
    inbound_port: int = field(default_factory=free_port)
    outbound_port: int = field(default_factory=free_port)

    @property
    def name(self) -> str:
        return f"{self.app}-{self.version}"


WORKLOADS = (("productpage", "v1", True), ("details", "v1", False), ("reviews", "v1", False),
             ("reviews", "v2", True), ("reviews", "v3", True), ("ratings", "v1", False))


class DemoMesh:
    """Starts and supervises the demo's child processes; `stop` always ends every one of them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.config_dir = workdir / "config"
        self.logs = workdir / "logs"
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.workloads = [Workload(*spec) for spec in WORKLOADS]
        self.xds = self.api = self.registry = ""
        self.key = workdir / "keys" / "demo"

    # ---- starting ------------------------------------------------------------------------------
    def _spawn(self, name: str, command: list[str], banner: str = "") -> str:
        """Start a child with its output in logs/NAME.log; with `banner`, wait for a stdout line matching it."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (the child holds it)
        try:
            process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE if banner else log, stderr=log,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        self.children[name] = process
        if not banner:
            return ""
        assert process.stdout is not None
        line = process.stdout.readline().decode(errors="replace")
        found = re.search(banner, line)
        if not found:
            raise DemoError(f"{name} did not start: {line.strip() or 'no output'}; see {self.logs / name}.log")
        threading.Thread(target=_drain, args=(process.stdout, self.logs / f"{name}.log"), daemon=True).start()
        return found.group(1)

    def start_control_plane(self, trust_policy: Path) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        found = self._spawn("controlplane", [
            *WASMESH, "controlplane", "--config-dir", str(self.config_dir), "--xds-address", "127.0.0.1:0",
            "--monitoring-address", "127.0.0.1:0", "--trust-policy", str(trust_policy),
            "--module-cache", str(self.workdir / "module-cache")], banner=r"(xDS \S+, API \S+)$")
        self.xds, self.api = re.findall(r"(\d+\.\d+\.\d+\.\d+:\d+)", found)

    def start_registry(self) -> None:
        url = self._spawn("registry", [*WASMESH, "registry", "--data", str(self.workdir / "registry"),
                                       "--port", "0"], banner=r"listening on (\S+)")
        self.registry = url.split("://", 1)[-1].rstrip("/")

    def bootstrap_of(self, workload: Workload) -> dict[str, object]:
        """What `wasmesh bootstrap` writes, with the application port named `http` like the services' port."""
        host, port = self.xds.rsplit(":", 1)
        pod_ports = json.dumps([{"containerPort": workload.app_port, "name": "http", "protocol": "TCP"}])
        options = BootstrapOptions(
            name=workload.name, labels={"app": workload.app, "version": workload.version},
            ports=[workload.app_port], xds_host=host, xds_port=int(port), admin_port=0,
            inbound_ports={workload.app_port: workload.inbound_port},
            outbound_ports={9080: workload.outbound_port} if workload.calls_out else {},
            extra_metadata={"POD_PORTS": pod_ports})
        return bootstrap(options)

    def start_workloads(self) -> None:
        for workload in self.workloads:
            app = [sys.executable, str(BOOKINFO / "app.py"), workload.app, "--version", workload.version, "--port", "0"]
            if workload.calls_out:
                app += ["--mesh-port", str(workload.outbound_port)]
            workload.app_port = int(self._spawn(workload.name, app, banner=r"on 127\.0\.0\.1:(\d+)"))
            folder = self.workdir / "sidecars" / workload.name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "bootstrap.yaml").write_text(yaml.safe_dump(self.bootstrap_of(workload), sort_keys=False))
            self._spawn(f"{workload.name}-sidecar", [
                *WASMESH, "sidecar", "-c", str(folder / "bootstrap.yaml"),
                "--admin-address-path", str(folder / "admin-address")])

    def check_alive(self) -> None:
        for name, process in self.children.items():
            if process.poll() is not None:
                raise ChildExited(f"{name} exited with status {process.returncode}; see {self.logs / name}.log")

    # ---- using ---------------------------------------------------------------------------------
    def workload(self, name: str) -> Workload:
        return next(w for w in self.workloads if w.name == name)

    def wasmesh(self, *args: str, check: bool = True) -> str:
        """Run a `wasmesh` command against this control plane; its stdout."""
        done = subprocess.run([*WASMESH, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise DemoError(f"wasmesh {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def apply(self, manifest: Path) -> None:
        """`wasmesh apply -f` with the registry address of this run in place of the examples' one."""
        text = manifest.read_text().replace("127.0.0.1:5000", self.registry)
        target = self.workdir / "applied" / manifest.name
        target.parent.mkdir(exist_ok=True)
        target.write_text(text)
        self.wasmesh("apply", "-f", str(target), "--control-plane", self.api)

    def urls(self) -> dict[str, object]:
        """Where everything listens (written to the state file and printed by --keep)."""
        return {"api": f"http://{self.api}", "xds": self.xds, "registry": self.registry,
                "dashboard": f"http://{self.api}/dashboard/", "config_dir": str(self.config_dir),
                "logs": str(self.logs),
                "workloads": {w.name: {"app": w.app_port, "inbound": w.inbound_port,
                                       "outbound": w.outbound_port if w.calls_out else None}
                              for w in self.workloads}}

    # ---- stopping ------------------------------------------------------------------------------
    def stop(self) -> None:
        """SIGTERM to every child we started (by PID), then SIGKILL to the ones still there."""
        for process in self.children.values():
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + STOP_GRACE_S
        for process in self.children.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(timeout=5)
        self.children.clear()


def _drain(stream: IO[bytes], log: Path) -> None:
    """Copy a child's stdout after its banner into its log, so a full pipe never blocks it."""
    with open(log, "ab") as out:
        for line in stream:
            out.write(line)
            out.flush()


def http_get(port: int, path: str = "/", headers: dict[str, str] | None = None,
             timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One GET to 127.0.0.1:port; (status, lower-cased headers, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers=headers or {})
        reply = connection.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        connection.close()


__all__ = ["BOOKINFO", "ChildExited", "DemoError", "DemoMesh", "Workload", "free_port", "http_get"]
