"""Crash consistency of the mmap'd shared state: a lock holder killed at any line leaves a usable store.

Each scenario prepares a state file, then runs one operation in a forked child that
SIGKILLs itself at its k-th executed line of the store's modules, for every k up to the
operation's length. The parent then opens the file (which rolls back what the dead child
left half-done) and requires that the store passes a full consistency check
(:func:`consistency_problems`: every block of the heap is exactly one of live or free, free
lists are acyclic, queue counts match their lists, key counters match the keys) and holds
exactly the state from before the operation or after it (or after one of its committed
steps), and that it keeps working. Forked children are always reaped.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from wasmhost import _shared_journal, _shared_layout, _shared_lock, _shared_mmap, _shared_queues
from wasmhost._abi import Status
from wasmhost._shared_layout import (
    _CLASSES,
    _HEADER,
    _ITEM,
    _ITEM_HEADER,
    _MIN_CLASS,
    _OFF_CAS,
    _OFF_FREE,
    _OFF_HEAP_TOP,
    _OFF_JOURNAL,
    _OFF_QUEUE_USED,
    _OFF_SLOT_USED,
    _QUEUE,
    _QUEUE_SIZE,
    _SLOT,
    _SLOT_SIZE,
    create_state_file,
)
from wasmhost._shared_mmap import (
    LOCK_FLOCK,
    LOCK_ROBUST_MUTEX,
    MappedSharedRegistry,
    SharedStateError,
)
from wasmhost.limits import Limits

LOCKS = [pytest.param(LOCK_ROBUST_MUTEX, id="robust-mutex"), pytest.param(LOCK_FLOCK, id="flock")]
_U64 = struct.Struct("<Q")
_DATA, _COUNT, _QUEUE_NAME = 0, 1, 2


# -- reading a state file from the outside -------------------------------------------------------

def _class_of(size: int) -> int:
    return max(_MIN_CLASS, (size - 1).bit_length())


@dataclass
class Parsed:
    """What a state file holds, read straight from its bytes."""

    problems: list[str]
    logical: dict[str, Any]


def parse_state(path: str) -> Parsed:
    """Check every invariant of the layout and describe the contents for comparisons."""
    raw = Path(path).read_bytes()
    problems: list[str] = []
    _, _, _, slots, queues, slot_base, queue_base, heap_base, _, _ = _HEADER.unpack_from(raw, 0)

    def word(offset: int) -> int:
        value: int = _U64.unpack_from(raw, offset)[0]
        return value

    top = word(_OFF_HEAP_TOP)
    if word(_OFF_JOURNAL):
        problems.append(f"journal not empty: {word(_OFF_JOURNAL)} entries")
    if not heap_base <= top <= len(raw):
        problems.append(f"heap top {top} outside the heap")
        return Parsed(problems, {})
    blocks: list[tuple[int, int, str]] = []  # (offset, size, owner)

    def block(offset: int, size: int, owner: str) -> bool:
        if not heap_base <= offset or offset + (1 << _class_of(size)) > top or offset % 16:
            problems.append(f"{owner}: block {offset}+{size} outside the heap [{heap_base}, {top})")
            return False
        blocks.append((offset, 1 << _class_of(size), owner))
        return True

    free_lists = []
    for size_class in range(_CLASSES):
        chain, seen, at = [], set(), word(_OFF_FREE + 8 * size_class)
        while at:
            if at in seen:
                problems.append(f"free list {size_class} is cyclic at {at}")
                break
            seen.add(at)
            if not block(at, 1 << size_class, f"free list {size_class}"):
                break
            chain.append(at)
            at = word(at)
        free_lists.append(chain)

    data: dict[bytes, tuple[bytes, int]] = {}
    key_counts: dict[bytes, int] = {}
    queue_names: dict[int, bytes] = {}
    name_offsets: dict[int, int] = {}
    used = 0
    for index in range(slots):
        key_off, key_len, val_len, val_off, number = _SLOT.unpack_from(raw, slot_base + index * _SLOT_SIZE)
        if not key_off:
            continue
        used += 1
        if not block(key_off, key_len, f"slot {index} key"):
            continue
        key = raw[key_off:key_off + key_len]
        kind, scope = key[0], key[1:5 + int.from_bytes(key[1:5], "little")]
        if kind == _DATA:
            if val_off and not block(val_off, val_len, f"slot {index} value"):
                continue
            if (val_off == 0) != (val_len == 0):
                problems.append(f"slot {index}: value length {val_len} at offset {val_off}")
            data[key] = (raw[val_off:val_off + val_len], number)
            key_counts.setdefault(scope, 0)
        elif kind == _COUNT:
            key_counts.setdefault(scope, 0)
            key_counts[scope] -= number  # every data key of the scope adds one back below
        elif kind == _QUEUE_NAME:
            queue_names[number] = key
            name_offsets[number] = key_off
        else:
            problems.append(f"slot {index}: unknown key kind {kind}")
    for key in data:
        scope = key[1:5 + int.from_bytes(key[1:5], "little")]
        key_counts[scope] += 1
    problems += [f"key counter of {scope!r} is off by {-n}" for scope, n in key_counts.items() if n]
    if used != word(_OFF_SLOT_USED):
        problems.append(f"{used} slots in use, the header says {word(_OFF_SLOT_USED)}")
    tokens = [cas for _, cas in data.values()]
    if len(set(tokens)) != len(tokens) or not all(0 < cas <= word(_OFF_CAS) for cas in tokens):
        problems.append(f"tokens are not distinct and issued: {sorted(tokens)}")

    queue_used = word(_OFF_QUEUE_USED)
    if sorted(queue_names) != list(range(1, queue_used + 1)) or queue_used > queues:
        problems.append(f"queue names {sorted(queue_names)} do not match {queue_used} queues")
    contents: dict[bytes, tuple[list[bytes], int]] = {}
    for queue_id in range(1, queue_used + 1):
        at = queue_base + (queue_id - 1) * _QUEUE_SIZE
        name_off, name_len, count, head, tail, enqueued, _ = _QUEUE.unpack_from(raw, at)
        if name_off != name_offsets.get(queue_id):
            problems.append(f"queue {queue_id}: record names offset {name_off}")
        items, item, last = [], head, 0
        for _ in range(count):
            following, length = _ITEM.unpack_from(raw, item) if heap_base <= item < top else (0, 0)
            if not block(item, _ITEM_HEADER + length, f"queue {queue_id} item"):
                break
            items.append(raw[item + _ITEM_HEADER:item + _ITEM_HEADER + length])
            last, item = item, following
        if count and (last != tail or item != 0):
            problems.append(f"queue {queue_id}: {count} items end at {last} (next {item}), tail is {tail}")
        if not count and (head or tail):
            problems.append(f"queue {queue_id}: empty with head {head} and tail {tail}")
        contents[queue_names.get(queue_id, b"?")] = (items, enqueued)

    end = heap_base
    for offset, size, owner in sorted(blocks):
        if offset != end:
            problems.append(f"{owner}: block at {offset} " + ("overlaps" if offset < end else f"leaves a gap from {end}"))
        end = max(end, offset + size)
    if end != top:
        problems.append(f"the blocks end at {end}, the heap top is {top}")
    logical = {"data": data, "queues": contents, "free": free_lists, "top": top, "cas": word(_OFF_CAS),
               "slots used": used, "queues used": queue_used}
    return Parsed(problems, logical)


def consistency_problems(path: str) -> list[str]:
    return parse_state(path).problems


# -- the checker itself --------------------------------------------------------------------------

@pytest.fixture(params=LOCKS)
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    path = create_state_file(str(tmp_path), slots=64, queues=4, heap_bytes=1 << 20, lock=request.param)
    yield path
    os.unlink(path)


def test_the_checker_accepts_a_busy_store_and_finds_each_kind_of_damage(tmp_path: Path) -> None:
    path = create_state_file(str(tmp_path), slots=64, queues=4, heap_bytes=1 << 20)
    registry = MappedSharedRegistry(path, Limits())
    store = registry.data("vm")
    queue_id = registry.register_queue("vm", "q", object())  # type: ignore[arg-type]
    for number in range(20):
        assert store.set(b"k%d" % (number % 7), b"v" * (number * 37 % 300), 0) == Status.OK
        assert registry.enqueue(queue_id, b"item %d" % number) is not None
        if number % 3:
            assert registry.dequeue(queue_id)[0] == Status.OK
    assert consistency_problems(path) == []
    def slot(key: bytes) -> int:
        return registry._slot_base + registry._probe(key) * _SLOT_SIZE

    one, two, counter = slot(b"\0\x02\0\0\0vmk1"), slot(b"\0\x02\0\0\0vmk2"), slot(b"\x01\x02\0\0\0vm")
    mm, saved = registry._mm, bytes(registry._mm)
    damage: list[tuple[str, Callable[[], None]]] = [
        ("overlaps", lambda: mm.__setitem__(slice(one + 12, one + 24), mm[two + 12:two + 24])),
        ("heap top", lambda: _U64.pack_into(mm, _OFF_HEAP_TOP, len(mm) + 4096)),
        ("items end", lambda: _U64.pack_into(mm, registry._queue_base + 12, 1)),
        ("key counter", lambda: _U64.pack_into(mm, counter + 24, 6)),
        ("tokens are not distinct", lambda: mm.__setitem__(slice(one + 24, one + 32), mm[two + 24:two + 32])),
        ("journal not empty", lambda: _U64.pack_into(mm, _OFF_JOURNAL, 1)),
        ("blocks end at", lambda: _U64.pack_into(mm, _OFF_HEAP_TOP, _U64.unpack_from(mm, _OFF_HEAP_TOP)[0] + 64)),
    ]
    for expected, harm in damage:
        harm()
        problems = consistency_problems(path)
        assert any(expected in problem for problem in problems), (expected, problems)
        mm[:] = saved
    assert consistency_problems(path) == []
    registry.close()


# -- crashing at every line of an operation ------------------------------------------------------

_TRACED = {os.path.abspath(module.__file__ or "") for module in (_shared_mmap, _shared_queues, _shared_layout, _shared_journal, _shared_lock)}


def _run_until_line(stop_at: int, action: Callable[[], object]) -> int:
    """Run ``action``, SIGKILLing this process at its ``stop_at``-th line in the store's modules
    (0: never); returns the number of lines it ran."""
    lines = 0

    def local(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal lines
        if event == "line":
            lines += 1
            if lines == stop_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return local

    def calls(frame: FrameType, event: str, arg: object) -> Any:
        return local if frame.f_code.co_filename in _TRACED else None

    sys.settrace(calls)
    try:
        action()
    finally:
        sys.settrace(None)
    return lines


Operation = Callable[[MappedSharedRegistry], object]


def _in_child(path: str, operation: Operation, stop_at: int) -> int:
    """Fork, open ``path`` and run ``operation`` until the ``stop_at``-th line; the exit status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        code = 3
        try:
            registry = MappedSharedRegistry(path, Limits(max_queue_depth=3))
            _run_until_line(stop_at, lambda: operation(registry))
            code = 0
        finally:
            os._exit(code)
    return reap(pid)


