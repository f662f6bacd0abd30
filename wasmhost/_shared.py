"""Shared data (key/value with CAS) and shared queues, scoped by vm_id.

Every VM with the same vm_id sees the same store, as in Envoy. CAS tokens change on every
write (u32, never 0); a write with cas != 0 must match the key's current token (a missing
key ignores cas). Queues are addressed by (vm_id, name); readiness is signalled to the root
context that registered the queue last.

Two backends behind :class:`SharedRegistry`: plain dicts for one process (the default), or,
when ``WASMESH_SHARED_STATE`` names a state file, :mod:`._shared_mmap`'s store that every
worker process of ``wasmesh sidecar --concurrency N`` maps, so one vm_id is one store across
them. There, items other processes enqueue reach the owning root through
:meth:`SharedRegistry.poll_queues`, which the embedder calls from a timer.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ._abi import Status
from .limits import Limits

if TYPE_CHECKING:
    from ._context import RootContext
    from ._shared_mmap import MappedSharedRegistry

#: Environment variable naming the state file shared by worker processes (unset: per process).
STATE_ENV = "WASMESH_SHARED_STATE"
_CAS_WRAP = 0xFFFFFFFF  # tokens travel as u32; they cycle 1..2^32-1 and skip 0 ("no CAS")


@dataclass(slots=True)
class SharedQueue:
    """A queue's identity and owner; ``items`` is live in-process, a snapshot across processes."""

    id: int
    vm_id: str
    name: str
    owner: RootContext | None
    items: deque[bytes] = field(default_factory=deque)


class SharedStore(Protocol):
    """One vm_id's key/value store, whichever backend holds it."""

    def get(self, key: bytes) -> tuple[bytes, int] | None: ...

    def set(self, key: bytes, value: bytes, cas: int) -> Status: ...

    def keys(self) -> list[bytes]: ...


class SharedData:
    """One vm_id's key/value store in this process."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._values: dict[bytes, tuple[bytes, int]] = {}
        self._cas = 0

    def get(self, key: bytes) -> tuple[bytes, int] | None:
        return self._values.get(key)

    def set(self, key: bytes, value: bytes, cas: int) -> Status:
        current = self._values.get(key)
        if current is not None and cas != 0 and (cas & 0xFFFFFFFF) != current[1]:
            return Status.CAS_MISMATCH
        if len(value) > self._limits.max_shared_value_bytes:
            return Status.BAD_ARGUMENT
        if current is None and len(self._values) >= self._limits.max_shared_keys:
            return Status.BAD_ARGUMENT
        self._cas = self._cas % _CAS_WRAP + 1
        self._values[key] = (value, self._cas)
        return Status.OK

    def keys(self) -> list[bytes]:
        return list(self._values)


class LocalSharedRegistry:
    """All shared data stores and queues of one process."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._data: dict[str, SharedData] = {}
        self._queues: dict[int, SharedQueue] = {}
        self._queue_ids: dict[tuple[str, str], int] = {}

    def data(self, vm_id: str) -> SharedData:
        store = self._data.get(vm_id)
        if store is None:
            store = self._data[vm_id] = SharedData(self._limits)
        return store

    def register_queue(self, vm_id: str, name: str, owner: RootContext) -> int:
        key = (vm_id, name)
        qid = self._queue_ids.get(key)
        if qid is None:
            qid = len(self._queues) + 1
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

    def poll_queues(self) -> list[tuple[RootContext, int]]:
        return []  # every enqueue happens here, and the host call notifies the owner at once

    def close(self) -> None:
        pass


class SharedRegistry:
    """Shared data and queues for one runtime: per process, or across processes via a state file.

    ``state_path`` (default: the ``WASMESH_SHARED_STATE`` environment variable; empty means
    unset) selects the cross-process backend.
    """

    def __init__(self, limits: Limits, state_path: str | None = None) -> None:
        path = os.environ.get(STATE_ENV, "") if state_path is None else state_path
        self.state_path = path or None
        self._backend: LocalSharedRegistry | MappedSharedRegistry
        if path:
            from ._shared_mmap import MappedSharedRegistry

            self._backend = MappedSharedRegistry(path, limits)
        else:
            self._backend = LocalSharedRegistry(limits)

    def data(self, vm_id: str) -> SharedStore:
        return self._backend.data(vm_id)

    def register_queue(self, vm_id: str, name: str, owner: RootContext) -> int:
        """The queue's id (0 only when a state file's queue table is full)."""
        return self._backend.register_queue(vm_id, name, owner)

    def resolve_queue(self, vm_id: str, name: str) -> int | None:
        return self._backend.resolve_queue(vm_id, name)

    def queue(self, queue_id: int) -> SharedQueue | None:
        return self._backend.queue(queue_id)

    def enqueue(self, queue_id: int, value: bytes) -> SharedQueue | None:
        """The queue, its ``owner`` set when a root of this process must be notified now."""
        return self._backend.enqueue(queue_id, value)

    def dequeue(self, queue_id: int) -> tuple[Status, bytes]:
        return self._backend.dequeue(queue_id)

    def poll_queues(self) -> list[tuple[RootContext, int]]:
        """(root, queue id) per item other processes enqueued for roots of this process.

        Push ``NotifyQueueReady(root, queue_id)`` for each; always empty in-process.
        """
        return self._backend.poll_queues()

    def close(self) -> None:
        self._backend.close()
