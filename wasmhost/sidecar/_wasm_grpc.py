"""The Wasm filter's gRPC callouts: proxy-wasm gRPC commands in, ``Plugin.on_grpc_*`` callbacks out.

The proxy-wasm core turns ``proxy_grpc_call`` / ``proxy_grpc_stream`` / ``proxy_grpc_send`` /
``proxy_grpc_cancel`` / ``proxy_grpc_close`` into commands; this module keeps one
``GrpcCallout`` per (root context, token) and reports back as Envoy does: a stream gets
every event (initial metadata, each message, trailing metadata, close); a unary call gets
only ``on_grpc_receive`` on success or ``on_grpc_close`` with the failure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import CancelGrpc, DispatchGrpcCall, Plugin, SendGrpcMessage
from .._hostcalls_grpc import CLUSTER_NOT_AVAILABLE, DispatchGrpcServiceCall
from ._grpc_callout import UNAVAILABLE, GrpcCallout, GrpcEvents, UnaryCollector, start_grpc_callout
from ._headers import Pair

_Key = tuple[int, int]  # (id(root context), token)
_Runner = Callable[[Callable[[], None]], None]


def _run_now(action: Callable[[], None]) -> None:
    action()


class _StreamEvents:
    """Every stream event goes to the plugin's root context."""

    def __init__(self, calls: WasmGrpcCalls, plugin: Plugin, key: _Key) -> None:
        self.calls, self.plugin, self.key = calls, plugin, key

    def on_initial_metadata(self, metadata: list[Pair]) -> None:
        plugin, token = self.plugin, self.key[1]
        self.calls.run(lambda: plugin.on_grpc_receive_initial_metadata(token, metadata))

    def on_message(self, message: bytes) -> None:
        plugin, token = self.plugin, self.key[1]
        self.calls.run(lambda: plugin.on_grpc_receive(token, message))

    def on_trailing_metadata(self, metadata: list[Pair]) -> None:
        plugin, token = self.plugin, self.key[1]
        self.calls.run(lambda: plugin.on_grpc_receive_trailing_metadata(token, metadata))

    def on_close(self, status: int, message: bytes) -> None:
        self.calls.closed(self.key)
        plugin, token = self.plugin, self.key[1]
        self.calls.run(lambda: plugin.on_grpc_close(token, status, message))


class WasmGrpcCalls:
    """Open gRPC callouts of every plugin on one worker."""

    def __init__(self) -> None:
        self._calls: dict[_Key, GrpcCallout] = {}
        self.services: Any = None
        self.run: _Runner = _run_now


    def _flush(self) -> None:
        """Have the worker carry out the upstream commands just queued."""
        if self.services is not None:
            self.services.call_soon(lambda: None)

    def dispatch(self, services: Any, plugin: Plugin, command: DispatchGrpcCall, run: _Runner, soon: _Runner) -> None:
        """Start the call; ``run`` calls into the plugin (and carries out what it asks), ``soon`` defers."""
        self.services, self.run = services, run
        key = (id(command.root), command.token)
        token = command.token
        events: GrpcEvents
        if command.message is None:
            events = _StreamEvents(self, plugin, key)
        else:
            def received(message: bytes) -> None:
                self.closed(key)
                self.run(lambda: plugin.on_grpc_receive(token, message))  # the core ends the call

            def failed(status: int, message: bytes) -> None:
                self.closed(key)
                self.run(lambda: plugin.on_grpc_close(token, status, message))

            events = UnaryCollector(received, failed)
        current = getattr(services, "current", None)
        cluster = current.clusters.get(command.cluster) if current is not None else None
        if cluster is None:  # Envoy's async client closes at once, after the plugin's callback
            soon(lambda: events.on_close(UNAVAILABLE, CLUSTER_NOT_AVAILABLE))
            return
        authority, service_metadata = "", None
        if isinstance(command, DispatchGrpcServiceCall):
            authority, service_metadata = command.authority, list(command.service_metadata)
        self._calls[key] = start_grpc_callout(
            services.runtime, cluster, command.service, command.method, list(command.initial_metadata),
            command.message, command.timeout_ms, events, authority=authority, service_metadata=service_metadata,
        )
        self._flush()

    def send(self, command: SendGrpcMessage) -> None:
        call = self._calls.get((id(command.root), command.token))
        if call is not None:
            call.send(command.message, command.end_stream)
            self._flush()

    def cancel(self, command: CancelGrpc) -> None:
        key = (id(command.root), command.token)
        call = self._calls.get(key)
        if call is None:
            return
        if command.half_close:
            call.half_close()
        else:
            del self._calls[key]
            call.cancel()
        self._flush()

    def forget_root(self, root: object) -> None:
        """The plugin is gone: cancel what it still had open."""
        marker = id(root)
        for key in [k for k in self._calls if k[0] == marker]:
            self._calls.pop(key).cancel()
        self._flush()

    def closed(self, key: _Key) -> None:
        self._calls.pop(key, None)

    def __len__(self) -> int:
        return len(self._calls)