CHILD_DEADLINE_S = 60.0


def reap(pid: int) -> int:
    """The exit status of the child ``pid``; a child that has not ended by the deadline is
    killed and fails the test (so a hang in a forked child cannot wedge the suite)."""
    try:
        waiter = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd here: poll
        deadline = time.monotonic() + CHILD_DEADLINE_S
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            time.sleep(0.001)
    else:
        try:
            if select.select([waiter], [], [], CHILD_DEADLINE_S)[0]:
                return os.waitpid(pid, 0)[1]
        finally:
            os.close(waiter)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"forked child {pid} still ran after {CHILD_DEADLINE_S} s")


def _states_along(path: str, operation: Operation) -> tuple[int, list[dict[str, Any]]]:
    """Lines ``operation`` runs on a copy of ``path``, and the state after each commit and at the end."""
    copy = path + ".clean"
    shutil.copyfile(path, copy)
    states = []
    commit = _shared_journal.UndoJournal.commit

    def commit_and_look(journal: _shared_journal.UndoJournal) -> None:
        commit(journal)
        states.append(parse_state(copy).logical)

    registry = MappedSharedRegistry(copy, Limits(max_queue_depth=3))
    try:
        setattr(_shared_journal.UndoJournal, "commit", commit_and_look)  # noqa: B010 - patched for one run
        lines = _run_until_line(0, lambda: operation(registry))
        states.append(parse_state(copy).logical)
    finally:
        setattr(_shared_journal.UndoJournal, "commit", commit)  # noqa: B010
        registry.close()
        os.unlink(copy)
    return lines, states


