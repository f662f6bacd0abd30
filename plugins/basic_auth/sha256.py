"""SHA-256 (FIPS 180-4) in the compilable subset, so password hashes can live in configuration.

Ints are 64-bit in the compiled module; every 32-bit word is masked back to 32 bits after
each addition or shift, which also makes the CPython run give the same digest.
"""

from __future__ import annotations

MASK = 0xFFFFFFFF

K: list[int] = [
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2,
]

HEX = "0123456789abcdef"


def rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & MASK


def padded(data: bytes) -> bytes:
    """The message, a 1 bit, zeros, and its length in bits (big-endian), to a multiple of 64 bytes."""
    bit_length = len(data) * 8
    tail: list[int] = [0x80]
    while (len(data) + len(tail)) % 64 != 56:
        tail.append(0)
    for shift in range(56, -8, -8):
        tail.append((bit_length >> shift) & 0xFF)
    return data + bytes(tail)


def sha256_hex(data: bytes) -> str:
    """The lower-case hex SHA-256 digest of ``data``."""
    h = [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19]
    message = padded(data)
    w = [0 for _ in range(0, 64, 1)]
    for block in range(0, len(message), 64):
        for i in range(0, 16, 1):
            j = block + 4 * i
            w[i] = (message[j] << 24) | (message[j + 1] << 16) | (message[j + 2] << 8) | message[j + 3]
        for i in range(16, 64, 1):
            s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
            s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
            w[i] = (w[i - 16] + s0 + w[i - 7] + s1) & MASK
        a, b, c, d, e, f, g, k = h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]
        for i in range(0, 64, 1):
            t1 = (k + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ ((~e) & g)) + K[i] + w[i]) & MASK
            t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) & MASK
            k = g
            g = f
            f = e
            e = (d + t1) & MASK
            d = c
            c = b
            b = a
            a = (t1 + t2) & MASK
        h[0] = (h[0] + a) & MASK
        h[1] = (h[1] + b) & MASK
        h[2] = (h[2] + c) & MASK
        h[3] = (h[3] + d) & MASK
        h[4] = (h[4] + e) & MASK
        h[5] = (h[5] + f) & MASK
        h[6] = (h[6] + g) & MASK
        h[7] = (h[7] + k) & MASK
    out = ""
    for word in h:
        for shift in range(28, -4, -4):
            out = out + HEX[(word >> shift) & 15]
    return out
