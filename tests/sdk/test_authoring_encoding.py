"""sdk.encoding in CPython agrees with the standard library on valid input."""

from __future__ import annotations

import base64
import binascii

from hypothesis import given
from hypothesis import strategies as st

from sdk.encoding import b64decode, b64encode, hexlify


@given(st.binary(max_size=64))
def test_matches_the_standard_library(data: bytes) -> None:
    assert b64encode(data) == base64.b64encode(data).decode()
    assert b64encode(data, url=True) == base64.urlsafe_b64encode(data).decode()
    assert b64decode(base64.b64encode(data).decode()) == data
    assert b64decode(base64.urlsafe_b64encode(data).decode().rstrip("="), url=True) == data
    assert hexlify(data) == binascii.hexlify(data).decode()
