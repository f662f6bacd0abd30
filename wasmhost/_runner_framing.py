"""How Envoy frames the messages a single HTTP filter sees, for ``wasmesh plugin run``.

Measured against Envoy 1.40 with an HTTP/1.1 client and upstream (tests/e2e/_envoy.py):
request pseudo-headers first, ``content-length`` where the peer sent it,
``x-forwarded-proto`` added by the connection manager, and ``sendLocalReply``'s header
shape for local replies (the plugin's headers, then ``content-length`` and
``content-type: text/plain`` when there is a body; trailers-only for gRPC).
"""

from __future__ import annotations

from ._abi import Pairs
from ._runner_types import ClientResponse, RunRequest

NO_BODY_STATUSES = frozenset({204, 304})


def request_headers(request: RunRequest, scheme: str) -> Pairs:
    """The request Envoy's connection manager hands its filters for an HTTP/1.1 client."""
    headers: Pairs = [
        (b":authority", request.authority.encode()),
        (b":path", request.path.encode()),
        (b":method", request.method.encode()),
        (b":scheme", scheme.encode()),
    ]
    headers += [(name.lower().encode(), value.encode()) for name, value in request.headers]
    names = {name for name, _ in headers}
    if request.body and b"content-length" not in names and b"transfer-encoding" not in names:
        headers.append((b"content-length", str(len(request.body)).encode()))
    if b"x-forwarded-proto" not in names:
        headers.append((b"x-forwarded-proto", scheme.encode()))
    return headers


def upstream_response(request: RunRequest) -> tuple[Pairs, bytes]:
    """The scripted upstream's response as Envoy's HTTP/1.1 codec hands it on (framed)."""
    headers: Pairs = [(b":status", str(request.response_status).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in request.response_headers]
    framed = {name for name, _ in headers} & {b"content-length", b"transfer-encoding"}
    no_body = request.response_status in NO_BODY_STATUSES or 100 <= request.response_status < 200
    if not framed and not no_body:
        headers.append((b"content-length", str(len(request.response_body)).encode()))
    return headers, b"" if no_body else request.response_body


def local_reply_message(
    status: int, body: bytes, headers: Pairs, grpc_status: int | None, request_headers: Pairs
) -> tuple[Pairs, bytes]:
    """Envoy's ``sendLocalReply`` framing: what the client (and the encoder filters) get."""
    pairs: Pairs = [(b":status", str(status).encode()), *headers]
    is_head = any(k == b":method" and v == b"HEAD" for k, v in request_headers)
    is_grpc = any(k == b"content-type" and v.startswith(b"application/grpc") for k, v in request_headers)
    if is_grpc:
        pairs[0] = (b":status", b"200")
        pairs = [p for p in pairs if p[0] not in (b"content-length", b"content-type")]
        pairs.append((b"content-type", b"application/grpc"))
        if not any(k == b"grpc-status" for k, _ in pairs):
            code = grpc_status if grpc_status is not None else grpc_status_for_http(status)
            pairs.append((b"grpc-status", str(code).encode()))
        if body and not is_head:
            pairs.append((b"grpc-message", _percent_encode(body.rstrip(b"\n"))))
        return pairs, b""
    if body and not is_head:
        pairs = [p for p in pairs if p[0] != b"content-length"]
        pairs.append((b"content-length", str(len(body)).encode()))
        if not any(k == b"content-type" for k, _ in pairs):
            pairs.append((b"content-type", b"text/plain"))
        return pairs, body
    return [p for p in pairs if p[0] not in (b"content-length", b"content-type")], b""


def client_response(headers: Pairs, body: bytes, details: str) -> ClientResponse:
    """The client's view: status from ``:status``, pseudo-headers dropped."""
    status_value = next((v for k, v in headers if k == b":status"), b"")
    status = int(status_value) if status_value.isdigit() else 0
    visible = [(k, v) for k, v in headers if not k.startswith(b":")]
    return ClientResponse(status, strings(visible), body, details)


def grpc_status_for_http(status: int) -> int:
    """Envoy's ``Grpc::Utility::httpToGrpcStatus``."""
    return {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}.get(status, 2)


def _percent_encode(data: bytes) -> bytes:
    return b"".join(bytes([c]) if 0x20 <= c <= 0x7E and c != 0x25 else b"%%%02X" % c for c in data)


def strings(pairs: Pairs) -> list[tuple[str, str]]:
    """Header pairs as text (invalid UTF-8 replaced), for results and transcripts."""
    return [(k.decode("utf-8", "replace"), v.decode("utf-8", "replace")) for k, v in pairs]
