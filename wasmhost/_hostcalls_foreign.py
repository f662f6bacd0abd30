"""Foreign functions: ``proxy_call_foreign_function`` and the built-ins Envoy registers.

A name is looked up first in the embedder's :meth:`Environment.foreign_function
<wasmhost.Environment.foreign_function>` (so a host can add or override functions), then
in the built-ins below, which answer like Envoy's: ``compress``/``uncompress`` (zlib),
``clear_route_cache``, ``set_envoy_filter_state``, ``declare_property``, ``sign`` and
``verify_signature``. Envoy's protobuf arguments are read with a small wire-format
decoder, so no generated code is needed. CEL's ``expr_*`` functions are not provided
(NOT_FOUND), as in Envoy builds without the CEL parser.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._abi import LogLevel, Status
from ._commands import ClearRouteCache
from ._context import HttpContext, TcpContext
from ._registry import hostcall
from .limits import MAX_FOREIGN_RESULT_BYTES

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.hashes import HashAlgorithm

    from ._vm import WasmVM

OK = int(Status.OK)
NOT_FOUND = int(Status.NOT_FOUND)
BAD_ARGUMENT = int(Status.BAD_ARGUMENT)
SERIALIZATION_FAILURE = int(Status.SERIALIZATION_FAILURE)
INVALID_MEMORY_ACCESS = int(Status.INVALID_MEMORY_ACCESS)
INTERNAL_FAILURE = int(Status.INTERNAL_FAILURE)
_MAX_STATUS = int(Status.UNIMPLEMENTED)

Builtin = Callable[["WasmVM", bytes], tuple[int, bytes]]
BUILTINS: dict[str, Builtin] = {}


def _builtin(name: str) -> Callable[[Builtin], Builtin]:
    def register(fn: Builtin) -> Builtin:
        BUILTINS[name] = fn
        return fn

    return register


@hostcall("proxy_call_foreign_function", "iiiiii")
def call_foreign_function(
    vm: WasmVM, name_ptr: int, name_len: int, args_ptr: int, args_len: int, ret_data: int, ret_size: int
) -> int:
    """Envoy calls a registered function and hands back its bytes (skipped when ret_data is 0); we check out-pointers first."""
    name = vm.read(name_ptr, name_len)
    args = vm.read(args_ptr, args_len)
    if name is None or args is None:
        return INVALID_MEMORY_ACCESS
    memory = vm.memory
    if (ret_data and not memory.fits(ret_data, 4)) or (ret_size and not memory.fits(ret_size, 4)):
        return INVALID_MEMORY_ACCESS
    text = name.decode("utf-8", "replace")
    hosted = vm.environment.foreign_function(text)
    if hosted is not None:
        try:
            status, result = hosted(args)
        except Exception as err:  # noqa: BLE001 - an embedder bug must not trap the plugin
            vm.log(LogLevel.ERROR, f"foreign function {text!r} failed: {err!r}")
            return INTERNAL_FAILURE
        if not 0 <= status <= _MAX_STATUS:
            vm.log(LogLevel.ERROR, f"foreign function {text!r} returned invalid status {status}")
            return INTERNAL_FAILURE
    else:
        builtin = BUILTINS.get(text)
        if builtin is None:
            return NOT_FOUND
        status, result = builtin(vm, args)
    if status != OK:
        result = b""
    address = 0
    if ret_data and result:
        address = vm.allocate(len(result))
        if address == 0:
            return INVALID_MEMORY_ACCESS
        memory.write(address, result)
    if ret_data:
        memory.write_u32(ret_data, address)
    if ret_size:
        memory.write_u32(ret_size, len(result))
    return status


# -- zlib ---------------------------------------------------------------------------------------

@_builtin("compress")
def compress(vm: WasmVM, args: bytes) -> tuple[int, bytes]:
    """Envoy: zlib ``compress()`` of the arguments at the default level (byte-identical output)."""
    return OK, zlib.compress(args)


@_builtin("uncompress")
def uncompress(vm: WasmVM, args: bytes) -> tuple[int, bytes]:
    """Envoy: zlib ``uncompress()``, SERIALIZATION_FAILURE on bad data; we also refuse output over 16 MiB."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(args, MAX_FOREIGN_RESULT_BYTES)
    except zlib.error:
        return SERIALIZATION_FAILURE, b""
    if not inflater.eof:
        return SERIALIZATION_FAILURE, b""  # truncated input, or more output than the cap
    return OK, out


