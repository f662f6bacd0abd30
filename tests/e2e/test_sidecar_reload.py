"""Live reload of Wasm plugins under load, bad modules refused, and plugin state across workers.

The reload test is issue 3's requirement: a bounded load (several keep-alive clients on
127.0.0.1) runs while the bootstrap is rewritten every ``SWAP_EVERY_S``, cycling through three
plugin versions — two configurations of the C ``headers`` plugin and the AssemblyScript
``as_add_header`` module — so both a module swap and a configuration-only swap happen under
load. Every response is classified by the header its version adds. It must see no failed
request (connection error or 5xx), and each swap must show up in the responses: a request
sent after a new-version response has completed is answered by the new version.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from tests._tools import plugin_path
from tests.e2e._envoy import wasm_filter
from tests.e2e._upstream import ScriptedUpstream
from tests.wasmhost.sidecar._bootstrap import ROUTER_FILTER, bootstrap, cluster
from tests.wasmhost.sidecar._process import SidecarProcess, http_request

pytestmark = [pytest.mark.e2e]

LOAD_S = 20.0
SWAP_EVERY_S = 2.0
CLIENTS = 4
#: a swap must be visible in responses within this long after the file was written
SWITCH_WITHIN_S = 1.8


@dataclass(frozen=True)
class Version:
    label: str
    plugin: str
    configuration: str
    root_id: str = ""

    def filter(self) -> dict[str, Any]:
        return wasm_filter(plugin_path(self.plugin), name="versioned", root_id=self.root_id,
                           configuration=self.configuration)


VERSIONS = (
    Version("a", "headers", "add response x-version a"),
    Version("b", "as_add_header", "b", root_id="as_add_header"),
    Version("c", "headers", "add response x-version c"),
)


def classify(status: int, headers: list[tuple[str, str]]) -> str:
    """Which version answered: the header it adds; anything else is a failure label."""
    if status >= 500:
        return f"status {status}"
    found = dict(headers)
    if "x-version" in found:
        return found["x-version"]
    if found.get("x-as-config") == "b":
        return "b"
    return f"unversioned {status}"


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    server = ScriptedUpstream(200, [("x-upstream", "1")], "ok").start()
    try:
        yield server
    finally:
        server.stop()


def config_for(upstream: ScriptedUpstream, *filters: dict[str, Any]) -> dict[str, Any]:
    return bootstrap(http_filters=[*filters, ROUTER_FILTER], clusters=[cluster("backend", upstream.port)])


@dataclass(frozen=True)
class Outcome:
    started: float
    ended: float
    label: str


class LoadClient(threading.Thread):
    """One keep-alive connection sending GETs until the deadline; every outcome is recorded."""

    def __init__(self, port: int, deadline: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.deadline = deadline
        self.outcomes: list[Outcome] = []

    def run(self) -> None:
        connection: http.client.HTTPConnection | None = None
        while time.monotonic() < self.deadline:
            current = connection or http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            connection = current
            started = time.monotonic()
            try:
                current.request("GET", "/load", headers={"Host": "example.com"})
                response = current.getresponse()
                response.read()
                label = classify(response.status, [(k.lower(), v) for k, v in response.getheaders()])
                if response.getheader("connection", "").lower() == "close":
                    current.close()
                    connection = None
            except (OSError, http.client.HTTPException) as err:
                label = f"error {type(err).__name__}: {err}"
                current.close()
                connection = None
            self.outcomes.append(Outcome(started, time.monotonic(), label))
        if connection is not None:
            connection.close()


@pytest.mark.parametrize("concurrency", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_reload_under_load_switches_versions_without_failures(tmp_path: Path, upstream: ScriptedUpstream,
                                                              concurrency: int) -> None:
    configs = [config_for(upstream, version.filter()) for version in VERSIONS]
    with SidecarProcess(configs[0], workdir=tmp_path / "sidecar", concurrency=concurrency) as sidecar:
        port = next(iter(sidecar.listener_ports().values()))
        assert classify(*http_request(port, headers=[("Host", "x")])[:2]) == "a"
        start = time.monotonic()
        clients = [LoadClient(port, start + LOAD_S) for _ in range(CLIENTS)]
        for client in clients:
            client.start()
        swaps: list[tuple[float, str]] = [(start, "a")]
        index = 0
        while True:
            next_swap = start + SWAP_EVERY_S * (len(swaps))
            if next_swap > start + LOAD_S - SWAP_EVERY_S / 2:
                break
            time.sleep(max(0.0, next_swap - time.monotonic()))
            index = (index + 1) % len(VERSIONS)
            sidecar.write_config(configs[index])
            swaps.append((time.monotonic(), VERSIONS[index].label))
        for client in clients:
            client.join(timeout=LOAD_S + 30)
        log = sidecar.log_text()
    outcomes = sorted((o for c in clients for o in c.outcomes), key=lambda o: o.started)
    counts = Counter(o.label for o in outcomes)
    failures = [o for o in outcomes if o.label not in {v.label for v in VERSIONS}]
    lags, problems = switch_lags([c.outcomes for c in clients], swaps, one_worker=concurrency == 1)
    print(f"\nreload under load, {concurrency} worker(s): {len(outcomes)} requests in {LOAD_S:.0f} s from {CLIENTS} keep-alive clients "
          f"({len(outcomes) / LOAD_S:.0f} req/s), {len(swaps) - 1} swaps, by version {dict(counts)}, "
          f"failures {len(failures)}, switch lag max {max(lags, default=0):.3f} s")
    by_period = Counter(next(label for written, label in reversed(swaps) if written <= o.started) + "→" + o.label
                        for o in failures)
    errors = [line for line in log.splitlines() if "][ERROR]" in line or "][CRITICAL]" in line or "][WARNING]" in line]
    assert not failures, (failures[:5], dict(by_period), errors[:20])
    assert not problems, problems
    assert len(swaps) - 1 >= 8 and "config reload rejected" not in log, log[-3000:]
    assert all(lag <= SWITCH_WITHIN_S for lag in lags), lags


def switch_lags(clients: list[list[Outcome]], swaps: list[tuple[float, str]],
                one_worker: bool) -> tuple[list[float], list[str]]:
    """Per swap: seconds from the file write to the first new-version response, and what went wrong:
    a swap that never showed, or the old version answering a request sent after the new one had
    answered — on any connection with one worker; on the same connection with several (each
    worker process swaps on its own, a connection stays with its worker)."""
    lags: list[float] = []
    problems: list[str] = []
    for number, (written, label) in enumerate(swaps[1:], start=1):
        until = swaps[number + 1][0] if number + 1 < len(swaps) else float("inf")
        groups = [[o for c in clients for o in c]] if one_worker else clients
        periods = [[o for o in group if written <= o.started < until] for group in groups]
        firsts = [min((o for o in period if o.label == label), key=lambda o: o.ended, default=None)
                  for period in periods]
        seen = [first for first in firsts if first is not None]
        if not seen:
            problems.append(f"swap {number} to {label!r} never showed")
            continue
        lags.append(min(first.ended for first in seen) - written)
        for period, first in zip(periods, firsts, strict=True):
            stale = [o for o in period if first is not None and o.started > first.ended and o.label != label]
            if stale:
                problems.append(f"swap {number}: old version answered after the new one had: {stale[:3]}")
    return lags, problems


# --- bad modules are refused; the old plugin keeps serving ---------------------------------------------

# A module that traps in proxy_on_vm_start (assembled by wasmtime from this text on every run).
TRAP_AT_START_WAT = """
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
    (local.get $ptr))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    unreachable))
