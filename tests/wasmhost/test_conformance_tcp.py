"""Conformance: ``tcp`` (C) — a network-filter plugin through ``TcpStream``.

New connection, data in both directions (buffers 2/3, edited in place), close from both
sides, then ``on_done``, ``on_log``, ``on_delete`` in Envoy's TCP order. ``proxy_close_stream
(DOWNSTREAM)`` is a command for the embedder.
"""

from __future__ import annotations

from tests._tools import plugin_path
from tests.wasmhost._conformance import ConformanceHost
from wasmhost import CloseStream, StreamType


def messages(host: ConformanceHost) -> list[str]:
    return [e["message"].removeprefix("tcp: ") for e in host.environment.take()]


def test_connection_lifecycle_and_data_rewrites() -> None:
    with ConformanceHost(plugin_path("tcp")) as host:
        conn = host.plugin.new_tcp_stream()
        assert conn.on_new_connection() == 0
        down = conn.on_data(b"hello server", False, downstream=True)
        assert (down.status, down.forward) == (0, b"HELLO SERVER")
        up = conn.on_data(b"hi client", False, downstream=False)
        assert (up.status, up.forward) == (0, b"[wasm]hi client")
        empty = conn.on_data(b"", True, downstream=False)
        assert empty.forward == b""  # nothing to prefix
        conn.on_close(downstream=False, peer=0)
        conn.on_close(downstream=True, peer=2)
        assert messages(host) == [
            "new_connection ctx=2",
            "downstream_data ctx=2 size=12 eos=0 status_size=12",
            "upstream_data ctx=2 size=9 eos=0",
            "upstream_data ctx=2 size=0 eos=1",
            "upstream_close ctx=2 peer=0",
            "downstream_close ctx=2 peer=2",
            "done ctx=2",
            "log ctx=2",
            "delete ctx=2",
        ]
        assert host.runtime.take_commands() == []


def test_close_stream_downstream_is_a_command_and_data_passes_unchanged() -> None:
    with ConformanceHost(plugin_path("tcp")) as host:
        conn = host.plugin.new_tcp_stream()
        conn.on_new_connection()
        verdict = conn.on_data(b"please CLOSE now", True, downstream=True)
        assert verdict.forward == b"please CLOSE now"
        [close] = host.runtime.take_commands()
        assert isinstance(close, CloseStream) and close.direction is StreamType.DOWNSTREAM
        assert close.stream is conn.ctx
        assert messages(host)[-1] == "close_stream status=0"