# -- stream state ---------------------------------------------------------------------------

@_builtin("clear_route_cache")
def clear_route_cache(vm: WasmVM, args: bytes) -> tuple[int, bytes]:
    """Envoy clears the HTTP stream's cached route; OK (and nothing to do) outside an HTTP stream."""
    ctx = vm.effective or vm.current
    if isinstance(ctx, HttpContext):
        vm.runtime.commands.push(ClearRouteCache(ctx))
    return OK, b""


@_builtin("set_envoy_filter_state")
def set_envoy_filter_state(vm: WasmVM, args: bytes) -> tuple[int, bytes]:
    """Envoy sets a typed filter-state object via a registered factory; we store the bytes under any key (span ignored)."""
    fields = _decode(args, {1: "string", 2: "string", 3: "enum"})
    if fields is None:
        return BAD_ARGUMENT, b""
    path, value = _bytes(fields, 1), _bytes(fields, 2)
    if not path:
        return NOT_FOUND, b""  # Envoy: no object factory has an empty name
    ctx = vm.effective or vm.current
    if not isinstance(ctx, HttpContext | TcpContext):
        return NOT_FOUND, b""  # Envoy: no stream info on a root context
    ctx.filter_state[path] = value
    return OK, b""


@_builtin("declare_property")
def declare_property(vm: WasmVM, args: bytes) -> tuple[int, bytes]:
    """Envoy records a typed property schema for set_property; we validate the arguments and accept them untyped."""
    fields = _decode(args, {1: "string", 2: "bool", 3: "enum", 4: "bytes", 5: "enum"})
    if fields is None:
        return BAD_ARGUMENT, b""
    name = _bytes(fields, 1).decode()
    vm.log(LogLevel.DEBUG, f"declare_property {name!r}: accepted; properties stay untyped bytes here")
    return OK, b""


# -- signatures -------------------------------------------------------------------------------

@_builtin("verify_signature")
def verify_signature(vm: WasmVM, args: bytes) -> tuple[int, bytes]:
    """Envoy verifies with a DER or PEM public key (RSA PKCS#1 v1.5 or ECDSA); the result proto says why it failed."""
    fields = _decode(args, {1: "string", 2: "bytes", 3: "bytes", 4: "bytes", 5: "string"})
    if fields is None:
        return BAD_ARGUMENT, b""
    der, pem = _bytes(fields, 2), _bytes(fields, 5)
    if bool(der) == bool(pem):
        return BAD_ARGUMENT, b""  # exactly one key form is required
    ok, error = _verify(_bytes(fields, 1).decode(), der, pem, _bytes(fields, 3), _bytes(fields, 4))
    return OK, _encode([(1, ok), (2, error.encode())])


@_builtin("sign")
def sign(vm: WasmVM, args: bytes) -> tuple[int, bytes]:
    """Envoy signs with a DER or PEM private key (RSA PKCS#1 v1.5 or ECDSA); failures are reported in the result proto."""
    fields = _decode(args, {1: "string", 2: "bytes", 3: "bytes", 4: "string"})
    if fields is None:
        return BAD_ARGUMENT, b""
    der, pem = _bytes(fields, 2), _bytes(fields, 4)
    if bool(der) == bool(pem):
        return BAD_ARGUMENT, b""
    signature, error = _sign(_bytes(fields, 1).decode(), der, pem, _bytes(fields, 3))
    return OK, _encode([(1, signature is not None), (2, signature or b""), (3, error.encode())])


