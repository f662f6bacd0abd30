"""Host calls: a plugin using headers, bodies, local replies, HTTP calls, shared data,
queues, metrics, properties and foreign functions behaves the same in CPython and compiled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.sdk.compiler._harness import differential, start_plugin
from tests.sdk.compiler._stubhost import StubHost

PLUGIN = Path(__file__).parent / "plugins" / "hostcalls.py"


def make_host() -> StubHost:
    return StubHost(plugin_configuration=b"greeting = hey\nother=1\n", vm_configuration=b"vm-conf")


def full_exchange(runner: Any) -> list[Any]:
    host: StubHost = runner.host
    results = start_plugin(runner)
    # an ordinary request, with a body, trailers and a response
    host.maps[0] = [(b":path", b"/"), (b"user-agent", b"curl"), (b"x-remove-me", b"1")]
    runner.call("proxy_on_context_create", 2, 1)
    results.append(runner.call("proxy_on_request_headers", 2, 3, 0))
    host.buffers[0] = b"hello"
    results.append(runner.call("proxy_on_request_body", 2, 5, 0))
    host.buffers[0] = b"hello body"
    results.append(runner.call("proxy_on_request_body", 2, 10, 1))
    host.maps[1] = [(b"t", b"1")]
    results.append(runner.call("proxy_on_request_trailers", 2, 1))
    host.maps[2] = [(b":status", b"200")]
    results.append(runner.call("proxy_on_response_headers", 2, 1, 0))
    host.buffers[1] = b"the secret is out"
    results.append(runner.call("proxy_on_response_body", 2, 17, 1))
    runner.call("proxy_on_log", 2)
    results.append(runner.call("proxy_on_done", 2))
    runner.call("proxy_on_delete", 2)
    # a denied request: local response
    host.maps[0] = [(b":path", b"/deny")]
    runner.call("proxy_on_context_create", 3, 1)
    results.append(runner.call("proxy_on_request_headers", 3, 1, 1))
    runner.call("proxy_on_delete", 3)
    # a request that waits for an HTTP call
    host.maps[0] = [(b":path", b"/call")]
    runner.call("proxy_on_context_create", 4, 1)
    results.append(runner.call("proxy_on_request_headers", 4, 1, 1))
    host.maps[6] = [(b":status", b"200"), (b"x-user", b"1")]
    host.buffers[4] = b"user-1"
    runner.call("proxy_on_http_call_response", 1, 1, 2, 6, 0)
    results.append(host.effective_context)
    runner.call("proxy_on_delete", 4)
    # a request whose headers are replaced wholesale
    host.maps[0] = [(b":path", b"/rewrite"), (b"a", b"1")]
    runner.call("proxy_on_context_create", 5, 1)
    results.append(runner.call("proxy_on_request_headers", 5, 2, 1))
    runner.call("proxy_on_delete", 5)
    runner.call("proxy_on_tick", 1)
    runner.call("proxy_on_queue_ready", 1, 1)
    results.append(runner.call("proxy_on_done", 1))
    return results


def test_host_calls_have_the_same_effects_compiled() -> None:
    python, wasm = differential(PLUGIN, full_exchange, make_host)
    assert python.error is None and wasm.error is None
    assert wasm.results == python.results
    for key in python.state:
        assert wasm.state[key] == python.state[key], key


def test_host_call_effects_are_the_documented_ones() -> None:
    _, wasm = differential(PLUGIN, full_exchange, make_host)
    state = wasm.state
    assert wasm.results[:2] == [1, 1]  # VM started, plugin configured
    assert wasm.results[2] == 0  # headers: continue
    assert wasm.results[3] == 1  # first body chunk paused
    assert (b"x-added", b"hey") in state["maps"][0]
    assert state["local_response"] == (403, b"", b"forbidden\n", [(b"content-type", b"text/plain"), (b"x-why", b"denied")], -1)
    assert state["buffers"][0] == b">HELLO BODY!"
    assert state["buffers"][1] == b"the ****** is out"
    assert state["http_calls"][0][0] == b"auth"
    assert state["continued"] == [0]
    assert state["shared"][b"counter"] == (b"11", 2)
    assert state["properties"][b"wasm\x00state"] == b"started"
    assert (3, "cas mismatch as expected") in state["logs"]
    assert (2, "foreign b'cba'") in state["logs"]
    assert (2, "dequeued b'tick'") in state["logs"]
    assert state["metrics"][1] == (0, b"requests", 4)
    assert state["tick_period"] == 1000
