"""Numbers of the proxy-wasm ABI: status codes, enums, ABI versions and the pairs format.

Only status codes cross the guest boundary. The values are the ones SDKs compile in;
an SDK panics on a status it does not expect, so every host call returns exactly what
Envoy returns.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Sequence


class Status(enum.IntEnum):
    OK = 0
    NOT_FOUND = 1
    BAD_ARGUMENT = 2
    SERIALIZATION_FAILURE = 3
    PARSE_FAILURE = 4
    BAD_EXPRESSION = 5
    INVALID_MEMORY_ACCESS = 6
    EMPTY = 7
    CAS_MISMATCH = 8
    RESULT_MISMATCH = 9
    INTERNAL_FAILURE = 10
    BROKEN_CONNECTION = 11
    UNIMPLEMENTED = 12


class LogLevel(enum.IntEnum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4
    CRITICAL = 5


class Action(enum.IntEnum):
    CONTINUE = 0
    PAUSE = 1


class BufferType(enum.IntEnum):
    HTTP_REQUEST_BODY = 0
    HTTP_RESPONSE_BODY = 1
    DOWNSTREAM_DATA = 2
    UPSTREAM_DATA = 3
    HTTP_CALL_RESPONSE_BODY = 4
    GRPC_CALL_MESSAGE = 5
    VM_CONFIGURATION = 6
    PLUGIN_CONFIGURATION = 7
    FOREIGN_FUNCTION_ARGUMENTS = 8


class MapType(enum.IntEnum):
    HTTP_REQUEST_HEADERS = 0
    HTTP_REQUEST_TRAILERS = 1
    HTTP_RESPONSE_HEADERS = 2
    HTTP_RESPONSE_TRAILERS = 3
    GRPC_CALL_INITIAL_METADATA = 4
    GRPC_CALL_TRAILING_METADATA = 5
    HTTP_CALL_RESPONSE_HEADERS = 6
    HTTP_CALL_RESPONSE_TRAILERS = 7


class StreamType(enum.IntEnum):
    HTTP_REQUEST = 0
    HTTP_RESPONSE = 1
    DOWNSTREAM = 2
    UPSTREAM = 3


class PeerType(enum.IntEnum):
    UNKNOWN = 0
    LOCAL = 1
    REMOTE = 2


class MetricType(enum.IntEnum):
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2


class AbiVersion(enum.Enum):
    """Detected from the module's marker export; decides callback arity and extra imports."""

    V0_1_0 = "proxy_abi_version_0_1_0"
    V0_2_0 = "proxy_abi_version_0_2_0"
    V0_2_1 = "proxy_abi_version_0_2_1"

    @classmethod
    def detect(cls, export_names: Iterable[str]) -> AbiVersion | None:
        names = set(export_names)
        for version in (cls.V0_2_1, cls.V0_2_0, cls.V0_1_0):
            if version.value in names:
                return version
        return None


class FailurePolicy(enum.Enum):
    """What a stream sees when its plugin's VM has failed (Envoy's failure_policy)."""

    FAIL_CLOSED = "FAIL_CLOSED"
    FAIL_OPEN = "FAIL_OPEN"
    FAIL_RELOAD = "FAIL_RELOAD"


# --- pairs encoding (header maps, metadata, property maps and lists) -------------------

Pairs = list[tuple[bytes, bytes]]
_U32 = struct.Struct("<I")


def encode_pairs(pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
    """Serialize pairs exactly as Envoy does; an empty map is zero bytes."""
    if not pairs:
        return b""
    sizes = [len(pairs)]
    for key, value in pairs:
        sizes.append(len(key))
        sizes.append(len(value))
    parts = [struct.pack(f"<{len(sizes)}I", *sizes)]
    for key, value in pairs:
        parts.append(key)
        parts.append(b"\0")
        parts.append(value)
        parts.append(b"\0")
    return b"".join(parts)


def decode_pairs(data: bytes | memoryview, *, max_bytes: int, max_count: int) -> Pairs | None:
    """Parse a guest-supplied pairs blob; None when it is malformed or over the caps.

    cpp-host silently treats a bad blob as an empty list; we report None so each caller
    can choose (most answer BAD_ARGUMENT, which every SDK tolerates for setters).
    """
    size = len(data)
    if size == 0 or (size == 1 and data[0] == 0):
        return []
    if size < 4 or size > max_bytes:
        return None
    (count,) = _U32.unpack_from(data, 0)
    if count > max_count:
        return None
    header_end = 4 + 8 * count
    if header_end > size:
        return [] if count == 0 and size == 4 else None
    lengths = struct.unpack_from(f"<{2 * count}I", data, 4)
    pos = header_end
    out: Pairs = []
    raw = bytes(data)
    for i in range(count):
        klen = lengths[2 * i]
        vlen = lengths[2 * i + 1]
        kend = pos + klen
        vstart = kend + 1
        vend = vstart + vlen
        if vend + 1 > size or raw[kend] != 0 or raw[vend] != 0:
            return None
        out.append((raw[pos:kend], raw[vstart:vend]))
        pos = vend + 1
    if pos != size:
        return None
    return out


def encode_list(items: Sequence[bytes]) -> bytes:
    """A list property: pairs whose keys are the elements and whose values are empty."""
    return encode_pairs([(item, b"") for item in items])
