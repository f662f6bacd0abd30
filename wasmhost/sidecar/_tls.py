"""TLS transport sockets (``envoy.transport_sockets.tls``) with certificates read from files.

``DownstreamTlsContext`` (on a listener's filter chain) and ``UpstreamTlsContext``
(on a cluster) become ``ssl.SSLContext`` objects at plan-build time; SAN
matching (``match_typed_subject_alt_names``) is checked after the handshake.
``peer_tls_info`` extracts what access logs and plugin properties report about
a connection (version, SANs, subject, certificate digest).
"""

from __future__ import annotations

import hashlib
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2 as _raw_buffer_pb2  # noqa: F401
from google.protobuf import json_format

from ._config_support import check_supported, unpack_any
from ._errors import ConfigError
from ._route_build import compile_string_matcher, read_data_source

DOWNSTREAM = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
_VERSIONS = {1: ssl.TLSVersion.TLSv1, 2: ssl.TLSVersion.TLSv1_1, 3: ssl.TLSVersion.TLSv1_2,
             4: ssl.TLSVersion.TLSv1_3}
_SAN_TYPES = {1: "email", 2: "DNS", 3: "URI", 4: "IP Address"}


@dataclass(frozen=True)
class TlsPlan:
    """A built TLS context plus the checks the ssl module cannot express."""

    context: ssl.SSLContext
    sni: str
    san_matchers: tuple[tuple[str, Callable[[bytes], bool]], ...]
    alpn: tuple[str, ...]

    def peer_allowed(self, ssl_object: Any) -> bool:
        """SAN matching as Envoy does it: any configured matcher accepting any SAN of that type."""
        if not self.san_matchers:
            return True
        der = ssl_object.getpeercert(binary_form=True)
        if der is None:
            return False
        sans = certificate_sans(der)
        for kind, match in self.san_matchers:
            for san_kind, value in sans:
                if san_kind == kind and match(value.encode()):
                    return True
        return False


def certificate_sans(der: bytes) -> list[tuple[str, str]]:
    """(kind, value) SANs of a DER certificate; kinds as the ssl module names them (DNS, URI, email, IP Address)."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return []
    sans: list[tuple[str, str]] = []
    for name in extension:
        if isinstance(name, x509.DNSName):
            sans.append(("DNS", name.value))
        elif isinstance(name, x509.UniformResourceIdentifier):
            sans.append(("URI", name.value))
        elif isinstance(name, x509.RFC822Name):
            sans.append(("email", name.value))
        elif isinstance(name, x509.IPAddress):
            sans.append(("IP Address", str(name.value)))
    return sans


def _load_chain(context: ssl.SSLContext, cert: bytes, key: bytes, path: str) -> None:
    # the ssl module loads key material from files only: hand it an in-memory one, never the disk
    from wasmhost.security import private_pem_file

    with private_pem_file(key.rstrip(b"\n") + b"\n" + cert) as material:
        try:
            context.load_cert_chain(material)
        except (ssl.SSLError, ValueError) as err:
            raise ConfigError(path, f"cannot load certificate and private key: {err}") from None


def _common(common: Any, context: ssl.SSLContext, path: str, server: bool) -> tuple[tuple[tuple[str, Any], ...],
                                                                                        tuple[str, ...]]:
    if len(common.tls_certificates) > 1:
        raise ConfigError(f"{path}.tls_certificates", "only one certificate is supported")
    for index, certificate in enumerate(common.tls_certificates):
        where = f"{path}.tls_certificates[{index}]"
        if not certificate.HasField("certificate_chain") or not certificate.HasField("private_key"):
            raise ConfigError(where, "certificate_chain and private_key are required")
        chain = read_data_source(certificate.certificate_chain, f"{where}.certificate_chain")
        key = read_data_source(certificate.private_key, f"{where}.private_key")
        _load_chain(context, chain, key, where)
    if server and not common.tls_certificates:
        raise ConfigError(f"{path}.tls_certificates", "a server needs a certificate")
    matchers: list[tuple[str, Any]] = []
    if common.HasField("validation_context"):
        validation = common.validation_context
        vpath = f"{path}.validation_context"
        if validation.HasField("trusted_ca"):
            ca = read_data_source(validation.trusted_ca, f"{vpath}.trusted_ca")
            try:
                context.load_verify_locations(cadata=ca.decode("ascii", "replace"))
            except (ssl.SSLError, ValueError) as err:
                raise ConfigError(f"{vpath}.trusted_ca", f"cannot load CA certificates: {err}") from None
            context.verify_mode = ssl.CERT_REQUIRED
        for index, san in enumerate(validation.match_typed_subject_alt_names):
            kind = _SAN_TYPES.get(int(san.san_type))
            if kind is None:
                raise ConfigError(f"{vpath}.match_typed_subject_alt_names[{index}].san_type", "unsupported SAN type")
            matchers.append((kind, compile_string_matcher(san.matcher,
                                                          f"{vpath}.match_typed_subject_alt_names[{index}].matcher")))
    if common.HasField("tls_params"):
        params = common.tls_params
        if params.tls_minimum_protocol_version:
            context.minimum_version = _VERSIONS[int(params.tls_minimum_protocol_version)]
        if params.tls_maximum_protocol_version:
            context.maximum_version = _VERSIONS[int(params.tls_maximum_protocol_version)]
    alpn = tuple(common.alpn_protocols)
    return tuple(matchers), alpn


def build_tls(transport_socket: Any, path: str, server: bool, http2: bool = False) -> TlsPlan:
    """Build the TLS context of a ``transport_socket`` (listener side when ``server``)."""
    if not transport_socket.HasField("typed_config"):
        raise ConfigError(f"{path}.typed_config", "a TLS context typed_config is required")
    message = unpack_any(transport_socket.typed_config, f"{path}.typed_config")
    expected = DOWNSTREAM if server else UPSTREAM
    name = message.DESCRIPTOR.full_name
    if name != expected:
        raise ConfigError(f"{path}.typed_config", f"expected {expected}, got {name}")
    check_supported(message, f"{path}.typed_config")
    where = f"{path}.typed_config.common_tls_context"
    if server:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.verify_mode = ssl.CERT_NONE
        matchers, alpn = _common(message.common_tls_context, context, where, server=True)
        if message.require_client_certificate.value:
            if context.verify_mode != ssl.CERT_REQUIRED:
                raise ConfigError(f"{path}.typed_config.require_client_certificate",
                                  "needs a validation_context with trusted_ca")
        elif context.verify_mode == ssl.CERT_REQUIRED:
            context.verify_mode = ssl.CERT_OPTIONAL  # Envoy validates a client certificate only if one is sent
        sni = ""
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # Envoy checks SANs only when told to (match_typed_subject_alt_names)
        context.verify_mode = ssl.CERT_NONE
        matchers, alpn = _common(message.common_tls_context, context, where, server=False)
        sni = message.sni
        if not alpn and http2:
            alpn = ("h2",)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return TlsPlan(context, sni, matchers, alpn)


class TlsPeerRejected(OSError):
    """The upstream's certificate does not match the configured subject alternative names."""