"""


def wait_for_log(sidecar: SidecarProcess, pattern: str, after: int, timeout: float = 10.0) -> str:
    """The first log line after byte ``after`` matching ``pattern`` (regex)."""
    deadline = time.monotonic() + timeout
    compiled = re.compile(pattern)
    while time.monotonic() < deadline:
        for line in sidecar.log_text()[after:].splitlines():
            if compiled.search(line):
                return line
        time.sleep(0.05)
    raise AssertionError(f"no log line matching {pattern!r}:\n{sidecar.log_text()[after:][-3000:]}")


def custom_filter(path: Path, configuration: str = "", name: str = "versioned") -> dict[str, Any]:
    return wasm_filter(path, name=name, configuration=configuration)


def test_bad_modules_are_refused_and_the_old_plugin_keeps_serving(tmp_path: Path,
                                                                  upstream: ScriptedUpstream) -> None:
    not_wasm = tmp_path / "not-wasm.wasm"
    not_wasm.write_bytes(b"this is not a wasm module\n")
    trap_at_start = tmp_path / "trap-at-start.wasm"
    trap_at_start.write_bytes(wasmtime.wat2wasm(TRAP_AT_START_WAT))
    bad: list[tuple[str, dict[str, Any], str]] = [
        ("not wasm", custom_filter(not_wasm), r"config reload rejected.*vm_config\.code"),
        ("trap at start", custom_filter(trap_at_start), r"config reload rejected.*(trap|unreachable)"),
        ("on_configure false", custom_filter(plugin_path("lifecycle"), configuration="reject"),
         r"config reload rejected.*configur"),
        ("missing file", custom_filter(tmp_path / "absent.wasm"), r"config reload rejected.*cannot read module"),
    ]
    with SidecarProcess(config_for(upstream, VERSIONS[0].filter()), workdir=tmp_path / "sidecar") as sidecar:
        port = next(iter(sidecar.listener_ports().values()))
        for description, entry, pattern in bad:
            offset = len(sidecar.log_text())
            sidecar.write_config(config_for(upstream, entry))
            line = wait_for_log(sidecar, pattern, offset)
            print(f"{description}: {line}")
            labels = [classify(*http_request(port, headers=[("Host", "x")])[:2]) for _ in range(5)]
            assert labels == ["a"] * 5, (description, labels)
        # the watcher still takes a good configuration after the refusals
        sidecar.write_config(config_for(upstream, VERSIONS[2].filter()))
        deadline = time.monotonic() + 10
        label = ""
        while time.monotonic() < deadline and label != "c":
            label = classify(*http_request(port, headers=[("Host", "x")])[:2])
            time.sleep(0.05)
        assert label == "c"


# --- several workers: one vm_id, one store ---------------------------------------------------------------


def shared_counts(port: int, requests: int) -> list[int]:
    """x-shared-count of ``requests`` requests to ``/req-<n>``, each on its own connection (so
    SO_REUSEPORT spreads them over the workers)."""
    counts = []
    for number in range(requests):
        status, headers, _ = http_request(port, path=f"/req-{number}", headers=[("Host", "x")])
        assert status == 200
        counts.append(int(dict(headers)["x-shared-count"]))
    return counts


def workers_that_served(sidecar: SidecarProcess) -> int:
    """How many worker processes accepted connections (from their per-worker listener stats)."""
    return sum(1 for name, value in sidecar.stats().items()
               if re.match(r"^listener\..*worker_\d+\.downstream_cx_total$", name) and value > 0)


def run_shared_plugin(tmp_path: Path, upstream: ScriptedUpstream, requests: int) -> tuple[list[int], int, str]:
    config = config_for(upstream, wasm_filter(plugin_path("shared"), name="shared", vm_id="one_store"))
    with SidecarProcess(config, workdir=tmp_path / "sidecar", concurrency=2) as sidecar:
        port = next(iter(sidecar.listener_ports().values()))
        counts = shared_counts(port, requests)
        workers = workers_that_served(sidecar)
        time.sleep(0.3)  # let the owning worker drain the queue
        log = sidecar.log_text()
    return counts, workers, log


def test_shared_data_and_queues_span_workers_with_a_state_file(tmp_path: Path, upstream: ScriptedUpstream,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASMESH_SHARED_STATE", str(tmp_path / "shared-state"))
    requests = 40
    counts, workers, log = run_shared_plugin(tmp_path, upstream, requests)
    print(f"\nshared data, 2 workers ({workers} served): counts {counts}")
    assert workers == 2
    # one store: the plugin's CAS counter counts every request exactly once, whichever worker served it
    assert sorted(counts) == list(range(1, requests + 1))


def test_shared_queue_items_from_every_worker_reach_the_owner(tmp_path: Path, upstream: ScriptedUpstream,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASMESH_SHARED_STATE", str(tmp_path / "shared-state"))
    requests = 20
    _, workers, log = run_shared_plugin(tmp_path, upstream, requests)
    assert workers == 2
    delivered = set(re.findall(r"shared: queue_ready queue=\d+ item=(/req-\d+)", log))
    assert delivered == {f"/req-{n}" for n in range(requests)}


def test_shared_data_spans_workers_by_default(tmp_path: Path, upstream: ScriptedUpstream,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WASMESH_SHARED_STATE", raising=False)
    counts, workers, _ = run_shared_plugin(tmp_path, upstream, 20)
    assert workers == 2 and sorted(counts) == list(range(1, 21))
