"""Istio's resource types, described compactly, turned into OpenAPI v3 structural schemas.

This is the one source of the schemas: `crds/*.yaml` is generated from it (`python -m
controlplane._crdgen`) and validation uses the same objects. Field names are Istio's
(camelCase, as in its YAML), so Istio manifests apply unchanged. `strict()` gives the
validation variant that also rejects unknown fields, which a structural CRD schema cannot
express (Kubernetes prunes them silently; `wasmesh analyze` reports them instead).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

Schema = dict[str, Any]

# ---- the vocabulary -----------------------------------------------------------------------------
STRING: Schema = {"type": "string"}
INT: Schema = {"type": "integer", "format": "int32"}
UINT: Schema = {"type": "integer", "minimum": 0}
BOOL: Schema = {"type": "boolean"}
NUMBER: Schema = {"type": "number", "format": "double"}
DURATION: Schema = {
    "type": "string",
    "pattern": r"^([0-9]+(\.[0-9]+)?(h|m|s|ms|us|µs|ns))+$",
    "description": "A duration such as 5s, 0.25s or 100ms.",
}
PORT_NUMBER: Schema = {"type": "integer", "minimum": 0, "maximum": 65535}
ANY_OBJECT: Schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def obj(**fields: Schema) -> Schema:
    """An object with these properties (a trailing underscore in a name is dropped)."""
    return {"type": "object", "properties": {name.rstrip("_"): schema for name, schema in fields.items()}}


def arr(items: Schema, max_items: int | None = None) -> Schema:
    out: Schema = {"type": "array", "items": items}
    if max_items is not None:
        out["maxItems"] = max_items
    return out


def map_of(values: Schema) -> Schema:
    return {"type": "object", "additionalProperties": values}


def enum(*names: str) -> Schema:
    return {"type": "string", "enum": list(names)}


def described(schema: Schema, text: str) -> Schema:
    return {**schema, "description": text}


STRINGS = arr(STRING)
LABELS = map_of(STRING)
STRING_MATCH = obj(exact=STRING, prefix=STRING, regex=STRING)
PERCENT = obj(value=NUMBER)
PORT_SELECTOR = obj(number=PORT_NUMBER)
DESTINATION = obj(host=STRING, subset=STRING, port=PORT_SELECTOR)
HEADER_OPS = obj(set=LABELS, add=LABELS, remove=STRINGS)
WORKLOAD_SELECTOR = obj(labels=LABELS)
POLICY_TARGET = obj(group=STRING, kind=STRING, name=STRING, namespace=STRING)
SERVICE_PORT = obj(number=PORT_NUMBER, protocol=STRING, name=STRING, targetPort=PORT_NUMBER)

# ---- networking.istio.io: VirtualService ------------------------------------------------------
HTTP_MATCH = obj(
    name=STRING, uri=STRING_MATCH, scheme=STRING_MATCH, method=STRING_MATCH, authority=STRING_MATCH,
    headers=map_of(STRING_MATCH), port=PORT_NUMBER, sourceLabels=LABELS, gateways=STRINGS,
    queryParams=map_of(STRING_MATCH), ignoreUriCase=BOOL, withoutHeaders=map_of(STRING_MATCH),
    sourceNamespace=STRING, statPrefix=STRING,
)
HTTP_ROUTE_DESTINATION = obj(destination=DESTINATION, weight=INT, headers=obj(request=HEADER_OPS, response=HEADER_OPS))
HTTP_ROUTE = obj(
    name=STRING,
    match=arr(HTTP_MATCH),
    route=arr(HTTP_ROUTE_DESTINATION),
    redirect=obj(uri=STRING, authority=STRING, port=PORT_NUMBER,
                 derivePort=enum("FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"), scheme=STRING, redirectCode=UINT),
    directResponse=obj(status=UINT, body=obj(string=STRING, bytes=STRING)),
    delegate=obj(name=STRING, namespace=STRING),
    rewrite=obj(uri=STRING, authority=STRING, uriRegexRewrite=obj(match=STRING, rewrite=STRING)),
    timeout=DURATION,
    retries=obj(attempts=INT, perTryTimeout=DURATION, retryOn=STRING, retryRemoteLocalities=BOOL),
    fault=obj(
        delay=obj(fixedDelay=DURATION, exponentialDelay=DURATION, percentage=PERCENT, percent=INT),
        abort=obj(httpStatus=INT, grpcStatus=STRING, http2Error=STRING, percentage=PERCENT),
    ),
    mirror=DESTINATION,
    mirrors=arr(obj(destination=DESTINATION, percentage=PERCENT)),
    mirrorPercentage=PERCENT,
    mirrorPercent=UINT,
    corsPolicy=obj(allowOrigins=arr(STRING_MATCH), allowOrigin=STRINGS, allowMethods=STRINGS, allowHeaders=STRINGS,
                   exposeHeaders=STRINGS, maxAge=DURATION, allowCredentials=BOOL,
                   unmatchedPreflights=enum("UNSPECIFIED", "FORWARD", "IGNORE")),
    headers=obj(request=HEADER_OPS, response=HEADER_OPS),
)
ROUTE_DESTINATION = obj(destination=DESTINATION, weight=INT)
L4_MATCH_COMMON = {"port": PORT_NUMBER, "sourceLabels": LABELS, "gateways": STRINGS, "sourceNamespace": STRING,
                   "destinationSubnets": STRINGS}
VIRTUAL_SERVICE = obj(
    hosts=STRINGS, gateways=STRINGS, http=arr(HTTP_ROUTE), exportTo=STRINGS,
    tls=arr(obj(match=arr(obj(sniHosts=STRINGS, **L4_MATCH_COMMON)), route=arr(ROUTE_DESTINATION))),
    tcp=arr(obj(match=arr(obj(sourceSubnet=STRING, **L4_MATCH_COMMON)), route=arr(ROUTE_DESTINATION))),
)

# ---- DestinationRule ----------------------------------------------------------------------------
LOAD_BALANCER = obj(
    simple=enum("UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"),
    consistentHash=obj(httpHeaderName=STRING, httpCookie=obj(name=STRING, path=STRING, ttl=DURATION),
                       useSourceIp=BOOL, httpQueryParameterName=STRING, ringHash=obj(minimumRingSize=UINT),
                       maglev=obj(tableSize=UINT), minimumRingSize=UINT),
    localityLbSetting=ANY_OBJECT,
    warmupDurationSecs=DURATION,
)
CONNECTION_POOL = obj(
    tcp=obj(maxConnections=INT, connectTimeout=DURATION, tcpKeepalive=obj(probes=UINT, time=DURATION, interval=DURATION),
            maxConnectionDuration=DURATION, idleTimeout=DURATION),
    http=obj(http1MaxPendingRequests=INT, http2MaxRequests=INT, maxRequestsPerConnection=INT, maxRetries=INT,
             idleTimeout=DURATION, h2UpgradePolicy=enum("DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"),
             useClientProtocol=BOOL, maxConcurrentStreams=INT),
)
OUTLIER_DETECTION = obj(
    splitExternalLocalOriginErrors=BOOL, consecutiveLocalOriginFailures=INT, consecutiveGatewayErrors=INT,
    consecutive5xxErrors=INT, consecutiveErrors=INT, interval=DURATION, baseEjectionTime=DURATION,
    maxEjectionPercent=INT, minHealthPercent=INT,
)
CLIENT_TLS = obj(
    mode=enum("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"), clientCertificate=STRING, privateKey=STRING,
    caCertificates=STRING, credentialName=STRING, subjectAltNames=STRINGS, sni=STRING, insecureSkipVerify=BOOL,
)
_POLICY_PARTS = {"loadBalancer": LOAD_BALANCER, "connectionPool": CONNECTION_POOL,
                 "outlierDetection": OUTLIER_DETECTION, "tls": CLIENT_TLS}
TRAFFIC_POLICY = obj(
    **_POLICY_PARTS,
    portLevelSettings=arr(obj(port=PORT_SELECTOR, **_POLICY_PARTS)),
    tunnel=obj(protocol=STRING, targetHost=STRING, targetPort=PORT_NUMBER),
    proxyProtocol=obj(version=enum("V1", "V2")),
)
DESTINATION_RULE = obj(
    host=STRING, trafficPolicy=TRAFFIC_POLICY,
    subsets=arr(obj(name=STRING, labels=LABELS, trafficPolicy=TRAFFIC_POLICY)),
    exportTo=STRINGS, workloadSelector=obj(matchLabels=LABELS),
)

# ---- Gateway, ServiceEntry, WorkloadEntry, Sidecar ----------------------------------------------
SERVER_TLS = obj(
    httpsRedirect=BOOL, mode=enum("PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"),
    serverCertificate=STRING, privateKey=STRING, caCertificates=STRING, caCrl=STRING, credentialName=STRING,
    credentialNames=STRINGS, subjectAltNames=STRINGS, verifyCertificateSpki=STRINGS, verifyCertificateHash=STRINGS,
    minProtocolVersion=enum("TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"),
    maxProtocolVersion=enum("TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"), cipherSuites=STRINGS,
)
GATEWAY = obj(
    selector=LABELS,
    servers=arr(obj(port=SERVICE_PORT, bind=STRING, hosts=STRINGS, tls=SERVER_TLS, defaultEndpoint=STRING, name=STRING)),
)
WORKLOAD_ENTRY = obj(
    address=STRING, ports=map_of(PORT_NUMBER), labels=LABELS, network=STRING, locality=STRING, weight=UINT,
    serviceAccount=STRING,
)
SERVICE_ENTRY = obj(
    hosts=STRINGS, addresses=STRINGS, ports=arr(SERVICE_PORT),
    location=enum("MESH_EXTERNAL", "MESH_INTERNAL"),
    resolution=enum("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"),
    endpoints=arr(WORKLOAD_ENTRY), workloadSelector=WORKLOAD_SELECTOR, exportTo=STRINGS, subjectAltNames=STRINGS,
)
CAPTURE_MODE = enum("DEFAULT", "IPTABLES", "NONE")
SIDECAR = obj(
    workloadSelector=WORKLOAD_SELECTOR,
    ingress=arr(obj(port=SERVICE_PORT, bind=STRING, captureMode=CAPTURE_MODE, defaultEndpoint=STRING,
                    tls=SERVER_TLS, connectionPool=CONNECTION_POOL)),
    egress=arr(obj(port=SERVICE_PORT, bind=STRING, captureMode=CAPTURE_MODE, hosts=STRINGS)),
    outboundTrafficPolicy=obj(mode=enum("REGISTRY_ONLY", "ALLOW_ANY"), egressProxy=DESTINATION),
    inboundConnectionPool=CONNECTION_POOL,
)

# ---- EnvoyFilter --------------------------------------------------------------------------------
APPLY_TO = ("INVALID", "LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER", "ROUTE_CONFIGURATION",
            "VIRTUAL_HOST", "HTTP_ROUTE", "CLUSTER", "EXTENSION_CONFIG", "BOOTSTRAP", "LISTENER_FILTER")
PATCH_OPERATIONS = ("INVALID", "MERGE", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST",
                    "REPLACE", "MERGE_AND_REPLACE_LIST")
PATCH_CONTEXTS = ("ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY", "WAYPOINT")
ENVOY_FILTER = obj(
    workloadSelector=WORKLOAD_SELECTOR,
    targetRefs=arr(POLICY_TARGET, max_items=16),
    priority=INT,
    configPatches=arr(obj(
        applyTo=enum(*APPLY_TO),
        match=obj(
            context=enum(*PATCH_CONTEXTS),
            proxy=obj(proxyVersion=STRING, metadata=LABELS),
            listener=obj(
                portNumber=PORT_NUMBER, portName=STRING, name=STRING, listenerFilter=STRING,
                filterChain=obj(name=STRING, sni=STRING, transportProtocol=STRING, applicationProtocols=STRING,
                                destinationPort=PORT_NUMBER, filter=obj(name=STRING, subFilter=obj(name=STRING))),
            ),
            routeConfiguration=obj(
                portNumber=PORT_NUMBER, portName=STRING, gateway=STRING, name=STRING,
                vhost=obj(name=STRING, domainName=STRING,
                          route=obj(name=STRING, action=enum("ANY", "ROUTE", "REDIRECT", "DIRECT_RESPONSE"))),
            ),
            cluster=obj(portNumber=PORT_NUMBER, service=STRING, subset=STRING, name=STRING),
            waypoint=ANY_OBJECT,
        ),
        patch=obj(operation=enum(*PATCH_OPERATIONS), value=ANY_OBJECT,
                  filterClass=enum("UNSPECIFIED", "AUTHN", "AUTHZ", "STATS")),
    )),
)

# ---- telemetry.istio.io: Telemetry ---------------------------------------------------------------
_TELEMETRY_MODE = obj(mode=enum("CLIENT_AND_SERVER", "CLIENT", "SERVER"))
_PROVIDERS = arr(obj(name=STRING))
_CUSTOM_TAG = obj(literal=obj(value=STRING), environment=obj(name=STRING, defaultValue=STRING),
                  header=obj(name=STRING, defaultValue=STRING))
_METRIC_NAMES = enum("ALL_METRICS", "REQUEST_COUNT", "REQUEST_DURATION", "REQUEST_SIZE", "RESPONSE_SIZE",
                     "TCP_OPENED_CONNECTIONS", "TCP_CLOSED_CONNECTIONS", "TCP_SENT_BYTES", "TCP_RECEIVED_BYTES",
                     "GRPC_REQUEST_MESSAGES", "GRPC_RESPONSE_MESSAGES")
TELEMETRY = obj(
    selector=obj(matchLabels=LABELS),
    targetRef=POLICY_TARGET,
    targetRefs=arr(POLICY_TARGET),
    tracing=arr(obj(match=_TELEMETRY_MODE, providers=_PROVIDERS,
                    randomSamplingPercentage={"type": "number", "format": "double", "minimum": 0, "maximum": 100},
                    disableSpanReporting=BOOL, customTags=map_of(_CUSTOM_TAG),
                    useRequestIdForTraceSampling=BOOL, enableIstioTags=BOOL)),
    metrics=arr(obj(providers=_PROVIDERS, reportingInterval=DURATION, overrides=arr(obj(
        match=obj(metric=_METRIC_NAMES, customMetric=STRING, mode=enum("CLIENT_AND_SERVER", "CLIENT", "SERVER")),
        disabled=BOOL,
        tagOverrides=map_of(obj(operation=enum("UPSERT", "REMOVE"), value=STRING)))))),
    accessLogging=arr(obj(match=_TELEMETRY_MODE, providers=_PROVIDERS, disabled=BOOL,
                          filter=obj(expression=STRING))),
)

# ---- extensions.istio.io: WasmPlugin ------------------------------------------------------------
WASM_PLUGIN = obj(
    selector=obj(matchLabels=LABELS),
    targetRef=POLICY_TARGET,
    targetRefs=arr(POLICY_TARGET, max_items=16),
    url=described({"type": "string", "minLength": 1}, "oci://, https://, http:// or file:// location of the module."),
    sha256={"type": "string", "pattern": "^$|^[a-f0-9]{64}$"},
    imagePullPolicy=enum("UNSPECIFIED_POLICY", "IfNotPresent", "Always"),
    imagePullSecret={"type": "string", "minLength": 1, "maxLength": 253},
    verificationKey=STRING,
    pluginConfig=ANY_OBJECT,
    pluginName={"type": "string", "minLength": 1, "maxLength": 256},
    phase=enum("UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"),
    priority=INT,
    failStrategy=enum("FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"),
    vmConfig=obj(env=arr(obj(name={"type": "string", "minLength": 1}, valueFrom=enum("INLINE", "HOST"),
                             value={"type": "string", "maxLength": 2048}), max_items=256)),
    match=arr(obj(mode=enum("UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER"), ports=arr(PORT_SELECTOR))),
    type=enum("UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK"),
)
WASM_PLUGIN["required"] = ["url"]


# ---- security.istio.io: PeerAuthentication, AuthorizationPolicy, RequestAuthentication ------------
MATCH_LABELS = obj(matchLabels=LABELS)
MTLS_MODE = enum("UNSET", "DISABLE", "PERMISSIVE", "STRICT")
PEER_AUTHENTICATION = obj(
    selector=MATCH_LABELS,
    mtls=obj(mode=MTLS_MODE),
    portLevelMtls=map_of(obj(mode=MTLS_MODE)),
)
_NEGATABLE_SOURCE = {name: STRINGS for base in ("principals", "requestPrincipals", "namespaces", "ipBlocks",
                                                "remoteIpBlocks")
                     for name in (base, "not" + base[0].upper() + base[1:])}
_NEGATABLE_OPERATION = {name: STRINGS for base in ("hosts", "ports", "methods", "paths")
                        for name in (base, "not" + base[0].upper() + base[1:])}
AUTHORIZATION_POLICY = obj(
    selector=MATCH_LABELS,
    targetRef=POLICY_TARGET,
    targetRefs=arr(POLICY_TARGET, max_items=16),
    rules=arr(obj(
        from_=arr(obj(source=obj(**_NEGATABLE_SOURCE))),
        to=arr(obj(operation=obj(**_NEGATABLE_OPERATION))),
        when=arr(obj(key=STRING, values=STRINGS, notValues=STRINGS)),
    )),
    action=enum("ALLOW", "DENY", "AUDIT", "CUSTOM"),
    provider=obj(name=STRING),
)
JWT_RULE = obj(
    issuer=STRING, audiences=STRINGS, jwksUri=STRING, jwks=STRING,
    fromHeaders=arr(obj(name=STRING, prefix=STRING)), fromParams=STRINGS, fromCookies=STRINGS,
    outputPayloadToHeader=STRING, forwardOriginalToken=BOOL,
    outputClaimToHeaders=arr(obj(header=STRING, claim=STRING)), timeout=DURATION,
)
REQUEST_AUTHENTICATION = obj(
    selector=MATCH_LABELS,
    targetRef=POLICY_TARGET,
    targetRefs=arr(POLICY_TARGET, max_items=16),
    jwtRules=arr(JWT_RULE, max_items=4096),
)


# ---- the kinds ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """One resource kind: its API group, the versions Istio serves, and its spec schema."""

    kind: str
    group: str
    versions: tuple[str, ...]
    plural: str
    short_names: tuple[str, ...]
    spec: Schema
    categories: tuple[str, ...] = ("istio-io",)

    @property
    def api_versions(self) -> tuple[str, ...]:
        return tuple(f"{self.group}/{version}" for version in self.versions)


_NETWORKING = "networking.istio.io"
_NET_VERSIONS = ("v1", "v1beta1", "v1alpha3")
_SECURITY = "security.istio.io"
_SEC_VERSIONS = ("v1", "v1beta1")
KINDS: tuple[Kind, ...] = (
    Kind("VirtualService", _NETWORKING, _NET_VERSIONS, "virtualservices", ("vs",), VIRTUAL_SERVICE,
         ("istio-io", "networking-istio-io")),
    Kind("DestinationRule", _NETWORKING, _NET_VERSIONS, "destinationrules", ("dr",), DESTINATION_RULE,
         ("istio-io", "networking-istio-io")),
    Kind("Gateway", _NETWORKING, _NET_VERSIONS, "gateways", ("gw",), GATEWAY, ("istio-io", "networking-istio-io")),
    Kind("ServiceEntry", _NETWORKING, _NET_VERSIONS, "serviceentries", ("se",), SERVICE_ENTRY,
         ("istio-io", "networking-istio-io")),
    Kind("WorkloadEntry", _NETWORKING, _NET_VERSIONS, "workloadentries", ("we",), WORKLOAD_ENTRY,
         ("istio-io", "networking-istio-io")),
    Kind("Sidecar", _NETWORKING, _NET_VERSIONS, "sidecars", (), SIDECAR, ("istio-io", "networking-istio-io")),
    Kind("EnvoyFilter", _NETWORKING, ("v1alpha3",), "envoyfilters", (), ENVOY_FILTER,
         ("istio-io", "networking-istio-io")),
    Kind("WasmPlugin", "extensions.istio.io", ("v1alpha1",), "wasmplugins", (), WASM_PLUGIN,
         ("istio-io", "extensions-istio-io")),
    Kind("PeerAuthentication", _SECURITY, _SEC_VERSIONS, "peerauthentications", ("pa",), PEER_AUTHENTICATION,
         ("istio-io", "security-istio-io")),
    Kind("AuthorizationPolicy", _SECURITY, _SEC_VERSIONS, "authorizationpolicies", ("ap",), AUTHORIZATION_POLICY,
         ("istio-io", "security-istio-io")),
    Kind("RequestAuthentication", _SECURITY, _SEC_VERSIONS, "requestauthentications", ("ra",),
         REQUEST_AUTHENTICATION, ("istio-io", "security-istio-io")),
    Kind("Telemetry", "telemetry.istio.io", ("v1", "v1alpha1"), "telemetries", ("telemetry",), TELEMETRY,
         ("istio-io", "telemetry-istio-io")),
)
KINDS_BY_NAME: dict[str, Kind] = {k.kind: k for k in KINDS}


def lookup_kind(name: str) -> Kind | None:
    """A kind by its name, plural or short name, case-insensitively (as kubectl accepts)."""
    wanted = name.lower()
    for kind in KINDS:
        if wanted in (kind.kind.lower(), kind.plural, *kind.short_names):
            return kind
    return None


def strict(schema: Schema) -> Schema:
    """A copy that rejects unknown fields in every object that lists its properties."""
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    return out


def document_schema(kind: Kind) -> Schema:
    """Strict schema for a whole manifest document of this kind (apiVersion, kind, metadata, spec)."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"type": "string", "enum": list(kind.api_versions)},
            "kind": {"type": "string", "const": kind.kind},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
                    "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                    "labels": LABELS,
                    "annotations": LABELS,
                },
            },
            "spec": strict(kind.spec),
            "status": ANY_OBJECT,
        },
    }


__all__ = ["KINDS", "KINDS_BY_NAME", "Kind", "document_schema", "lookup_kind", "strict"]
