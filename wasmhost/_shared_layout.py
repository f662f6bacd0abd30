"""The shared state file's layout: geometry, record formats and formatting a fresh file.

Kept apart from the operations (:mod:`._shared_mmap`, :mod:`._shared_queues`) so that the byte
layout, which every worker process and every test checker must agree on, is read in one place.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile

from ._shared_journal import JOURNAL_LENGTH_AT, MUTEX_AT
from ._shared_lock import LOCK_FLOCK, LOCK_ROBUST_MUTEX, RobustMutex, SharedStateError, default_lock_kind
from .limits import Limits

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


def _scoped(kind: int, vm_id: str, name: bytes) -> bytes:
    scope = vm_id.encode("utf-8", "surrogateescape")
    return bytes((kind,)) + len(scope).to_bytes(4, "little") + scope + name


def _unscope(full: bytes) -> tuple[str, bytes]:
    length = int.from_bytes(full[1:5], "little")
    return full[5:5 + length].decode("utf-8", "surrogateescape"), full[5 + length:]


def _slots_for(limits: Limits) -> int:
    """Room for every key of one vm_id at half load, within the table bounds."""
    wanted = max(DEFAULT_SLOTS, 2 * limits.max_shared_keys)
    return min(MAX_SLOTS, 1 << (wanted - 1).bit_length())