def check_peer(protocol: Any, tls: TlsPlan | None) -> None:
    """After connecting: enforce SAN matching; raise ``TlsPeerRejected`` (closing the connection) on mismatch."""
    if tls is None or not tls.san_matchers:
        return
    transport = protocol.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None or not tls.peer_allowed(ssl_object):
        if transport is not None:
            transport.abort()
        raise TlsPeerRejected("TLS_error: peer certificate SAN does not match")


def peer_tls_info(ssl_object: Any) -> dict[str, Any]:
    """What is known about a TLS connection, in the terms of Envoy's ``connection.*`` properties."""
    info: dict[str, Any] = {"version": ssl_object.version() or "", "sni": ssl_object.server_hostname or ""}
    der = ssl_object.getpeercert(binary_form=True)
    info["peer_certificate_presented"] = der is not None
    if der is not None:
        from cryptography import x509

        info["sha256_peer_certificate_digest"] = hashlib.sha256(der).hexdigest()
        pem = ssl.DER_cert_to_PEM_cert(der)
        info["peer_certificate"] = urllib.parse.quote(pem, safe="")
        try:
            info["subject_peer_certificate"] = x509.load_der_x509_certificate(der).subject.rfc4514_string()
        except ValueError:
            info["subject_peer_certificate"] = ""
        sans = certificate_sans(der)
        info["uri_san_peer_certificate"] = [v for k, v in sans if k == "URI"]
        info["dns_san_peer_certificate"] = [v for k, v in sans if k == "DNS"]
    return info


RAW_BUFFER = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
SOCKET_MATCH_KEY = "envoy.transport_socket_match"


def build_socket_matches(matches: Any, path: str, http2: bool) -> tuple[tuple[dict[str, Any], TlsPlan | None], ...]:
    """``transport_socket_matches``: (labels an endpoint must carry, its TLS plan or None for raw_buffer)."""
    out: list[tuple[dict[str, Any], TlsPlan | None]] = []
    for index, match in enumerate(matches):
        at = f"{path}[{index}].transport_socket"
        socket = match.transport_socket
        if not match.HasField("transport_socket") or socket.typed_config.type_url.rsplit("/", 1)[-1] == RAW_BUFFER:
            out.append((json_format.MessageToDict(match.match), None))
        else:
            out.append((json_format.MessageToDict(match.match), build_tls(socket, at, server=False, http2=http2)))
    return tuple(out)


def tls_for_host(cluster: Any, metadata: Any) -> TlsPlan | None:
    """The TLS plan for one endpoint: the first socket match whose labels it carries, else the cluster's."""
    matches = cluster.tls_matches
    if not matches:
        return cluster.tls
    labels: dict[str, Any] = {}
    if metadata is not None and SOCKET_MATCH_KEY in metadata.filter_metadata:
        labels = json_format.MessageToDict(metadata.filter_metadata[SOCKET_MATCH_KEY])
    for wanted, plan in matches:
        if all(labels.get(key) == value for key, value in wanted.items()):
            return plan
    return cluster.tls
