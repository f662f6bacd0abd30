"""sdk.testing: unit-test any proxy-wasm plugin (any SDK, any language) without a proxy.

Part of the SDK, and the only part that runs the real host: :class:`HostEmulator` loads a
``.wasm`` into ``wasmhost`` (the sidecar's own proxy-wasm host, on wasmtime) and lets a
test drive it one event at a time, the way proxy-wasm-go-sdk's ``proxytest`` does:

.. code-block:: python

    from sdk.testing import Action, HostEmulator

    def test_denies_requests_with_x_deny():
        with HostEmulator.load("build/plugins/local_reply.wasm") as host:
            host.start_plugin()
            stream = host.initialize_http_context()
            action = host.call_on_request_headers(stream, {":path": "/", "x-deny": "yes"}, True)
            assert action is Action.PAUSE
            reply = host.local_response(stream)
            assert (reply.status, reply.body) == (403, b"access denied: yes\\n")
            assert host.logs("info") == ["local_reply: denied status=0"]

What a test can do:

- configure: ``plugin_config``, ``vm_config``, ``root_id``, ``vm_id``, ``properties``
  (``{"source.address": "10.0.0.1:5000", "node.metadata.NAMESPACE": "prod", ...}``),
  ``clusters`` (which callout targets exist; default all), ``log_level``,
  ``failure_policy``, ``foreign_functions``;
- drive streams: ``call_on_request_headers/body/trailers``, ``call_on_response_*``,
  ``complete_http_context``; each returns the plugin's :class:`Action`;
- inspect streams: ``current_request_headers/body/trailers``, ``current_response_*``,
  ``local_response``, ``is_paused``, ``is_reset``;
- move time: ``advance_time(ms)`` fires ``on_tick`` on the plugin's period, ``tick()``
  fires it once; the plugin's clocks only move with ``advance_time``;
- answer callouts: ``pending_callouts()`` then ``answer_callout`` / ``fail_callout``;
  gRPC: ``pending_grpc_calls()``, ``answer_grpc_call`` (a unary call: its message only, as
  Envoy), ``send_grpc_metadata`` / ``send_grpc_message`` (streams), ``close_grpc_call``;
- read host state: ``logs(level)``, ``metrics()`` / ``metric(name)``,
  ``shared_data(key)``, ``queue_items(name)``, ``enqueue(name, value)``, ``trap``.

Effects a callback queues (a local reply, ``continue_stream``, a callout, a timer) are
carried out before the ``call_*`` returns, so assertions see them immediately.

CPython mode: ``HostEmulator.load("plugin.py")`` (or ``load_python``) runs a Python SDK
plugin's source directly in this process — instant feedback, real tracebacks — while the
host stays the real one: a small bridge module forwards every callback to the source and
every ``sdk.proxywasm`` call to the host's own functions. ``plugin_fixture(source)`` gives
pytest a fixture parametrized over both modes (source and compiled ``.wasm``), so one test
holds both to the same expectations; ``assert_modes_agree`` compares a scenario's results.
"""

from wasmhost import Action, FailurePolicy, LogLevel, ModuleError, PluginStartError, StreamType

from ._both_modes import MODES, PluginLoader, assert_modes_agree, compiled_module, plugin_fixture
from ._emulator import EmulatorError, HostEmulator
from ._records import Callout, GrpcCall, LocalResponse, LogEntry

__all__ = [
    "Action",
    "Callout",
    "EmulatorError",
    "FailurePolicy",
    "GrpcCall",
    "HostEmulator",
    "LocalResponse",
    "LogEntry",
    "LogLevel",
    "MODES",
    "ModuleError",
    "PluginLoader",
    "PluginStartError",
    "StreamType",
    "assert_modes_agree",
    "compiled_module",
    "plugin_fixture",
]
