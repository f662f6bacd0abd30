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


def new_request_id(rng: random.Random) -> bytes:
    """A random (version 4) UUID as lower-case text."""
    text = f"{rng.getrandbits(128):032x}"
    variant = "89ab"[int(text[16], 16) & 3]
    return f"{text[:8]}-{text[8:12]}-4{text[13:16]}-{variant}{text[17:20]}-{text[20:]}".encode()


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


def prepare_request(
    headers: HeaderMap,
    hcm: HcmPlan,
    remote_ip: str,
    local_port: int,
    rng: random.Random,
) -> None:
    """Mutate downstream request headers the way Envoy's connection manager does before filters run."""
    items = headers.items()
    tokens: set[bytes] | None = None
    te_ok = True
    needs_filter = False
    for name, value in items:
        if name in HOP_BY_HOP or name in EXTERNAL_STRIP:
            needs_filter = True
            if name == b"connection":
                tokens = _connection_tokens(headers)
        elif name == b"te":
            if value.strip().lower() != b"trailers":
                te_ok = False
                needs_filter = True
        elif hcm.use_remote_address and name in EDGE_STRIP:
            needs_filter = True
    if needs_filter:
        drop = set(HOP_BY_HOP) | EXTERNAL_STRIP
        if tokens:
            drop |= {t for t in tokens if not t.startswith(b":") and t != b"te"}
        if not te_ok:
            drop.add(b"te")
        if hcm.use_remote_address:
            drop |= EDGE_STRIP
        headers.replace_all([(k, v) for k, v in items if k not in drop])
    if hcm.use_remote_address:
        if not hcm.skip_xff_append:
            existing = headers.get(b"x-forwarded-for")
            ip = remote_ip.encode()
            headers.set(b"x-forwarded-for", existing + b"," + ip if existing else ip)
        headers.set(b"x-forwarded-proto", headers.get(b":scheme") or b"http")
        headers.set(b"x-envoy-external-address", remote_ip.encode())
    elif b"x-forwarded-proto" not in headers:
        headers.add(b"x-forwarded-proto", headers.get(b":scheme") or b"http")
    if hcm.generate_request_id:
        force = hcm.use_remote_address and not hcm.preserve_external_request_id
        if force or b"x-request-id" not in headers:
            headers.set(b"x-request-id", new_request_id(rng))
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


def finalize_response(headers: HeaderMap, hcm: HcmPlan, date: bytes, request_id: bytes | None) -> None:
    """Mutate response headers on their way to the client, after the encoder filters."""
    items = headers.items()
    for name, _ in items:
        if name in HOP_BY_HOP:
            headers.replace_all([(k, v) for k, v in items if k not in HOP_BY_HOP])
            break
    headers.set(b"date", date)
    mode = hcm.server_header
    if mode == "OVERWRITE":
        headers.set(b"server", hcm.server_name)
    elif mode == "APPEND_IF_ABSENT":
        headers.set_default(b"server", hcm.server_name)
    if hcm.via:
        existing = headers.get(b"via")
        headers.set(b"via", existing + b", " + hcm.via if existing else hcm.via)
    if hcm.always_set_request_id_in_response and request_id is not None:
        headers.set_default(b"x-request-id", request_id)