def _bytes(fields: dict[int, bytes | int], number: int) -> bytes:
    value = fields.get(number, b"")
    return value if isinstance(value, bytes) else b""


def _hash(name: str) -> HashAlgorithm | None:
    from cryptography.hazmat.primitives import hashes

    algorithms: dict[str, HashAlgorithm] = {
        "sha1": hashes.SHA1(), "sha224": hashes.SHA224(), "sha256": hashes.SHA256(),
        "sha384": hashes.SHA384(), "sha512": hashes.SHA512(),
    }
    return algorithms.get(name.lower())


def _verify(hash_name: str, der: bytes, pem: bytes, signature: bytes, text: bytes) -> tuple[bool, str]:
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    algorithm = _hash(hash_name)
    if algorithm is None:
        return False, f"hash function {hash_name!r} is not supported"
    try:
        key = serialization.load_pem_public_key(pem) if pem else serialization.load_der_public_key(der)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False, "the public key could not be read"
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, text, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, text, ec.ECDSA(algorithm))
        else:
            return False, "only RSA and EC keys are supported"
    except InvalidSignature:
        return False, "signature does not match"
    return True, ""


def _sign(hash_name: str, der: bytes, pem: bytes, text: bytes) -> tuple[bytes | None, str]:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    algorithm = _hash(hash_name)
    if algorithm is None:
        return None, f"hash function {hash_name!r} is not supported"
    try:
        key = (serialization.load_pem_private_key(pem, password=None) if pem
               else serialization.load_der_private_key(der, password=None))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None, "the private key could not be read"
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(text, padding.PKCS1v15(), algorithm), ""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(text, ec.ECDSA(algorithm)), ""
    return None, "only RSA and EC keys are supported"


# -- protobuf wire format (just enough for Envoy's argument messages) ------------------------------

_WIRE_TYPES = {"string": 2, "bytes": 2, "bool": 0, "enum": 0}


def _varint(data: bytes, pos: int) -> tuple[int, int] | None:
    value = 0
    for shift in range(0, 70, 7):
        if pos >= len(data):
            return None
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value & 0xFFFFFFFFFFFFFFFF, pos
    return None


def _decode(data: bytes, schema: dict[int, str]) -> dict[int, bytes | int] | None:
    """Parse a proto3 message into ``{field: value}``; None when malformed (as ParseFromString fails).

    Known fields of the wrong wire type and unknown fields are skipped, like protobuf's
    unknown-field handling; proto3 ``string`` fields must be valid UTF-8.
    """
    out: dict[int, bytes | int] = {}
    pos = 0
    while pos < len(data):
        key = _varint(data, pos)
        if key is None:
            return None
        tag, pos = key
        number, wire = tag >> 3, tag & 7
        if number == 0:
            return None
        value: bytes | int
        if wire == 0:
            parsed = _varint(data, pos)
            if parsed is None:
                return None
            value, pos = parsed
        elif wire == 2:
            parsed = _varint(data, pos)
            if parsed is None or parsed[1] + parsed[0] > len(data):
                return None
            length, pos = parsed
            value = data[pos : pos + length]
            pos += length
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(data):
                return None
            value = data[pos : pos + width]
            pos += width
        else:
            return None  # groups are not used by these messages
        kind = schema.get(number)
        if kind is None or _WIRE_TYPES[kind] != wire:
            continue
        if kind == "string":
            assert isinstance(value, bytes)
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return None
        out[number] = value
    return out


def _encode(fields: list[tuple[int, bool | bytes]]) -> bytes:
    """Serialize bool and bytes/string fields, omitting proto3 defaults as protobuf does."""
    parts: list[bytes] = []
    for number, value in fields:
        if isinstance(value, bool):
            if value:
                parts.append(bytes([number << 3, 1]))
        elif value:
            parts.append(bytes([(number << 3) | 2]) + _encode_varint(len(value)) + value)
    return b"".join(parts)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
