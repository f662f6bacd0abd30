"""What Envoy's HTTP connection manager does to headers at the edges of the filter chain.

``prepare_request`` runs before the decoder filters (hop-by-hop removal,
``x-forwarded-*``, ``x-request-id``, internal-only ``x-envoy-*`` stripping, path
normalisation); ``finalize_response`` runs after the encoder filters (``date``,
``server``, hop-by-hop removal, ``via``).
"""

from __future__ import annotations

import random

from ._headers import HeaderMap
from ._plan import HcmPlan
from ._routes import strip_port

# Removed from requests that are not from an internal address (every request, since internal
# address ranges are not configurable here and Envoy's default list is empty).
EXTERNAL_STRIP = frozenset(
    {
        b"x-envoy-retriable-status-codes",
        b"x-envoy-retriable-header-names",
        b"x-envoy-retry-on",
        b"x-envoy-retry-grpc-on",
        b"x-envoy-max-retries",
        b"x-envoy-upstream-alt-stat-name",
        b"x-envoy-upstream-rq-timeout-ms",
        b"x-envoy-upstream-rq-per-try-timeout-ms",
        b"x-envoy-upstream-rq-timeout-alt-response",
        b"x-envoy-expected-rq-timeout-ms",
        b"x-envoy-force-trace",
        b"x-envoy-ip-tags",
        b"x-envoy-original-url",
        b"x-envoy-hedge-on-per-try-timeout",
        b"x-envoy-internal",
    }
)
EDGE_STRIP = frozenset(
    {b"x-envoy-decorator-operation", b"x-envoy-downstream-service-cluster", b"x-envoy-downstream-service-node"}
)
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})


_VARIANT = b"89ab89ab89ab89ab"


def new_request_id(rng: random.Random) -> bytes:
    """A random (version 4) UUID as lower-case text."""
    text = b"%032x" % rng.getrandbits(128)
    return b"%s-%s-4%s-%c%s-%s" % (text[:8], text[8:12], text[13:16], _VARIANT[text[16] & 15], text[17:20], text[20:])


def _connection_tokens(headers: HeaderMap) -> set[bytes]:
    tokens: set[bytes] = set()
    for value in headers.get_all(b"connection"):
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                tokens.add(token)
    return tokens


def normalize_path(path: bytes, merge_slashes: bool, remove_dots: bool) -> bytes:
    """RFC 3986 dot-segment removal and/or slash merging on the path part (the query is kept)."""
    path_only, sep, query = path.partition(b"?")
    if merge_slashes:
        while b"//" in path_only:
            path_only = path_only.replace(b"//", b"/")
    if remove_dots and (b"/." in path_only):
        output: list[bytes] = []
        segments = path_only.split(b"/")
        for index, segment in enumerate(segments):
            last = index == len(segments) - 1
            if segment == b".":
                if last:
                    output.append(b"")
                continue
            if segment == b"..":
                if len(output) > 1:
                    output.pop()
                if last:
                    output.append(b"")
                continue
            output.append(segment)
        path_only = b"/".join(output) or b"/"
        if not path_only.startswith(b"/"):
            path_only = b"/" + path_only
    return path_only + sep + query


_REQUEST_SPECIAL = HOP_BY_HOP | EXTERNAL_STRIP | EDGE_STRIP | {b"te", b"x-forwarded-proto", b"x-request-id",
                                                                 b"x-forwarded-for", b":scheme"}


def host_address() -> str:
    """The first non-loopback IPv4 address of this host (what Envoy appends to XFF for loopback peers)."""
    import fcntl
    import socket
    import struct

    for _, name in socket.if_nameindex():
        if name == "lo":
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                packed = fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
            except OSError:
                continue
        address = socket.inet_ntoa(packed[20:24])
        if not address.startswith("127."):
            return address
    return "127.0.0.1"


def _is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1" or ip.startswith("::ffff:127.")