def _follow_up(registry: MappedSharedRegistry) -> None:
    """After a recovery the store must keep working."""
    queue_id = registry.resolve_queue("vm", "q")
    if queue_id is not None:
        while registry.dequeue(queue_id)[0] == Status.OK:  # room for what follows, on a full heap too
            pass
        assert registry.enqueue(queue_id, b"after") is not None
        assert registry.dequeue(queue_id) == (Status.OK, b"after")
    store = registry.data("vm")
    assert store.set(b"after", b"recovered", 0) == Status.OK
    assert store.get(b"after") == (b"recovered", _U64.unpack_from(registry._mm, _OFF_CAS)[0])


def crash_everywhere(path: str, operation: Operation) -> int:
    """Kill ``operation`` at each of its lines in turn; returns how many deaths were rolled back."""
    before = parse_state(path)
    assert before.problems == []
    lines, committed = _states_along(path, operation)
    allowed = [before.logical, *committed]
    assert lines > 5, "the operation did not run"
    rolled_back = 0
    for stop_at in range(1, lines + 1):
        victim = f"{path}.{stop_at}"
        shutil.copyfile(path, victim)
        try:
            status = _in_child(victim, operation, stop_at)
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (stop_at, status)
            registry = MappedSharedRegistry(victim, Limits())
            registry.data("vm").get(b"-")  # takes the lock: undoes what the dead child left half-done
            rolled_back += registry.recoveries
            after = parse_state(victim)
            assert after.problems == [], f"killed at line {stop_at} of {lines}: {after.problems}"
            assert after.logical in allowed, f"killed at line {stop_at} of {lines}: a state no commit made"
            _follow_up(registry)
            assert consistency_problems(victim) == [], f"killed at line {stop_at}, then used"
            registry.close()
        finally:
            os.unlink(victim)
    return rolled_back


