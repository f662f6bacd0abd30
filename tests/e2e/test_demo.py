"""`wasmesh demo`, run headless as a user would, checked from the outside at every step.

The demo runs with `--step-gate`: after each step it writes `STEP.json` and waits for
`STEP.go`, so this test can look at the running mesh between steps with its own requests
(through productpage's sidecar and the details/ratings sidecars) and its own `wasmesh get` /
`proxy-status` calls, never trusting the demo's printout. A load of its own runs across the
hot reload and the refusals. At the end every address the demo used must be closed again:
the demo stopped everything it started. A second run shows `--duration` stops a demo midway.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
STEP_TIMEOUT_S = 90.0
DURATION_S = 400


def demo_command() -> list[str]:
    """`wasmesh demo` where the CLI registers it, otherwise the same command run as its module."""
    from controlplane.cli import build_parser

    subcommands: Any = build_parser()._subparsers
    if "demo" in subcommands._group_actions[0].choices:
        return [sys.executable, "-m", "controlplane.cli", "demo"]
    return [sys.executable, "-m", "controlplane.cli._demo"]


class Demo:
    def __init__(self, tmp: Path, *extra: str) -> None:
        self.tmp = tmp
        self.state_file = tmp / "state.json"
        self.gates = tmp / "gates"
        self.output = tmp / "demo.out"
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(
                [*demo_command(), "--workdir", str(tmp / "work"), "--state-file", str(self.state_file), *extra],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.state: dict[str, Any] = {}

    def wait_up(self, timeout: float = STEP_TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.state_file.exists():
            assert self.process.poll() is None, self.output.read_text()
            assert time.monotonic() < deadline, f"demo not up in {timeout} s:\n{self.output.read_text()}"
            time.sleep(0.1)
        self.state = json.loads(self.state_file.read_text())
        return self.state

    def port(self, workload: str) -> int:
        return int(self.state["workloads"][workload]["inbound"])

    def reached(self, step: str) -> None:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while not (self.gates / f"{step}.json").exists():
            assert self.process.poll() is None, f"demo exited before {step}:\n{self.output.read_text()}"
            assert time.monotonic() < deadline, f"step {step} not reached:\n{self.output.read_text()}"
            time.sleep(0.05)

    def release(self, step: str) -> None:
        (self.gates / f"{step}.go").touch()

    def wasmesh(self, *args: str) -> str:
        api = self.state["api"].removeprefix("http://")
        return subprocess.run([sys.executable, "-m", "controlplane.cli", *args, "--control-plane", api], cwd=ROOT,
                              check=True, capture_output=True, text=True, timeout=60).stdout

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    running = Demo(tmp_path, "--duration", str(DURATION_S), "--step-gate", str(tmp_path / "gates"))
    try:
        yield running
    finally:
        running.stop()


def get(port: int, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        reply = connection.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        connection.close()


def page(demo: Demo, user: str = "") -> dict[str, Any]:
    status, _, body = get(demo.port("productpage-v1"), "/productpage", {"end-user": user} if user else {})
    assert status == 200, body
    return dict(json.loads(body))


def reviews_versions(demo: Demo, count: int, user: str = "") -> Counter[str]:
    return Counter(str(page(demo, user)["reviews"].get("version")) for _ in range(count))


def plugin_header(demo: Demo, workload: str) -> str | None:
    status, headers, _ = get(demo.port(workload), "/health")
    assert status == 200
    return headers.get("x-demo-plugin")


class Load:
    """Our own keep-alive clients on details' sidecar: every answer's plugin version, in order."""

    def __init__(self, port: int, clients: int = 3, limit_s: float = 120.0) -> None:
        self.port = port
        self.failures: list[str] = []
        self.seen: list[list[str]] = [[] for _ in range(clients)]
        self.counts: Counter[str] = Counter()
        self.stop_at = time.monotonic() + limit_s
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(clients)]
        for thread in self.threads:
            thread.start()

    def client(self, index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stopped.is_set() and time.monotonic() < self.stop_at:
            try:
                connection.request("GET", "/details/0")
                reply = connection.getresponse()
                reply.read()
            except (OSError, http.client.HTTPException) as err:
                self.failures.append(f"{type(err).__name__}: {err}")
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                continue
            version = reply.getheader("x-demo-plugin") or "none"
            if reply.status != 200:
                self.failures.append(f"status {reply.status}")
            self.counts[version] += 1
            if not self.seen[index] or self.seen[index][-1] != version:
                self.seen[index].append(version)
        connection.close()

    def finish(self) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(20)


def wasm_plugin_status(demo: Demo) -> dict[str, dict[str, str]]:
    [manifest] = json.loads(demo.wasmesh("get", "wasmplugin", "demo-header", "-o", "json"))
    return {c["type"]: c for c in manifest["status"]["conditions"]}


def closed(port: int) -> bool:
    try:
        get(port, "/health")
    except OSError:
        return True
    return False


def test_every_step_of_the_demo_holds_from_the_outside(demo: Demo) -> None:
    started = time.monotonic()
    state = demo.wait_up()
    assert state["dashboard"] == f"{state['api']}/dashboard/"
    api_port = int(state["api"].rsplit(":", 1)[1])
    status, headers, _ = get(api_port, "/dashboard/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    for workload in state["workloads"].values():
        assert workload["app"] != workload["inbound"]  # traffic reaches each app through its sidecar

    demo.reached("routing-v1")
    assert reviews_versions(demo, 20) == Counter(v1=20)
    assert page(demo)["details"]["author"] == "William Shakespeare"
    demo.release("routing-v1")

    demo.reached("split-50-v3")
    counts = reviews_versions(demo, 100)
    assert set(counts) == {"v1", "v3"} and 25 <= counts["v1"] <= 75, counts
    demo.release("split-50-v3")

    demo.reached("user-jason")
    assert reviews_versions(demo, 10, "jason") == Counter(v2=10)
    assert reviews_versions(demo, 10, "alice") == Counter(v1=10)
    assert page(demo, "jason")["reviews"]["ratings"]["stars"] == {"Reviewer1": 5, "Reviewer2": 4}
    demo.release("user-jason")

    demo.reached("fault-delay")
    before = time.monotonic()
    delayed = page(demo, "jason")
    assert time.monotonic() - before >= 1.4 and delayed["reviews"]["ratings"]["status"] == 200
    before = time.monotonic()
    assert reviews_versions(demo, 1, "alice") == Counter(v1=1) and time.monotonic() - before < 1.4
    demo.release("fault-delay")

    demo.reached("fault-abort")
    aborted = page(demo, "jason")["reviews"]["ratings"]
    assert aborted["status"] == 500 and "fault filter abort" in aborted["error"]
    demo.release("fault-abort")

    demo.reached("plugin")
    assert plugin_header(demo, "details-v1") == "v1"
    assert [plugin_header(demo, w) for w in ("productpage-v1", "reviews-v1", "ratings-v1")] == [None] * 3
    conditions = wasm_plugin_status(demo)
    assert conditions["Verified"]["status"] == "True" and conditions["Verified"]["reason"] == "Signed"
    load = Load(demo.port("details-v1"))
    demo.release("plugin")

    demo.reached("hot-reload")
    time.sleep(0.5)
    load.finish()
    assert not load.failures, load.failures[:5]
    assert load.counts["v1"] > 0 and load.counts["v2"] > 0 and set(load.counts) == {"v1", "v2"}, load.counts
    assert all(seen == ["v1", "v2"] for seen in load.seen), load.seen  # switched once, never back
    load = Load(demo.port("details-v1"))
    demo.release("hot-reload")

    demo.reached("refuse-unsigned")
    verified = wasm_plugin_status(demo)["Verified"]
    assert verified["status"] == "False" and "is not signed" in verified["message"]
    assert wasm_plugin_status(demo)["Distributed"]["reason"] == "LastGoodVersion"
    assert plugin_header(demo, "details-v1") == "v2"
    demo.release("refuse-unsigned")

    demo.reached("refuse-sha256")
    verified = wasm_plugin_status(demo)["Verified"]
    assert verified["reason"] == "DigestMismatch" and "does not match the expected sha256" in verified["message"]
    proxies = {p["name"]: p for p in json.loads(demo.wasmesh("proxy-status", "-o", "json"))}
    assert set(proxies) == {"productpage-v1", "details-v1", "reviews-v1", "reviews-v2", "reviews-v3", "ratings-v1"}
    assert all(t["status"] == "SYNCED" for p in proxies.values() for t in p["types"].values()), proxies
    assert "LastGoodVersion" in demo.wasmesh("proxy-status")
    config = demo.wasmesh("proxy-config", "all", "details-v1").split("\n")
    assert any(line.startswith("listener") and "virtualInbound" in line for line in config), config
    assert any(line.startswith("ecd") and "default.demo-header" in line for line in config), config
    assert not any("demo-header" in line for line in demo.wasmesh("proxy-config", "ecds", "ratings-v1").split("\n"))
    load.finish()
    assert not load.failures and set(load.counts) == {"v2"}, (load.failures[:5], load.counts)
    demo.release("refuse-sha256")

    assert demo.process.wait(timeout=60) == 0, demo.output.read_text()
    output = demo.output.read_text()
    assert "9/9 steps passed" in output and "/dashboard/" in output
    ports = [state["api"].rsplit(":", 1)[1], state["registry"].rsplit(":", 1)[1]]
    ports += [w["inbound"] for w in state["workloads"].values()] + [w["app"] for w in state["workloads"].values()]
    assert all(closed(int(port)) for port in ports)  # everything the demo started is gone
    print(f"demo with checks between steps: {time.monotonic() - started:.1f} s")


def test_duration_stops_the_demo_and_everything_it_started(tmp_path: Path) -> None:
    demo = Demo(tmp_path, "--duration", "15")
    try:
        state = demo.wait_up()
        assert demo.process.wait(timeout=60) == 1  # cut short: not every step passed
        assert "--duration 15 s elapsed; stopping" in demo.output.read_text()
        assert all(closed(int(w["inbound"])) and closed(int(w["app"])) for w in state["workloads"].values())
        assert closed(int(state["api"].rsplit(":", 1)[1]))
    finally:
        demo.stop()
