"""A mutable body buffer handed to filters, like Envoy's ``Buffer::Instance``.

Filters may read, replace, drain, prepend or append; the filter chain moves
chunks into the stream's buffer when a filter asks to buffer.
"""

from __future__ import annotations


class Buffer:
    """Body bytes in flight; cheap to create around one chunk."""

    __slots__ = ("_chunks", "_size")

    def __init__(self, data: bytes = b"") -> None:
        self._chunks: list[bytes] = [data] if data else []
        self._size = len(data)

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return True  # an empty buffer is still a buffer (end-of-stream markers travel in it)

    def to_bytes(self) -> bytes:
        chunks = self._chunks
        if len(chunks) == 1:
            return chunks[0]
        joined = b"".join(chunks)
        self._chunks = [joined] if joined else []
        return joined

    def chunks(self) -> list[bytes]:
        return self._chunks

    def append(self, data: bytes) -> None:
        if data:
            self._chunks.append(bytes(data))
            self._size += len(data)

    def prepend(self, data: bytes) -> None:
        if data:
            self._chunks.insert(0, bytes(data))
            self._size += len(data)

    def move_from(self, other: Buffer) -> None:
        """Append all of ``other`` and leave it empty."""
        if other is self:
            return
        self._chunks.extend(other._chunks)
        self._size += other._size
        other._chunks = []
        other._size = 0

    def drain(self, count: int) -> None:
        """Drop the first ``count`` bytes."""
        data = self.to_bytes()[count:]
        self._chunks = [data] if data else []
        self._size = len(data)

    def replace(self, data: bytes) -> None:
        self._chunks = [bytes(data)] if data else []
        self._size = len(data)

    def clear(self) -> None:
        self._chunks = []
        self._size = 0

    def __repr__(self) -> str:
        return f"Buffer({self.to_bytes()!r})"
