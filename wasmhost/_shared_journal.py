"""The undo journal that makes every shared-state operation all-or-nothing, even under SIGKILL.

A worker can die at any instruction while it holds the state file's lock, and an operation
changes several words (free-list heads, the heap top, a slot, a queue record, an item's link).
So before the operation overwrites a metadata word it records the word's offset and old
bytes here; when the operation succeeds one 8-byte store empties the journal. The next
process that takes the lock and finds the journal non-empty writes the old bytes back, newest
entry first, and the store is exactly as it was before the dead operation began: blocks it
took from the heap are free again, nothing is leaked and nothing is reachable twice.

Layout, in the header page after the lock: at ``JOURNAL_LENGTH_AT`` the number of bytes of
entries in use (0: no operation in flight), and from ``JOURNAL_BASE`` 16-byte entries of
(offset, old 8 bytes). An entry is written first and counted second; the count is one
``memcpy`` of 8 aligned bytes, a single store the process cannot be killed half-way through
(``struct.pack_into`` would write it byte by byte). Only the count has to be atomic: the
words it protects are restored whole, torn or not.
"""

from __future__ import annotations

import mmap
import struct

from ._shared_lock import MUTEX_BYTES, SharedStateError

_U64 = struct.Struct("<Q")
_ENTRY = struct.Struct("<Q8s")  # offset, old bytes (written as a little-endian u64)
ENTRY_BYTES = _ENTRY.size
#: header word holding the journal's length in bytes
JOURNAL_LENGTH_AT = 120
#: the lock's cell in the header page; the journal follows it up to the end of the page
MUTEX_AT = 1024
JOURNAL_BASE = MUTEX_AT + MUTEX_BYTES
JOURNAL_LIMIT = 4096
#: entries an operation may record (the largest, a new key split from big free blocks, needs ~110)
CAPACITY = (JOURNAL_LIMIT - JOURNAL_BASE) // ENTRY_BYTES
#: the header words below this offset never change after formatting, so no entry names them
FIRST_MUTABLE_WORD = 72
_EMPTY = bytes(8)
#: one struct per entry count, so that recording n words is a single pack
_ENTRIES = [struct.Struct("<" + "Q" * 2 * count) for count in range(CAPACITY + 1)]


class UndoJournal:
    """Old values of the words the operation in flight has overwritten; valid under the lock."""

    __slots__ = ("_mm", "_end", "_size", "_path")

    def __init__(self, mm: mmap.mmap, path: str) -> None:
        self._mm = mm
        self._end = JOURNAL_BASE  # where this process writes the next entry
        self._size = len(mm)
        self._path = path

    @property
    def dirty(self) -> bool:
        """True while this process has uncommitted writes."""
        return self._end != JOURNAL_BASE

    def left_behind(self) -> bool:
        """True when the previous holder of the lock died (or failed) before committing."""
        return self._mm[JOURNAL_LENGTH_AT:JOURNAL_LENGTH_AT + 8] != _EMPTY

    def record(self, *offsets: int) -> None:
        """Save the current 8 bytes at each offset; call before overwriting any of them."""
        mm, start = self._mm, self._end
        end = start + ENTRY_BYTES * len(offsets)
        if end > JOURNAL_LIMIT:
            raise SharedStateError(f"{self._path}: an operation outgrew the undo journal ({CAPACITY} entries)")
        words: list[int] = []
        unpack = _U64.unpack_from
        for offset in offsets:
            words += (offset, unpack(mm, offset)[0])
        _ENTRIES[len(offsets)].pack_into(mm, start, *words)
        mm[JOURNAL_LENGTH_AT:JOURNAL_LENGTH_AT + 8] = _U64.pack(end - JOURNAL_BASE)  # the entries count from here
        self._end = end

    def commit(self) -> None:
        """The operation is complete: forget the old values (one store)."""
        if self._end != JOURNAL_BASE:
            self._mm[JOURNAL_LENGTH_AT:JOURNAL_LENGTH_AT + 8] = _EMPTY
            self._end = JOURNAL_BASE

    def roll_back(self) -> int:
        """Restore every recorded word, newest first; returns how many entries were undone."""
        mm = self._mm
        length: int = _U64.unpack_from(mm, JOURNAL_LENGTH_AT)[0]
        if length % ENTRY_BYTES or length > JOURNAL_LIMIT - JOURNAL_BASE:
            raise SharedStateError(f"{self._path}: undo journal length {length} is not a whole number of entries")
        entries = list(_ENTRY.iter_unpack(mm[JOURNAL_BASE:JOURNAL_BASE + length]))
        for number, (offset, _) in enumerate(entries):
            if not self._restorable(offset):
                raise SharedStateError(
                    f"{self._path}: undo journal entry {number} names offset {offset}, not a metadata word")
        for offset, old in reversed(entries):
            mm[offset:offset + 8] = old
        mm[JOURNAL_LENGTH_AT:JOURNAL_LENGTH_AT + 8] = _EMPTY
        self._end = JOURNAL_BASE
        return len(entries)

    def _restorable(self, offset: int) -> bool:
        """An aligned word of the file outside the immutable header, the lock and the journal."""
        return (offset % 8 == 0 and FIRST_MUTABLE_WORD <= offset and offset + 8 <= self._size
                and not MUTEX_AT <= offset < JOURNAL_LIMIT and offset != JOURNAL_LENGTH_AT)
