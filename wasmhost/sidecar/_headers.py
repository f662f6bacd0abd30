"""Header maps as Envoy models them: ordered, lower-case names, pseudo-headers first.

Names and values are ``bytes``. A request map carries ``:method``, ``:scheme``,
``:path`` and ``:authority``; a response map carries ``:status``. The HTTP/1
codec translates ``host`` to ``:authority`` and back, so filters (and proxy-wasm
plugins) see the same map whatever the wire protocol.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from operator import itemgetter

Pair = tuple[bytes, bytes]
_new_object = object.__new__
_name_of = itemgetter(0)


class HeaderMap:
    """A mutable, ordered multimap of header name to value."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[Pair] | None = None) -> None:
        self._items: list[Pair] = list(items) if items is not None else []

    @classmethod
    def adopt(cls, items: list[Pair]) -> HeaderMap:
        """Wrap ``items`` without copying (the caller gives up ownership; names must be lower-case)."""
        new = _new_object(cls)
        new._items = items
        return new

    def get(self, name: bytes) -> bytes | None:
        """The first value of ``name`` or None."""
        for key, value in self._items:
            if key == name:
                return value
        return None

    def get_all(self, name: bytes) -> list[bytes]:
        return [value for key, value in self._items if key == name]

    def joined(self, name: bytes) -> bytes | None:
        """All values of ``name`` joined with ``,`` (how Envoy matches repeated headers), or None."""
        values = [value for key, value in self._items if key == name]
        if not values:
            return None
        return values[0] if len(values) == 1 else b",".join(values)

    def __contains__(self, name: object) -> bool:
        for key, _ in self._items:
            if key == name:
                return True
        return False

    def add(self, name: bytes, value: bytes) -> None:
        """Append a value (pseudo-headers are kept in front of regular ones)."""
        if name[:1] == b":":
            index = 0
            for index, (key, _) in enumerate(self._items):  # noqa: B007
                if key[:1] != b":":
                    break
            else:
                index = len(self._items)
            self._items.insert(index, (name, value))
        else:
            self._items.append((name, value))

    def set(self, name: bytes, value: bytes) -> None:
        """Replace every value of ``name`` with one value, at the position of the first."""
        items = self._items
        if name not in map(_name_of, items):  # a scan in C: most names set are not there yet
            self.add(name, value)
            return
        for index, (key, _) in enumerate(items):
            if key == name:
                items[index] = (name, value)
                if any(k == name for k, _ in items[index + 1 :]):
                    self._items = items[: index + 1] + [(k, v) for k, v in items[index + 1 :] if k != name]
                return
        self.add(name, value)

    def set_default(self, name: bytes, value: bytes) -> None:
        """Add ``name`` only when it is absent."""
        if name not in self:
            self.add(name, value)

    def remove(self, name: bytes) -> int:
        """Remove every value of ``name``; return how many were removed."""
        before = len(self._items)
        self._items = [(k, v) for k, v in self._items if k != name]
        return before - len(self._items)

    def remove_prefix(self, prefix: bytes) -> None:
        self._items = [(k, v) for k, v in self._items if not k.startswith(prefix)]

    def items(self) -> list[Pair]:
        """The live list of pairs (do not keep it across mutations)."""
        return self._items

    def replace_all(self, pairs: list[Pair]) -> None:
        """Replace the whole map with ``pairs`` (names must already be lower-case)."""
        self._items = pairs

    def copy(self) -> HeaderMap:
        return HeaderMap.adopt(list(self._items))

    def byte_size(self) -> int:
        return sum(len(k) + len(v) for k, v in self._items)

    def __iter__(self) -> Iterator[Pair]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HeaderMap) and other._items == self._items

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"HeaderMap({self._items!r})"


def response_headers(status: int, extra: Iterable[Pair] = ()) -> HeaderMap:
    """A response header map starting with ``:status``."""
    items: list[Pair] = [(b":status", str(status).encode())]
    items.extend(extra)
    return HeaderMap.adopt(items)


def status_of(headers: HeaderMap) -> int:
    """The numeric ``:status`` of a response map (0 when missing or malformed)."""
    value = headers.get(b":status")
    if value is None or not value.isdigit():
        return 0
    return int(value)
