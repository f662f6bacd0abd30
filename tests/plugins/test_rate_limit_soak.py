"""Memory soak: 1,000,000 requests through the compiled rate_limit plugin in the real host.

Slow (about a minute), so outside the default run: ``pytest -m slow tests/plugins``. The
figures are printed by ``benchmarks/plugin_memory_soak.py``; here only their shape is
asserted: linear memory after warm-up never changes, and the run really limited requests.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from sdk.testing import compiled_module
from tests.plugins._paths import source
from wasmhost import DEFAULT_LIMITS, Environment, Plugin, PluginSpec, Runtime, SendLocalReply, StreamInfo

REQUESTS = 1_000_000
WARMUP = 10_000
USERS = 8
TICK_EVERY = 50


class SteppedClock(Environment):
    """The plugin's clock moves one fill interval (1 ms) per tick, so the run is the same on any machine."""

    def __init__(self) -> None:
        self.now = 1_700_000_000_000_000_000

    def now_ns(self) -> int:
        return self.now

    def monotonic_ns(self) -> int:
        return self.now


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_million_requests_keep_linear_memory_flat() -> None:
    config = {"max_tokens": 4, "tokens_per_fill": 4, "fill_interval_ms": 1, "key_header": "x-user"}
    clock = SteppedClock()
    # memory is what is measured: a callback descheduled on a busy machine must not end the run
    runtime = Runtime(environment=clock, limits=replace(DEFAULT_LIMITS, callback_deadline_ms=10_000))
    try:
        plugin = Plugin(runtime, runtime.compile(compiled_module(source("rate_limit"))),
                        PluginSpec(name="rate_limit", configuration=json.dumps(config).encode()))
        plugin.start()
        runtime.take_commands()
        vm = plugin.vm
        assert vm is not None
        headers = [[(b":path", b"/"), (b"x-user", f"user-{i}".encode())] for i in range(USERS)]
        limited = 0
        memory_after_warmup = heap_after_warmup = -1
        memory_seen: set[int] = set()
        heap_seen: set[int] = set()
        for i in range(REQUESTS):
            stream = plugin.new_http_stream(StreamInfo())
            stream.on_request_headers(list(headers[i % USERS]), True)
            if any(isinstance(c, SendLocalReply) for c in runtime.take_commands()):
                limited += 1
            else:
                stream.on_response_headers([(b":status", b"200")], True)
            stream.finish()
            runtime.take_commands()
            if i % TICK_EVERY == TICK_EVERY - 1:
                clock.now += 1_000_000
                plugin.on_tick()
                runtime.take_commands()
            if i + 1 == WARMUP:
                memory_after_warmup = vm.memory.refresh()
                heap_after_warmup = vm.call(None, "wasmesh_heap_size") or 0
            elif i + 1 > WARMUP and (i + 1) % 10_000 == 0:
                memory_seen.add(vm.memory.refresh())
                heap_seen.add(vm.call(None, "wasmesh_heap_size") or 0)
        assert vm.failed is None
        assert memory_seen == {memory_after_warmup}
        assert heap_seen == {heap_after_warmup}
        # 8 users share 50 requests between ticks, 4 tokens each: 18 of every 50 are limited
        assert limited == REQUESTS // TICK_EVERY * 18
    finally:
        runtime.close()
