"""Queues in the shared state file: registration, enqueue/dequeue and owner notification.

``enqueue`` from any process appends to the queue's linked list and bumps a global epoch; the
process whose root context registered the queue last finds out in
:meth:`MappedQueues.poll_queues`, which the embedder calls from a timer. Every update is
journaled like the key/value updates of :class:`._shared_mmap.MappedSharedRegistry`, which
mixes this class in.
"""

from __future__ import annotations

import mmap
from collections import deque
from typing import TYPE_CHECKING

from ._abi import Status
from ._shared_layout import (
    _ITEM,
    _ITEM_HEADER,
    _OFF_EPOCH,
    _OFF_FREE,
    _OFF_QUEUE_USED,
    _QUEUE,
    _QUEUE_LIST,
    _QUEUE_NAME,
    _QUEUE_SIZE,
    _SLOT_KEY,
    _SLOT_SIZE,
    _scoped,
    _size_class,
    _unscope,
)

if TYPE_CHECKING:
    from ._context import RootContext
    from ._shared import SharedQueue
    from ._shared_journal import UndoJournal
    from .limits import Limits


class MappedQueues:
    """The queue half of the mapped registry (a mixin: the registry owns the file and the lock)."""

    if TYPE_CHECKING:
        _mm: mmap.mmap
        _words: memoryview
        _journal: UndoJournal
        _limits: Limits
        _token: int
        _slot_base: int
        _queue_base: int
        _queue_capacity: int
        _queue_ids: dict[tuple[str, str], int]
        _queue_refs: dict[int, SharedQueue]
        _owned: dict[int, RootContext]
        _notified: dict[int, int]
        _seen_epoch: int

        def _acquire(self) -> None: ...
        def _release(self) -> None: ...
        def _probe(self, full: bytes) -> int: ...
        def _claim(self, index: int, full: bytes, number: int, val_len: int = 0, val_off: int = 0) -> bool: ...
        def _alloc(self, size: int, also: tuple[int, ...] = ()) -> int: ...

    def _record_at(self, queue_id: int) -> int:
        """Offset of a registered queue's record, or 0 (call with the lock held)."""
        words = self._words
        if 1 <= queue_id <= words[_OFF_QUEUE_USED >> 3]:
            return self._queue_base + (queue_id - 1) * _QUEUE_SIZE
        return 0

    def register_queue(self, vm_id: str, name: str, owner: RootContext) -> int:
        """Create or reopen (vm_id, name); this process's ``owner`` gets its notifications.

        Returns 0 when the queue table or the heap is full.
        """
        words = self._words
        full = _scoped(_QUEUE_NAME, vm_id, name.encode("utf-8", "surrogateescape"))
        mm = self._mm
        self._acquire()
        try:
            index = self._probe(full)
            if index >= 0:
                queue_id = words[(self._slot_base + index * _SLOT_SIZE + 24) >> 3]
            else:
                used = words[_OFF_QUEUE_USED >> 3]
                if used >= self._queue_capacity:
                    return 0
                queue_id = used + 1
                if not self._claim(~index, full, queue_id):
                    return 0
                name_off = _SLOT_KEY.unpack_from(mm, self._slot_base + ~index * _SLOT_SIZE)[0]
                at = self._queue_base + used * _QUEUE_SIZE
                self._journal.record(at, at + 8, at + 16, at + 24, at + 32, at + 40, _OFF_QUEUE_USED)
                _QUEUE.pack_into(mm, at, name_off, len(full), 0, 0, 0, 0, 0)
                words[_OFF_QUEUE_USED >> 3] = queue_id
            owner_at = self._queue_base + (queue_id - 1) * _QUEUE_SIZE + 40
            self._journal.record(owner_at)
            words[owner_at >> 3] = self._token
            enqueued = words[(owner_at - 8) >> 3]
            self._journal.commit()
        finally:
            self._release()
        self._owned[queue_id] = owner
        self._notified[queue_id] = enqueued  # items enqueued before now are not announced
        self._queue_ids[(vm_id, name)] = queue_id
        return queue_id

    def resolve_queue(self, vm_id: str, name: str) -> int | None:
        words = self._words
        queue_id = self._queue_ids.get((vm_id, name))
        if queue_id is not None:
            return queue_id
        full = _scoped(_QUEUE_NAME, vm_id, name.encode("utf-8", "surrogateescape"))
        self._acquire()
        try:
            index = self._probe(full)
            if index < 0:
                return None
            queue_id = words[(self._slot_base + index * _SLOT_SIZE + 24) >> 3]
        finally:
            self._release()
        self._queue_ids[(vm_id, name)] = queue_id
        return queue_id

    def _describe(self, queue_id: int, at: int, owner_token: int) -> SharedQueue:
        """The queue's identity with this process's owner (None when another process owns it)."""
        from ._shared import SharedQueue

        queue = self._queue_refs.get(queue_id)
        if queue is None:
            name_off, name_len = _SLOT_KEY.unpack_from(self._mm, at)
            vm_id, name = _unscope(self._mm[name_off:name_off + name_len])
            queue = SharedQueue(queue_id, vm_id, name.decode("utf-8", "surrogateescape"), None)
            self._queue_refs[queue_id] = queue
        queue.owner = self._owned.get(queue_id) if owner_token == self._token else None
        return queue

    def queue(self, queue_id: int) -> SharedQueue | None:
        """A snapshot of the queue, its waiting items copied out."""
        from ._shared import SharedQueue

        mm = self._mm
        self._acquire()
        try:
            at = self._record_at(queue_id)
            if not at:
                return None
            ref = self._describe(queue_id, at, _QUEUE.unpack_from(mm, at)[6])
            queue = SharedQueue(queue_id, ref.vm_id, ref.name, ref.owner, deque(self._items(at)))
        finally:
            self._release()
        return queue

    def _items(self, at: int) -> list[bytes]:
        mm = self._mm
        _, _, count, item, _, _, _ = _QUEUE.unpack_from(mm, at)
        items = []
        for _ in range(count):
            following, length = _ITEM.unpack_from(mm, item)
            items.append(mm[item + _ITEM_HEADER:item + _ITEM_HEADER + length])
            item = following
        return items

    def enqueue(self, queue_id: int, value: bytes) -> SharedQueue | None:
        """Append ``value``; None for an unknown queue (or when even dropping its items frees no room).

        The returned queue's ``owner`` is set only when this process owns it; another owner
        learns of the item through its ``poll_queues``.
        """
        words = self._words
        mm = self._mm
        self._acquire()
        try:
            at = self._record_at(queue_id)
            if not at:
                return None
            while True:
                count, _, tail, _ = _QUEUE_LIST.unpack_from(mm, at + 12)
                links = (tail, at + 8, at + 16, at + 24, at + 32) if count else (at + 8, at + 16, at + 24, at + 32)
                block = self._alloc(_ITEM_HEADER + len(value), links)  # journals the links too
                if block:
                    break
                # the heap is full: drop the oldest item, one committed step per item, which
                # keeps the journal bounded (a death here leaves a shorter, consistent queue)
                if self._pop_item(at) is None:
                    return None
                self._journal.commit()
            _ITEM.pack_into(mm, block, 0, len(value))
            mm[block + _ITEM_HEADER:block + _ITEM_HEADER + len(value)] = value
            if _QUEUE_LIST.unpack_from(mm, at + 12)[0] >= self._limits.max_queue_depth:
                self._pop_item(at)  # after the allocation: its block must not be the one just filled
            count, head, tail, enqueued = _QUEUE_LIST.unpack_from(mm, at + 12)
            if count:  # the tail was journaled with the allocation (a drop never changes a live tail)
                words[tail >> 3] = block
            else:
                head = block
            _QUEUE_LIST.pack_into(mm, at + 12, count + 1, head, block, enqueued + 1)
            # not journaled: the epoch only ever grows (rolled back, a poller could miss an item)
            words[_OFF_EPOCH >> 3] = words[_OFF_EPOCH >> 3] + 1
            self._journal.commit()
            queue = self._describe(queue_id, at, words[(at + 40) >> 3])
            if queue.owner is not None:
                self._notified[queue_id] = self._notified.get(queue_id, 0) + 1  # the caller notifies
        finally:
            self._release()
        return queue

    def _pop_item(self, at: int) -> bytes | None:
        """Unlink and free the oldest item (uncommitted); the count, not the links, says when the
        queue is empty."""
        words = self._words
        mm = self._mm
        count, head, tail, enqueued = _QUEUE_LIST.unpack_from(mm, at + 12)
        if not count:
            return None
        following, length = _ITEM.unpack_from(mm, head)
        value = mm[head + _ITEM_HEADER:head + _ITEM_HEADER + length]
        left = count - 1
        head_at = _OFF_FREE + 8 * _size_class(_ITEM_HEADER + length)
        self._journal.record(at + 8, at + 16, at + 24, head, head_at)
        _QUEUE_LIST.pack_into(mm, at + 12, left, following if left else 0, tail if left else 0, enqueued)
        words[head >> 3] = words[head_at >> 3]  # the item goes on its free list (``_push``, inlined)
        words[head_at >> 3] = head
        return value

    def dequeue(self, queue_id: int) -> tuple[Status, bytes]:
        self._acquire()
        try:
            at = self._record_at(queue_id)
            if not at:
                return Status.NOT_FOUND, b""
            value = self._pop_item(at)
            self._journal.commit()
        finally:
            self._release()
        return (Status.EMPTY, b"") if value is None else (Status.OK, value)

    def poll_queues(self) -> list[tuple[RootContext, int]]:
        """(owner root, queue id) once per item other processes enqueued on queues owned here.

        Cheap when nothing happened: one unlocked read of the global enqueue epoch.
        """
        words = self._words
        if not self._owned or words[_OFF_EPOCH >> 3] == self._seen_epoch:
            return []
        ready: list[tuple[RootContext, int]] = []
        mm = self._mm
        self._acquire()
        try:
            self._seen_epoch = words[_OFF_EPOCH >> 3]
            for queue_id, owner in list(self._owned.items()):
                at = self._queue_base + (queue_id - 1) * _QUEUE_SIZE
                _, _, _, _, _, enqueued, owner_token = _QUEUE.unpack_from(mm, at)
                if owner_token != self._token:
                    del self._owned[queue_id]  # another process registered it since
                    continue
                fresh = enqueued - self._notified.get(queue_id, 0)
                self._notified[queue_id] = enqueued
                if fresh > 0 and not owner.deleted:
                    ready.extend([(owner, queue_id)] * min(fresh, self._limits.max_queue_depth))
        finally:
            self._release()
        return ready
