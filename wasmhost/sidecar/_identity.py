"""The identity agent inside the sidecar: istio-agent's certificate work, without its socket.

A bootstrap whose ``node.metadata.IDENTITY_AGENT`` is ``"true"`` (``wasmesh bootstrap
--identity-agent``) asks the sidecar to hold its own workload identity. The agent
(``wasmhost.security.IdentityAgent``) generates the key in this process, sends only a CSR to the
CA and renews at about half the lifetime; every SVID becomes the SDS secrets ``default`` and
``ROOTCA`` that listeners and clusters name through the ``sds-grpc`` cluster, answered here
(``_dynamic.AGENT_SECRETS``) instead of over a Unix socket. Each renewal rebuilds the plan: new
connections get the new certificate, open ones keep theirs.

Where the CA is and how to prove who we are come, as istio-agent takes them, from the ADS
connection unless flags say otherwise: its address (``--ca-address``), the roots its serving
certificate chains to (``--ca-root-cert``) and the bearer token (``--identity-token-file``, read
again for every request so a refreshed token is picked up). The SPIFFE ID is
``spiffe://<TRUST_DOMAIN>/ns/<NAMESPACE>/sa/<SERVICE_ACCOUNT>`` from the node metadata.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from ._dynamic import AGENT_SECRETS
from ._errors import ConfigError
from ._xds_resources import SECRET, XdsResource
from ._xds_settings import AdsSettings

if TYPE_CHECKING:
    from ._xds_client import XdsClient

log = logging.getLogger("wasmesh.identity")

AGENT_METADATA = "IDENTITY_AGENT"
TRUST_DOMAIN_METADATA = "TRUST_DOMAIN"
DEFAULT_TRUST_DOMAIN = "cluster.local"
ROOT_SECRET = "ROOTCA"


@dataclass(frozen=True)
class IdentityOptions:
    """``wasmesh sidecar`` flags that override what the bootstrap says about the CA."""

    ca_address: str = ""
    ca_root_cert: str = ""  # a PEM file
    token_file: str = ""
    secret_ttl: float = 0.0  # seconds to ask for; 0 lets the CA choose

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> IdentityOptions:
        return cls(str(options.get("ca_address") or ""), str(options.get("ca_root_cert") or ""),
                   str(options.get("identity_token_file") or ""), float(options.get("secret_ttl") or 0.0))

    @property
    def given(self) -> bool:
        return bool(self.ca_address or self.ca_root_cert or self.token_file or self.secret_ttl)


@dataclass(frozen=True)
class IdentitySettings:
    """Everything the agent needs: who it is, where the CA is, what to trust, how to authenticate."""

    spiffe_id: str
    namespace: str
    service_account: str
    trust_domain: str
    ca_address: str
    ca_roots: bytes
    server_name: str
    token: Callable[[], str]
    validity: dt.timedelta


def _metadata(bootstrap: Any) -> dict[str, Any]:
    node = bootstrap.node
    return json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}


def wants_identity_agent(bootstrap: Any) -> bool:
    return str(_metadata(bootstrap).get(AGENT_METADATA, "")).lower() == "true"


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(flag, f"cannot read {path}: {err.strerror or err}") from None


def _file_token(path: str) -> Callable[[], str]:
    def token() -> str:
        return _read(path, "--identity-token-file").decode("utf-8", "replace").strip()

    return token


def _bearer(ads: AdsSettings) -> str:
    for key, value in ads.metadata:
        if key == "authorization" and value.startswith("Bearer "):
            return value.removeprefix("Bearer ").strip()
    return ""


def identity_settings(bootstrap: Any, ads: AdsSettings | None,
                      options: IdentityOptions = IdentityOptions()) -> IdentitySettings | None:
    """The agent's settings, or None when the bootstrap does not ask for one; ConfigError names what is missing."""
    from wasmhost.security import DEFAULT_CA_SERVER_NAME, SpiffeId, SpiffeIdError

    if not wants_identity_agent(bootstrap):
        if options.given:
            raise ConfigError(f"node.metadata.{AGENT_METADATA}",
                              "the identity agent flags need a bootstrap written for it (wasmesh bootstrap "
                              "--identity-agent)")
        return None
    where = f"node.metadata.{AGENT_METADATA}"
    if ads is None:
        raise ConfigError(where, "the identity agent serves secrets to configuration from ADS: the bootstrap "
                                 "needs dynamic_resources")
    metadata = _metadata(bootstrap)
    namespace = str(metadata.get("NAMESPACE") or "")
    account = str(metadata.get("SERVICE_ACCOUNT") or "default")
    domain = str(metadata.get(TRUST_DOMAIN_METADATA) or DEFAULT_TRUST_DOMAIN)
    if not namespace:
        raise ConfigError("node.metadata.NAMESPACE", "the identity agent needs the workload's namespace")
    try:
        identity = SpiffeId(domain, namespace, account)
    except (SpiffeIdError, ValueError) as err:
        raise ConfigError("node.metadata", f"TRUST_DOMAIN, NAMESPACE and SERVICE_ACCOUNT make no SPIFFE ID: {err}") from None
    if options.ca_root_cert:
        roots = _read(options.ca_root_cert, "--ca-root-cert")
    elif ads.tls is not None:
        roots = ads.tls.trusted_ca
    else:
        raise ConfigError("dynamic_resources.ads_config", "the CA is reached over TLS: connect ADS with TLS "
                                                          "(wasmesh bootstrap --xds-ca) or give --ca-root-cert")
    if options.token_file:
        _read(options.token_file, "--identity-token-file")
        token = _file_token(options.token_file)
    else:
        bearer = _bearer(ads)
        if not bearer:
            raise ConfigError("dynamic_resources.ads_config.grpc_services[0].initial_metadata",
                              "no 'authorization: Bearer' token to authenticate to the CA with "
                              "(wasmesh bootstrap --token-file, or --identity-token-file)")

        def token() -> str:
            return bearer

    server_name = (ads.tls.server_name if ads.tls is not None else "") or DEFAULT_CA_SERVER_NAME
    return IdentitySettings(identity.uri, namespace, account, domain, options.ca_address or ads.target, roots,
                            server_name, token, dt.timedelta(seconds=max(0.0, options.secret_ttl)))