def _fill(registry: MappedSharedRegistry) -> None:
    """Take every byte of the heap's unreserved tail with values of shrinking size classes."""
    store, number = registry.data("fill"), 0
    for size_class in range(19, _MIN_CLASS - 1, -1):
        while store.set(b"%d" % number, b"f" * ((1 << size_class) - 8), 0) == Status.OK:
            number += 1


Setup = Callable[[MappedSharedRegistry], None]


def _with_values(registry: MappedSharedRegistry) -> None:
    store = registry.data("vm")
    for number in range(6):
        store.set(b"key-%d" % number, b"v" * (20 + 40 * number), 0)
    store.set(b"key-0", b"w" * 20, 0)  # a free block of the class the swap takes


def _with_queue(items: int) -> Setup:
    def setup(registry: MappedSharedRegistry) -> None:
        registry.data("vm")
        queue_id = registry.register_queue("vm", "q", object())  # type: ignore[arg-type]
        for number in range(items):
            registry.enqueue(queue_id, b"item %d" % number)
    return setup


def _with_freed_items(registry: MappedSharedRegistry) -> None:
    """One item queued and two freed ones linked on their size class's free list."""
    _with_queue(3)(registry)
    registry.dequeue(1)
    registry.dequeue(1)


def _with_a_big_free_block(registry: MappedSharedRegistry) -> None:
    """The heap's tail used up and one 512 KiB block free: a small allocation must split it."""
    store = registry.data("vm")
    store.set(b"big", b"b" * 300_000, 0)
    store.set(b"other", b"o", 0)
    _fill(registry)
    assert store.set(b"big", b"", 0) == Status.OK


def _with_a_full_heap_and_queued_items(registry: MappedSharedRegistry) -> None:
    _with_queue(0)(registry)
    queue_id = registry.resolve_queue("vm", "q")
    assert queue_id is not None
    registry.enqueue(queue_id, b"a" * 2000)
    registry.enqueue(queue_id, b"b" * 2000)
    _fill(registry)


def _set(key: bytes, value: bytes, cas: int = 0) -> Operation:
    return lambda registry: registry.data("vm").set(key, value, cas)


def _enqueue(value: bytes) -> Operation:
    return lambda registry: registry.enqueue(1, value)


SCENARIOS: list[tuple[str, Setup, Operation]] = [
    ("set an existing key (swap blocks)", _with_values, _set(b"key-1", b"x" * 25)),
    ("set an existing key to a new size class", _with_values, _set(b"key-2", b"x" * 700)),
    ("set an existing key to empty", _with_values, _set(b"key-3", b"")),
    ("set a new key", _with_values, _set(b"new", b"n" * 100)),
    ("set a new key into a freed block", _with_values, _set(b"new", b"n" * 20)),
    ("set a new key, no room for its name (undone)", _with_a_big_free_block, _set(b"new", b"n" * 300_000)),
    ("split a big free block", _with_a_big_free_block, _set(b"other", b"x" * 100)),
    ("open a new vm_id's store", _with_values, lambda registry: registry.data("second vm")),
    ("register a queue", _with_values, lambda registry: registry.register_queue("vm", "q", object())),  # type: ignore[arg-type]
    ("enqueue on an empty queue", _with_queue(0), _enqueue(b"first")),
    ("enqueue behind items", _with_queue(2), _enqueue(b"third")),
    ("enqueue into a freed block", _with_freed_items, _enqueue(b"again")),
    ("enqueue on a full queue (drops the oldest)", _with_queue(3), _enqueue(b"fourth")),
    ("enqueue on a full heap (drops items in steps)", _with_a_full_heap_and_queued_items, _enqueue(b"c" * 1500)),
    ("dequeue one of two", _with_queue(2), lambda registry: registry.dequeue(1)),
    ("dequeue the last item", _with_queue(1), lambda registry: registry.dequeue(1)),
]


