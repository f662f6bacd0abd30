"""The lock that guards the shared state file: every worker process can take it, none can wedge it.

Two kinds, chosen when the file is formatted and recorded in its header so every process
uses the same one. A robust process-shared pthread mutex lives inside the mapping: taking
and releasing it through ctypes costs about 0.3 µs, and when its holder dies the next
locker gets EOWNERDEAD and carries on. Where libc has no robust mutexes, ``flock`` on the
file (about 1 µs a pair); the kernel drops it with its holder's last descriptor. Pure Python
has no atomic compare-and-swap to spin on, and ``lockf`` is both slower and dropped by any
``close`` of the file in the process, so neither is offered.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import threading

LOCK_ROBUST_MUTEX = 1
LOCK_FLOCK = 2
#: bytes reserved for the mutex in the header (pthread_mutex_t is 40 on x86-64, 48 on arm64)
MUTEX_BYTES = 64


class SharedStateError(Exception):
    """The state file cannot be used (wrong format, bad geometry, unsupported lock)."""


def default_lock_kind() -> int:
    return LOCK_ROBUST_MUTEX if robust_libc() is not None else LOCK_FLOCK


_LIBC: list[ctypes.CDLL | None] = []


def robust_libc() -> ctypes.CDLL | None:
    """libc, when it offers robust process-shared mutexes (glibc and musl do)."""
    if not _LIBC:
        try:
            lib: ctypes.CDLL | None = ctypes.CDLL(None)  # the symbols already loaded, libc among them
        except OSError:
            lib = None
        _LIBC.append(lib if lib is not None and hasattr(lib, "pthread_mutexattr_setrobust") else None)
    return _LIBC[0]


class RobustMutex:
    """A process-shared robust pthread mutex inside the mapping; a dead owner is survivable."""

    def __init__(self, mm: mmap.mmap, offset: int) -> None:
        libc = robust_libc()
        if libc is None:
            raise SharedStateError("the state file uses a robust mutex, which this libc lacks")
        self._cell: ctypes.Array[ctypes.c_char] | None = (ctypes.c_char * MUTEX_BYTES).from_buffer(mm, offset)
        self._lock = libc.pthread_mutex_lock
        self._unlock = libc.pthread_mutex_unlock
        self._consistent = libc.pthread_mutex_consistent
        self.owner_deaths = 0

    @staticmethod
    def initialize(mm: mmap.mmap, offset: int) -> None:
        libc = robust_libc()
        if libc is None:
            raise SharedStateError("this libc has no robust process-shared mutexes")
        attr = ctypes.create_string_buffer(64)
        cell = (ctypes.c_char * MUTEX_BYTES).from_buffer(mm, offset)
        try:
            if (libc.pthread_mutexattr_init(attr) or libc.pthread_mutexattr_setpshared(attr, 1)
                    or libc.pthread_mutexattr_setrobust(attr, 1) or libc.pthread_mutex_init(cell, attr)):
                raise SharedStateError("pthread_mutex_init failed for the shared state mutex")
            libc.pthread_mutexattr_destroy(attr)
        finally:
            del cell

    def acquire(self) -> None:
        err = self._lock(self._cell)
        if err == errno.EOWNERDEAD:
            # the holder died mid-operation; the registry rolls back its undo journal next
            self._consistent(self._cell)
            self.owner_deaths += 1
        elif err:
            raise OSError(err, f"locking the shared state: {os.strerror(err)}")

    def release(self) -> None:
        self._unlock(self._cell)

    def close(self) -> None:
        self._cell = None  # drop the buffer export so the mapping can close


class FileLock:
    """``flock`` on the state file (released by the kernel when the holder dies).

    flock belongs to the open file description, so threads of one process also need a
    thread lock, and a forked child must reopen the file (the registry does, at fork).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._threads = threading.Lock()
        self.owner_deaths = 0

    def acquire(self) -> None:
        self._threads.acquire()
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self._threads.release()

    def close(self) -> None:
        pass


class UnusableLock:
    """A forked child that could not reopen the file must not share its parent's flock."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.owner_deaths = 0

    def acquire(self) -> None:
        raise SharedStateError(f"{self.path}: cannot reopen the state file after fork")

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass
