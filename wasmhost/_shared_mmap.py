"""Shared data and queues in one memory-mapped file, consistent across worker processes.

``wasmesh sidecar --concurrency N`` runs N worker processes, and proxy-wasm promises one
store per vm_id; so the store lives in a file every worker maps (named by the environment
variable ``WASMESH_SHARED_STATE``, see :mod:`wasmhost._shared`).

Layout: a header page; an open-addressing table of 32-byte slots (linear probing, BLAKE2b
keyed with a per-file secret so request-derived keys cannot be made to collide); a table of
queue records; a heap of power-of-two blocks with one free list per size class, reserved in
1 MiB steps with ``posix_fallocate`` so a full disk or ``/dev/shm`` is an error status, never
a SIGBUS. One slot table holds three kinds of entry: data keys, one key counter per vm_id
(for ``max_shared_keys``) and queue names. Keys are never deleted, so a key's slot never
moves and each process caches key → slot, skipping the hash on the hot path.

Crash safety: one lock (:mod:`._shared_lock`) guards the whole file, and a dead holder never
wedges the others. Every operation is all-or-nothing: before it overwrites a metadata word
(free-list head, heap top, slot, queue record, item link) it records the old bytes in the
undo journal (:mod:`._shared_journal`), and it empties the journal with one store when it
succeeds. Whoever takes the lock next and finds entries left behind by a process that died,
or by an operation that failed, restores them first. Bytes written into a block the
operation took from the heap need no entry: until the commit nothing points at them. That
holds only for blocks that were free when the operation began, so an operation allocates
before it frees (a block it frees keeps live bytes until the commit).

The byte layout and formatting live in :mod:`._shared_layout`, the queues in
:mod:`._shared_queues` (mixed into :class:`MappedSharedRegistry`).
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import weakref
from typing import TYPE_CHECKING

from ._abi import Status
from ._shared_journal import UndoJournal, word_view
from ._shared_layout import (
    _CAS_WRAP,
    _CLASSES,
    _COUNT,
    _DATA,
    _HEADER,
    _MIN_CLASS,
    _OFF_CAS,
    _OFF_COMMITTED,
    _OFF_FREE,
    _OFF_HEAP_TOP,
    _OFF_JOURNAL,
    _OFF_MUTEX,
    _OFF_SLOT_USED,
    _PAGE,
    _QUEUE_SIZE,
    _SLOT,
    _SLOT_KEY,
    _SLOT_SIZE,
    _SLOT_VALUE,
    COMMIT_STEP,
    DEFAULT_HEAP_BYTES,
    DEFAULT_QUEUES,
    MAGIC,
    VERSION,
    _format,
    _scoped,
    _size_class,
    _slots_for,
    create_state_file,
)
from ._shared_lock import (
    LOCK_FLOCK,
    LOCK_ROBUST_MUTEX,
    FileLock,
    RobustMutex,
    SharedStateError,
    UnusableLock,
    default_lock_kind,
)
from ._shared_queues import MappedQueues
from .limits import Limits

if TYPE_CHECKING:
    from ._context import RootContext
    from ._shared import SharedQueue

_open_registries: weakref.WeakSet[MappedSharedRegistry] = weakref.WeakSet()


def _after_fork() -> None:
    for registry in list(_open_registries):
        try:
            registry._reopen_after_fork()
        except OSError:
            registry._lock = UnusableLock(registry.path)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class MappedSharedData:
    """One vm_id's key/value store inside the state file (same contract as ``SharedData``)."""

    __slots__ = ("_registry", "_prefix", "_count_slot")

    def __init__(self, registry: MappedSharedRegistry, vm_id: str, count_slot: int) -> None:
        self._registry = registry
        self._prefix = _scoped(_DATA, vm_id, b"")
        self._count_slot = count_slot

    def get(self, key: bytes) -> tuple[bytes, int] | None:
        return self._registry._get(self._prefix + key)

    def set(self, key: bytes, value: bytes, cas: int) -> Status:
        return self._registry._set(self._prefix + key, value, cas, self._count_slot)

    def keys(self) -> list[bytes]:
        return self._registry._keys(self._prefix)