def prepare_request(
    headers: HeaderMap,
    hcm: HcmPlan,
    remote_ip: str,
    local_port: int,
    rng: random.Random,
    local_ip: str = "127.0.0.1",
) -> tuple[bytes | None, bool]:
    """Mutate downstream request headers the way Envoy's connection manager does before filters run.

    Returns the request's ``x-request-id`` (None without one) and whether the client sent
    ``x-forwarded-for`` (so the caller only looks for it when it can be there).
    """
    items = headers.items()
    has_forwarded_proto = False
    request_id: bytes | None = None
    has_forwarded_for = False
    needs_filter = False
    te_ok = True
    scheme: bytes | None = None
    for name, value in items:
        if name in _REQUEST_SPECIAL:
            if name == b":scheme":
                if scheme is None:
                    scheme = value
            elif name == b"x-forwarded-proto":
                has_forwarded_proto = True
            elif name == b"x-request-id":
                if request_id is None:
                    request_id = value
            elif name == b"x-forwarded-for":
                has_forwarded_for = True
            elif name == b"te":
                if value.strip().lower() != b"trailers":
                    te_ok = False
                    needs_filter = True
            elif name in EDGE_STRIP:
                needs_filter = needs_filter or hcm.use_remote_address
            else:
                needs_filter = True
    if needs_filter:
        drop = set(HOP_BY_HOP) | EXTERNAL_STRIP
        tokens = _connection_tokens(headers)
        if tokens:
            drop |= {t for t in tokens if not t.startswith(b":") and t != b"te"}
        if not te_ok:
            drop.add(b"te")
        if hcm.use_remote_address:
            drop |= EDGE_STRIP
        headers.replace_all([(k, v) for k, v in items if k not in drop])
        items = headers.items()
        if request_id is not None and b"x-request-id" in drop:
            request_id = None
    scheme = scheme or b"http"
    if hcm.use_remote_address:
        if not hcm.skip_xff_append:
            existing = headers.get(b"x-forwarded-for")
            # Envoy appends the host's own address for a loopback peer
            ip = (local_ip if _is_loopback(remote_ip) else remote_ip).encode()
            headers.set(b"x-forwarded-for", existing + b"," + ip if existing else ip)
        if hcm.xff_num_trusted_hops == 0 or not has_forwarded_proto:
            headers.set(b"x-forwarded-proto", scheme)  # trusted hops may set it; an edge proxy does
        headers.set(b"x-envoy-external-address", remote_ip.encode())
    elif not has_forwarded_proto:
        items.append((b"x-forwarded-proto", scheme))
    if hcm.generate_request_id:
        if request_id is None:
            request_id = new_request_id(rng)
            headers.items().append((b"x-request-id", request_id))
        elif hcm.use_remote_address and not hcm.preserve_external_request_id:
            request_id = new_request_id(rng)
            headers.set(b"x-request-id", request_id)
    if hcm.via:
        existing = headers.get(b"via")
        headers.set(b"via", existing + b", " + hcm.via if existing else hcm.via)
    if hcm.strip_port:
        authority = headers.get(b":authority")
        if authority is not None:
            stripped = strip_port(authority)
            if stripped != authority and (
                hcm.strip_port == "any" or authority[len(stripped) + 1 :] == str(local_port).encode()
            ):
                headers.set(b":authority", stripped)
    if hcm.normalize_path or hcm.merge_slashes:
        path = headers.get(b":path")
        if path is not None and path.startswith(b"/"):
            new = normalize_path(path, hcm.merge_slashes, hcm.normalize_path)
            if new != path:
                headers.set(b":path", new)
    return request_id, has_forwarded_for


def original_client(headers: HeaderMap, hcm: HcmPlan, xff_before_append: bytes | None) -> str | None:
    """The client address Envoy derives from ``x-forwarded-for`` (None: the socket peer)."""
    hops = hcm.xff_num_trusted_hops
    if hcm.use_remote_address:
        if hops <= 0 or not xff_before_append:
            return None
        entries = [e.strip() for e in xff_before_append.split(b",")]
        index = len(entries) - hops
    else:
        value = headers.get(b"x-forwarded-for")
        if not value:
            return None
        entries = [e.strip() for e in value.split(b",")]
        index = len(entries) - 1 - hops
    if index < 0 or index >= len(entries) or not entries[index]:
        return None
    return entries[index].decode("latin-1")


_RESPONSE_SPECIAL = HOP_BY_HOP | {b"date", b"server"}


def finalize_response(headers: HeaderMap, hcm: HcmPlan, date: bytes, request_id: bytes | None) -> None:
    """Mutate response headers on their way to the client, after the encoder filters."""
    overwrite_server = hcm.server_header == "OVERWRITE"
    server = hcm.server_name
    kept: list[tuple[bytes, bytes]] = []
    have_date = False
    have_server = False
    for pair in headers.items():
        name = pair[0]
        if name not in _RESPONSE_SPECIAL:
            kept.append(pair)
            continue
        if name in HOP_BY_HOP:
            continue
        if name == b"date":
            if have_date:
                continue
            have_date = True
            pair = (name, date)
        elif name == b"server":
            if overwrite_server:
                if have_server:
                    continue
                pair = (name, server)
            have_server = True
        kept.append(pair)
    if not have_date:
        kept.append((b"date", date))
    if not have_server and hcm.server_header != "PASS_THROUGH":
        kept.append((b"server", server))
    headers.replace_all(kept)
    if hcm.via:
        existing = headers.get(b"via")
        headers.set(b"via", existing + b", " + hcm.via if existing else hcm.via)
    if hcm.always_set_request_id_in_response and request_id is not None:
        headers.set_default(b"x-request-id", request_id)
