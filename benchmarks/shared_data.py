"""Shared data and queue cost per operation: in-process dicts against the mmap'd state file.

Runs each operation the host calls perform (``proxy_get/set_shared_data`` and the queue
calls) directly on ``SharedRegistry``, without a guest, so the numbers are the store's own
cost. The mmap store is measured with both of its locks (robust pthread mutex, flock). The
last part runs requests through the compiled ``rate_limit`` plugin on each backend. The
contended part starts ``--processes`` spawned processes doing the rate-limit pattern (get,
then CAS-set of a counter, retrying on CAS_MISMATCH) on one key for ``--seconds`` and checks
that no increment was lost. Bounded in time by ``--seconds`` per contended run.

    python benchmarks/shared_data.py
    python benchmarks/shared_data.py --processes 4 --seconds 3
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wasmhost._abi import Status  # noqa: E402
from wasmhost._shared import SharedRegistry  # noqa: E402
from wasmhost._shared_mmap import LOCK_FLOCK, LOCK_ROBUST_MUTEX, create_state_file  # noqa: E402
from wasmhost.limits import Limits  # noqa: E402


class _Root:
    deleted = False


def _per_op(action: Callable[[], object], iterations: int) -> float:
    """Best of three runs, in microseconds of this process's CPU time per call.

    CPU time (user + system, so the lock's system calls count) rather than wall time: on
    a shared machine other processes' load would otherwise show up as our cost.
    """
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(iterations):
            action()
        best = min(best, (time.process_time() - started) / iterations * 1e6)
    return best


def _rate_limit_step(store: object) -> Callable[[], object]:
    get = store.get  # type: ignore[attr-defined]
    put = store.set  # type: ignore[attr-defined]

    def step() -> object:
        entry = get(b"ratelimit:10.0.0.1")
        count = int(entry[0]) + 1 if entry is not None else 1
        return put(b"ratelimit:10.0.0.1", str(count).encode(), entry[1] if entry is not None else 0)

    return step


def measure(registry: SharedRegistry, iterations: int) -> dict[str, float]:
    store = registry.data("bench")
    store.set(b"ratelimit:10.0.0.1", b"0", 0)
    store.set(b"hot", b"x" * 64, 0)
    fresh = iter(range(10**9))
    owner: Any = _Root()
    queue_id = registry.register_queue("bench", "q", owner)
    item = b"y" * 64

    def queue_round_trip() -> object:
        registry.enqueue(queue_id, item)
        return registry.dequeue(queue_id)

    return {
        "get (64 B value)": _per_op(lambda: store.get(b"hot"), iterations),
        "set cas=0 (64 B)": _per_op(lambda: store.set(b"hot", item, 0), iterations),
        "get + CAS set (counter)": _per_op(_rate_limit_step(store), iterations),
        "get missing key": _per_op(lambda: store.get(b"absent"), iterations),
        "set new key": _per_op(lambda: store.set(b"k%d" % next(fresh), b"1", 0), min(iterations, 20000)),
        "enqueue + dequeue": _per_op(queue_round_trip, iterations),
        "poll_queues (idle)": _per_op(registry.poll_queues, iterations),
    }


def _hammer(path: str, seconds: float, results: Any) -> None:
    store = SharedRegistry(Limits(), path).data("bench")
    done = retries = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        entry = store.get(b"counter")
        value = int(entry[0]) + 1 if entry is not None else 1
        status = store.set(b"counter", str(value).encode(), entry[1] if entry is not None else 0)
        if status == Status.OK:
            done += 1
        else:
            retries += 1
    results.put((done, retries))


def contended(path: str, processes: int, seconds: float) -> tuple[int, int, int]:
    """(successful increments, CAS retries, final counter) of ``processes`` racing for ``seconds``."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_hammer, args=(path, seconds, results)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    try:
        answers = [results.get(timeout=seconds + 60) for _ in workers]
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.terminate()
    entry = SharedRegistry(Limits(), path).data("bench").get(b"counter")
    return sum(a[0] for a in answers), sum(a[1] for a in answers), int(entry[0]) if entry else 0


def plugin_request_us(path: str, requests: int) -> float:
    """µs per request through the compiled rate_limit plugin (get + CAS set per request)."""
    from sdk.testing import HostEmulator
    from sdk.testing._both_modes import compiled_module

    wasm = compiled_module(Path(__file__).resolve().parent.parent / "plugins" / "rate_limit" / "plugin.py")
    previous = os.environ.pop("WASMESH_SHARED_STATE", None)
    if path:
        os.environ["WASMESH_SHARED_STATE"] = path
    try:
        config = '{"max_tokens": 1000000000, "fill_interval_ms": 3600000}'
        host = HostEmulator.load(wasm, plugin_config=config, vm_id="bench-plugin")
    finally:
        os.environ.pop("WASMESH_SHARED_STATE", None)
        if previous is not None:
            os.environ["WASMESH_SHARED_STATE"] = previous
    host.start_plugin()

    def one_request() -> None:
        stream = host.initialize_http_context()
        host.call_on_request_headers(stream, {":path": "/"}, True)
        host.complete_http_context(stream)

    one_request()
    result = _per_op(one_request, requests)
    host.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()

    paths = {"mmap, robust mutex": create_state_file(lock=LOCK_ROBUST_MUTEX),
             "mmap, flock": create_state_file(lock=LOCK_FLOCK)}
    try:
        columns = {"in-process": measure(SharedRegistry(Limits(), ""), args.iterations)}
        for label, path in paths.items():
            registry = SharedRegistry(Limits(), path)
            columns[label] = measure(registry, args.iterations)
            registry.close()
        names = list(next(iter(columns.values())))
        print(f"{'µs per operation':28}" + "".join(f"{label:>20}" for label in columns))
        for name in names:
            print(f"{name:28}" + "".join(f"{columns[label][name]:20.2f}" for label in columns))
        print()
        print("µs per request through the compiled rate_limit plugin (emulator, one get + CAS set):")
        for label, path in (("in-process", ""), *paths.items()):
            print(f"  {label:26}{plugin_request_us(path, args.requests):10.1f}")
        print()
        lost = False
        for label, path in paths.items():
            done, retries, final = contended(path, args.processes, args.seconds)
            rate = done / args.seconds
            print(f"{label}: {args.processes} processes, {done} CAS increments in {args.seconds:.1f}s "
                  f"({rate:,.0f}/s, {retries} CAS retries), final counter {final}")
            lost = lost or final != done
        if lost:
            print("LOST UPDATES: the final counter differs from the successful increments")
            return 1
    finally:
        for path in paths.values():
            os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