class MappedSharedRegistry(MappedQueues):
    """Shared data and queues of every vm_id, in a state file all worker processes map."""

    def __init__(self, path: str, limits: Limits) -> None:
        self.path = path
        self._limits = limits
        self._token = int.from_bytes(os.urandom(8), "little") | 1  # who owns a queue; never 0
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            self._mm = self._map()
        except BaseException:
            os.close(self._fd)
            raise
        self._slot_index: dict[bytes, int] = {}
        self._stores: dict[str, MappedSharedData] = {}
        self._queue_ids: dict[tuple[str, str], int] = {}
        self._queue_refs: dict[int, SharedQueue] = {}
        self._owned: dict[int, RootContext] = {}
        self._notified: dict[int, int] = {}
        self._seen_epoch = -1
        self._closed = False
        #: operations of dead lock holders this process rolled back
        self.recoveries = 0
        _open_registries.add(self)

    # -- file ------------------------------------------------------------------------------------
    def _map(self) -> mmap.mmap:
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # formatting is one process's job
        try:
            if os.fstat(self._fd).st_size == 0:
                _format(self._fd, _slots_for(self._limits), DEFAULT_QUEUES, DEFAULT_HEAP_BYTES,
                        default_lock_kind())
            elif os.pread(self._fd, 8, 0) != MAGIC:  # never overwrite a file that is not ours
                raise SharedStateError(f"{self.path}: not a wasmesh shared state file (bad magic)")
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        size = os.fstat(self._fd).st_size
        mm = mmap.mmap(self._fd, size)
        try:
            (_, version, lock_kind, slots, queues, slot_base, queue_base, heap_base,
             heap_limit, secret) = _HEADER.unpack_from(mm, 0)
            if version != VERSION:
                raise SharedStateError(f"{self.path}: format version {version}, expected {VERSION}")
            if (slots & (slots - 1) or heap_limit != size or slot_base != _PAGE
                    or queue_base != slot_base + slots * _SLOT_SIZE
                    or not queue_base + queues * _QUEUE_SIZE <= heap_base < heap_limit):
                raise SharedStateError(f"{self.path}: inconsistent geometry in the header")
            self._slots, self._slot_base, self._queue_base = slots, slot_base, queue_base
            self._queue_capacity, self._heap_limit, self._secret = queues, heap_limit, secret
            self.lock_kind = lock_kind
            self._lock: RobustMutex | FileLock | UnusableLock
            if lock_kind == LOCK_ROBUST_MUTEX:
                self._lock = RobustMutex(mm, _OFF_MUTEX)
            elif lock_kind == LOCK_FLOCK:
                self._lock = FileLock(self._fd)
            else:
                raise SharedStateError(f"{self.path}: unknown lock kind {lock_kind}")
            self._words = word_view(mm, self.path)
            self._journal = UndoJournal(self._words, self.path)
        except BaseException:
            mm.close()
            raise
        return mm

    def _acquire(self) -> None:
        """Take the lock, first undoing whatever a holder that died (or failed) left half-done."""
        self._lock.acquire()
        if self._words[_OFF_JOURNAL >> 3]:  # inlined ``left_behind``: hot path
            try:
                self._journal.roll_back()
                self.recoveries += 1
            except BaseException:
                self._lock.release()
                raise

    def _release(self) -> None:
        """Let go of the lock; an operation that did not commit (a failure, an exception) is undone."""
        if self._journal.entries:
            try:
                self._journal.roll_back()
            finally:
                self._lock.release()
        else:
            self._lock.release()

    def _reopen_after_fork(self) -> None:
        """A forked child must not share the parent's flock (it lives on the file description)."""
        if self._closed or not isinstance(self._lock, FileLock):
            return
        try:  # through /proc first: that works even once the file is unlinked
            fd = os.open(f"/proc/self/fd/{self._fd}", os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        os.close(self._fd)
        self._fd = fd
        self._lock = FileLock(fd)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._lock.close()
        self._words.release()  # the mapping cannot close while a view of it exists
        self._mm.close()
        os.close(self._fd)

    @property
    def lock_owner_deaths(self) -> int:
        """How often this process took the lock from a holder that had died."""
        return self._lock.owner_deaths

    # -- slots -----------------------------------------------------------------------------------
    def _probe(self, full: bytes) -> int:
        """Slot index of ``full`` (cached), or ``~index`` of the empty slot where it would go."""
        digest = hashlib.blake2b(full, digest_size=8, key=self._secret).digest()
        mask = self._slots - 1
        index = int.from_bytes(digest, "little") & mask
        mm, base, length = self._mm, self._slot_base, len(full)
        for _ in range(self._slots):
            key_off, key_len = _SLOT_KEY.unpack_from(mm, base + index * _SLOT_SIZE)
            if key_off == 0:
                return ~index
            if key_len == length and mm[key_off:key_off + length] == full:
                self._slot_index[full] = index
                return index
            index = (index + 1) & mask
        raise SharedStateError(f"{self.path}: slot table has no empty slot")  # load is capped below 3/4

    def _claim(self, index: int, full: bytes, number: int, val_len: int = 0, val_off: int = 0) -> bool:
        """Fill the empty slot ``index`` with ``full``; False when the table or the heap is full."""
        words = self._words
        used = words[_OFF_SLOT_USED >> 3]
        if used >= self._slots * 3 // 4:
            return False
        key_off = self._alloc(len(full))
        if not key_off:
            return False
        mm, at = self._mm, self._slot_base + index * _SLOT_SIZE
        mm[key_off:key_off + len(full)] = full
        self._journal.record(at, at + 8, at + 16, at + 24, _OFF_SLOT_USED)
        _SLOT.pack_into(mm, at, key_off, len(full), val_len, val_off, number)
        words[_OFF_SLOT_USED >> 3] = used + 1
        return True  # not cached until the operation commits: a later lookup probes once

    def _next_cas(self) -> int:
        """The next token; the caller has recorded ``_OFF_CAS`` in the journal."""
        words = self._words
        token: int = words[_OFF_CAS >> 3] % _CAS_WRAP + 1
        words[_OFF_CAS >> 3] = token
        return token

    # -- heap ------------------------------------------------------------------------------------
    def _alloc(self, size: int, also: tuple[int, ...] = ()) -> int:
        """Offset of a block of at least ``size`` bytes, or 0 (and nothing written) when the heap is full.

        The block's first word (its free-list link) is journaled, so the caller may fill the
        block freely: rolled back, the block is on its free list again, link intact. ``also``:
        words the caller will overwrite next, journaled with the allocation (when it succeeds)
        in the same call.
        """
        wanted = max(_MIN_CLASS, (size - 1).bit_length())
        block = self._pop(wanted, also)  # the common case
        if block:
            return block
        block = self._bump(1 << wanted, also)
        if block:
            return block
        heads = self._mm[_OFF_FREE + 8 * (wanted + 1):_OFF_FREE + 8 * _CLASSES]
        zeros = len(heads) - len(heads.lstrip(b"\0"))  # up to the first larger class with a free block
        if zeros == len(heads):
            return 0
        larger = wanted + 1 + zeros // 8
        block = self._pop(larger, also)
        for half in range(larger - 1, wanted - 1, -1):
            self._push(block + (1 << half), half, fresh=True)
        return block

    def _pop(self, size_class: int, also: tuple[int, ...] = ()) -> int:
        words, head_at = self._words, _OFF_FREE + 8 * size_class
        block: int = words[head_at >> 3]
        if block:
            self._journal.record(head_at, block, *also)
            words[head_at >> 3] = words[block >> 3]
        return block

    def _push(self, block: int, size_class: int, fresh: bool = False) -> None:
        """Put ``block`` on its free list; a ``fresh`` block (split off one this operation
        popped) holds nothing the journal has to keep."""
        words, head_at = self._words, _OFF_FREE + 8 * size_class
        if fresh:
            self._journal.record(head_at)
        else:
            self._journal.record(head_at, block)
        words[block >> 3] = words[head_at >> 3]
        words[head_at >> 3] = block

    def _bump(self, size: int, also: tuple[int, ...] = ()) -> int:
        words = self._words
        top = words[_OFF_HEAP_TOP >> 3]
        end = top + size
        if end > self._heap_limit:
            return 0
        committed = words[_OFF_COMMITTED >> 3]
        if end > committed:
            grown = min(self._heap_limit, -(-end // COMMIT_STEP) * COMMIT_STEP)
            try:
                os.posix_fallocate(self._fd, committed, grown - committed)
            except OSError:
                return 0  # the file system is full: a status for the plugin, not a SIGBUS later
            # not journaled: the space is reserved whether or not this operation completes
            words[_OFF_COMMITTED >> 3] = grown
        self._journal.record(_OFF_HEAP_TOP, *also)
        words[_OFF_HEAP_TOP >> 3] = end
        return top

    # -- data ------------------------------------------------------------------------------------
    def data(self, vm_id: str) -> MappedSharedData:
        store = self._stores.get(vm_id)
        if store is None:
            counter = _scoped(_COUNT, vm_id, b"")
            self._acquire()
            try:
                index = self._probe(counter)
                if index < 0:
                    index = ~index if self._claim(~index, counter, 0) else -1  # -1: table full, no new keys
                    self._journal.commit()
            finally:
                self._release()
            store = self._stores[vm_id] = MappedSharedData(self, vm_id, index)
        return store

    def _get(self, full: bytes) -> tuple[bytes, int] | None:
        index = self._slot_index.get(full)
        mm = self._mm
        self._acquire()
        try:
            if index is None:
                index = self._probe(full)
                if index < 0:
                    return None
            val_len, val_off, cas = _SLOT_VALUE.unpack_from(mm, self._slot_base + index * _SLOT_SIZE + 12)
            return mm[val_off:val_off + val_len], cas
        finally:
            self._release()

    def _set(self, full: bytes, value: bytes, cas: int, count_slot: int) -> Status:
        words = self._words
        max_value = self._limits.max_shared_value_bytes
        index = self._slot_index.get(full)
        mm = self._mm
        self._acquire()
        try:
            if index is None:
                index = self._probe(full)
            if index >= 0:
                at = self._slot_base + index * _SLOT_SIZE + 12
                old_len, old_off, current = _SLOT_VALUE.unpack_from(mm, at)
                if cas and (cas & 0xFFFFFFFF) != current:
                    return Status.CAS_MISMATCH
                if len(value) > max_value:
                    return Status.BAD_ARGUMENT
                return self._store_value(at, value, old_len, old_off)
            if len(value) > max_value or len(full) > max_value or count_slot < 0:
                return Status.BAD_ARGUMENT
            count_at = self._slot_base + count_slot * _SLOT_SIZE + 24
            keys = words[count_at >> 3]
            if keys >= self._limits.max_shared_keys:
                return Status.BAD_ARGUMENT
            if value:
                offset = self._alloc(len(value), (_OFF_CAS, count_at))
                if not offset:
                    return Status.BAD_ARGUMENT
                mm[offset:offset + len(value)] = value
            else:
                offset = 0
                self._journal.record(_OFF_CAS, count_at)
            if not self._claim(~index, full, self._next_cas(), len(value), offset):
                return Status.BAD_ARGUMENT  # uncommitted: releasing the lock undoes the allocation
            words[count_at >> 3] = keys + 1
            self._journal.commit()
            return Status.OK
        finally:
            self._release()

    def _store_value(self, at: int, value: bytes, old_len: int, old_off: int) -> Status:
        """Write ``value`` to a fresh block, point the slot at it with a new token, free the old block."""
        words = self._words
        mm = self._mm
        size_class = max(_MIN_CLASS, (len(value) - 1).bit_length())
        head_at = _OFF_FREE + 8 * size_class
        block: int = words[head_at >> 3]
        if value and block and old_off:  # the common case, inlined: swap a free block for the old one
            old_head_at = _OFF_FREE + 8 * _size_class(old_len)
            self._journal.record(head_at, block, at - 4, at + 4, at + 12, _OFF_CAS, old_off, old_head_at)
            words[head_at >> 3] = words[block >> 3]
            mm[block:block + len(value)] = value
            _SLOT_VALUE.pack_into(mm, at, len(value), block, self._next_cas())
            words[old_off >> 3] = words[old_head_at >> 3]
            words[old_head_at >> 3] = old_off
            self._journal.commit()
            return Status.OK
        offset = 0
        if value:
            offset = self._alloc(len(value))
            if not offset:
                return Status.BAD_ARGUMENT
            mm[offset:offset + len(value)] = value
        self._journal.record(at - 4, at + 4, at + 12, _OFF_CAS)  # the slot's words from key_len on
        _SLOT_VALUE.pack_into(mm, at, len(value), offset, self._next_cas())
        if old_off:
            self._push(old_off, _size_class(old_len))
        self._journal.commit()
        return Status.OK

    def _keys(self, prefix: bytes) -> list[bytes]:
        mm, found = self._mm, []
        self._acquire()
        try:
            table = mm[self._slot_base:self._slot_base + self._slots * _SLOT_SIZE]
            for key_off, key_len, _, _, _ in _SLOT.iter_unpack(table):
                if key_off and key_len >= len(prefix) and mm[key_off:key_off + len(prefix)] == prefix:
                    found.append(mm[key_off + len(prefix):key_off + key_len])
        finally:
            self._release()
        return found


__all__ = ["LOCK_FLOCK", "LOCK_ROBUST_MUTEX", "MappedSharedData", "MappedSharedRegistry", "SharedStateError",
           "create_state_file"]
