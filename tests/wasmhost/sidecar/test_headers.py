"""``HeaderMap.set``: one value at the first position, duplicates gone, new names placed as ``add`` places them."""

from __future__ import annotations

from wasmhost.sidecar import HeaderMap


def test_set_replaces_every_value_at_the_first_position() -> None:
    headers = HeaderMap([(b":method", b"GET"), (b"a", b"1"), (b"b", b"2"), (b"a", b"3")])
    headers.set(b"a", b"x")
    assert headers.items() == [(b":method", b"GET"), (b"a", b"x"), (b"b", b"2")]


def test_set_of_a_new_name_adds_it() -> None:
    headers = HeaderMap([(b":method", b"GET"), (b"a", b"1")])
    headers.set(b"c", b"y")
    headers.set(b":path", b"/")  # a pseudo-header joins the leading block
    assert headers.items() == [(b":method", b"GET"), (b":path", b"/"), (b"a", b"1"), (b"c", b"y")]
