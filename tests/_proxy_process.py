"""Proxies as real processes in tests, and the small mesh the control-plane tests give them.

``ProxyProcess`` is what running Envoy (``tests/e2e/_envoy.py``) and our sidecar
(``tests/wasmhost/sidecar/_process.py``) share: write the bootstrap into a work directory,
start the binary with its admin on port 0 and ``--admin-address-path``, wait until admin
``/ready`` says LIVE (or the process exits), and stop it by PID. ``MeshFolder`` is the watched
manifest folder with versioned scripted upstreams that both control-plane e2e suites write.
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from tests.e2e._upstream import ScriptedUpstream

Response = tuple[int, dict[str, str], bytes]


def stop_process(process: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    """End a process this test started, by its PID: SIGTERM, then SIGKILL after ``timeout``."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


class ProxyProcess:
    """One proxy process with an admin API; subclasses say how it is launched.

    A subclass sets ``name`` (for messages), ``error`` (its exception class) and the file
    names, and implements ``command``; ``start`` returns once admin ``/ready`` is LIVE.
    """

    name = "proxy"
    error: type[Exception] = RuntimeError
    log_name = "proxy.log"
    append_log = False  # a restarted proxy keeps the earlier log when True
    stop_timeout = 10.0
    poll_interval = 0.02
    cwd: Path | None = None

    def __init__(self, bootstrap: Mapping[str, Any] | str, *, workdir: Path, startup_timeout: float) -> None:
        self.workdir = Path(workdir)
        self.bootstrap = bootstrap
        self.startup_timeout = startup_timeout
        self.config_path = self.workdir / "bootstrap.yaml"
        self.log_path = self.workdir / self.log_name
        self.admin_url = ""
        self._process: subprocess.Popen[bytes] | None = None

    # --- what a subclass provides -------------------------------------------------------

    def command(self, admin_path: Path) -> list[str]:
        raise NotImplementedError

    def write_config(self, bootstrap: Mapping[str, Any] | str) -> None:
        """Write the bootstrap file (as JSON unless it is text already)."""
        text = bootstrap if isinstance(bootstrap, str) else json.dumps(bootstrap, indent=1)
        self.config_path.write_text(text)

    def start_error(self, message: str) -> Exception:
        """The exception for a failed start; by default the message followed by the whole log."""
        return self.error(f"{message}:\n{self.log_text()}")

    # --- running ------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self._process is None:
            raise self.error(f"{self.name} is not running")
        return self._process.pid

    def start(self) -> Self:
        """Start the process and return ``self`` once admin ``/ready`` says LIVE."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_config(self.bootstrap)
        admin_path = self.workdir / "admin-address"
        admin_path.unlink(missing_ok=True)
        command = self.command(admin_path)
        with open(self.log_path, "ab" if self.append_log else "wb") as log_file:
            self._process = subprocess.Popen(command, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log_file,
                                             stderr=log_file, start_new_session=True)
        try:
            self._wait_ready(admin_path)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, admin_path: Path) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise self.start_error(f"{self.name} exited with status {self._process.returncode}")
            if not self.admin_url and admin_path.exists():
                address = admin_path.read_text().strip()
                if address:
                    self.admin_url = f"http://{address}"
            if self.admin_url:
                try:
                    if self.admin_get("/ready").strip() == "LIVE":
                        return
                except (self.error, OSError):
                    pass
            time.sleep(self.poll_interval)
        raise self.start_error(f"{self.name} not ready after {self.startup_timeout} s")

    def stop(self) -> None:
        """End the process by its PID (SIGTERM, then SIGKILL after ``stop_timeout``)."""
        process, self._process = self._process, None
        stop_process(process, self.stop_timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- admin API and log --------------------------------------------------------------

    def admin_get(self, path: str, timeout: float = 5.0) -> str:
        """GET an admin endpoint and return its body; raise ``error`` on an HTTP error."""
        if not self.admin_url:
            raise self.error("admin address not known yet")
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=timeout) as reply:
                return str(reply.read().decode())
        except urllib.error.HTTPError as exc:
            raise self.error(f"admin {path} answered {exc.code}") from exc

    def admin_post(self, path: str, timeout: float = 5.0) -> str:
        request = urllib.request.Request(self.admin_url + path, method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return str(reply.read().decode())

    def listener_ports(self) -> dict[str, int]:
        """Bound port of each listener, by listener name."""
        statuses = json.loads(self.admin_get("/listeners?format=json"))["listener_statuses"]
        return {s["name"]: int(s["local_address"]["socket_address"]["port_value"]) for s in statuses}

    def stats(self) -> dict[str, int]:
        """Counters and gauges by full name (histograms are left out)."""
        entries = json.loads(self.admin_get("/stats?format=json"))["stats"]
        return {e["name"]: int(e["value"]) for e in entries if "name" in e and "value" in e}

    def log_text(self, offset: int = 0) -> str:
        """The process's log from byte ``offset`` on (the whole log by default)."""
        try:
            with open(self.log_path, "rb") as log_file:
                log_file.seek(offset)
                return log_file.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0


