"""Shared data (key/value with CAS) and shared queues, scoped by vm_id.

Every VM with the same vm_id sees the same store, as in Envoy. CAS tokens are per key
and change on every write; a write with cas != 0 must match the key's current token
(a missing key ignores cas). Queues are addressed by (vm_id, name); readiness is
signalled to the root context that registered the queue.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._abi import Status
from .limits import Limits

if TYPE_CHECKING:
    from ._context import RootContext


@dataclass(slots=True)
class SharedQueue:
    id: int
    vm_id: str
    name: str
    owner: RootContext | None
    items: deque[bytes] = field(default_factory=deque)


class SharedData:
    """One vm_id's key/value store."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._values: dict[bytes, tuple[bytes, int]] = {}
        self._cas = itertools.count(1)

    def get(self, key: bytes) -> tuple[bytes, int] | None:
        return self._values.get(key)

    def set(self, key: bytes, value: bytes, cas: int) -> Status:
        current = self._values.get(key)
        if current is not None and cas != 0 and cas != current[1]:
            return Status.CAS_MISMATCH
        if len(value) > self._limits.max_shared_value_bytes:
            return Status.BAD_ARGUMENT
        if current is None and len(self._values) >= self._limits.max_shared_keys:
            return Status.BAD_ARGUMENT
        self._values[key] = (value, next(self._cas))
        return Status.OK

    def keys(self) -> list[bytes]:
        return list(self._values)


class SharedRegistry:
    """All shared data stores and queues of one process."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._data: dict[str, SharedData] = {}
        self._queues: dict[int, SharedQueue] = {}
        self._queue_ids: dict[tuple[str, str], int] = {}
        self._next_queue = itertools.count(1)

    def data(self, vm_id: str) -> SharedData:
        store = self._data.get(vm_id)
        if store is None:
            store = self._data[vm_id] = SharedData(self._limits)
        return store

    def register_queue(self, vm_id: str, name: str, owner: RootContext) -> int:
        key = (vm_id, name)
        qid = self._queue_ids.get(key)
        if qid is None:
            qid = next(self._next_queue)
            self._queue_ids[key] = qid
            self._queues[qid] = SharedQueue(qid, vm_id, name, owner)
        else:
            self._queues[qid].owner = owner
        return qid

    def resolve_queue(self, vm_id: str, name: str) -> int | None:
        return self._queue_ids.get((vm_id, name))

    def queue(self, queue_id: int) -> SharedQueue | None:
        return self._queues.get(queue_id)

    def enqueue(self, queue_id: int, value: bytes) -> SharedQueue | None:
        queue = self._queues.get(queue_id)
        if queue is None:
            return None
        if len(queue.items) >= self._limits.max_queue_depth:
            queue.items.popleft()
        queue.items.append(value)
        return queue

    def dequeue(self, queue_id: int) -> tuple[Status, bytes]:
        queue = self._queues.get(queue_id)
        if queue is None:
            return Status.NOT_FOUND, b""
        if not queue.items:
            return Status.EMPTY, b""
        return Status.OK, queue.items.popleft()
