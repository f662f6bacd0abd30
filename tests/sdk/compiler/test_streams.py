"""TCP filters run the same compiled as in CPython."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.sdk.compiler._harness import differential, start_plugin

TCP = Path(__file__).parent / "plugins" / "tcp.py"


def connection(runner: Any) -> list[Any]:
    host = runner.host
    results = start_plugin(runner)
    runner.call("proxy_on_context_create", 2, 1)
    results.append(runner.call("proxy_on_new_connection", 2))
    host.buffers[2] = b"ping ping"
    results.append(runner.call("proxy_on_downstream_data", 2, 9, 0))
    results.append(bytes(host.buffers[2]))
    host.buffers[2] = b"WAIT"
    results.append(runner.call("proxy_on_downstream_data", 2, 4, 0))
    host.buffers[3] = b"reply"
    results.append(runner.call("proxy_on_upstream_data", 2, 5, 1))
    results.append(bytes(host.buffers[3]))
    runner.call("proxy_on_downstream_connection_close", 2, 2)
    runner.call("proxy_on_upstream_connection_close", 2, 1)
    runner.call("proxy_on_log", 2)
    runner.call("proxy_on_delete", 2)
    return results


def test_tcp_filter_behaves_the_same_compiled() -> None:
    python, wasm = differential(TCP, connection)
    assert python.error is None and wasm.error is None
    assert wasm.results == python.results == [1, 1, 0, 0, b"pong pong", 1, 0, b"[up]reply"]
    assert wasm.state == python.state
    assert wasm.state["closed"] == [2]
    assert wasm.state["logs"][-1] == (2, "done after 13 bytes")
