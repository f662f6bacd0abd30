"""SDS for Envoy sidecars: the control plane mints each proxy's workload certificate itself.

Istio keeps a workload's private key on its node: istio-agent generates it, sends only a CSR
to istiod and serves the result to its Envoy over a local SDS socket. A stock Envoy cannot run
that agent, so for Envoy sidecars this control plane plays both parts: it generates an EC
P-256 key per connected proxy, has its CA sign the proxy's SPIFFE ID (taken from the
authenticated bootstrap token, never from node metadata alone) and serves the Envoy SDS
secrets `default` (chain + key) and `ROOTCA` (trust bundle) over the proxy's ADS stream. The
key therefore crosses the (TLS-protected) xDS connection and sits in the control plane's
memory: a trade-off for proxies that cannot hold an agent. wasmesh's own sidecar keeps its key
(`wasmhost.security.IdentityAgent`, node metadata `IDENTITY_AGENT`): it is sent only `ROOTCA`
(`trust_bundle_types`), the public trust bundle, so a staged root reaches it at once.

`WorkloadCertificates` holds no timers: `due(now)` says which proxies passed half their
certificate's lifetime, and the server re-issues and pushes those.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from controlplane._generate import TypeSnapshot
from controlplane._protos import SECRET, digest
from controlplane.ca import CertificateAuthority
from wasmhost.security import (
    DEFAULT_SECRET,
    ROOT_SECRET,
    SpiffeId,
    WorkloadSvid,
    build_csr,
    certificate_secret,
    generate_key,
    load_pem_certificates,
    trust_bundle_secret,
)

RENEW_FRACTION = 0.5  # renew once half the lifetime has passed, as istio-agent does

@dataclass(frozen=True)
class IssuedSecrets:
    """One proxy's current SVID and when to renew it."""

    identity: SpiffeId
    svid: WorkloadSvid
    issued_at: float
    renew_at: float
    generation: int
    bundle_pem: str  # the CA's trust bundle when this was issued

    def secrets(self) -> dict[str, secret_pb2.Secret]:
        return {DEFAULT_SECRET: certificate_secret(self.svid), ROOT_SECRET: trust_bundle_secret(self.svid)}

    def type_snapshot(self) -> TypeSnapshot:
        secrets = self.secrets()
        return TypeSnapshot(digest([secrets[name] for name in sorted(secrets)]), secrets)

    def status(self) -> dict[str, Any]:
        """What `wasmesh proxy-config secret` shows: everything but the key."""
        leaf = self.svid.leaf
        return {
            "identity": self.identity.uri,
            "generation": self.generation,
            "renew_at": _iso(self.renew_at),
            "secrets": [
                {"name": DEFAULT_SECRET, "type": "Cert Chain", "serial": format(leaf.serial_number, "x"),
                 "not_before": leaf.not_valid_before_utc.isoformat(), "not_after": leaf.not_valid_after_utc.isoformat(),
                 "uri_sans": [self.identity.uri], "chain": [describe_certificate(c) for c in self.svid.chain]},
                {"name": ROOT_SECRET, "type": "CA", "trust_bundle": [describe_certificate(c) for c in self.svid.trust_bundle]},
            ],
        }


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat()


def describe_certificate(cert: x509.Certificate) -> dict[str, str]:
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "serial": format(cert.serial_number, "x"), "not_after": cert.not_valid_after_utc.isoformat()}


class WorkloadCertificates:
    """Keys and certificates minted for connected proxies, by connection id."""

    def __init__(self, ca: CertificateAuthority, *, lifetime: dt.timedelta | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.ca = ca
        self.lifetime = lifetime or ca.default_ttl
        self._clock = clock
        self._issued: dict[int, IssuedSecrets] = {}
        self.minted = 0

    def issue(self, connection_id: int, identity: SpiffeId) -> IssuedSecrets:
        """A fresh key and certificate for `identity` (a first issue or a renewal)."""
        key = generate_key()
        signed = self.ca.sign(build_csr(key, identity), identity, validity_seconds=int(self.lifetime.total_seconds()))
        roots = [c for pem in signed.trust_bundle for c in load_pem_certificates(pem, what="trust bundle")]
        svid = WorkloadSvid.from_response(key, signed.cert_chain, roots)
        now = self._clock()
        lifetime = svid.not_after.timestamp() - now
        previous = self._issued.get(connection_id)
        issued = IssuedSecrets(identity, svid, now, now + max(1.0, lifetime * RENEW_FRACTION),
                               previous.generation + 1 if previous else 1, "".join(signed.trust_bundle))
        self._issued[connection_id] = issued
        self.minted += 1
        return issued

    def get(self, connection_id: int) -> IssuedSecrets | None:
        return self._issued.get(connection_id)

    def forget(self, connection_id: int) -> None:
        self._issued.pop(connection_id, None)

    def due(self, now: float | None = None) -> list[int]:
        """Connections whose certificate has passed its renewal time, or whose trust bundle is stale."""
        moment = self._clock() if now is None else now
        bundle = self.ca.trust_bundle_pem()
        return sorted(cid for cid, issued in self._issued.items()
                      if moment >= issued.renew_at or issued.bundle_pem != bundle)

    def next_due(self) -> float | None:
        """When the earliest renewal falls due (None with nothing issued)."""
        return min((i.renew_at for i in self._issued.values()), default=None)

    def snapshots(self) -> Mapping[int, IssuedSecrets]:
        return dict(self._issued)


def private_types(issued: IssuedSecrets | None) -> dict[str, TypeSnapshot]:
    """The per-proxy types to add to its snapshot: SDS secrets when it has an identity."""
    return {SECRET: issued.type_snapshot()} if issued is not None else {}


def trust_bundle_types(bundle_pem: str) -> dict[str, TypeSnapshot]:
    """For a proxy whose identity agent keeps its key: only `ROOTCA`, the CA's trust bundle.

    Its agent answers `default` and `ROOTCA` itself; it subscribes to this one to trust a staged
    root before any certificate is signed by it (what Istio distributes to istio-agent too).
    """
    secret = secret_pb2.Secret(name=ROOT_SECRET, validation_context=common_pb2.CertificateValidationContext(
        trusted_ca=base_pb2.DataSource(inline_bytes=bundle_pem.encode())))
    return {SECRET: TypeSnapshot(digest([secret]), {ROOT_SECRET: secret})}


__all__ = ["IssuedSecrets", "WorkloadCertificates", "describe_certificate", "private_types", "trust_bundle_types"]
