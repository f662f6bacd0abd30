"""What the sidecar offers an HTTP/2 client (SETTINGS and the connection window), alike real Envoy.

The windows bound what a client may send into a stream nobody reads, so the defaults matter as
much as the configured values.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._envoy import EnvoyProcess
from tests.e2e._h2_peers import H2Client
from tests.e2e._upstream import ScriptedUpstream
from tests.wasmhost.sidecar._bootstrap import bootstrap, cluster
from tests.wasmhost.sidecar._process import SidecarProcess

pytestmark = [pytest.mark.e2e]

OPTIONS = {
    "defaults": None,
    "windows": {"initial_stream_window_size": 1 << 20, "initial_connection_window_size": 4 << 20,
                "max_concurrent_streams": 50},
    "allow_connect": {"allow_connect": True},
}


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as running:
        running.set_response(200, [("content-type", "text/plain")], b"ok")
        yield running


def settings_config(port: int, options: dict[str, Any] | None) -> dict[str, Any]:
    extra: dict[str, Any] = {"codec_type": "AUTO"}
    if options is not None:
        extra["http2_protocol_options"] = options
    return bootstrap(clusters=[cluster("backend", port)], hcm_extra=extra)


def offered(port: int) -> dict[str, int]:
    """The proxy's settings and connection window, read after one request (so both have arrived)."""
    with H2Client(port) as client:
        assert client.wait(client.request("GET", "/"))[0] == b"200"
        with client.lock:
            settings = client.conn.remote_settings
            return {"max_concurrent_streams": settings.max_concurrent_streams,
                    "initial_window_size": settings.initial_window_size,
                    "max_frame_size": settings.max_frame_size,
                    "enable_connect_protocol": settings.enable_connect_protocol,
                    "connection_window": client.conn.outbound_flow_control_window}


@pytest.mark.envoy
@pytest.mark.parametrize("options", list(OPTIONS), ids=list(OPTIONS))
def test_http2_settings_match_envoy(tmp_path: Path, upstream: ScriptedUpstream, envoy_binary: str,
                                    options: str) -> None:
    config = settings_config(upstream.port, OPTIONS[options])
    with EnvoyProcess(config, workdir=tmp_path / "envoy", binary=envoy_binary) as envoy:
        theirs = offered(next(iter(envoy.listener_ports().values())))
    with SidecarProcess(config, workdir=tmp_path / "sidecar") as sidecar:
        ours = offered(sidecar.listener_ports()["listener_0"])
    assert ours == theirs
