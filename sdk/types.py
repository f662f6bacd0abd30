"""The contexts a plugin implements, with no-op defaults.

Mirrors proxy-wasm-go-sdk's ``types`` package in Python naming. A plugin subclasses
``VMContext`` (one per VM), ``PluginContext`` (one per configured plugin, the "root"
context), and ``HttpContext`` / ``TcpContext`` (one per stream), overriding only the
callbacks it needs. ``sdk.entrypoint`` routes the host's ABI callbacks to these methods.

Every stream callback returns an ``Action``: ``CONTINUE`` hands the data on to the next
filter; ``PAUSE`` holds it (headers: the whole stream waits until ``resume_http_request``
/ ``resume_http_response``; body: the host buffers the chunk and calls again with the
accumulated size). This module is written in the compilable Python subset.
"""

from __future__ import annotations

from enum import IntEnum


class Action(IntEnum):
    """What the host does with the stream after a callback returns."""

    CONTINUE = 0
    PAUSE = 1


class PeerType(IntEnum):
    """Which side closed a TCP connection."""

    UNKNOWN = 0
    LOCAL = 1
    REMOTE = 2


class HttpContext:
    """One HTTP request/response exchange. Defaults let everything through."""

    def on_http_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        """Request headers arrived; ``end_of_stream`` is true when no body follows."""
        return Action.CONTINUE

    def on_http_request_body(self, body_size: int, end_of_stream: bool) -> Action:
        """A request body chunk arrived; ``body_size`` counts all bytes readable now."""
        return Action.CONTINUE

    def on_http_request_trailers(self, num_trailers: int) -> Action:
        """Request trailers arrived."""
        return Action.CONTINUE

    def on_http_response_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        """Response headers arrived; ``end_of_stream`` is true when no body follows."""
        return Action.CONTINUE

    def on_http_response_body(self, body_size: int, end_of_stream: bool) -> Action:
        """A response body chunk arrived; ``body_size`` counts all bytes readable now."""
        return Action.CONTINUE

    def on_http_response_trailers(self, num_trailers: int) -> Action:
        """Response trailers arrived."""
        return Action.CONTINUE

    def on_http_stream_done(self) -> None:
        """The exchange is over (the host's access-log hook); headers are still readable."""
        return None


class TcpContext:
    """One TCP connection. Defaults let everything through."""

    def on_new_connection(self) -> Action:
        """A downstream connection was accepted."""
        return Action.CONTINUE

    def on_downstream_data(self, data_size: int, end_of_stream: bool) -> Action:
        """Bytes arrived from the downstream (client) side."""
        return Action.CONTINUE

    def on_downstream_close(self, peer_type: int) -> None:
        """The downstream side closed; ``peer_type`` is a ``PeerType`` value."""
        return None

    def on_upstream_data(self, data_size: int, end_of_stream: bool) -> Action:
        """Bytes arrived from the upstream (server) side."""
        return Action.CONTINUE

    def on_upstream_close(self, peer_type: int) -> None:
        """The upstream side closed; ``peer_type`` is a ``PeerType`` value."""
        return None

    def on_stream_done(self) -> None:
        """The connection is over."""
        return None


class PluginContext:
    """One configured plugin (the root context): configuration, timers, queues, streams."""

    def on_plugin_start(self, plugin_configuration_size: int) -> bool:
        """The plugin was (re)configured; return False to reject the configuration."""
        return True

    def on_plugin_done(self) -> bool:
        """The host is shutting the plugin down; return False to finish later."""
        return True

    def on_queue_ready(self, queue_id: int) -> None:
        """A shared queue this plugin registered has data."""
        return None

    def on_tick(self) -> None:
        """The timer set with ``set_tick_period_milliseconds`` fired."""
        return None

    def new_http_context(self, context_id: int) -> HttpContext | None:
        """Make the context for a new HTTP stream; None means this plugin is not an HTTP filter."""
        return None

    def new_tcp_context(self, context_id: int) -> TcpContext | None:
        """Make the context for a new TCP connection; None means this plugin is not a TCP filter."""
        return None


class VMContext:
    """The VM: started once, makes one plugin context per configured plugin."""

    def on_vm_start(self, vm_configuration_size: int) -> bool:
        """The VM started; return False to fail it."""
        return True

    def new_plugin_context(self, context_id: int) -> PluginContext:
        """Make the plugin (root) context with id ``context_id``."""
        return PluginContext()


__all__ = ["Action", "HttpContext", "PeerType", "PluginContext", "TcpContext", "VMContext"]
