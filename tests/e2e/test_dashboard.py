"""The mesh console in real headless Chromium (Debian ``chromium`` driven by Playwright, no downloads).

Two sidecars (productpage -> reviews, peer metadata exchanged) and a control plane started
as ``wasmesh controlplane`` with ``WASMESH_SCRAPE_TARGETS`` naming both admin endpoints. The
reviews sidecar also runs a Wasm plugin built from ``tests/data/plugins/wat/trap.wat`` with
FAIL_OPEN, so its first request traps. The graph must show both workloads and the edge
between them; the plugin's page must show its module digest and one trap. Screenshots go to
``tests/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._tools import plugin_path, require_tool
from tests.e2e._telemetry import free_port, listener, node, outbound_cluster, running, sidecar_bootstrap
from tests.e2e._upstream import ScriptedUpstream
from tests.wasmhost.sidecar._bootstrap import cluster
from tests.wasmhost.sidecar._process import LAUNCH, ROOT, http_request

ARTIFACTS = ROOT / "tests" / "artifacts"
WASM = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def trap_filter(path: Path) -> dict[str, Any]:
    return {"name": "default.trap", "typed_config": {"@type": WASM, "config": {
        "name": "default.trap", "root_id": "trap", "failure_policy": "FAIL_OPEN",
        "vm_config": {"vm_id": "trap", "runtime": "envoy.wasm.runtime.v8",
                      "code": {"local": {"filename": str(path)}}}}}}


@pytest.fixture
def control_plane(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, dict[str, str]]]:
    port = free_port()
    env = dict(os.environ)
    process: subprocess.Popen[bytes] | None = None

    def start(targets: list[str]) -> None:
        nonlocal process
        env["WASMESH_SCRAPE_TARGETS"] = ",".join(targets)
        log = open(tmp_path / "controlplane.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen([sys.executable, "-c", LAUNCH, "controlplane", "--xds-address", "127.0.0.1:0",
                                    "--monitoring-address", f"127.0.0.1:{port}"], cwd=ROOT, env=env,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)

    holder: dict[str, Any] = {"start": start}
    try:
        yield holder, port, env  # type: ignore[misc]
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(timeout=15)


def test_console_graph_and_plugin_page(tmp_path: Path, control_plane: Any) -> None:
    chromium = require_tool("chromium", hint="apt-get install chromium")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    holder, port, _ = control_plane
    trap = plugin_path("trap")
    digest = hashlib.sha256(trap.read_bytes()).hexdigest()
    with ScriptedUpstream(body=b"reviews") as app:
        reviews = sidecar_bootstrap(node("reviews-v1"), [listener("virtualInbound_9080", "INBOUND", "inbound|9080||")],
                                    [cluster("inbound|9080||", app.port)])
        reviews["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
            "http_filters"].insert(2, trap_filter(trap))
        with running(reviews, tmp_path / "reviews") as server:
            inbound = server.listener_ports()["virtualInbound_9080"]
            productpage = sidecar_bootstrap(
                node("productpage-v1"),
                [listener("0.0.0.0_9080", "OUTBOUND", "outbound|9080||reviews.default.svc.cluster.local")],
                [outbound_cluster("reviews.default.svc.cluster.local", 9080, inbound)])
            with running(productpage, tmp_path / "productpage") as client:
                holder["start"]([server.admin_url + "/stats/prometheus", client.admin_url + "/stats/prometheus"])
                url = f"http://127.0.0.1:{port}/dashboard/"
                client_port = client.listener_ports()["0.0.0.0_9080"]
                statuses = [http_request(client_port, headers=[("host", "reviews:9080")])[0] for _ in range(20)]
                # the trapping request fails (as in Envoy); FAIL_OPEN lets the following ones through
                assert statuses[0] == 503 and statuses[1:] == [200] * 19
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                with playwright_api.sync_playwright() as playwright:
                    browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                    try:
                        page = browser.new_page(viewport={"width": 1280, "height": 800})
                        deadline = time.monotonic() + 60
                        while True:
                            try:
                                page.goto(url)
                                break
                            except playwright_api.Error:
                                if time.monotonic() > deadline:
                                    raise
                                time.sleep(0.5)
                        edge = page.locator('g.edge[data-source="productpage-v1.default"][data-target="reviews-v1.default"]')
                        edge.wait_for(timeout=30_000)
                        for _ in range(3):  # more traffic so the next scrapes give a rate
                            http_request(client_port, headers=[("host", "reviews:9080")])
                        page.wait_for_function(
                            "() => [...document.querySelectorAll('g.edge text')].some(t => !t.textContent.startsWith('0.00 rps'))",
                            timeout=30_000)
                        nodes = sorted(page.locator("g.node").evaluate_all("els => els.map(e => e.dataset.id)"))
                        assert nodes == ["productpage-v1.default", "reviews-v1.default"]
                        assert "p99" in (edge.text_content() or "")
                        page.screenshot(path=str(ARTIFACTS / "dashboard-graph.png"))

                        page.goto(url + "#/plugins/default.trap")
                        detail = page.locator('.plugin-detail[data-plugin="default.trap"]')
                        detail.wait_for(timeout=30_000)
                        page.wait_for_function(
                            "() => document.querySelector('.plugin-detail .traps')?.textContent === '1'", timeout=30_000)
                        assert digest in detail.locator(".digest").inner_text()
                        assert "reviews-v1.default" in detail.inner_text()
                        page.screenshot(path=str(ARTIFACTS / "dashboard-plugin.png"))

                        page.goto(url + "#/proxies")
                        page.locator("#proxies table").first.wait_for(timeout=10_000)
                        page.screenshot(path=str(ARTIFACTS / "dashboard-proxies.png"))
                    finally:
                        browser.close()