def http_get(port: int, path: str = "/", host: str = "reviews:9080", headers: Mapping[str, str] | None = None,
             ) -> Response:
    """One GET through a proxy's listener: (status, headers with lower-case names, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"host": host, **(headers or {})})
        reply = connection.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        connection.close()


def reviews_service_entry(spec_rest: str, port_options: str = "") -> str:
    """The ``reviews`` ServiceEntry (port 9080, HTTP) with the rest of its spec as YAML lines."""
    return ("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: reviews}\nspec:\n"
            "  hosts: [reviews.default.svc.cluster.local]\n"
            f"  ports: [{{number: 9080, name: http, protocol: HTTP{port_options}}}]\n" + spec_rest)


class MeshFolder:
    """The control plane's watched folder and the versioned upstreams its services point at.

    Each upstream answers 200 with ``x-version: <version>`` and the version as its body.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.upstreams: dict[str, ScriptedUpstream] = {}

    def upstream(self, version: str) -> ScriptedUpstream:
        server = ScriptedUpstream(200, (("x-version", version),), version).start()
        self.upstreams[version] = server
        return server

    def write(self, name: str, text: str) -> None:
        """Replace one manifest file atomically (the control plane watches the folder)."""
        path = self.folder / name
        temporary = path.with_suffix(".tmp")
        temporary.write_text(textwrap.dedent(text))
        temporary.replace(path)

    def reviews(self, *versions: str) -> None:
        """``reviews`` as a ServiceEntry with one upstream per version and a subset per version."""
        endpoints = "".join(f"  - {{address: 127.0.0.1, ports: {{http: {self.upstream(v).port}}}, "
                            f"labels: {{version: {v}}}}}\n" for v in versions)
        subsets = "".join(f"  - {{name: {v}, labels: {{version: {v}}}}}\n" for v in versions)
        service = reviews_service_entry("  resolution: STATIC\n  endpoints:\n" + endpoints)
        self.write("reviews.yaml", service + f"""\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  subsets:
{subsets}""")

    def one_endpoint_reviews(self, port: int) -> None:
        """``reviews`` as a ServiceEntry with the one endpoint ``127.0.0.1:port`` and no subsets."""
        self.write("reviews.yaml", reviews_service_entry(
            f"  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]\n"))

    def route(self, http_routes: str) -> None:
        """The ``reviews`` VirtualService with these HTTP routes (YAML list items)."""
        header = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\n"
        self.write("vs.yaml", header + "spec:\n  hosts: [reviews]\n  http:\n"
                   + textwrap.indent(textwrap.dedent(http_routes), "  "))

    def wasm_plugin(self, name: str, module: Path, plugin_config: Mapping[str, Any] | None = None,
                    client_port: int | None = None) -> Path:
        """A WasmPlugin on the productpage workloads, in ``wasm-<name>.yaml`` (returned); with
        ``client_port``, only on their outbound traffic to that port, in the STATS phase."""
        lines = [f"url: file://{module}"]
        if client_port is not None:
            lines += ["phase: STATS", f"match: [{{mode: CLIENT, ports: [{{number: {client_port}}}]}}]"]
        if plugin_config is not None:
            lines.append(f"pluginConfig: {json.dumps(plugin_config)}")
        path = self.folder / f"wasm-{name}.yaml"
        self.write(path.name, f"""\
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: productpage}}}}
""" + "".join(f"  {line}\n" for line in lines))
        return path

    def self_registered_reviews(self, app_port: int, plugin: Path) -> None:
        """``reviews`` with no endpoints of its own (workloads register through their proxies) and a
        server-side WasmPlugin on those workloads."""
        service = reviews_service_entry("  workloadSelector: {labels: {app: reviews}}\n",
                                        f", targetPort: {app_port}")
        self.write("reviews.yaml", service + f"""\
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: server-side}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  url: file://{plugin}
  match: [{{mode: SERVER}}]
""")

    def ingress_gateway(self) -> None:
        """A Gateway on port 8080 for every host, routing ``/reviews`` to subset v2."""
        self.write("gateway.yaml", """\
            apiVersion: networking.istio.io/v1
            kind: Gateway
            metadata: {name: bookinfo-gateway}
            spec:
              selector: {istio: ingressgateway}
              servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: bookinfo}
            spec:
              hosts: ["*"]
              gateways: [bookinfo-gateway]
              http:
              - match: [{uri: {prefix: /reviews}}]
                route: [{destination: {host: reviews, subset: v2, port: {number: 9080}}}]
            """)

    def close(self) -> None:
        """Stop the upstreams this folder started."""
        for server in self.upstreams.values():
            server.stop()
