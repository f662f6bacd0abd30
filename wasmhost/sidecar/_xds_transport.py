"""The ADS stream's I/O edge: grpcio's blocking stream in a daemon thread, reconnecting with backoff.

A thread works under any event loop (the sidecar runs uvloop); what arrives is posted to the
loop through a thread-safe callback, and requests are queued per stream, so a request meant for
a stream that has ended is dropped rather than sent on the next one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from ._xds_settings import AdsSettings


class AdsTransport:
    """grpcio's blocking ADS stream in a daemon thread, reconnecting with backoff."""

    def __init__(self, settings: AdsSettings, post: Callable[..., None]) -> None:
        self.settings = settings
        self.post = post  # thread-safe: post(kind, stream_id, payload)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue[Any] | None = None
        self._stream_id = 0
        self._call: Any = None
        self._thread = threading.Thread(target=self._run, name="wasmesh-xds", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def send(self, stream_id: int, requests: list[discovery_pb2.DiscoveryRequest]) -> None:
        with self._lock:
            if stream_id != self._stream_id or self._requests is None:
                return  # that stream is gone; the next one starts with fresh requests
            for request in requests:
                self._requests.put(request)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self._requests is not None:
                self._requests.put(None)
            call = self._call
        if call is not None:
            call.cancel()
        self._thread.join(5)

    def _channel(self) -> Any:
        import grpc

        # no keepalive pings: a gRPC server treats frequent ones on an idle stream as abuse and hangs up
        options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        tls = self.settings.tls
        if tls is None:
            return grpc.insecure_channel(self.settings.target, options=options)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls.trusted_ca, private_key=tls.private_key or None,
            certificate_chain=tls.certificate_chain or None)
        if tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        return grpc.secure_channel(self.settings.target, credentials, options=options)

    def _run(self) -> None:
        import grpc
        from envoy.service.discovery.v3 import ads_pb2_grpc

        backoff = 0.25
        while not self._stop.is_set():
            requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
            with self._lock:
                self._stream_id += 1
                stream_id = self._stream_id
                self._requests = requests
            channel = self._channel()
            reason = "the control plane ended the stream"
            try:
                stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
                method = stub.DeltaAggregatedResources if self.settings.delta else stub.StreamAggregatedResources
                call = method(_drain(requests), metadata=self.settings.metadata or None)
                with self._lock:
                    self._call = call
                self.post("connected", stream_id, None)
                for response in call:
                    backoff = 0.25
                    self.post("response", stream_id, response)
            except grpc.RpcError as err:
                code = err.code() if hasattr(err, "code") else None
                reason = f"{getattr(code, 'name', code)}: {err.details() if hasattr(err, 'details') else err}"
            except Exception as err:  # noqa: BLE001 - the stream thread must survive to reconnect
                reason = f"{type(err).__name__}: {err}"
            finally:
                requests.put(None)
                with self._lock:
                    self._call = None
                    if self._requests is requests:
                        self._requests = None
                channel.close()
            if self._stop.is_set():
                break
            self.post("closed", stream_id, reason)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)


def _drain(requests: queue.SimpleQueue[Any]) -> Iterator[Any]:
    while True:
        item = requests.get()
        if item is None:
            return
        yield item



__all__ = ["AdsTransport"]