#: the journal does not depend on the lock; flock's recovery (no EOWNERDEAD) is covered by a few
FLOCK_SCENARIOS = {"set an existing key (swap blocks)", "set a new key", "enqueue behind items", "dequeue one of two"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize(("lock", "setup", "operation"), [
    pytest.param(lock, setup, operation, id=f"{lock_name}-{name}")
    for name, setup, operation in SCENARIOS
    for lock, lock_name in ((LOCK_ROBUST_MUTEX, "robust-mutex"), (LOCK_FLOCK, "flock"))
    if lock == LOCK_ROBUST_MUTEX or name in FLOCK_SCENARIOS
])
def test_a_holder_killed_at_any_line_leaves_the_state_before_or_after(
    tmp_path: Path, lock: int, setup: Setup, operation: Operation
) -> None:
    path = create_state_file(str(tmp_path), slots=64, queues=4, heap_bytes=1 << 20, lock=lock)
    try:
        registry = MappedSharedRegistry(path, Limits(max_queue_depth=3))
        setup(registry)
        registry.close()
        rolled_back = crash_everywhere(path, operation)
        assert rolled_back > 0, "no death left work to undo: the crash points missed the operation"
    finally:
        os.unlink(path)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("lock", LOCKS)
def test_a_recovery_killed_at_any_line_is_finished_by_the_next_process(tmp_path: Path, lock: int) -> None:
    path = create_state_file(str(tmp_path), slots=64, queues=4, heap_bytes=1 << 20, lock=lock)
    half_done = path + ".half-done"
    try:
        registry = MappedSharedRegistry(path, Limits())
        _with_values(registry)
        registry.close()
        before = parse_state(path).logical
        update = _set(b"key-2", b"x" * 700)
        lines, _ = _states_along(path, update)
        for stop_at in range(lines, 0, -1):  # the latest death that leaves journal entries behind
            shutil.copyfile(path, half_done)
            _in_child(half_done, update, stop_at)
            if any("journal not empty" in problem for problem in parse_state(half_done).problems):
                break
        else:
            pytest.fail("no death of the update left journal entries")
        assert parse_state(half_done).logical != before, "the dead update had changed nothing yet"

        def recover(registry: MappedSharedRegistry) -> object:
            return registry.data("vm").get(b"key-2")

        recovery_lines, _ = _states_along(half_done, recover)
        for stop_at in range(1, recovery_lines + 1):
            victim = f"{path}.{stop_at}"
            shutil.copyfile(half_done, victim)
            try:
                _in_child(victim, recover, stop_at)
                survivor = MappedSharedRegistry(victim, Limits())
                assert survivor.data("vm").get(b"key-2") == before["data"][b"\0\x02\0\0\0vmkey-2"]
                after = parse_state(victim)
                assert after.problems == [] and after.logical == before, f"recovery killed at line {stop_at}"
                survivor.close()
            finally:
                os.unlink(victim)
    finally:
        for leftover in (path, half_done):
            if os.path.exists(leftover):
                os.unlink(leftover)


def test_an_operation_that_fails_half_way_is_undone_in_process(state: str, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = MappedSharedRegistry(state, Limits())
    _with_values(registry)
    before = parse_state(state).logical
    store = registry.data("vm")
    monkeypatch.setattr(registry, "_next_cas", lambda: (_ for _ in ()).throw(MemoryError("injected")))
    with pytest.raises(MemoryError):
        store.set(b"new", b"n" * 100, 0)
    with pytest.raises(MemoryError):
        store.set(b"key-1", b"x" * 500, 0)
    assert parse_state(state).problems == [] and parse_state(state).logical == before
    monkeypatch.undo()
    assert store.get(b"new") is None and store.set(b"new", b"n", 0) == Status.OK
    assert consistency_problems(state) == []


def test_a_corrupt_journal_is_refused_with_the_reason(state: str) -> None:
    registry = MappedSharedRegistry(state, Limits())
    registry.data("vm")
    mm = registry._mm
    _U64.pack_into(mm, _shared_journal.JOURNAL_BASE, 8)  # the magic's word is never journaled
    _U64.pack_into(mm, _OFF_JOURNAL, 1)
    with pytest.raises(SharedStateError, match="journal entry 0 names offset 8"):
        registry.data("vm").get(b"k")
    _U64.pack_into(mm, _OFF_JOURNAL, 10**6)
    with pytest.raises(SharedStateError, match="undo journal length 1000000"):
        registry.data("vm").get(b"k")
    registry.close()
