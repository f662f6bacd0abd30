"""The ABI callbacks (``proxy_on_*``) routed to the plugin's contexts.

This is the module the host talks to. Each ``proxy_on_*`` function here has the name,
parameters and result of the proxy-wasm 0.2.1 export of the same name:

* compiled, the compiler exports exactly these functions from the ``.wasm`` module;
* in CPython, a host emulator installs a ``HostBinding`` (``sdk.proxywasm.set_host``),
  imports the plugin with ``load_plugin`` (which runs its ``set_vm_context``) and calls
  these functions directly, so both modes run the same dispatch code.

Context tables are keyed by context id, as the host assigns them: id 0 is never used,
root (plugin) contexts have parent 0, stream contexts name their root as parent. Unknown
context ids raise ``KeyError``: the host broke the ABI contract. Written in the
compilable Python subset.
"""

from __future__ import annotations

from collections.abc import Callable

from sdk import _hostabi
from sdk.types import Action, HttpContext, PluginContext, TcpContext, VMContext


class _Callout:
    """An HTTP call in flight: who dispatched it and what to call with the response."""

    def __init__(self, context_id: int, callback: Callable[[int, int, int], None]) -> None:
        self.context_id = context_id
        self.callback = callback


_vm_context: VMContext = VMContext()
_plugin_contexts: dict[int, PluginContext] = {}
_http_contexts: dict[int, HttpContext] = {}
_tcp_contexts: dict[int, TcpContext] = {}
_callouts: dict[int, _Callout] = {}
_active_context_id: int = 0


def set_vm_context(vm_context: VMContext) -> None:
    """Install the plugin's VM context (``sdk.proxywasm.set_vm_context`` calls this)."""
    global _vm_context
    _vm_context = vm_context


def active_context_id() -> int:
    """The context whose callback is running (the one host calls act on)."""
    return _active_context_id


def register_callout(token: int, callback: Callable[[int, int, int], None]) -> None:
    """Remember who dispatched HTTP call ``token`` so its response reaches ``callback``."""
    _callouts[token] = _Callout(_active_context_id, callback)


def proxy_on_context_create(context_id: int, parent_context_id: int) -> None:
    global _active_context_id
    _active_context_id = context_id
    if parent_context_id == 0:
        _plugin_contexts[context_id] = _vm_context.new_plugin_context(context_id)
        return
    plugin = _plugin_contexts[parent_context_id]
    http = plugin.new_http_context(context_id)
    if http is not None:
        _http_contexts[context_id] = http
        return
    tcp = plugin.new_tcp_context(context_id)
    if tcp is not None:
        _tcp_contexts[context_id] = tcp


def proxy_on_vm_start(context_id: int, vm_configuration_size: int) -> bool:
    global _active_context_id
    _active_context_id = context_id
    return _vm_context.on_vm_start(vm_configuration_size)


def proxy_on_configure(context_id: int, plugin_configuration_size: int) -> bool:
    global _active_context_id
    _active_context_id = context_id
    return _plugin_contexts[context_id].on_plugin_start(plugin_configuration_size)


def proxy_on_tick(context_id: int) -> None:
    global _active_context_id
    _active_context_id = context_id
    _plugin_contexts[context_id].on_tick()


def proxy_on_queue_ready(context_id: int, queue_id: int) -> None:
    global _active_context_id
    _active_context_id = context_id
    _plugin_contexts[context_id].on_queue_ready(queue_id)


def proxy_on_request_headers(context_id: int, num_headers: int, end_of_stream: bool) -> Action:
    global _active_context_id
    _active_context_id = context_id
    return _http_contexts[context_id].on_http_request_headers(num_headers, end_of_stream)


def proxy_on_request_body(context_id: int, body_size: int, end_of_stream: bool) -> Action:
    global _active_context_id
    _active_context_id = context_id
    return _http_contexts[context_id].on_http_request_body(body_size, end_of_stream)


def proxy_on_request_trailers(context_id: int, num_trailers: int) -> Action:
    global _active_context_id
    _active_context_id = context_id
    return _http_contexts[context_id].on_http_request_trailers(num_trailers)


def proxy_on_response_headers(context_id: int, num_headers: int, end_of_stream: bool) -> Action:
    global _active_context_id
    _active_context_id = context_id
    return _http_contexts[context_id].on_http_response_headers(num_headers, end_of_stream)


