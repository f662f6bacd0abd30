"""The control plane's push loop: changes are debounced into one push, a steady stream of
changes still pushes within max_delay, and unchanged types are not re-sent."""

from __future__ import annotations

import time
from pathlib import Path

from controlplane._adsclient import AdsClient
from controlplane._protos import CLUSTER, LISTENER, ROUTE
from tests.controlplane._running import RunningControlPlane, wait_for

SE = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: s%d}
spec:
  hosts: [s%d.default.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
"""


def test_bursts_are_debounced_and_only_changed_types_are_sent(tmp_path: Path) -> None:
    (tmp_path / "s0.yaml").write_text(SE % (0, 0))
    running = RunningControlPlane(tmp_path, debounce=0.3, watch_interval=0.02)
    running.settings.max_delay = 5.0
    with running as plane:
        assert plane.plane is not None
        client = AdsClient(plane.xds_address, "sidecar~127.0.0.1~c.default~default.svc.cluster.local")
        plane.call(client.start())
        try:
            wait_for(lambda: ROUTE in client.versions, what="configured")
            time.sleep(0.5)
            pushes = plane.plane.push_count
            sent = {t: client.updated_at[t] for t in (CLUSTER, LISTENER, ROUTE)}
            for i in range(1, 6):  # five edits, each well inside the debounce window of the previous one
                (tmp_path / f"s{i}.yaml").write_text(SE % (i, i))
                time.sleep(0.05)
            wait_for(lambda: len(client.resources.get(CLUSTER, {})) == 6, what="all six services pushed")
            time.sleep(0.6)
            assert plane.plane.push_count == pushes + 1
            assert client.updated_at[CLUSTER] > sent[CLUSTER] and client.updated_at[ROUTE] > sent[ROUTE]
            assert client.updated_at[LISTENER] == sent[LISTENER]  # same listener (port 80): not sent again
        finally:
            plane.call(client.stop())


def test_a_steady_stream_of_changes_still_pushes_within_max_delay(tmp_path: Path) -> None:
    (tmp_path / "s0.yaml").write_text(SE % (0, 0))
    running = RunningControlPlane(tmp_path, debounce=0.4, watch_interval=0.02)
    running.settings.max_delay = 0.8
    with running as plane:
        assert plane.plane is not None
        pushes = plane.plane.push_count
        deadline = time.monotonic() + 2.5
        i = 1
        while time.monotonic() < deadline:  # a change every 0.1 s never leaves 0.4 s of quiet
            (tmp_path / f"s{i}.yaml").write_text(SE % (i, i))
            i += 1
            time.sleep(0.1)
        assert plane.plane.push_count - pushes >= 2
