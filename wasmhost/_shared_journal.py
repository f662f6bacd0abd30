"""The undo journal that makes every shared-state operation all-or-nothing, even under SIGKILL.

A worker can die at any instruction while it holds the state file's lock, and an operation
changes several words (free-list heads, the heap top, a slot, a queue record, an item's link).
So before the operation overwrites a metadata word it records the word's offset and old
bytes here; when the operation succeeds one 8-byte store empties the journal. The next
process that takes the lock and finds the journal non-empty writes the old bytes back, newest
entry first, and the store is exactly as it was before the dead operation began: blocks it
took from the heap are free again, nothing is leaked and nothing is reachable twice.

Layout, in the header page after the lock: at ``JOURNAL_LENGTH_AT`` the number of entries
in use (0: no operation in flight); from ``JOURNAL_BASE`` an array of ``CAPACITY`` offsets,
then an array of as many old values (entry i is offset i and value i). Entries are written
first and counted second. Words are read and written through a ``memoryview`` of the
mapping cast to u64 (:func:`word_view`): each store is one aligned 8-byte store, which a
process cannot be killed half-way through (``struct.pack_into`` writes byte by byte), and
costs about 15 ns. Only the count has to be atomic: the words it protects are restored
whole, torn or not.

Bounded: an operation records a handful of words plus one per size class a split walks
down (at most 48 per allocation, two allocations per operation), about 110 in all.
"""

from __future__ import annotations

import mmap
import sys

from ._shared_lock import MUTEX_BYTES, SharedStateError

#: header word holding the number of journal entries
JOURNAL_LENGTH_AT = 120
#: the lock's cell in the header page; the journal follows it up to the end of the page
MUTEX_AT = 1024
JOURNAL_BASE = MUTEX_AT + MUTEX_BYTES
JOURNAL_LIMIT = 4096
#: entries an operation may record
CAPACITY = (JOURNAL_LIMIT - JOURNAL_BASE) // 16
#: the header words below this offset never change after formatting, so no entry names them
FIRST_MUTABLE_WORD = 72
_LENGTH = JOURNAL_LENGTH_AT // 8
_OFFSETS = JOURNAL_BASE // 8  # word index of entry 0's offset; its old value is CAPACITY words on


def word_view(mm: mmap.mmap, path: str) -> memoryview:
    """The mapping as an array of u64 words (the file is little-endian; so must the host be)."""
    if sys.byteorder != "little":
        raise SharedStateError(f"{path}: the shared state file needs a little-endian host")
    return memoryview(mm).cast("Q")


class UndoJournal:
    """Old values of the words the operation in flight has overwritten; valid under the lock."""

    __slots__ = ("_words", "entries", "_path")

    def __init__(self, words: memoryview, path: str) -> None:
        self._words = words
        #: entries this process has recorded for its operation in flight (non-zero: uncommitted writes)
        self.entries = 0
        self._path = path

    def left_behind(self) -> bool:
        """True when the previous holder of the lock died (or failed) before committing."""
        return self._words[_LENGTH] != 0

    def record(self, *offsets: int) -> None:
        """Save the current word at each (8-aligned) offset; call before overwriting any of them."""
        words, start = self._words, self.entries
        count = start + len(offsets)
        if count > CAPACITY:
            raise SharedStateError(f"{self._path}: an operation outgrew the undo journal ({CAPACITY} entries)")
        for index, offset in enumerate(offsets, _OFFSETS + start):
            words[index] = offset
            words[index + CAPACITY] = words[offset >> 3]
        words[_LENGTH] = count  # the entries count from here
        self.entries = count

    def commit(self) -> None:
        """The operation is complete: forget the old values (one store)."""
        if self.entries:
            self._words[_LENGTH] = 0
            self.entries = 0

    def roll_back(self) -> int:
        """Restore every recorded word, newest first; returns how many entries were undone."""
        words = self._words
        count: int = words[_LENGTH]
        if count > CAPACITY:
            raise SharedStateError(f"{self._path}: undo journal length {count} exceeds its {CAPACITY} entries")
        offsets = words[_OFFSETS:_OFFSETS + count].tolist()
        for number, offset in enumerate(offsets):
            if not self._restorable(offset):
                raise SharedStateError(
                    f"{self._path}: undo journal entry {number} names offset {offset}, not a metadata word")
        for number in range(count - 1, -1, -1):
            words[offsets[number] >> 3] = words[_OFFSETS + CAPACITY + number]
        words[_LENGTH] = 0
        self.entries = 0
        return count

    def _restorable(self, offset: int) -> bool:
        """An aligned word of the file outside the immutable header, the lock and the journal."""
        return (offset % 8 == 0 and FIRST_MUTABLE_WORD <= offset and offset + 8 <= 8 * len(self._words)
                and not MUTEX_AT <= offset < JOURNAL_LIMIT and offset != JOURNAL_LENGTH_AT)
