"""Our sidecar and real Envoy, side by side, driven by the same control plane process.

Everything is a real process on 127.0.0.1: `wasmesh controlplane --config-dir DIR`, our sidecar
and Envoy each started from what `wasmesh bootstrap` prints (the same workload labels, their own
outbound port), and scripted upstreams that say which version answered. The test edits the
folder as an operator would and waits, with a deadline, until both proxies show the change;
then the two proxies' client-visible answers must be the same. Push status comes from
`wasmesh proxy-status -o json`. The time from each edit to the changed answer is printed per
proxy (`pytest -s`); the deadline is generous because pushes take well under a second.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._proxy_process import MeshFolder, Response, http_get, stop_process
from tests._tools import plugin_path
from tests.controlplane._running import free_port, wait_for
from tests.e2e._envoy import EnvoyProcess
from tests.wasmhost.sidecar._process import SidecarProcess

pytestmark = [pytest.mark.e2e, pytest.mark.envoy]
ROOT = Path(__file__).resolve().parents[2]
CONVERGE = 10.0
WASMESH = [sys.executable, "-m", "controlplane.cli"]
# What differs between any two proxies and is not configuration: the clock, the server name,
# and Envoy's measurement of upstream time.
UNCOMPARABLE = frozenset({"date", "server", "x-envoy-upstream-service-time"})


class ControlPlaneProcess:
    """`wasmesh controlplane` on port 0; the banner says where xDS and the API listen."""

    def __init__(self, folder: Path, log: Path, xds_port: int = 0) -> None:
        self.folder = folder
        self.log = log
        self.xds_port = xds_port
        self.process: subprocess.Popen[str] | None = None
        self.xds = self.api = ""

    def start(self) -> ControlPlaneProcess:
        with open(self.log, "a") as log_file:
            self.process = subprocess.Popen(
                [*WASMESH, "controlplane", "--config-dir", str(self.folder), "--xds-address",
                 f"127.0.0.1:{self.xds_port}", "--monitoring-address", "127.0.0.1:0"], cwd=ROOT,
                stdout=subprocess.PIPE, stderr=log_file, text=True, start_new_session=True)
        assert self.process.stdout is not None
        banner = self.process.stdout.readline()
        found = re.search(r"xDS (\S+), API (\S+)$", banner.strip())
        assert found, f"no banner: {banner!r}\n{self.log.read_text()}"
        self.xds, self.api = found.group(1), found.group(2)
        return self

    def command(self, *args: str) -> str:
        return subprocess.run([*WASMESH, *args], cwd=ROOT, check=True, capture_output=True, text=True,
                              timeout=60).stdout

    def bootstrap(self, name: str, labels: str, *options: str) -> str:
        """What ``wasmesh bootstrap`` prints for a proxy of this control plane (admin on port 0)."""
        return self.command("bootstrap", "--name", name, "--labels", labels, *options, "--xds", self.xds,
                            "--admin-port", "0")

    def proxy_status(self) -> dict[str, dict[str, dict[str, str]]]:
        """Per proxy name: per type (CDS, EDS, ...) its status, versions and NACK message."""
        proxies = json.loads(self.command("proxy-status", "-o", "json", "--control-plane", self.api))
        return {p["name"]: p["types"] for p in proxies}

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process, timeout=20)


class Mesh(MeshFolder):
    """The folder, the control plane, the upstreams, and both proxies (name -> outbound port)."""

    def __init__(self, workdir: Path, envoy_binary: str) -> None:
        super().__init__(workdir / "config")
        self.folder.mkdir()
        self.workdir = workdir
        self.envoy_binary = envoy_binary
        self.plane = ControlPlaneProcess(self.folder, workdir / "controlplane.log")
        self.ports: dict[str, int] = {}
        self.sidecar: SidecarProcess | None = None
        self.envoy: EnvoyProcess | None = None
        self.timings: list[tuple[str, dict[str, float]]] = []
        self.protocol = "sotw"

    def bootstrap(self, name: str, port: int) -> str:
        delta = ["--delta"] if self.protocol == "delta" else []
        return self.plane.bootstrap(name, "app=productpage,version=v1", "--port", "9080", "--outbound", f"9080={port}",
                                    *delta)

    def start_proxies(self) -> None:
        self.ports = {"sidecar": free_port(), "envoy": free_port()}
        self.sidecar = SidecarProcess(self.bootstrap("productpage", self.ports["sidecar"]),
                                      workdir=self.workdir / "sidecar").start()
        self.envoy = EnvoyProcess(self.bootstrap("productpage-envoy", self.ports["envoy"]),
                                  workdir=self.workdir / "envoy", binary=self.envoy_binary,
                                  component_log_level="config:debug,wasm:info").start()

    def converge(self, what: str, done: Callable[[Response], bool], **request: Any) -> dict[str, Response]:
        """Wait until both proxies answer so that ``done`` holds; record how long each took."""
        started = time.monotonic()
        taken: dict[str, float] = {}
        answers: dict[str, Response] = {}
        deadline = started + CONVERGE
        while len(taken) < len(self.ports) and time.monotonic() < deadline:
            for proxy, port in self.ports.items():
                if proxy in taken:
                    continue
                try:
                    answer = http_get(port, **request)
                except OSError:
                    continue
                if done(answer):
                    taken[proxy] = time.monotonic() - started
                    answers[proxy] = answer
            time.sleep(0.02)
        missing = sorted(set(self.ports) - set(taken))
        assert not missing, f"{what}: {missing} did not converge within {CONVERGE} s"
        self.timings.append((what, taken))
        print(f"{what}: " + ", ".join(f"{proxy} {seconds:.2f} s" for proxy, seconds in sorted(taken.items())))
        return answers

    def same_answers(self, **request: Any) -> Response:
        """Both proxies answer the same request the same way (what a client can see)."""
        ours, envoys = (visible(http_get(port, **request)) for port in self.ports.values())
        assert ours == envoys, f"sidecar {ours}\nenvoy   {envoys}"
        return ours

    def close(self) -> None:
        for proxy in (self.sidecar, self.envoy):
            if proxy is not None:
                proxy.stop()
        self.plane.stop()
        super().close()


@pytest.fixture
def mesh(tmp_path: Path, envoy_binary: str) -> Iterator[Mesh]:
    running = Mesh(tmp_path, envoy_binary)
    try:
        running.plane.start()
        yield running
    finally:
        running.close()


def visible(response: Response) -> Response:
    status, headers, body = response
    return status, {k: v for k, v in headers.items() if k not in UNCOMPARABLE}, body


def version_of(response: Response) -> str:
    return response[1].get("x-version", "") if response[0] == 200 else ""


def all_synced(mesh: Mesh) -> dict[str, dict[str, dict[str, str]]]:
    status = mesh.plane.proxy_status()
    ok = set(status) == {"productpage", "productpage-envoy"} and all(
        entry["status"] == "SYNCED" for types in status.values() for entry in types.values())
    return status if ok else {}


PROTOCOLS = pytest.mark.parametrize("protocol", ["sotw", "delta"])


@PROTOCOLS
def test_routing_edits_reach_both_proxies_alike(mesh: Mesh, protocol: str) -> None:
    mesh.protocol = protocol
    mesh.reviews("v1", "v2")
    mesh.route("- route: [{destination: {host: reviews, subset: v1}}]\n")
    mesh.start_proxies()
    mesh.converge("first configuration", lambda r: version_of(r) == "v1")
    mesh.same_answers(path="/start")

    mesh.route("""\
        - match: [{headers: {end-user: {exact: jason}}}]
          route: [{destination: {host: reviews, subset: v2}}]
          headers: {response: {set: {x-route: jason}}}
        - match: [{uri: {prefix: /old/}}]
          rewrite: {uri: /new/}
          route: [{destination: {host: reviews, subset: v1}}]
        - match: [{headers: {end-user: {exact: tester}}}]
          fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
          route: [{destination: {host: reviews, subset: v1}}]
        - route: [{destination: {host: reviews, subset: v1}}]
        """)
    mesh.converge("VirtualService header match", lambda r: version_of(r) == "v2", headers={"end-user": "jason"})
    assert mesh.same_answers(headers={"end-user": "jason"})[1]["x-route"] == "jason"
    assert mesh.same_answers(headers={"end-user": "tester"})[::2] == (418, b"fault filter abort")
    assert version_of(mesh.same_answers(headers={"end-user": "alice"})) == "v1"
    mesh.upstreams["v1"].clear()
    mesh.same_answers(path="/old/page")
    assert [r.path for r in mesh.upstreams["v1"].requests] == ["/new/page", "/new/page"]

    mesh.route("""\
        - route:
          - {destination: {host: reviews, subset: v1}, weight: 0}
          - {destination: {host: reviews, subset: v2}, weight: 100}
          retries: {attempts: 3, retryOn: "5xx,unavailable"}
          timeout: 5s
        """)
    mesh.converge("VirtualService weights and retries", lambda r: version_of(r) == "v2", headers={"end-user": "alice"})
    mesh.same_answers(headers={"end-user": "alice"})
    mesh.route("- route: [{destination: {host: reviews, subset: v1}}]\n")
    mesh.converge("VirtualService back to v1", lambda r: version_of(r) == "v1")

    text = (mesh.folder / "reviews.yaml").read_text()
    mesh.write("reviews.yaml", text.replace("- {name: v1, labels: {version: v1}}",
                                            "- {name: v1, labels: {version: v2}}"))
    mesh.converge("DestinationRule subset edit", lambda r: version_of(r) == "v2")
    mesh.same_answers(path="/moved")
    assert wait_for(lambda: all_synced(mesh), CONVERGE, what="both proxies SYNCED on every type")
    [ours] = [p for p in json.loads(mesh.plane.command("proxy-status", "-o", "json", "--control-plane",
                                                         mesh.plane.api)) if p["name"] == "productpage"]
    assert ours["protocol"] == protocol


@PROTOCOLS
def test_wasm_plugins_arrive_change_fail_and_leave_alike(mesh: Mesh, protocol: str) -> None:
    mesh.protocol = protocol
    mesh.reviews("v1")
    mesh.start_proxies()
    mesh.converge("first configuration", lambda r: version_of(r) == "v1")

    mesh.wasm_plugin("headers", plugin_path("headers"), client_port=9080)
    mesh.converge("WasmPlugin applied", lambda r: r[1].get("x-echo-path") == "/probe", path="/probe")
    headers = mesh.same_answers(path="/probe")[1]
    assert headers["x-echo-path"] == "/probe" and headers["x-version"] == "v1"

    mesh.wasm_plugin("config", plugin_path("as_add_header"), {"greeting": "hello"}, client_port=9080)
    mesh.converge("second WasmPlugin", lambda r: r[1].get("x-as-config") == '{"greeting":"hello"}')
    mesh.wasm_plugin("config", plugin_path("as_add_header"), {"greeting": "bye"}, client_port=9080)
    mesh.converge("pluginConfig edit", lambda r: r[1].get("x-as-config") == '{"greeting":"bye"}')
    mesh.same_answers(path="/both")
    wait_for(lambda: all_synced(mesh), CONVERGE, what="ECDS ACKed by both")

    # a new version of a running plugin that cannot load: NACKed, the last good version serves
    mesh.wasm_plugin("config", plugin_path("no_abi_marker"), {"greeting": "broken"}, client_port=9080)

    def ecds_nacked() -> dict[str, dict[str, str]]:
        status = mesh.plane.proxy_status()
        found = {name: types["ECDS"] for name, types in status.items() if types["ECDS"]["status"] == "NACKED"}
        return found if len(found) == 2 else {}

    nacked = wait_for(ecds_nacked, CONVERGE, what="both proxies NACK the broken module")
    ours = nacked["productpage"]["nack"]
    assert ours.startswith("TypedExtensionConfig default.config: typed_config.config.vm_config.code: module ")
    assert "Proxy-Wasm ABI version" in ours
    assert "default.config" in nacked["productpage-envoy"]["nack"]
    answer = mesh.same_answers(path="/still")
    assert answer[0] == 200 and answer[1]["x-as-config"] == '{"greeting":"bye"}'  # traffic keeps flowing

    (mesh.folder / "wasm-config.yaml").unlink()
    (mesh.folder / "wasm-headers.yaml").unlink()
    mesh.converge("WasmPlugins deleted", lambda r: r[0] == 200 and "x-echo-path" not in r[1]
                  and "x-as-config" not in r[1])
    mesh.same_answers(path="/gone")
    wait_for(lambda: all_synced(mesh), CONVERGE, what="both proxies SYNCED again")

    # a new plugin that cannot load: NACKed too, and, as Envoy does for a filter without a
    # config, the listener fails requests rather than letting them skip the plugin
    mesh.wasm_plugin("broken", plugin_path("no_abi_marker"), client_port=9080)
    mesh.converge("new broken plugin fails closed", lambda r: r[0] == 500)
    assert mesh.same_answers(path="/closed") == (500, {"content-length": "0"}, b"")
    assert all(types["ECDS"]["status"] == "NACKED" for types in mesh.plane.proxy_status().values())
    (mesh.folder / "wasm-broken.yaml").unlink()
    mesh.converge("broken WasmPlugin deleted", lambda r: r[0] == 200)
    mesh.same_answers(path="/open")


def test_our_sidecar_registers_its_workload_and_serves_it_inbound(mesh: Mesh) -> None:
    app = mesh.upstream("v1")
    mesh.self_registered_reviews(app.port, plugin_path("headers"))
    mesh.start_proxies()
    mesh.converge("no workload yet", lambda r: r[0] == 503)
    inbound = free_port()
    boot = mesh.plane.bootstrap("reviews-v1", "app=reviews,version=v1", "--port", str(app.port),
                                "--inbound", f"{app.port}={inbound}")
    workload = SidecarProcess(boot, workdir=mesh.workdir / "reviews-sidecar").start()
    try:
        answers = mesh.converge("workload registered by its sidecar's node", lambda r: r[0] == 200)
        for _status, headers, body in answers.values():
            assert body == b"v1" and headers["x-echo-path"] == "/"  # through our inbound listener's plugin
        mesh.same_answers(path="/in")
        assert app.requests[-1].path == "/in"
        status = mesh.plane.proxy_status()["reviews-v1"]
        assert "ECDS" in status and all(s["status"] == "SYNCED" for s in status.values()), status
    finally:
        workload.stop()
    mesh.converge("workload gone with its sidecar", lambda r: r[0] == 503)


def test_worker_processes_follow_the_control_plane_together(tmp_path: Path) -> None:
    """`--concurrency 2`: the supervisor holds the ADS stream, both workers serve each version."""
    mesh = MeshFolder(tmp_path / "config")
    mesh.folder.mkdir()
    plane = ControlPlaneProcess(mesh.folder, tmp_path / "controlplane.log")
    sidecar: SidecarProcess | None = None
    try:
        plane.start()
        mesh.one_endpoint_reviews(mesh.upstream("v1").port)
        port = free_port()
        boot = plane.bootstrap("productpage", "app=productpage", "--port", "9080", "--outbound", f"9080={port}")
        sidecar = SidecarProcess(boot, workdir=tmp_path / "sidecar", concurrency=2).start()
        wait_for(lambda: version_of(http_get(port)) == "v1", CONVERGE, what="served by the workers")
        mesh.wasm_plugin("headers", plugin_path("headers"))
        # every new connection may land on either worker: all of them must run the plugin
        wait_for(lambda: all("x-echo-path" in http_get(port)[1] for _ in range(20)), CONVERGE,
                 what="plugin everywhere")
        assert all(http_get(port, f"/{n}")[1]["x-echo-path"] == f"/{n}" for n in range(40))
        status = json.loads(plane.command("proxy-status", "-o", "json", "--control-plane", plane.api))
        assert [p["name"] for p in status] == ["productpage"]  # one ADS stream for the whole sidecar
        assert all(t["status"] == "SYNCED" for t in status[0]["types"].values())
        dump = json.loads(sidecar.admin_get("/config_dump"))
        [ecds] = [c for c in dump["configs"] if c["@type"].endswith("EcdsConfigDump")]
        assert ecds["ecds_filters"][0]["ecds_filter"]["name"] == "default.headers"
    finally:
        if sidecar is not None:
            sidecar.stop()
        plane.stop()
        mesh.close()


LOAD_S = 8.0
PUSH_EVERY_S = 1.0
CLIENTS = 4


def test_plugin_config_pushes_under_load_fail_no_request(tmp_path: Path) -> None:
    """A bounded load through our sidecar while the control plane pushes a new pluginConfig every
    second: no request fails, and the versions show up in the order they were pushed."""
    mesh = MeshFolder(tmp_path / "config")
    mesh.folder.mkdir()
    plane = ControlPlaneProcess(mesh.folder, tmp_path / "controlplane.log")
    sidecar: SidecarProcess | None = None

    def plugin(version: int) -> None:
        mesh.wasm_plugin("versioned", plugin_path("as_add_header"), {"version": version})

    try:
        plane.start()
        mesh.one_endpoint_reviews(mesh.upstream("v1").port)
        plugin(0)
        port = free_port()
        boot = plane.bootstrap("productpage", "app=productpage", "--port", "9080", "--outbound", f"9080={port}")
        sidecar = SidecarProcess(boot, workdir=tmp_path / "sidecar").start()
        wait_for(lambda: http_get(port)[1].get("x-as-config") == '{"version":0}', CONVERGE,
                 what="version 0 serves")

        failures: list[str] = []
        seen: list[list[int]] = [[] for _ in range(CLIENTS)]
        served = [0] * CLIENTS
        stop = time.monotonic() + LOAD_S

        def client(index: int) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                while time.monotonic() < stop:
                    try:
                        connection.request("GET", f"/load/{index}", headers={"host": "reviews:9080"})
                        reply = connection.getresponse()
                        reply.read()
                    except (OSError, http.client.HTTPException) as err:
                        failures.append(f"client {index}: {type(err).__name__}: {err}")
                        connection.close()
                        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                        continue
                    config = reply.getheader("x-as-config") or ""
                    if reply.status != 200 or not config.startswith('{"version":'):
                        failures.append(f"client {index}: {reply.status} {config!r}")
                        continue
                    served[index] += 1
                    version = int(config.split(":")[1].rstrip("}"))
                    if not seen[index] or seen[index][-1] != version:
                        seen[index].append(version)
            finally:
                connection.close()

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        pushed = 0
        while time.monotonic() < stop - PUSH_EVERY_S:
            time.sleep(PUSH_EVERY_S)
            pushed += 1
            plugin(pushed)
        for thread in threads:
            thread.join(LOAD_S + 15)
        assert not failures, failures[:5]
        assert pushed >= 5
        for versions in seen:
            assert versions == sorted(versions), versions  # never back to an older version
            assert versions[-1] == pushed and len(versions) >= pushed - 1, versions  # saw (almost) every push
        print(f"{pushed} pushes under load, {sum(served)} requests from {CLIENTS} keep-alive clients, none failed; "
              f"versions seen: {seen[0]}")
    finally:
        if sidecar is not None:
            sidecar.stop()
        plane.stop()
        mesh.close()


def test_the_sidecar_rides_out_a_control_plane_restart(tmp_path: Path) -> None:
    """The control plane goes away: traffic keeps its last configuration; a new control plane on
    the same address gets the sidecar back (same node, versions it holds) and its changes apply."""
    mesh = MeshFolder(tmp_path / "config")
    mesh.folder.mkdir()
    plane = ControlPlaneProcess(mesh.folder, tmp_path / "controlplane.log", xds_port=free_port())
    sidecar: SidecarProcess | None = None
    try:
        plane.start()
        mesh.one_endpoint_reviews(mesh.upstream("v1").port)
        port = free_port()
        boot = plane.bootstrap("productpage", "app=productpage", "--port", "9080", "--outbound", f"9080={port}")
        sidecar = SidecarProcess(boot, workdir=tmp_path / "sidecar").start()
        wait_for(lambda: version_of(http_get(port)) == "v1", CONVERGE, what="v1 serves")
        plane.stop()
        assert all(version_of(http_get(port)) == "v1" for _ in range(20))  # the last configuration keeps serving
        mesh.one_endpoint_reviews(mesh.upstream("v2").port)
        plane.start()
        wait_for(lambda: version_of(http_get(port)) == "v2", 20, what="reconnected and updated")
        wait_for(lambda: all(t["status"] == "SYNCED" for p in json.loads(plane.command(
            "proxy-status", "-o", "json", "--control-plane", plane.api)) for t in p["types"].values()), CONVERGE,
            what="SYNCED with the new control plane")
        assert "xDS stream to" in sidecar.log_text() and "closed" in sidecar.log_text()
    finally:
        if sidecar is not None:
            sidecar.stop()
        plane.stop()
        mesh.close()


def test_ingress_gateways_route_alike(mesh: Mesh) -> None:
    mesh.reviews("v1", "v2")
    mesh.ingress_gateway()
    mesh.ports = {"sidecar": free_port(), "envoy": free_port()}

    def gateway(name: str, port: int) -> str:
        return mesh.plane.bootstrap(name, "istio=ingressgateway", "--router", "--outbound", f"8080={port}")

    mesh.sidecar = SidecarProcess(gateway("ingress", mesh.ports["sidecar"]), workdir=mesh.workdir / "sidecar").start()
    mesh.envoy = EnvoyProcess(gateway("ingress-envoy", mesh.ports["envoy"]), workdir=mesh.workdir / "envoy",
                              binary=mesh.envoy_binary).start()
    request = {"path": "/reviews/1", "headers": {"host": "bookinfo.example"}}
    mesh.converge("gateway routes /reviews to v2", lambda r: version_of(r) == "v2", **request)
    assert mesh.same_answers(**request)[2] == b"v2"
    assert mesh.same_answers(path="/other", headers={"host": "bookinfo.example"})[0] == 404


@PROTOCOLS
def test_envoy_filter_patches_reach_both_proxies_alike(mesh: Mesh, protocol: str) -> None:
    """An EnvoyFilter patches what the control plane generates, for our sidecar as for Envoy."""
    mesh.protocol = protocol
    mesh.reviews("v1")
    mesh.route("- route: [{destination: {host: reviews, subset: v1}}]\n")
    mesh.start_proxies()
    mesh.converge("first configuration", lambda r: version_of(r) == "v1")
    mesh.write("envoyfilter.yaml", """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: patched-routes}
spec:
  workloadSelector: {labels: {app: productpage}}
  configPatches:
  - applyTo: ROUTE_CONFIGURATION
    match: {context: SIDECAR_OUTBOUND}
    patch:
      operation: MERGE
      value:
        response_headers_to_add:
        - header: {key: x-patched, value: "by-envoyfilter"}
""")
    mesh.converge("EnvoyFilter route-configuration MERGE", lambda r: r[1].get("x-patched") == "by-envoyfilter")
    assert mesh.same_answers(path="/patched")[1]["x-patched"] == "by-envoyfilter"
    (mesh.folder / "envoyfilter.yaml").unlink()
    mesh.converge("EnvoyFilter removed", lambda r: r[0] == 200 and "x-patched" not in r[1])
    mesh.same_answers(path="/unpatched")
