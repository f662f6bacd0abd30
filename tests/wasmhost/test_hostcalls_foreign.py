"""Foreign functions through real instances: lookup order, result hand-back, bad pointers,
Envoy's built-ins (argument and result protos built and parsed with the real protobuf
runtime), and the C ``foreign`` conformance plugin."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import wasmtime
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tests._tools import plugin_path
from wasmhost import ClearRouteCache, Environment, LogLevel, Plugin, PluginSpec, Runtime

RESULT = 0x100  # status of the call
MALLOCS = 0x104  # how many times the guest allocator ran
OUT = 0x400  # ret_data pointer, then ret_size
NAME = 0x1000
ARGS = 0x2000
BAD = 0x1FFFE
UNTOUCHED = "\\aa" * 8  # WAT escapes: out-parameters start as 0xAA bytes
OK, NOT_FOUND, BAD_ARGUMENT, SERIALIZATION_FAILURE, INVALID_MEMORY_ACCESS, INTERNAL_FAILURE = 0, 1, 2, 3, 6, 10


# -- Envoy's argument/result messages, declared for the real protobuf runtime ------------------------

def _messages() -> dict[str, Any]:
    t = descriptor_pb2.FieldDescriptorProto
    pkg = "envoy.source.extensions.common.wasm"
    proto = descriptor_pb2.FileDescriptorProto(name="wasmesh_test_wasm_ext.proto", package=pkg, syntax="proto3")
    for enum_name, values in (("WasmType", ("Bytes", "String", "FlatBuffers", "Protobuf")),
                              ("LifeSpan", ("FilterChain", "DownstreamRequest", "DownstreamConnection"))):
        enum = proto.enum_type.add(name=enum_name)
        for number, value in enumerate(values):
            enum.value.add(name=value, number=number)
    kinds = {"string": t.TYPE_STRING, "bytes": t.TYPE_BYTES, "bool": t.TYPE_BOOL}
    layout = {
        "SetEnvoyFilterStateArguments": [("path", 1, "string"), ("value", 2, "string"), ("span", 3, "LifeSpan")],
        "DeclarePropertyArguments": [("name", 1, "string"), ("readonly", 2, "bool"), ("type", 3, "WasmType"),
                                     ("schema", 4, "bytes"), ("span", 5, "LifeSpan")],
        "VerifySignatureArguments": [("hash_function", 1, "string"), ("public_key", 2, "bytes"),
                                     ("signature", 3, "bytes"), ("text", 4, "bytes"),
                                     ("public_key_pem", 5, "string")],
        "VerifySignatureResult": [("result", 1, "bool"), ("error", 2, "string")],
        "SignArguments": [("hash_function", 1, "string"), ("private_key", 2, "bytes"), ("text", 3, "bytes"),
                          ("private_key_pem", 4, "string")],
        "SignResult": [("result", 1, "bool"), ("signature", 2, "bytes"), ("error", 3, "string")],
    }
    for name, fields in layout.items():
        message = proto.message_type.add(name=name)
        for field_name, number, kind in fields:
            f = message.field.add(name=field_name, number=number, label=t.LABEL_OPTIONAL)
            if kind in kinds:
                f.type = kinds[kind]
            else:
                f.type, f.type_name = t.TYPE_ENUM, f".{pkg}.{kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{pkg}.{name}")) for name in layout}


PB = _messages()


# -- test modules ---------------------------------------------------------------------------------------

def wat_bytes(data: bytes) -> str:
    return "".join(f"\\{b:02x}" for b in data)


def foreign_module(name: bytes, args: bytes, *, callback: str = "vm_start", name_ptr: int = NAME,
                   args_ptr: int = ARGS, ret_data: int = OUT, ret_size: int = OUT + 4) -> bytes:
    """One proxy_call_foreign_function from ``proxy_on_vm_start`` or ``proxy_on_request_headers``."""
    do_call = f"""(i32.store (i32.const {RESULT}) (call $foreign (i32.const {name_ptr}) (i32.const {len(name)})
        (i32.const {args_ptr}) (i32.const {len(args)}) (i32.const {ret_data}) (i32.const {ret_size})))"""
    vm_start = do_call if callback == "vm_start" else ""
    headers = do_call if callback == "request_headers" else ""
    text = f"""(module
  (import "env" "proxy_call_foreign_function" (func $foreign (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 0x8000))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (i32.store (i32.const {MALLOCS}) (i32.add (i32.load (i32.const {MALLOCS})) (i32.const 1)))
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) {vm_start} (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) {headers} (i32.const 0))
  (data (i32.const {OUT}) "{UNTOUCHED}")
  (data (i32.const {NAME}) "{wat_bytes(name)}")
  (data (i32.const {ARGS}) "{wat_bytes(args)}"))"""
    return bytes(wasmtime.wat2wasm(text))


class HostEnv(Environment):
    """Captures logs and serves the foreign functions a test registers."""

    log_level = LogLevel.TRACE

    def __init__(self) -> None:
        self.lines: list[tuple[LogLevel, str]] = []
        self.functions: dict[str, Any] = {}

    def log(self, spec: PluginSpec, level: LogLevel, message: str) -> None:
        self.lines.append((level, message))

    def foreign_function(self, name: str) -> Any:
        return self.functions.get(name)


@dataclass
class Call:
    status: int
    result: bytes | None  # None: out-parameters left untouched
    ret_ptr: int
    ret_size: int
    mallocs: int
    plugin: Plugin
    stream: Any = None
    commands: list[Any] = field(default_factory=list)


@dataclass
class Host:
    env: HostEnv
    runtime: Runtime

    def call(self, name: bytes, args: bytes = b"", *, callback: str = "vm_start", **where: int) -> Call:
        wasm = foreign_module(name, args, callback=callback, **where)
        plugin = Plugin(self.runtime, self.runtime.compile(wasm), PluginSpec(name="foreign-test"))
        plugin.start()
        stream = None
        if callback == "request_headers":
            stream = plugin.new_http_stream()
            stream.on_request_headers([(b":path", b"/")], True)
        commands = self.runtime.take_commands()
        vm = plugin.vm
        assert vm is not None
        status, mallocs = struct.unpack("<iI", vm.read(RESULT, 8) or b"")
        ret_ptr, ret_size = struct.unpack("<II", vm.read(OUT, 8) or b"")
        result = None if ret_ptr == 0xAAAAAAAA else (vm.read(ret_ptr, ret_size) if ret_ptr else b"")
        return Call(status, result, ret_ptr, ret_size, mallocs, plugin, stream, commands)


@pytest.fixture
def host() -> Iterator[Host]:
    env = HostEnv()
    runtime = Runtime(environment=env)
    try:
        yield Host(env, runtime)
    finally:
        runtime.close()


# -- lookup and hand-back -------------------------------------------------------------------------------

def test_an_embedder_function_gets_the_arguments_and_returns_its_bytes(host: Host) -> None:
    host.env.functions["wasmesh_echo"] = lambda args: (OK, b"echo:" + args)
    call = host.call(b"wasmesh_echo", b"hello")
    assert (call.status, call.result, call.mallocs) == (OK, b"echo:hello", 1)


def test_the_embedder_is_asked_before_the_built_ins(host: Host) -> None:
    host.env.functions["compress"] = lambda args: (OK, b"from the embedder")
    assert host.call(b"compress", b"abc").result == b"from the embedder"


def test_unknown_names_are_not_found_and_touch_nothing(host: Host) -> None:
    call = host.call(b"wasmesh_no_such_function", b"x")
    assert (call.status, call.result, call.mallocs) == (NOT_FOUND, None, 0)


@pytest.mark.parametrize("cel", [b"expr_create", b"expr_evaluate", b"expr_delete"])
def test_cel_functions_are_not_provided(host: Host, cel: bytes) -> None:
    assert host.call(cel, b"1 + 1").status == NOT_FOUND


def test_without_ret_data_nothing_is_allocated_but_the_size_is_reported(host: Host) -> None:
    host.env.functions["wasmesh_echo"] = lambda args: (OK, args * 2)
    call = host.call(b"wasmesh_echo", b"abc", ret_data=0)
    assert (call.status, call.mallocs) == (OK, 0)
    assert call.ret_ptr == 0xAAAAAAAA and call.ret_size == 6


def test_an_empty_result_is_null_and_zero_without_allocating(host: Host) -> None:
    host.env.functions["wasmesh_empty"] = lambda args: (OK, b"")
    call = host.call(b"wasmesh_empty")
    assert (call.status, call.ret_ptr, call.ret_size, call.mallocs) == (OK, 0, 0, 0)


def test_a_failing_status_is_passed_through_without_data(host: Host) -> None:
    host.env.functions["wasmesh_refuse"] = lambda args: (BAD_ARGUMENT, b"ignored")
    call = host.call(b"wasmesh_refuse", b"x")
    assert (call.status, call.ret_ptr, call.ret_size, call.mallocs) == (BAD_ARGUMENT, 0, 0, 0)


@pytest.mark.parametrize("behaviour", ["raises", "bad-status"])
def test_a_broken_embedder_function_is_an_internal_failure_not_a_trap(host: Host, behaviour: str) -> None:
    def broken(args: bytes) -> tuple[int, bytes]:
        if behaviour == "raises":
            raise RuntimeError("embedder bug")
        return 99, b""

    host.env.functions["wasmesh_broken"] = broken
    call = host.call(b"wasmesh_broken")
    assert call.status == INTERNAL_FAILURE and call.plugin.failed is None
    assert any(level == LogLevel.ERROR and "wasmesh_broken" in m for level, m in host.env.lines)


@pytest.mark.parametrize("where", [
    {"name_ptr": BAD}, {"args_ptr": BAD}, {"ret_data": BAD}, {"ret_size": BAD},
], ids=["name", "args", "ret-data", "ret-size"])
def test_bad_pointers_are_invalid_memory_access_before_any_effect(host: Host, where: dict[str, int]) -> None:
    call = host.call(b"clear_route_cache", b"xyz", callback="request_headers", **where)
    assert call.status == INVALID_MEMORY_ACCESS
    assert call.commands == [] and call.mallocs == 0


# -- zlib ------------------------------------------------------------------------------------------------

def test_compress_matches_zlib_and_uncompress_reverses_it(host: Host) -> None:
    text = b"proxy-wasm " * 50
    packed = host.call(b"compress", text)
    assert (packed.status, packed.result) == (OK, zlib.compress(text))
    assert packed.result is not None
    unpacked = host.call(b"uncompress", packed.result)
    assert (unpacked.status, unpacked.result) == (OK, text)


@pytest.mark.parametrize("data", [b"", b"not zlib at all", zlib.compress(b"x" * 1000)[:-6]],
                         ids=["empty", "garbage", "truncated"])
def test_uncompress_rejects_bad_input(host: Host, data: bytes) -> None:
    call = host.call(b"uncompress", data)
    assert (call.status, call.mallocs) == (SERIALIZATION_FAILURE, 0)


def test_uncompress_refuses_output_over_the_cap(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    from wasmhost import _hostcalls_foreign

    monkeypatch.setattr(_hostcalls_foreign, "MAX_FOREIGN_RESULT_BYTES", 1000)
    assert host.call(b"uncompress", zlib.compress(b"\0" * 1001)).status == SERIALIZATION_FAILURE
    assert host.call(b"uncompress", zlib.compress(b"\0" * 999)).result == b"\0" * 999


# -- stream state --------------------------------------------------------------------------------------

def test_clear_route_cache_queues_a_command_for_the_stream(host: Host) -> None:
    call = host.call(b"clear_route_cache", callback="request_headers")
    assert call.status == OK
    assert call.stream is not None and call.stream.ctx is not None
    assert [type(c) for c in call.commands] == [ClearRouteCache]
    assert call.commands[0].stream is call.stream.ctx


def test_clear_route_cache_outside_a_stream_is_ok_and_does_nothing(host: Host) -> None:
    call = host.call(b"clear_route_cache")
    assert (call.status, call.commands) == (OK, [])


def test_set_envoy_filter_state_stores_the_value_on_the_stream(host: Host) -> None:
    args = PB["SetEnvoyFilterStateArguments"](path="envoy.tcp_proxy.cluster", value="backend-a", span=1)
    call = host.call(b"set_envoy_filter_state", args.SerializeToString(), callback="request_headers")
    assert call.status == OK
    assert call.stream.ctx.filter_state == {b"envoy.tcp_proxy.cluster": b"backend-a"}


@pytest.mark.parametrize("args, callback, status", [
    (b"\x0a\x05ab", "request_headers", BAD_ARGUMENT),  # length runs past the end
    (b"\x0a\x02\xff\xfe", "request_headers", BAD_ARGUMENT),  # path is not UTF-8
    (b"\x12\x01v", "request_headers", NOT_FOUND),  # no path: no factory by that name
    (PB["SetEnvoyFilterStateArguments"](path="k", value="v").SerializeToString(), "vm_start", NOT_FOUND),
], ids=["truncated", "not-utf8", "no-path", "root-context"])
def test_set_envoy_filter_state_rejects(host: Host, args: bytes, callback: str, status: int) -> None:
    assert host.call(b"set_envoy_filter_state", args, callback=callback).status == status


def test_declare_property_accepts_envoys_arguments_and_rejects_garbage(host: Host) -> None:
    args = PB["DeclarePropertyArguments"](name="my.prop", readonly=True, type=1, schema=b"\x01", span=2)
    assert host.call(b"declare_property", args.SerializeToString()).status == OK
    assert host.call(b"declare_property", b"\x0a\x80").status == BAD_ARGUMENT


# -- signatures ------------------------------------------------------------------------------------------

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _der_private(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _public(key: Any, encoding: serialization.Encoding) -> bytes:
    return key.public_key().public_bytes(encoding, serialization.PublicFormat.SubjectPublicKeyInfo)


def _verify_locally(key: Any, signature: bytes, text: bytes) -> None:
    if isinstance(key, rsa.RSAPrivateKey):
        key.public_key().verify(signature, text, padding.PKCS1v15(), hashes.SHA256())
    else:
        key.public_key().verify(signature, text, ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("key", [RSA_KEY, EC_KEY], ids=["rsa", "ecdsa"])
@pytest.mark.parametrize("form", ["der", "pem"])
def test_sign_then_verify_signature(host: Host, key: Any, form: str) -> None:
    text = b"signed by a plugin"
    sign_args = PB["SignArguments"](hash_function="sha256", text=text)
    if form == "der":
        sign_args.private_key = _der_private(key)
    else:
        sign_args.private_key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()).decode()
    signed = host.call(b"sign", sign_args.SerializeToString())
    assert signed.status == OK and signed.result is not None
    sign_result = PB["SignResult"].FromString(signed.result)
    assert sign_result.result and sign_result.error == ""
    _verify_locally(key, sign_result.signature, text)  # a signature anyone can check

    verify = PB["VerifySignatureArguments"](hash_function="SHA256", signature=sign_result.signature, text=text)
    if form == "der":
        verify.public_key = _public(key, serialization.Encoding.DER)
    else:
        verify.public_key_pem = _public(key, serialization.Encoding.PEM).decode()
    checked = host.call(b"verify_signature", verify.SerializeToString())
    assert checked.status == OK and checked.result is not None
    outcome = PB["VerifySignatureResult"].FromString(checked.result)
    assert (outcome.result, outcome.error) == (True, "")

    verify.text = b"tampered"
    tampered = PB["VerifySignatureResult"].FromString(host.call(b"verify_signature", verify.SerializeToString()).result)
    assert tampered.result is False and tampered.error


def test_verify_signature_reports_bad_inputs_in_its_result(host: Host) -> None:
    der = _public(RSA_KEY, serialization.Encoding.DER)
    for args, needle in [
        (PB["VerifySignatureArguments"](hash_function="md5", public_key=der, signature=b"s", text=b"t"), "md5"),
        (PB["VerifySignatureArguments"](hash_function="sha256", public_key=b"not a key", signature=b"s", text=b"t"),
         "key"),
    ]:
        call = host.call(b"verify_signature", args.SerializeToString())
        outcome = PB["VerifySignatureResult"].FromString(call.result)
        assert call.status == OK and outcome.result is False and needle in outcome.error


@pytest.mark.parametrize("name, args", [
    (b"verify_signature", PB["VerifySignatureArguments"](hash_function="sha256", signature=b"s", text=b"t")),
    (b"verify_signature", PB["VerifySignatureArguments"](hash_function="sha256", public_key=b"k", public_key_pem="k")),
    (b"sign", PB["SignArguments"](hash_function="sha256", text=b"t")),
    (b"sign", b"\x0a\xff"),
], ids=["verify-no-key", "verify-two-keys", "sign-no-key", "sign-garbage"])
def test_signature_functions_need_exactly_one_key(host: Host, name: bytes, args: Any) -> None:
    raw = args if isinstance(args, bytes) else args.SerializeToString()
    assert host.call(name, raw).status == BAD_ARGUMENT


def test_sign_reports_an_unreadable_key_in_its_result(host: Host) -> None:
    call = host.call(b"sign", PB["SignArguments"](hash_function="sha256", private_key=b"junk", text=b"t").SerializeToString())
    outcome = PB["SignResult"].FromString(call.result)
    assert call.status == OK and outcome.result is False and outcome.signature == b"" and "key" in outcome.error


# -- the C conformance plugin ------------------------------------------------------------------------------

@pytest.mark.parametrize("configuration, expected_status, expected_result", [
    (b"", OK, b"echo:hello"),
    (b"compress some text", OK, zlib.compress(b"some text")),
    (b"uncompress not-zlib", SERIALIZATION_FAILURE, b""),
])
def test_c_foreign_plugin(host: Host, configuration: bytes, expected_status: int, expected_result: bytes) -> None:
    host.env.functions["wasmesh_echo"] = lambda args: (OK, b"echo:" + args)
    wasm = plugin_path("foreign").read_bytes()
    plugin = Plugin(host.runtime, host.runtime.compile(wasm), PluginSpec(name="foreign-c", configuration=configuration))
    plugin.start()
    stream = plugin.new_http_stream()
    stream.on_request_headers([(b":path", b"/")], True)
    response = [(b":status", b"200")]
    stream.on_response_headers(response, True)
    stream.finish()
    added = {k.decode(): v.decode() for k, v in response[1:]}
    assert added == {
        "x-foreign-status": str(expected_status),
        "x-foreign-result": "hex:" + expected_result.hex(),
        "x-foreign-missing-status": str(NOT_FOUND),
    }
    name = configuration.split(b" ")[0].decode() or "wasmesh_echo"
    assert (LogLevel.INFO, f"foreign: call name={name} status={expected_status} result_len="
            f"{len(expected_result)}") in host.env.lines

    plugin.on_foreign_function(7, b"\x01\x02")
    root_id = plugin.root.id if plugin.root else -1
    logged = [m for level, m in host.env.lines if m.startswith("foreign: on_foreign_function")]
    assert logged == [f"foreign: on_foreign_function root={root_id} id=7 size=2 args=hex:0102 status=0"]
    assert plugin.failed is None