def proxy_on_response_body(context_id: int, body_size: int, end_of_stream: bool) -> Action:
    global _active_context_id
    _active_context_id = context_id
    return _http_contexts[context_id].on_http_response_body(body_size, end_of_stream)


def proxy_on_response_trailers(context_id: int, num_trailers: int) -> Action:
    global _active_context_id
    _active_context_id = context_id
    return _http_contexts[context_id].on_http_response_trailers(num_trailers)


def proxy_on_new_connection(context_id: int) -> Action:
    global _active_context_id
    _active_context_id = context_id
    return _tcp_contexts[context_id].on_new_connection()


def proxy_on_downstream_data(context_id: int, data_size: int, end_of_stream: bool) -> Action:
    global _active_context_id
    _active_context_id = context_id
    return _tcp_contexts[context_id].on_downstream_data(data_size, end_of_stream)


def proxy_on_upstream_data(context_id: int, data_size: int, end_of_stream: bool) -> Action:
    global _active_context_id
    _active_context_id = context_id
    return _tcp_contexts[context_id].on_upstream_data(data_size, end_of_stream)


def proxy_on_downstream_connection_close(context_id: int, peer_type: int) -> None:
    global _active_context_id
    _active_context_id = context_id
    _tcp_contexts[context_id].on_downstream_close(peer_type)


def proxy_on_upstream_connection_close(context_id: int, peer_type: int) -> None:
    global _active_context_id
    _active_context_id = context_id
    _tcp_contexts[context_id].on_upstream_close(peer_type)


def proxy_on_http_call_response(
    context_id: int, token: int, num_headers: int, body_size: int, num_trailers: int
) -> None:
    global _active_context_id
    callout = _callouts.pop(token)
    _active_context_id = callout.context_id
    if callout.context_id != context_id:
        _hostabi.set_effective_context(callout.context_id)
    callout.callback(num_headers, body_size, num_trailers)


def proxy_on_log(context_id: int) -> None:
    global _active_context_id
    _active_context_id = context_id
    if context_id in _http_contexts:
        _http_contexts[context_id].on_http_stream_done()
    elif context_id in _tcp_contexts:
        _tcp_contexts[context_id].on_stream_done()


def proxy_on_done(context_id: int) -> bool:
    global _active_context_id
    _active_context_id = context_id
    if context_id in _plugin_contexts:
        return _plugin_contexts[context_id].on_plugin_done()
    return True


def proxy_on_delete(context_id: int) -> None:
    if context_id in _http_contexts:
        del _http_contexts[context_id]
    elif context_id in _tcp_contexts:
        del _tcp_contexts[context_id]
    elif context_id in _plugin_contexts:
        del _plugin_contexts[context_id]


def load_plugin(path: str) -> object:
    """Import a plugin file afresh (CPython only), after forgetting every context.

    The plugin's own directory is importable while it loads, so multi-file plugins work.
    Returns the module; its ``set_vm_context`` call has installed the VM context.
    """
    import importlib.util
    import sys
    import uuid
    from pathlib import Path

    reset()
    source = Path(path).resolve()
    spec = importlib.util.spec_from_file_location(f"_wasmesh_plugin_{uuid.uuid4().hex}", source)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load a plugin from {source}")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(source.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(source.parent))
    return module


def reset() -> None:
    """Forget every context and the VM context (CPython only: between emulated VMs)."""
    global _vm_context, _active_context_id
    _vm_context = VMContext()
    _plugin_contexts.clear()
    _http_contexts.clear()
    _tcp_contexts.clear()
    _callouts.clear()
    _active_context_id = 0


__all__ = [
    "active_context_id",
    "proxy_on_configure",
    "proxy_on_context_create",
    "proxy_on_delete",
    "proxy_on_done",
    "proxy_on_downstream_connection_close",
    "proxy_on_downstream_data",
    "proxy_on_http_call_response",
    "proxy_on_log",
    "proxy_on_new_connection",
    "proxy_on_queue_ready",
    "proxy_on_request_body",
    "proxy_on_request_headers",
    "proxy_on_request_trailers",
    "proxy_on_response_body",
    "proxy_on_response_headers",
    "proxy_on_response_trailers",
    "proxy_on_tick",
    "proxy_on_upstream_connection_close",
    "proxy_on_upstream_data",
    "proxy_on_vm_start",
    "load_plugin",
    "register_callout",
    "reset",
    "set_vm_context",
]
