"""Memory soak: a million requests through the compiled rate_limit plugin in the real host.

The plugin (``plugins/rate_limit``, compiled by the SDK's compiler) runs in ``wasmhost`` the
way the sidecar drives it: per request a stream is opened, request headers delivered, the
response headers delivered unless the plugin answered 429 itself, the stream finished and the
deferred commands drained. Requests carry one of 8 user ids (one bucket each, in shared data,
updated with CAS); buckets hold 4 tokens, the tick refills them (1 ms interval) and is
fired every 50 requests, the plugin's clock moving 1 ms per tick, so both verdicts keep
happening (18 of every 50 requests are limited).

What it prints: the guest's linear memory (bytes committed) and its heap (bytes the module's
allocator has handed out, and bytes live after its last collection) after the warm-up and at
every checkpoint, then whether linear memory stayed constant after warm-up. Run:
``python benchmarks/plugin_memory_soak.py [--requests N] [--warmup N] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sdk.compiler import compile_file  # noqa: E402
from wasmhost import DEFAULT_LIMITS, Environment, Plugin, PluginSpec, Runtime, SendLocalReply, StreamInfo  # noqa: E402

CONFIG = {"max_tokens": 4, "tokens_per_fill": 4, "fill_interval_ms": 1, "key_header": "x-user"}
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


@dataclass
class Sample:
    requests: int
    linear_memory: int
    heap_size: int
    heap_live: int
    limited: int


def run(requests: int, warmup: int, checkpoints: int) -> tuple[Sample, list[Sample], float]:
    """Drive the plugin; return the sample after warm-up, the later samples and the rate."""
    module = compile_file(ROOT / "plugins" / "rate_limit" / "plugin.py")
    clock = SteppedClock()
    # memory is what is measured: a callback descheduled on a busy machine must not end the run
    runtime = Runtime(environment=clock, limits=replace(DEFAULT_LIMITS, callback_deadline_ms=10_000))
    try:
        plugin = Plugin(runtime, runtime.compile(module), PluginSpec(name="rate_limit",
                                                                     configuration=json.dumps(CONFIG).encode()))
        plugin.start()
        runtime.take_commands()
        vm = plugin.vm
        assert vm is not None
        headers = [[(b":authority", b"example.com"), (b":path", b"/orders"), (b":method", b"GET"),
                    (b"x-user", f"user-{i}".encode())] for i in range(USERS)]
        limited = 0

        def sample(done: int) -> Sample:
            return Sample(done, vm.memory.refresh(), vm.call(None, "wasmesh_heap_size") or 0,
                          vm.call(None, "wasmesh_heap_live") or 0, limited)

        every = max(1, (requests - warmup) // checkpoints)
        after_warmup: Sample | None = None
        samples: list[Sample] = []
        started = time.perf_counter()
        for i in range(requests):
            stream = plugin.new_http_stream(StreamInfo())
            stream.on_request_headers(list(headers[i % USERS]), True)
            replied = any(isinstance(c, SendLocalReply) for c in runtime.take_commands())
            if replied:
                limited += 1
            else:
                stream.on_response_headers([(b":status", b"200")], True)
            stream.finish()
            runtime.take_commands()
            if i % TICK_EVERY == TICK_EVERY - 1:
                clock.now += 1_000_000
                plugin.on_tick()
                runtime.take_commands()
            done = i + 1
            if done == warmup:
                after_warmup = sample(done)
            elif done > warmup and (done - warmup) % every == 0:
                samples.append(sample(done))
        elapsed = time.perf_counter() - started
        if vm.failed is not None:
            raise RuntimeError(f"the plugin failed during the soak: {vm.failed}")
        assert after_warmup is not None
        return after_warmup, samples, requests / elapsed
    finally:
        runtime.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--warmup", type=int, default=10_000)
    parser.add_argument("--checkpoints", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not 0 < args.warmup < args.requests:
        parser.error("--warmup must be between 0 and --requests")
    warm, samples, rate = run(args.requests, args.warmup, args.checkpoints)
    flat = all(s.linear_memory == warm.linear_memory for s in samples)
    if args.json:
        print(json.dumps({
            "requests": args.requests, "warmup": args.warmup, "requests_per_second": round(rate),
            "after_warmup": warm.__dict__, "samples": [s.__dict__ for s in samples],
            "linear_memory_constant": flat,
        }))
        return 0 if flat else 1
    print(f"rate_limit soak: {args.requests:,} requests, {rate:,.0f} requests/s")
    print(f"{'requests':>10} {'linear memory':>14} {'heap size':>10} {'heap live':>10} {'limited':>9}")
    for s in [warm, *samples]:
        print(f"{s.requests:>10,} {s.linear_memory:>14,} {s.heap_size:>10,} {s.heap_live:>10,} {s.limited:>9,}")
    verdict = "constant" if flat else "GREW"
    print(f"linear memory after warm-up: {verdict} at {warm.linear_memory:,} bytes "
          f"(last {samples[-1].linear_memory:,})" if samples else "no samples")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())

