"""Shared data and queues across real processes through the mmap'd state file.

``wasmesh sidecar --concurrency N`` runs N workers; one vm_id must stay one store across
them. Children are started with the ``spawn`` method (as the sidecar supervisor does) and
race on one state file: CAS increments are never lost, each queue item is dequeued exactly
once, values and tokens are seen by every process, a worker killed while holding the lock
does not wedge the others, and the real ``shared`` plugin counts requests across processes.
Every child has a deadline and is stopped in ``finally``. The kill test forks its
children (at least 30 per lock kind) and checks the whole file with the consistency checker of
``test_shared_crash`` after every kill.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from tests._tools import plugin_path
from tests.wasmhost.test_shared_crash import consistency_problems
from wasmhost._abi import Status
from wasmhost._commands import NotifyQueueReady
from wasmhost._shared import STATE_ENV, LocalSharedRegistry, SharedData, SharedRegistry
from wasmhost._shared_layout import _OFF_JOURNAL
from wasmhost._shared_mmap import (
    LOCK_FLOCK,
    LOCK_ROBUST_MUTEX,
    MappedSharedRegistry,
    SharedStateError,
    create_state_file,
)
from wasmhost.limits import Limits

CHILD_DEADLINE_S = 60.0
LOCKS = [pytest.param(LOCK_ROBUST_MUTEX, id="robust-mutex"), pytest.param(LOCK_FLOCK, id="flock")]


class Root:
    """Stands in for a RootContext: the registry only keeps it and reads ``deleted``."""

    deleted = False


def make_root() -> Any:
    return Root()


@pytest.fixture(params=LOCKS)
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    path = create_state_file(str(tmp_path), slots=1024, heap_bytes=1 << 22, lock=request.param)
    yield path
    os.unlink(path)


def run_children(target: Callable[..., None], arguments: list[tuple[Any, ...]]) -> list[Any]:
    """Start one spawned child per argument tuple; each sends one result back.

    Children get a barrier to wait on once set up, so their work overlaps instead of
    running one after another as they finish starting.
    """
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start = context.Barrier(len(arguments))
    children = [context.Process(target=target, args=(results, start, *args)) for args in arguments]
    try:
        for child in children:
            child.start()
        answers = [results.get(timeout=CHILD_DEADLINE_S) for _ in children]
    finally:
        for child in children:
            child.join(10)
            if child.is_alive():
                child.kill()
                child.join(5)
    failures = [a for a in answers if isinstance(a, str) and a.startswith("error:")]
    assert not failures, failures
    return answers


def _guarded(results: Any, work: Callable[[], Any]) -> None:
    try:
        results.put(work())
    except BaseException as err:  # noqa: BLE001 - the parent reports what failed in the child
        results.put(f"error: {type(err).__name__}: {err}")


# -- children (module level so that ``spawn`` can import them) -----------------------------------

def _increment(results: Any, start: Any, path: str, successes: int) -> None:
    def work() -> tuple[int, int, list[int]]:
        store = SharedRegistry(Limits(), path).data("pool")
        start.wait(CHILD_DEADLINE_S)
        done = retries = 0
        tokens = []
        deadline = time.monotonic() + CHILD_DEADLINE_S / 2
        while done < successes and time.monotonic() < deadline:
            entry = store.get(b"counter")
            value = int(entry[0]) + 1 if entry is not None else 1
            status = store.set(b"counter", b"%d" % value, entry[1] if entry is not None else 0)
            if status == Status.OK:
                done += 1
                if entry is not None:
                    tokens.append(entry[1])  # the token this write consumed
            else:
                assert status == Status.CAS_MISMATCH, status
                retries += 1
        return done, retries, tokens

    _guarded(results, work)


def _produce_and_consume(results: Any, start: Any, path: str, tag: str, produce: int, producers: int) -> None:
    def work() -> list[bytes]:
        registry = SharedRegistry(Limits(), path)
        store = registry.data("pool")
        queue_id = registry.resolve_queue("pool", "work")
        assert queue_id is not None
        start.wait(CHILD_DEADLINE_S)
        taken: list[bytes] = []
        for number in range(produce):
            assert registry.enqueue(queue_id, f"{tag}-{number}".encode()) is not None
            status, item = registry.dequeue(queue_id)
            if status == Status.OK:
                taken.append(item)
        while True:  # count this producer as finished
            entry = store.get(b"producers-done")
            done = int(entry[0]) + 1 if entry is not None else 1
            if store.set(b"producers-done", b"%d" % done, entry[1] if entry is not None else 0) == Status.OK:
                break
        deadline = time.monotonic() + CHILD_DEADLINE_S / 2
        while time.monotonic() < deadline:  # drain, racing the other consumers
            status, item = registry.dequeue(queue_id)
            if status == Status.OK:
                taken.append(item)
                continue
            finished = store.get(b"producers-done")
            if finished is not None and int(finished[0]) == producers and registry.dequeue(queue_id)[0] == Status.EMPTY:
                break  # nothing more can arrive
            time.sleep(0.001)
        return taken

    _guarded(results, work)


def _write_and_report(results: Any, start: Any, path: str) -> None:
    def work() -> tuple[int, int]:
        store = SharedRegistry(Limits(), path).data("pool")
        before = store.get(b"from-parent")
        assert before is not None
        assert store.set(b"from-child", b"child value", 0) == Status.OK
        entry = store.get(b"from-child")
        assert entry is not None
        return before[1], entry[1]

    _guarded(results, work)


def _hold_lock_and_die(conn: Connection, path: str) -> None:
    registry = MappedSharedRegistry(path, Limits())
    registry._lock.acquire()
    conn.send("holding")
    os.kill(os.getpid(), signal.SIGKILL)


def _hold_lock_briefly(conn: Connection, path: str, hold_s: float) -> None:
    registry = MappedSharedRegistry(path, Limits())
    registry._lock.acquire()
    conn.send("holding")
    time.sleep(hold_s)
    conn.send("releasing")  # a pipe write is done when send returns, before we let go
    registry._lock.release()


def _requests_through_plugin(results: Any, start: Any, path: str, wasm: str, count: int, prefix: str) -> None:
    def work() -> list[int]:
        os.environ[STATE_ENV] = path
        from tests.wasmhost._conformance import ConformanceHost

        counts = []
        with ConformanceHost(Path(wasm), vm_id="pool") as host:
            start.wait(CHILD_DEADLINE_S)
            for number in range(count):
                headers = dict(host.request(path=f"/{prefix}-{number}")["response"]["headers"])
                assert headers["x-queue-enqueue-status"] == "0"
                if headers["x-shared-cas-retries"] != "10":
                    counts.append(int(headers["x-shared-count"]))
        return counts

    _guarded(results, work)


# -- data ----------------------------------------------------------------------------------------

def test_cas_increments_from_three_processes_lose_no_update(state: str) -> None:
    # created first: two writers that both find no key would both succeed (a missing key ignores cas)
    assert SharedRegistry(Limits(), state).data("pool").set(b"counter", b"0", 0) == Status.OK
    answers = run_children(_increment, [(state, 3000)] * 3)
    successes = sum(done for done, _, _ in answers)
    assert successes == 9000
    entry = SharedRegistry(Limits(), state).data("pool").get(b"counter")
    assert entry is not None and int(entry[0]) == successes
    consumed = [token for _, _, tokens in answers for token in tokens]
    assert len(consumed) == successes
    assert len(set(consumed)) == len(consumed)  # a token is matched once: no two writes shared one


def test_values_and_tokens_are_seen_by_every_process(state: str) -> None:
    registry = SharedRegistry(Limits(), state)
    store = registry.data("pool")
    assert store.set(b"from-parent", b"parent value", 0) == Status.OK
    parent_token = store.get(b"from-parent")[1]  # type: ignore[index]
    [(seen_token, child_token)] = run_children(_write_and_report, [(state,)])
    assert seen_token == parent_token
    assert store.get(b"from-child") == (b"child value", child_token)
    assert child_token > parent_token
    assert store.set(b"from-child", b"stale", child_token + 1) == Status.CAS_MISMATCH
    assert store.set(b"from-child", b"fresh", child_token) == Status.OK
    assert store.get(b"from-child")[0] == b"fresh"  # type: ignore[index]
    assert sorted(store.keys()) == [b"from-child", b"from-parent"]
    assert registry.data("other").get(b"from-child") is None  # one vm_id, one store


def test_caps_and_a_full_heap_answer_bad_argument(tmp_path: Path) -> None:
    path = create_state_file(str(tmp_path), slots=64, heap_bytes=2 << 20)
    try:
        limits = Limits(max_shared_keys=3, max_shared_value_bytes=600_000)
        store = SharedRegistry(limits, path).data("vm")
        assert store.set(b"big", b"x" * 600_001, 0) == Status.BAD_ARGUMENT
        for key in (b"a", b"b", b"c"):
            assert store.set(key, b"1", 0) == Status.OK
        assert store.set(b"d", b"1", 0) == Status.BAD_ARGUMENT  # max_shared_keys per vm_id
        assert store.set(b"a", b"2", 7) == Status.CAS_MISMATCH  # checked before the size, as in-process
        assert store.set(b"a", b"x" * 600_000, 0) == Status.OK  # a 1 MiB block: the heap has room for one
        assert store.set(b"b", b"y" * 600_000, 0) == Status.BAD_ARGUMENT  # heap exhausted
        other = SharedRegistry(Limits(), path).data("other")
        assert other.set(b"huge", b"z" * 600_000, 0) == Status.BAD_ARGUMENT
        assert other.get(b"huge") is None  # a refused new key is not half-inserted
        assert store.get(b"b") is not None and store.get(b"b")[0] == b"1"  # type: ignore[index]
        assert store.set(b"a", b"small", 0) == Status.OK  # frees the big block...
        assert store.set(b"b", b"y" * 600_000, 0) == Status.OK  # ...which is reused
        statuses = [other.set(b"k%d" % n, b"v", 0) for n in range(64)]
        assert Status.BAD_ARGUMENT in statuses  # the table keeps a quarter of its slots free
        assert statuses.index(Status.BAD_ARGUMENT) == statuses.count(Status.OK)
    finally:
        os.unlink(path)


def test_tokens_are_u32_and_never_zero(tmp_path: Path) -> None:
    local = SharedData(Limits())
    local._cas = 0xFFFFFFFE
    assert local.set(b"k", b"1", 0) == Status.OK and local.get(b"k")[1] == 0xFFFFFFFF  # type: ignore[index]
    assert local.set(b"k", b"2", 0xFFFFFFFF) == Status.OK and local.get(b"k")[1] == 1  # type: ignore[index]
    path = create_state_file(str(tmp_path), slots=64, heap_bytes=1 << 20)
    try:
        registry = MappedSharedRegistry(path, Limits())
        registry._mm[104:112] = (0xFFFFFFFE).to_bytes(8, "little")  # the header's CAS counter
        store = registry.data("vm")
        assert store.set(b"k", b"1", 0) == Status.OK and store.get(b"k")[1] == 0xFFFFFFFF  # type: ignore[index]
        assert store.set(b"k", b"2", 0xFFFFFFFF) == Status.OK and store.get(b"k")[1] == 1  # type: ignore[index]
        registry.close()
    finally:
        os.unlink(path)


# -- queues --------------------------------------------------------------------------------------

def test_queue_items_from_many_processes_are_dequeued_exactly_once(state: str) -> None:
    registry = SharedRegistry(Limits(), state)
    queue_id = registry.register_queue("pool", "work", make_root())
    answers = run_children(_produce_and_consume, [(state, tag, 2000, 3) for tag in ("a", "b", "c")])
    taken = [item for answer in answers for item in answer]
    assert registry.dequeue(queue_id) == (Status.EMPTY, b"")
    expected = {f"{tag}-{n}".encode() for tag in ("a", "b", "c") for n in range(2000)}
    assert len(taken) == len(expected) and set(taken) == expected


def test_the_registering_process_is_told_of_items_enqueued_elsewhere(state: str) -> None:
    owner, other = make_root(), make_root()
    mine = SharedRegistry(Limits(), state)
    theirs = SharedRegistry(Limits(), state)
    queue_id = mine.register_queue("pool", "events", owner)
    assert mine.poll_queues() == []
    assert theirs.resolve_queue("pool", "events") == queue_id
    assert theirs.resolve_queue("", "events") is None
    for item in (b"one", b"two"):
        queue = theirs.enqueue(queue_id, item)
        assert queue is not None and queue.owner is None  # not this process's root
    assert mine.poll_queues() == [(owner, queue_id), (owner, queue_id)]
    assert mine.poll_queues() == []
    local = mine.enqueue(queue_id, b"three")
    assert local is not None and local.owner is owner  # the host call notifies at once...
    assert mine.poll_queues() == []  # ...so polling does not announce it again
    snapshot = mine.queue(queue_id)
    assert snapshot is not None and list(snapshot.items) == [b"one", b"two", b"three"]
    assert (snapshot.vm_id, snapshot.name) == ("pool", "events")
    assert theirs.register_queue("pool", "events", other) == queue_id  # last registration owns it
    mine.enqueue(queue_id, b"four")
    assert mine.poll_queues() == [] and theirs.poll_queues() == [(other, queue_id)]
    assert [theirs.dequeue(queue_id)[1] for _ in range(4)] == [b"one", b"two", b"three", b"four"]
    assert theirs.dequeue(queue_id) == (Status.EMPTY, b"")
    assert theirs.dequeue(queue_id + 1)[0] == Status.NOT_FOUND
    assert theirs.enqueue(queue_id + 1, b"x") is None


def test_a_full_queue_drops_its_oldest_item(state: str) -> None:
    registry = SharedRegistry(Limits(max_queue_depth=3), state)
    queue_id = registry.register_queue("pool", "short", make_root())
    for number in range(5):
        registry.enqueue(queue_id, b"%d" % number)
    assert [registry.dequeue(queue_id)[1] for _ in range(3)] == [b"2", b"3", b"4"]


# -- the lock ------------------------------------------------------------------------------------

def start_child(target: Callable[..., None], *args: Any) -> tuple[Any, Connection]:
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    child = context.Process(target=target, args=(child_end, *args))
    child.start()
    child_end.close()
    return child, parent_end


def stop_child(child: Any) -> None:
    child.join(CHILD_DEADLINE_S)
    if child.is_alive():
        child.kill()
        child.join(5)


def test_a_worker_killed_while_holding_the_lock_does_not_wedge_the_others(state: str) -> None:
    registry = MappedSharedRegistry(state, Limits())
    assert registry.data("pool").set(b"before", b"kept", 0) == Status.OK
    child, conn = start_child(_hold_lock_and_die, state)
    try:
        assert conn.poll(CHILD_DEADLINE_S) and conn.recv() == "holding"
    finally:
        stop_child(child)
    assert child.exitcode == -signal.SIGKILL
    outcome: list[Any] = []
    worker = threading.Thread(target=lambda: outcome.append(registry.data("pool").get(b"before")), daemon=True)
    worker.start()
    worker.join(CHILD_DEADLINE_S)
    assert outcome and outcome[0][0] == b"kept", "the lock stayed with the dead process"
    assert registry.data("pool").set(b"after", b"ok", 0) == Status.OK
    assert registry.lock_owner_deaths == (1 if registry.lock_kind == LOCK_ROBUST_MUTEX else 0)


def _hammer(path: str, started: int) -> None:
    """Every kind of update, in a loop, until the parent kills this process."""
    registry = MappedSharedRegistry(path, Limits(max_queue_depth=4))
    store = registry.data("pool")
    queue_id = registry.resolve_queue("pool", "work")
    assert queue_id is not None
    os.write(started, b"s")
    while True:
        entry = store.get(b"counter")
        value = int(entry[0]) + 1 if entry is not None else 1
        store.set(b"counter", b"%d" % value, entry[1] if entry is not None else 0)
        store.set(b"scratch-%d" % (value % 50), b"v" * (value * 7 % 700), 0)
        registry.enqueue(queue_id, b"%d" % value)
        registry.enqueue(queue_id, b"%d" % value)  # two in, one out: the queue fills and drops items
        registry.dequeue(queue_id)


#: kill at least this often, and on until this many kills have hit a half-done update (most do)
MIN_KILLS, MIN_HALF_DONE, MAX_KILLS = 30, 10, 400


def _stop_inside_an_update(registry: MappedSharedRegistry, pid: int, limit_s: float = 0.5) -> None:
    """Freeze the child half-way through an update (its undo journal holds entries), if it gets there in time.

    Random moments alone rarely land inside an update under ``flock``, so half the kills aim:
    SIGSTOP when the journal is busy, and keep the child stopped only if it still is.
    """
    words, at = registry._words, _OFF_JOURNAL >> 3
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if words[at]:
            os.kill(pid, signal.SIGSTOP)
            os.waitpid(pid, os.WUNTRACED)
            if words[at]:
                return  # the SIGKILL that follows lands inside this update
            os.kill(pid, signal.SIGCONT)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_worker_killed_mid_update_leaves_a_usable_store(state: str) -> None:
    registry = MappedSharedRegistry(state, Limits())
    queue_id = registry.register_queue("pool", "work", make_root())
    store = registry.data("pool")
    assert store.set(b"counter", b"0", 0) == Status.OK  # created here: a child may die before its first commit
    seed = random.randrange(1 << 32)
    moments = random.Random(seed)
    kill = 0
    while kill < MIN_KILLS or (registry.recoveries < MIN_HALF_DONE and kill < MAX_KILLS):
        kill += 1  # kill at many moments of the same busy loop
        started_r, started_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child works until it is killed
            try:
                os.close(started_r)
                _hammer(state, started_w)
            finally:
                os._exit(3)
        try:
            os.close(started_w)
            assert select.select([started_r], [], [], CHILD_DEADLINE_S)[0], "the child never started"
            assert os.read(started_r, 1) == b"s", "the child failed before it started"
            time.sleep(moments.uniform(0, 0.02))
            if kill % 2 == 0:  # every other kill aims at an update in progress
                _stop_inside_an_update(registry, pid)
        finally:
            os.kill(pid, signal.SIGKILL)  # a SIGKILLed child always ends, so this wait is bounded
            _, status = os.waitpid(pid, 0)
            os.close(started_r)
        context = f"kill {kill} (seed {seed})"
        assert os.WIFSIGNALED(status), f"{context}: the child stopped on its own with {status}"
        entry = store.get(b"counter")  # the first locker undoes the dead child's half-done update
        assert consistency_problems(state) == [], context
        assert entry is not None and entry[0].isdigit(), context
        assert store.set(b"counter", b"%d" % (int(entry[0]) + 1), entry[1]) == Status.OK, context
        assert registry.enqueue(queue_id, b"after") is not None, context
        items = []
        while (item := registry.dequeue(queue_id))[0] == Status.OK:
            items.append(item[1])
        assert items[-1] == b"after" and all(i.isdigit() for i in items[:-1]), context
        assert consistency_problems(state) == [], context
    keys = set(store.keys())
    assert b"counter" in keys and keys <= {b"counter"} | {b"scratch-%d" % n for n in range(50)}
    # with no update undone the test would prove nothing
    assert registry.recoveries >= MIN_HALF_DONE, f"{kill} kills, {registry.recoveries} mid-update (seed {seed})"


def test_the_lock_excludes_another_process(state: str) -> None:
    registry = MappedSharedRegistry(state, Limits())
    child, conn = start_child(_hold_lock_briefly, state, 0.3)
    try:
        assert conn.poll(CHILD_DEADLINE_S) and conn.recv() == "holding"
        registry._lock.acquire()
        try:
            assert conn.poll(0), "got the lock while the other process still held it"
            assert conn.recv() == "releasing"
        finally:
            registry._lock.release()
    finally:
        stop_child(child)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_share_the_parents_lock(state: str) -> None:
    registry = MappedSharedRegistry(state, Limits())
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe and exits
        try:
            registry._lock.acquire()
            os.write(ready_w, b"h")
            time.sleep(0.3)
            os.write(ready_w, b"r")
            registry._lock.release()
        finally:
            os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"h"
        registry._lock.acquire()
        try:
            os.set_blocking(ready_r, False)
            assert os.read(ready_r, 1) == b"r"  # we got the lock only after the child let go
        finally:
            registry._lock.release()
    finally:
        os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(ready_w)


# -- the file and the selection ------------------------------------------------------------------

def test_the_environment_variable_selects_the_backend(state: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STATE_ENV, raising=False)
    assert isinstance(SharedRegistry(Limits())._backend, LocalSharedRegistry)
    monkeypatch.setenv(STATE_ENV, "")
    assert isinstance(SharedRegistry(Limits())._backend, LocalSharedRegistry)
    monkeypatch.setenv(STATE_ENV, state)
    registry = SharedRegistry(Limits())
    assert isinstance(registry._backend, MappedSharedRegistry) and registry.state_path == state
    registry.close()


def test_an_empty_file_is_formatted_and_any_other_file_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.state"
    empty.touch()
    first = MappedSharedRegistry(str(empty), Limits())
    assert first.data("vm").set(b"k", b"v", 0) == Status.OK
    assert MappedSharedRegistry(str(empty), Limits()).data("vm").get(b"k") == (b"v", 1)
    foreign = tmp_path / "foreign.state"
    foreign.write_bytes(b"WMSHST01" + b"\x09" + b"\0" * 4095)
    with pytest.raises(SharedStateError, match="foreign.state: format version 9"):
        MappedSharedRegistry(str(foreign), Limits())
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("keep me")
    with pytest.raises(SharedStateError, match="notes.txt: not a wasmesh shared state file"):
        MappedSharedRegistry(str(unrelated), Limits())
    assert unrelated.read_text() == "keep me"
    with pytest.raises(SharedStateError, match="power of two"):
        create_state_file(str(tmp_path), slots=1000)


# -- the real plugin -----------------------------------------------------------------------------

RATE_LIMIT = json.dumps({"max_tokens": 100, "fill_interval_ms": 3_600_000})


def _rate_limited_requests(results: Any, start: Any, path: str, wasm: bytes, count: int) -> None:
    def work() -> tuple[int, int]:
        os.environ[STATE_ENV] = path
        from sdk.testing import HostEmulator

        host = HostEmulator.load(wasm, plugin_config=RATE_LIMIT, vm_id="edge")
        try:
            host.start_plugin()
            start.wait(CHILD_DEADLINE_S)
            passed = 0
            for _ in range(count):
                stream = host.initialize_http_context()
                host.call_on_request_headers(stream, {":path": "/"}, True)
                passed += host.local_response(stream) is None
                host.complete_http_context(stream)
            return passed, sum("too contended" in m for m in host.logs("warn"))
        finally:
            host.close()

    _guarded(results, work)


def test_the_rate_limit_plugin_spends_each_token_once_across_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sdk.testing import HostEmulator
    from sdk.testing._both_modes import compiled_module

    wasm = compiled_module(Path(__file__).resolve().parents[2] / "plugins" / "rate_limit" / "plugin.py")
    path = create_state_file(str(tmp_path), slots=1024, heap_bytes=1 << 22)
    try:
        # one request first: the plugin creates a missing bucket with cas 0, which two
        # workers racing on the very first request could both do
        monkeypatch.setenv(STATE_ENV, path)
        first = HostEmulator.load(wasm, plugin_config=RATE_LIMIT, vm_id="edge")
        assert first.runtime.shared.state_path == path
        first.start_plugin()
        stream = first.initialize_http_context()
        first.call_on_request_headers(stream, {":path": "/"}, True)
        assert first.local_response(stream) is None
        first.close()
        answers = run_children(_rate_limited_requests, [(path, wasm, 60)] * 3)
        passed = sum(granted for granted, _ in answers)
        let_through = sum(contended for _, contended in answers)  # the plugin's own escape hatch
        assert passed == 99 + let_through  # 180 requests for 99 tokens: none spent twice, none lost
        bucket = SharedRegistry(Limits(), path).data("edge").get(b"rate_limit:default:bucket:")
        assert bucket is not None and bucket[0].split()[0] == b"0"
    finally:
        os.unlink(path)


def test_queue_ready_reaches_the_plugin_in_the_owning_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.wasmhost._conformance import ConformanceHost

    wasm = plugin_path("shared")
    path = create_state_file(str(tmp_path), slots=1024, heap_bytes=1 << 22)
    monkeypatch.setenv(STATE_ENV, path)
    try:
        with ConformanceHost(wasm, vm_id="pool") as owner:
            run_children(_requests_through_plugin, [(path, str(wasm), 2, "elsewhere")])
            # a child registered the queue after us; registering again makes this process the owner
            ready = owner.runtime.shared.poll_queues()
            assert ready == []
            root = owner.plugin.root
            assert root is not None
            queue_id = owner.runtime.shared.register_queue("pool", "wasmesh_queue", root)
            other = SharedRegistry(Limits(), path)
            other.enqueue(queue_id, b"/from-another-process")
            ready = owner.runtime.shared.poll_queues()
            assert ready == [(root, queue_id)]
            for ready_root, ready_id in ready:
                owner.runtime.commands.push(NotifyQueueReady(ready_root, ready_id))
            owner._drain(None)
            messages = [entry["message"] for entry in owner.environment.take()]
            assert f"shared: queue_ready queue={queue_id} item=/from-another-process" in messages
    finally:
        os.unlink(path)
