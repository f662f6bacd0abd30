"""What `wasmesh proxy-config secret` and `wasmesh authz check` show, as JSON-ready dicts.

`secret_view`: the certificate and trust bundle the control plane minted for a connected
proxy and sent over SDS (identity, serials, validity, next renewal), never the private key; a
proxy running its own identity agent was minted nothing, and the view says where to look;
`config_dump_secrets` reads the same from a proxy's admin `/config_dump` (`--admin`).
`authz_view`: which security policies apply to a proxy's workload (via
`AuthorizationPolicy.applies_to`), with each policy's action and rule count, the
RequestAuthentications and their issuers, and the mTLS mode of each inbound port.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from cryptography import x509

from controlplane._jwt_authn import selected_request_authentications
from controlplane._mesh import Mesh
from controlplane._mtls import has_identity, inbound_mode, runs_identity_agent
from controlplane._protos import SECRET
from controlplane._proxies import Proxy
from controlplane._sds import describe_certificate
from wasmhost.security import uri_sans
from wasmhost.security.authz import PolicyError, parse_policy

if TYPE_CHECKING:
    from controlplane._ads import Connection
    from controlplane._server import ControlPlane


def secret_view(plane: ControlPlane, connection: Connection) -> dict[str, Any]:
    out: dict[str, Any] = {"proxy": connection.proxy.id, "sent": list(connection.session.sent_names(SECRET))}
    if plane.security is None:
        return {**out, "secrets": [], "reason": "the control plane runs without a CA (start it with --ca-dir)"}
    issued = plane.security.certificates.get(connection.id)
    if issued is None and runs_identity_agent(connection.proxy):
        return {**out, "secrets": [], "reason": "the proxy's identity agent keeps its key and asks the CA itself: "
                                               "its certificates are in the proxy's admin /config_dump "
                                               "(wasmesh proxy-config secret --admin HOST:PORT)"}
    if issued is None:
        return {**out, "secrets": [], "reason": "the proxy presented no bootstrap token on the secure port"}
    return {**out, **issued.status()}


def config_dump_secrets(dump: dict[str, Any], source: str) -> dict[str, Any]:
    """`secret_view`'s shape from a proxy's own admin `/config_dump` (wasmesh sidecar or Envoy):
    the SDS secrets it holds, whoever served them. Private keys are redacted there already."""
    out: dict[str, Any] = {"proxy": source, "sent": [], "secrets": []}
    for config in dump.get("configs") or []:
        if not str(config.get("@type", "")).endswith("SecretsConfigDump"):
            continue
        for entry in config.get("dynamic_active_secrets") or []:
            secret = entry.get("secret") or {}
            certificate = (secret.get("tls_certificate") or {}).get("certificate_chain") or {}
            trusted = (secret.get("validation_context") or {}).get("trusted_ca") or {}
            if certificate:
                certs = _certificates(certificate)
                if not certs:
                    continue
                leaf = certs[0]
                out["identity"] = next(iter(uri_sans(leaf)), "")
                out["secrets"].append({"name": entry.get("name", ""), "type": "Cert Chain",
                                       "serial": format(leaf.serial_number, "x"),
                                       "not_before": leaf.not_valid_before_utc.isoformat(),
                                       "not_after": leaf.not_valid_after_utc.isoformat(), "uri_sans": uri_sans(leaf),
                                       "chain": [describe_certificate(c) for c in certs]})
            elif trusted:
                out["secrets"].append({"name": entry.get("name", ""), "type": "CA",
                                       "trust_bundle": [describe_certificate(c) for c in _certificates(trusted)]})
    if not out["secrets"]:
        out["reason"] = f"{source} holds no SDS secrets"
    return out


def _pem_of(source: dict[str, Any]) -> bytes:
    if "inline_bytes" in source:
        return base64.b64decode(source["inline_bytes"])
    return str(source.get("inline_string", "")).encode()


def _certificates(source: dict[str, Any]) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(_pem_of(source))
    except ValueError:
        return []


def authz_view(mesh: Mesh, proxy: Proxy) -> dict[str, Any]:
    policies: list[dict[str, Any]] = []
    for resource in mesh.of_kind("AuthorizationPolicy"):
        try:
            policy = parse_policy(resource.to_manifest())
        except PolicyError as err:
            policies.append({"name": resource.name, "namespace": resource.namespace, "error": str(err)})
            continue
        if not policy.applies_to(proxy.namespace, proxy.labels, mesh.root_namespace):
            continue
        policies.append({"name": policy.name, "namespace": policy.namespace, "action": policy.action.value,
                         "provider": policy.provider, "rules": len(policy.rules), "dry_run": policy.dry_run,
                         "selector": dict(policy.selector or {})})
    authentications = [{"name": r.name, "namespace": r.namespace,
                        "issuers": [str(rule.get("issuer", "")) for rule in r.spec.get("jwtRules") or []]}
                       for r in selected_request_authentications(mesh, proxy)]
    ports = sorted(proxy.inbound_ports) or [p.number for p in proxy.app_ports]
    mtls = {str(port): inbound_mode(mesh, proxy.namespace, proxy.labels, port) if has_identity(proxy) else "PLAINTEXT"
            for port in ports}
    return {"proxy": proxy.id, "namespace": proxy.namespace, "labels": dict(proxy.labels),
            "authorization_policies": policies, "request_authentications": authentications, "mtls": mtls}


__all__ = ["authz_view", "config_dump_secrets", "secret_view"]
