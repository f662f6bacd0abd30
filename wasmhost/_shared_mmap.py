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

Queues: ``enqueue`` from any process appends to the queue's linked list and bumps a global
epoch; the process whose root context registered the queue last finds out in
:meth:`MappedSharedRegistry.poll_queues`, which the embedder calls from a timer.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import tempfile
import weakref
from collections import deque
from typing import TYPE_CHECKING

from ._abi import Status
from ._shared_journal import JOURNAL_LENGTH_AT, MUTEX_AT, UndoJournal, word_view
from ._shared_lock import (
    LOCK_FLOCK,
    LOCK_ROBUST_MUTEX,
    FileLock,
    RobustMutex,
    SharedStateError,
    UnusableLock,
    default_lock_kind,
)
from .limits import Limits

if TYPE_CHECKING:
    from ._context import RootContext
    from ._shared import SharedQueue

MAGIC = b"WMSHST01"
VERSION = 2  # 2: the undo journal
#: geometry used when a process finds the state file empty
DEFAULT_SLOTS = 1 << 17
DEFAULT_QUEUES = 4096
DEFAULT_HEAP_BYTES = 1 << 30
MAX_SLOTS = 1 << 22
COMMIT_STEP = 1 << 20

_PAGE = 4096
_HEADER = struct.Struct("<8sIIIIQQQQ16s")  # magic, version, lock kind, slots, queues, 4 bases/limits, secret
_OFF_SLOT_USED, _OFF_QUEUE_USED, _OFF_HEAP_TOP, _OFF_COMMITTED, _OFF_CAS, _OFF_EPOCH = 72, 80, 88, 96, 104, 112
_OFF_JOURNAL = JOURNAL_LENGTH_AT
_OFF_FREE = 128  # one free-list head per size class
_CLASSES = 48
_OFF_MUTEX = MUTEX_AT
_U64 = struct.Struct("<Q")
_SLOT_SIZE = 32
_SLOT = struct.Struct("<QIIQQ")  # key_off (0 = empty), key_len, val_len, val_off, cas/number
_SLOT_KEY = struct.Struct("<QI")
_SLOT_VALUE = struct.Struct("<IQQ")  # at +12: val_len, val_off, cas
_QUEUE_SIZE = 48
_QUEUE = struct.Struct("<QIIQQQQ")  # name_off, name_len, count, head, tail, enqueued, owner
_QUEUE_LIST = struct.Struct("<IQQQ")  # at +12: count, head, tail, enqueued
_ITEM = struct.Struct("<QI")  # next, length; data follows at +16
_ITEM_HEADER = 16
_MIN_CLASS = 4
_CAS_WRAP = 0xFFFFFFFF  # tokens travel as u32; they cycle 1..2^32-1 and skip 0 ("no CAS")
_DATA, _COUNT, _QUEUE_NAME = 0, 1, 2


def create_state_file(
    directory: str | None = None,
    *,
    slots: int = DEFAULT_SLOTS,
    queues: int = DEFAULT_QUEUES,
    heap_bytes: int = DEFAULT_HEAP_BYTES,
    lock: int | None = None,
) -> str:
    """Create and format a fresh state file; the caller deletes it when the workers are gone.

    By default it goes to ``/dev/shm`` (memory, no disk write-back) when that exists.
    """
    if directory is None:
        directory = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    fd, path = tempfile.mkstemp(prefix="wasmesh-shared-", suffix=".state", dir=directory)
    try:
        _format(fd, slots, queues, heap_bytes, lock if lock is not None else default_lock_kind())
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return path


def _format(fd: int, slots: int, queues: int, heap_bytes: int, lock_kind: int) -> None:
    """Lay out an empty file; the magic goes in last, so a half-formatted file is refused."""
    if slots & (slots - 1) or not 64 <= slots <= MAX_SLOTS:
        raise SharedStateError(f"slots must be a power of two in 64..{MAX_SLOTS}, not {slots}")
    if queues < 1 or heap_bytes < COMMIT_STEP:
        raise SharedStateError("need at least one queue and a heap of at least 1 MiB")
    slot_base = _PAGE
    queue_base = slot_base + slots * _SLOT_SIZE
    heap_base = -(-(queue_base + queues * _QUEUE_SIZE) // _PAGE) * _PAGE
    size = heap_base + heap_bytes
    os.ftruncate(fd, 0)
    os.ftruncate(fd, size)
    os.posix_fallocate(fd, 0, heap_base)
    with mmap.mmap(fd, heap_base) as mm:
        _HEADER.pack_into(mm, 0, b"\0" * 8, VERSION, lock_kind, slots, queues,
                          slot_base, queue_base, heap_base, size, os.urandom(16))
        for offset in (_OFF_SLOT_USED, _OFF_QUEUE_USED, _OFF_CAS, _OFF_EPOCH):
            _U64.pack_into(mm, offset, 0)
        _U64.pack_into(mm, _OFF_HEAP_TOP, heap_base)
        _U64.pack_into(mm, _OFF_COMMITTED, heap_base)
        if lock_kind == LOCK_ROBUST_MUTEX:
            RobustMutex.initialize(mm, _OFF_MUTEX)
        elif lock_kind != LOCK_FLOCK:
            raise SharedStateError(f"unknown lock kind {lock_kind}")
        mm[0:8] = MAGIC


def _size_class(size: int) -> int:
    return max(_MIN_CLASS, (size - 1).bit_length())


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


def _scoped(kind: int, vm_id: str, name: bytes) -> bytes:
    scope = vm_id.encode("utf-8", "surrogateescape")
    return bytes((kind,)) + len(scope).to_bytes(4, "little") + scope + name


def _unscope(full: bytes) -> tuple[str, bytes]:
    length = int.from_bytes(full[1:5], "little")
    return full[5:5 + length].decode("utf-8", "surrogateescape"), full[5 + length:]


class MappedSharedRegistry:
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

    # -- queues ----------------------------------------------------------------------------------
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


def _slots_for(limits: Limits) -> int:
    """Room for every key of one vm_id at half load, within the table bounds."""
    wanted = max(DEFAULT_SLOTS, 2 * limits.max_shared_keys)
    return min(MAX_SLOTS, 1 << (wanted - 1).bit_length())
