"""Base64 and hex for plugins (basic auth headers, tokens, hashes), in the compilable subset.

Decoding is strict: characters outside the alphabet or wrong padding raise ``ValueError``
(CPython's ``base64.b64decode`` would silently drop stray characters by default).
"""

from __future__ import annotations

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_HEX = "0123456789abcdef"


def _sextet(c: int, url: bool) -> int:
    if 65 <= c <= 90:
        return c - 65
    if 97 <= c <= 122:
        return c - 71
    if 48 <= c <= 57:
        return c + 4
    if c == (45 if url else 43):
        return 62
    if c == (95 if url else 47):
        return 63
    return -1


def b64encode(data: bytes, url: bool = False) -> str:
    """Standard (or URL-safe) base64 with padding."""
    alphabet = _URL_ALPHABET if url else _ALPHABET
    out: list[int] = []
    i = 0
    while i + 2 < len(data):
        n = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2]
        out += [alphabet[n >> 18], alphabet[(n >> 12) & 63], alphabet[(n >> 6) & 63], alphabet[n & 63]]
        i += 3
    rest = len(data) - i
    if rest == 1:
        n = data[i] << 16
        out += [alphabet[n >> 18], alphabet[(n >> 12) & 63], 61, 61]
    elif rest == 2:
        n = (data[i] << 16) | (data[i + 1] << 8)
        out += [alphabet[n >> 18], alphabet[(n >> 12) & 63], alphabet[(n >> 6) & 63], 61]
    return bytes(out).decode()


def b64decode(text: str, url: bool = False) -> bytes:
    """Decode standard (or URL-safe) base64; padding may be omitted."""
    data = text.encode()
    if len(data) % 4 == 1:
        raise ValueError("invalid base64 length")
    while len(data) % 4 != 0:
        data = data + b"="
    out: list[int] = []
    i = 0
    while i < len(data):
        a = _sextet(data[i], url)
        b = _sextet(data[i + 1], url)
        c = -2 if data[i + 2] == 61 else _sextet(data[i + 2], url)
        d = -2 if data[i + 3] == 61 else _sextet(data[i + 3], url)
        last = i + 4 == len(data)
        if a < 0 or b < 0 or c == -1 or d == -1 or (c == -2 and d != -2) or ((c == -2 or d == -2) and not last):
            raise ValueError(f"invalid base64 at offset {i}")
        n = (a << 18) | (b << 12)
        out.append(n >> 16)
        if c >= 0:
            n = n | (c << 6)
            out.append((n >> 8) & 255)
            if d >= 0:
                out.append((n | d) & 255)
        i += 4
    return bytes(out)


def hexlify(data: bytes) -> str:
    """Lower-case hex digits, two per byte."""
    out = ""
    for byte in data:
        out = out + _HEX[byte >> 4] + _HEX[byte & 15]
    return out


__all__ = ["b64decode", "b64encode", "hexlify"]
