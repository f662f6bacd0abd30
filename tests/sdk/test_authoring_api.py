"""The authoring API in CPython: contexts' defaults, the host binding, status errors, and
the ABI dispatch in sdk.entrypoint."""

from __future__ import annotations

import inspect
import typing

import pytest

from sdk import _hostabi, entrypoint, proxywasm
from sdk.compiler._hostcalls import SPECS
from sdk.errors import (
    BadArgumentError,
    CasMismatchError,
    EmptyError,
    InternalFailureError,
    NotFoundError,
    ProxyWasmError,
    UnimplementedError,
    error_for_status,
    status_name,
)
from sdk.types import Action, HttpContext, PeerType, PluginContext, TcpContext, VMContext
from tests.sdk.compiler._stubhost import StubHost


@pytest.fixture
def host() -> typing.Iterator[StubHost]:
    stub = StubHost(plugin_configuration=b"conf")
    previous = _hostabi.set_host(stub)
    entrypoint.reset()
    try:
        yield stub
    finally:
        _hostabi.set_host(previous)
        entrypoint.reset()


def test_defaults_let_everything_through() -> None:
    http = HttpContext()
    assert http.on_http_request_headers(3, False) is Action.CONTINUE
    assert http.on_http_response_body(10, True) is Action.CONTINUE
    assert TcpContext().on_downstream_data(5, False) is Action.CONTINUE
    plugin = PluginContext()
    assert plugin.on_plugin_start(0) is True
    assert plugin.on_plugin_done() is True
    assert plugin.new_http_context(2) is None
    assert isinstance(VMContext().new_plugin_context(1), PluginContext)
    assert (Action.CONTINUE, Action.PAUSE) == (0, 1)
    assert (PeerType.UNKNOWN, PeerType.LOCAL, PeerType.REMOTE) == (0, 1, 2)


def test_every_status_has_its_exception() -> None:
    expected = {1: NotFoundError, 2: BadArgumentError, 7: EmptyError, 8: CasMismatchError, 12: UnimplementedError}
    for status, cls in expected.items():
        err = error_for_status(status, "proxy_x")
        assert type(err) is cls
        assert err.status == status
        assert str(err) == f"proxy_x: {status_name(status)}"
    assert type(error_for_status(99, "proxy_x")) is InternalFailureError
    assert status_name(99) == "STATUS_99"
    assert issubclass(NotFoundError, ProxyWasmError) and issubclass(ProxyWasmError, Exception)
    assert NotFoundError("k").status == 1


def test_host_binding_protocol_matches_hostabi_and_the_compiler() -> None:
    protocol = {n for n, _ in inspect.getmembers(_hostabi.HostBinding, inspect.isfunction) if not n.startswith("_")}
    forwarders = {n for n in SPECS}
    assert protocol == forwarders
    for name in protocol:
        method = inspect.signature(getattr(_hostabi.HostBinding, name))
        forwarder = inspect.signature(getattr(_hostabi, name))
        assert list(method.parameters)[1:] == list(forwarder.parameters), name
        assert [p.name for p in SPECS[name].python_params] == list(forwarder.parameters), name


def test_a_plugin_without_a_host_gets_a_clear_error() -> None:
    previous = _hostabi.set_host(None)
    try:
        with pytest.raises(RuntimeError, match="no proxy-wasm host is bound"):
            proxywasm.log_info("x")
    finally:
        _hostabi.set_host(previous)


def test_header_calls_decode_and_raise_status_errors(host: StubHost) -> None:
    host.maps[0] = [(b":path", b"/a"), (b"x-bin", b"\xff")]
    assert proxywasm.get_http_request_header(":path") == "/a"
    assert proxywasm.get_http_request_headers() == [(":path", "/a"), ("x-bin", "\ufffd")]
    with pytest.raises(NotFoundError):
        proxywasm.get_http_request_header("absent")
    proxywasm.add_http_response_header("x-a", "1")
    proxywasm.replace_http_request_headers([("a", "1")])
    assert host.maps[0] == [(b"a", b"1")] and host.maps[2] == [(b"x-a", b"1")]
    with pytest.raises(EmptyError):
        proxywasm.dequeue_shared_queue(proxywasm.register_shared_queue("q"))


def test_body_helpers_use_the_abi_offsets(host: StubHost) -> None:
    host.buffers[0] = b"middle"
    proxywasm.prepend_http_request_body(b"<")
    proxywasm.append_http_request_body(b">")
    assert host.buffers[0] == b"<middle>"
    proxywasm.replace_http_request_body(b"new")
    assert host.buffers[0] == b"new"
    assert proxywasm.get_plugin_configuration() == b"conf"


def test_property_paths_are_nul_joined(host: StubHost) -> None:
    proxywasm.set_property(["filter", "state"], b"v")
    assert host.properties == {b"filter\x00state": b"v"}
    assert proxywasm.get_property(["filter", "state"]) == b"v"


class _Http(HttpContext):
    def __init__(self, context_id: int) -> None:
        self.context_id = context_id
        self.done = False

    def on_http_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        proxywasm.dispatch_http_call("auth", [(":path", "/")], b"", [], 100, self.on_response)
        return Action.PAUSE

    def on_response(self, num_headers: int, body_size: int, num_trailers: int) -> None:
        proxywasm.log_info(f"response {num_headers} {body_size} for {self.context_id}")
        proxywasm.resume_http_request()

    def on_http_stream_done(self) -> None:
        self.done = True


class _Tcp(TcpContext):
    def on_downstream_data(self, data_size: int, end_of_stream: bool) -> Action:
        return Action.PAUSE


class _Plugin(PluginContext):
    def new_http_context(self, context_id: int) -> HttpContext | None:
        return _Http(context_id) if context_id < 100 else None

    def new_tcp_context(self, context_id: int) -> TcpContext | None:
        return _Tcp()


class _VM(VMContext):
    def new_plugin_context(self, context_id: int) -> PluginContext:
        return _Plugin()


def test_entrypoint_routes_callbacks_to_contexts(host: StubHost) -> None:
    proxywasm.set_vm_context(_VM())
    entrypoint.proxy_on_context_create(1, 0)
    assert entrypoint.proxy_on_vm_start(1, 0) is True
    assert entrypoint.proxy_on_configure(1, 4) is True
    entrypoint.proxy_on_context_create(2, 1)
    entrypoint.proxy_on_context_create(200, 1)
    assert entrypoint.proxy_on_request_headers(2, 1, True) is Action.PAUSE
    assert entrypoint.proxy_on_downstream_data(200, 3, False) is Action.PAUSE
    # the response arrives on the root context; the stream's callback runs on the stream
    entrypoint.proxy_on_http_call_response(1, 1, 2, 5, 0)
    assert host.effective_context == 2
    assert host.logs == [(2, "response 2 5 for 2")]
    assert host.continued == [0]
    entrypoint.proxy_on_log(2)
    assert entrypoint.proxy_on_done(2) is True
    entrypoint.proxy_on_delete(2)
    with pytest.raises(KeyError):
        entrypoint.proxy_on_request_body(2, 0, True)
    assert entrypoint.proxy_on_done(1) is True