class SidecarIdentity:
    """Runs the agent and hands every SVID, as the secrets ``default`` and ``ROOTCA``, to ``publish``."""

    #: named xDS resources the agent wants: the trust bundle the control plane distributes
    SUBSCRIPTIONS = {SECRET: frozenset({ROOT_SECRET})}

    def __init__(self, settings: IdentitySettings,
                 publish: Callable[[str, dict[str, XdsResource]], None]) -> None:
        from wasmhost.security import GrpcCertificateClient, IdentityAgent, SpiffeId

        self.settings = settings
        self._publish = publish
        self.client = GrpcCertificateClient(settings.ca_address, ca_roots_pem=settings.ca_roots,
                                            token=settings.token, server_name=settings.server_name)
        self.agent = IdentityAgent(SpiffeId.parse(settings.spiffe_id), self.client, validity=settings.validity,
                                   on_roots_changed=self.client.update_roots)
        self.agent.subscribe(self._renewed)
        self._distributed = b""  # the last ROOTCA bundle the control plane sent
        self._renewal: asyncio.Task[None] | None = None

    def _renewed(self, svid: Any) -> None:
        from wasmhost.security import snapshot_of

        snapshot = snapshot_of(svid)
        now = time.time()
        log.info("workload certificate for %s until %s (serial %x)", self.settings.spiffe_id,
                 svid.not_after.isoformat(), svid.leaf.serial_number)
        self._publish(AGENT_SECRETS, {name: XdsResource(AGENT_SECRETS, name, snapshot.version, secret, now)
                                      for name, secret in snapshot.secrets.items()})

    def on_xds(self, resources: Mapping[str, Mapping[str, XdsResource]]) -> None:
        """Trust the roots of the ``ROOTCA`` the control plane sends (a staged root before it signs).

        When that bundle changes later on (a root staged, activated or retired), also ask for a new
        certificate: after an activation it comes from the new root.
        """
        from wasmhost.security import load_pem_certificates

        resource = resources.get(SECRET, {}).get(ROOT_SECRET)
        if resource is None:
            return
        data = bytes(resource.message.validation_context.trusted_ca.inline_bytes)
        if data == self._distributed:
            return
        first, self._distributed = not self._distributed, data
        try:
            roots = load_pem_certificates(data, what="ROOTCA from the control plane")
        except ValueError as err:
            log.warning("%s", err)
            return
        self.agent.trust_distributed_roots(roots)
        if not first and self.agent.has_certificate:
            log.info("trust bundle from the control plane changed (%d roots): asking for a new certificate",
                     len(roots))
            self._renewal = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        try:
            await self.agent.renew_now()
        except Exception as err:  # noqa: BLE001 - the scheduled renewal retries; this one is a bonus
            log.warning("early renewal after a trust bundle change failed: %s", err)

    def start(self) -> None:
        """Start asking for certificates (call on the sidecar's event loop); listeners warm until one arrives."""
        self._publish(AGENT_SECRETS, {})
        self.agent.launch()

    async def stop(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
        await self.agent.stop()
        await self.client.close()


def start_identity(bootstrap: Any, ads: AdsSettings | None, options: Mapping[str, Any],
                   xds: XdsClient | None) -> SidecarIdentity | None:
    """The running agent when the bootstrap asks for one (None otherwise); raises ConfigError.

    Its secrets go to ``xds`` as local resources, and ``xds`` subscribes to the trust bundle for it
    (the caller passes what ``xds`` publishes to ``on_xds``).
    """
    settings = identity_settings(bootstrap, ads, IdentityOptions.from_options(options))
    if settings is None or xds is None:
        return None
    identity = SidecarIdentity(settings, xds.set_local)
    xds.extra_subscriptions.update(SidecarIdentity.SUBSCRIPTIONS)
    identity.start()
    log.info("identity agent for %s: CA at %s", settings.spiffe_id, settings.ca_address)
    return identity


__all__ = ["AGENT_METADATA", "TRUST_DOMAIN_METADATA", "IdentityOptions", "IdentitySettings", "SidecarIdentity",
           "identity_settings", "start_identity", "wants_identity_agent"]
