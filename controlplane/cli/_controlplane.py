"""Control-plane commands: `analyze`, `controlplane`, `bootstrap`, and the operator commands
that talk to a running control plane over its API (`apply`, `get`, `delete`, `proxy-status`,
`proxy-config`). Until the root CLI lists this module, `python -m controlplane.cli._controlplane`
runs the same commands.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from controlplane.cli import UsageError

CONTROL_PLANE_ENV = "WASMESH_CONTROL_PLANE"
DEFAULT_API = "127.0.0.1:15014"


def _key_values(items: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        for part in item.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key:
                raise UsageError(f"{what}: expected key=value, got {part!r}")
            out[key.strip()] = value.strip()
    return out


def _port_pairs(items: Sequence[str], what: str) -> dict[int, int]:
    out = {}
    for key, value in _key_values(items, what).items():
        if not key.isdigit() or not value.isdigit():
            raise UsageError(f"{what}: ports must be numbers, got {key}={value}")
        out[int(key)] = int(value)
    return out


# ---- analyze ------------------------------------------------------------------------------------
def _analyze(args: argparse.Namespace) -> int:
    from controlplane._validation import analyze_paths

    paths = [Path(p) for p in args.files]
    for path in paths:
        if not path.exists():
            raise UsageError(f"no such file or directory: {path}")
    analysis = analyze_paths(paths, args.namespace)
    for diagnostic in analysis.diagnostics:
        print(diagnostic.render())
    if not analysis.diagnostics:
        print(f"\u2714 No validation issues found when analyzing {len(analysis.resources)} resources.")
    errors = sum(1 for d in analysis.diagnostics if d.is_error)
    if errors:
        print(f"Error: Analyzers found issues when analyzing {len(analysis.resources)} valid resources "
              f"({errors} errors).", file=sys.stderr)
        return 79  # istioctl analyze's exit status for findings at or above the threshold
    return 0


# ---- the server ---------------------------------------------------------------------------------
def _serve(args: argparse.Namespace) -> int:
    from controlplane._bootstrap import parse_address
    from controlplane._server import ControlPlane, Settings

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(debounce=args.debounce)
    try:
        settings.host, settings.xds_port = parse_address(args.xds_address, allow_any_port=True)
        settings.monitoring_host, settings.monitoring_port = parse_address(args.monitoring_address,
                                                                           allow_any_port=True)
    except ValueError as err:
        raise UsageError(str(err)) from None
    _security_settings(args, settings)
    _module_settings(args, settings)
    folder = Path(args.config_dir) if args.config_dir else None
    if folder is not None and not folder.is_dir():
        raise UsageError(f"--config-dir {folder} is not a directory")

    async def run() -> None:
        plane = ControlPlane(settings=settings, folder=folder)
        kube = None
        if args.kubeconfig or args.kubernetes:
            from controlplane._kube import KubernetesSource, token_reviewer

            kube = KubernetesSource.from_config(plane.store, args.kubeconfig)
            if plane.security is not None:  # set before the secure port opens: no agent sees a refusal first
                plane.security.accept_service_account_tokens(token_reviewer(kube.api_client))
        await plane.start()
        secure = f", secure xDS + CA {settings.host}:{plane.secure_port}" if plane.security is not None else ""
        print(f"wasmesh control plane: xDS {settings.host}:{plane.xds_port}{secure}, "
              f"API {settings.monitoring_host}:{plane.monitoring_port}", flush=True)
        if kube is not None:
            from controlplane._module_status import attach_status_writer

            kube.start()
            status_writer = attach_status_writer(plane.modules, kube.patch_status)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        if kube is not None:
            await asyncio.to_thread(status_writer.stop)
            await asyncio.to_thread(kube.stop)
        await plane.stop()

    asyncio.run(run())
    return 0


def _module_settings(args: argparse.Namespace, settings: Any) -> None:
    """The `modules` section of --mesh-config, --trust-policy, --module-cache, --module-refresh."""
    from controlplane._module_config import MeshConfigError, ModulesConfig

    try:
        modules = ModulesConfig.load(Path(args.mesh_config)) if args.mesh_config else ModulesConfig()
        if args.trust_policy:
            modules = modules.with_trust_policy(Path(args.trust_policy))
    except MeshConfigError as err:
        raise UsageError(str(err)) from None
    if args.module_refresh is not None:
        if args.module_refresh <= 0:
            raise UsageError("--module-refresh must be positive")
        modules.refresh_interval = args.module_refresh
    settings.modules = modules
    settings.module_cache_dir = Path(args.module_cache) if args.module_cache else None


def _security_settings(args: argparse.Namespace, settings: Any) -> None:
    """--mesh-config and --ca-dir (the CA, the secure port, workload certificate lifetime)."""
    import datetime as dt

    from controlplane._bootstrap import parse_address
    from controlplane._meshconfig import MeshConfigError, load_mesh_config
    from controlplane._security import SecuritySettings

    if args.mesh_config:
        try:
            settings.mesh_config = load_mesh_config(Path(args.mesh_config))
        except MeshConfigError as err:
            raise UsageError(f"--mesh-config: {err}") from None
        settings.root_namespace = settings.mesh_config.root_namespace
    if not args.ca_dir:
        return
    try:
        host, port = parse_address(args.secure_address, allow_any_port=True)
    except ValueError as err:
        raise UsageError(f"--secure-address: {err}") from None
    if host != settings.host:
        raise UsageError("--secure-address must use the same host as --xds-address")
    if args.workload_cert_ttl <= 0:
        raise UsageError("--workload-cert-ttl must be positive")
    settings.security = SecuritySettings(Path(args.ca_dir), settings.mesh_config.trust_domain, port,
                                         dt.timedelta(seconds=args.workload_cert_ttl))


def _token(args: argparse.Namespace) -> int:
    """Issue a bootstrap token for NAMESPACE/SERVICE_ACCOUNT with the CA folder's secret."""
    from controlplane._security import TOKEN_SECRET_FILE, token_secret
    from controlplane.ca import BootstrapTokens

    folder = Path(args.ca_dir)
    if not folder.is_dir():
        raise UsageError(f"--ca-dir {folder} is not a directory (start the control plane with it first)")
    try:
        token = BootstrapTokens(token_secret(folder / TOKEN_SECRET_FILE)).issue(
            args.namespace, args.service_account, ttl_seconds=args.ttl)
    except (OSError, ValueError) as err:
        raise UsageError(str(err)) from None
    if args.output:
        path = Path(args.output)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
    else:
        print(token)
    return 0


def _read_secret_file(name: str, what: str) -> str:
    try:
        return Path(name).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{what}: cannot read {name}: {err}") from None


def _bootstrap(args: argparse.Namespace) -> int:
    from controlplane._bootstrap import BootstrapOptions, bootstrap, grpc_bootstrap, parse_address

    try:
        host, port = parse_address(args.xds)
    except ValueError as err:
        raise UsageError(str(err)) from None
    options = BootstrapOptions(
        name=args.name, namespace=args.namespace, labels=_key_values(args.labels, "--labels"),
        ports=[int(p) for p in args.port], xds_host=host, xds_port=port, ip=args.ip,
        service_account=args.service_account, outbound_ports=_port_pairs(args.outbound, "--outbound"),
        inbound_ports=_port_pairs(args.inbound, "--inbound"), admin_port=args.admin_port,
        proxy_type="router" if args.router else "sidecar", delta=args.delta,
        identity_agent=args.identity_agent, trust_domain=args.trust_domain)
    if args.identity_agent and not args.token_file:
        raise UsageError("--identity-agent needs --token-file: the agent authenticates to the CA with it")
    if args.token_file:
        options.token = _read_secret_file(args.token_file, "--token-file")
        if not args.xds_ca:
            raise UsageError("--token-file needs --xds-ca (the CA's trust-bundle.pem): a token is sent only over TLS "
                             "to the secure port")
    if args.xds_ca:
        options.xds_ca = _read_secret_file(args.xds_ca, "--xds-ca") + "\n"
    document = grpc_bootstrap(options) if args.grpc else bootstrap(options)
    text = json.dumps(document, indent=2) if args.output == "json" else yaml.safe_dump(document, sort_keys=False)
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


# ---- operator commands (HTTP API) --------------------------------------------------------------------
def _api(args: argparse.Namespace, method: str, path: str, body: bytes | None = None) -> Any:
    address = args.control_plane or os.environ.get(CONTROL_PLANE_ENV) or DEFAULT_API
    request = urllib.request.Request(f"http://{address}{path}", data=body, method=method,
                                     headers={"content-type": "application/yaml"} if body is not None else {})
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as err:
        try:
            payload = json.loads(err.read())
        except ValueError:
            payload = {"error": f"HTTP {err.code}"}
        for line in payload.get("diagnostics", []):
            print(line, file=sys.stderr)
        raise UsageError(payload.get("error", f"HTTP {err.code}")) from None
    except (urllib.error.URLError, OSError) as err:
        raise UsageError(f"cannot reach the control plane at {address}: {getattr(err, 'reason', err)}") from None


def _read_inputs(files: Sequence[str]) -> bytes:
    from controlplane._resources import manifest_files

    chunks = []
    for name in files:
        if name == "-":
            chunks.append(sys.stdin.read())
            continue
        path = Path(name)
        if not path.exists():
            raise UsageError(f"no such file or directory: {path}")
        for file in manifest_files(path):
            chunks.append(file.read_text(encoding="utf-8"))
    return "\n---\n".join(chunks).encode()


def _apply(args: argparse.Namespace) -> int:
    result = _api(args, "POST", f"/api/v1/apply?namespace={args.namespace}", _read_inputs(args.files))
    for name in result["applied"]:
        print(f"{name} configured")
    for line in result.get("diagnostics", []):
        print(line, file=sys.stderr)
    return 0


def _get(args: argparse.Namespace) -> int:
    from controlplane._schemas import lookup_kind

    kind = lookup_kind(args.kind)
    if kind is None:
        raise UsageError(f"unknown kind {args.kind!r}")
    query = f"kind={kind.kind}" + ("" if args.all_namespaces else f"&namespace={args.namespace}")
    items = _api(args, "GET", f"/api/v1/resources?{query}")["items"]
    if args.name:
        items = [i for i in items if i["metadata"]["name"] == args.name]
        if not items:
            raise UsageError(f"{kind.kind} {args.namespace}/{args.name} not found")
    if args.output == "yaml":
        print(yaml.safe_dump_all(items, sort_keys=False), end="")
    elif args.output == "json":
        print(json.dumps(items, indent=2))
    else:
        modules = kind.kind == "WasmPlugin"
        print(f"{'NAMESPACE':<16}{'NAME':<32}{'VERSION':<10}{'CREATED':<22}" + ("MODULE" if modules else ""))
        for item in items:
            meta = item["metadata"]
            print(f"{meta['namespace']:<16}{meta['name']:<32}{meta.get('resourceVersion', ''):<10}"
                  f"{meta.get('creationTimestamp', ''):<22}" + (_module_summary(item) if modules else ""))
    return 0


def _module_summary(item: dict[str, Any]) -> str:
    """One cell for a WasmPlugin's module: what proxies run and, if something failed, why."""
    status = item.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions", [])}
    served = (status.get("module") or {}).get("sha256", "")
    failed = next((c for c in conditions.values() if c["status"] == "False"), None)
    text = f"sha256:{served[:12]}" if served else "-"
    distributed = conditions.get("Distributed")
    if distributed is not None:
        text += f" {distributed['reason']}"
    if failed is not None and failed is not distributed:
        text += f" ({failed['type']} {failed['reason']}: {failed['message']})"
    return text


def _delete(args: argparse.Namespace) -> int:
    from controlplane._schemas import lookup_kind

    kind = lookup_kind(args.kind)
    if kind is None:
        raise UsageError(f"unknown kind {args.kind!r}")
    result = _api(args, "DELETE", f"/api/v1/resources/{kind.kind}/{args.namespace}/{args.name}")
    print(f"{result['deleted']} deleted")
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    """The console lives on the control plane's monitoring port, under /dashboard/."""
    address = args.control_plane or os.environ.get(CONTROL_PLANE_ENV) or DEFAULT_API
    url = f"http://{address}/dashboard/"
    try:
        with urllib.request.urlopen(url + "api/graph", timeout=args.timeout):
            pass
    except (OSError, urllib.error.URLError) as err:
        print(f"warning: the control plane at {address} does not answer ({err})", file=sys.stderr)
    print(url)
    if args.open:
        import webbrowser

        webbrowser.open(url)
    return 0


def _proxy_status(args: argparse.Namespace) -> int:
    proxies = _api(args, "GET", "/api/v1/proxies")["proxies"]
    if args.output == "json":
        print(json.dumps(proxies, indent=2))
        return 0
    columns = ("CDS", "EDS", "LDS", "RDS", "ECDS", "SDS")
    print(f"{'NAME':<44}" + "".join(f"{c:<12}" for c in columns) + "VERSIONS")
    problems = []
    for proxy in proxies:
        types = proxy["types"]
        cells = [types.get(c, {}).get("status", "-") for c in columns]
        versions = ",".join(f"{c}={types[c]['sent'][:8]}" for c in columns if c in types)
        print(f"{proxy['name'] + '.' + proxy['namespace']:<44}" + "".join(f"{s:<12}" for s in cells) + versions)
        problems += [f"  {proxy['id']} {c}: {types[c]['nack']}" for c in columns if types.get(c, {}).get("nack")]
    if problems:
        print("NACKs:")
        print("\n".join(problems))
    modules = [(proxy, m) for proxy in proxies for m in proxy.get("modules", [])]
    if modules:
        print("MODULES:")
        for proxy, module in modules:
            served = f"sha256:{module['sha256'][:12]}" if module["sha256"] else "-"
            print(f"  {proxy['name']}.{proxy['namespace']} {module['name']}: {served} {module['state']} "
                  f"({module['distribution']}) {module['message']}")
    return 0


def _print_secrets(result: dict[str, Any]) -> None:
    """istioctl's table: each secret with its type, serial and validity; the trust bundle's roots."""
    if not result.get("secrets"):
        print(f"no secrets for {result['proxy']}: {result.get('reason', 'none issued')}")
        return
    print(f"{'RESOURCE NAME':<16}{'TYPE':<13}{'SERIAL NUMBER':<44}{'NOT AFTER':<28}NOT BEFORE")
    for secret in result["secrets"]:
        if secret["name"] == "ROOTCA":
            for root in secret["trust_bundle"]:
                print(f"{secret['name']:<16}{secret['type']:<13}{root['serial']:<44}{root['not_after']:<28}")
        else:
            print(f"{secret['name']:<16}{secret['type']:<13}{secret['serial']:<44}{secret['not_after']:<28}"
                  f"{secret['not_before']}")
    if "renew_at" in result:
        print(f"identity {result['identity']}, renewal {result['renew_at']} (generation {result['generation']})")
    else:
        print(f"identity {result.get('identity', '-')} (from {result['proxy']})")


def _admin_secrets(args: argparse.Namespace) -> dict[str, Any]:
    """What a proxy's own admin endpoint says it holds (a sidecar whose identity agent keeps its key)."""
    from controlplane._security_views import config_dump_secrets

    url = f"http://{args.admin}/config_dump"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as reply:
            dump = json.loads(reply.read())
    except (OSError, ValueError) as err:
        raise UsageError(f"--admin: cannot read {url}: {err}") from None
    return config_dump_secrets(dump, args.admin)


def _proxy_config(args: argparse.Namespace) -> int:
    if args.admin and args.type != "secret":
        raise UsageError("--admin is for `proxy-config secret` (the proxy's own certificates)")
    if args.admin:
        result = _admin_secrets(args)
    else:
        result = _api(args, "GET", f"/api/v1/proxies/{args.proxy}/config/{args.type}")
    if args.type == "secret" and args.output == "table":
        _print_secrets(result)
        return 0
    if args.output == "json":
        print(json.dumps(result, indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(result, sort_keys=False), end="")
    else:
        for label, items in result.items():
            if label == "proxy":
                continue
            for item in items:
                print(f"{label[:-1] if label.endswith('s') else label:<10}{item.get('name') or item.get('cluster_name')}")
    return 0


def _authz_check(args: argparse.Namespace) -> int:
    result = _api(args, "GET", f"/api/v1/proxies/{args.proxy}/authz")
    if args.output == "json":
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'ACTION':<8}{'AuthorizationPolicy':<40}RULES")
    for policy in result["authorization_policies"]:
        action = policy.get("action", "ERROR") + (" (dry-run)" if policy.get("dry_run") else "")
        name = f"{policy['name']}.{policy['namespace']}"
        detail = policy.get("error") or str(policy.get("rules", 0)) + (
            f" via {policy['provider']}" if policy.get("provider") else "")
        print(f"{action:<8}{name:<40}{detail}")
    for authn in result["request_authentications"]:
        print(f"JWT     {authn['name'] + '.' + authn['namespace']:<40}issuers {', '.join(authn['issuers'])}")
    for port, mode in result["mtls"].items():
        print(f"MTLS    port {port:<35}{mode}")
    return 0


# ---- registration -----------------------------------------------------------------------------------
def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--control-plane", metavar="HOST:PORT",
                        help=f"control plane API address (default ${CONTROL_PLANE_ENV} or {DEFAULT_API})")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the API")


def register(commands: Any) -> None:
    analyze = commands.add_parser("analyze", help="validate Istio manifests like istioctl analyze")
    analyze.add_argument("-f", "--files", action="append", required=True, metavar="PATH", help="file or directory")
    analyze.add_argument("-n", "--namespace", default="default")
    analyze.set_defaults(handler=_analyze)

    serve = commands.add_parser("controlplane", help="run the control plane (xDS + operator API)")
    serve.add_argument("--config-dir", metavar="DIR", help="folder of YAML manifests to watch")
    serve.add_argument("--xds-address", default="127.0.0.1:15010", metavar="HOST:PORT")
    serve.add_argument("--monitoring-address", default="127.0.0.1:15014", metavar="HOST:PORT")
    serve.add_argument("--kubernetes", action="store_true", help="also watch a Kubernetes API server")
    serve.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig for the Kubernetes source")
    serve.add_argument("--debounce", type=float, default=0.1, help="seconds of quiet before a push")
    serve.add_argument("--ca-dir", metavar="DIR", help="run the CA from this cacerts folder (a root is generated on "
                                                       "first start) and serve the secure port")
    serve.add_argument("--secure-address", default="127.0.0.1:15012", metavar="HOST:PORT",
                       help="CSR service and xDS over TLS (with --ca-dir)")
    serve.add_argument("--workload-cert-ttl", type=float, default=24 * 3600, metavar="SECONDS",
                       help="lifetime of the certificates minted for Envoy sidecars (renewed at half)")
    serve.add_argument("--mesh-config", metavar="FILE", help="MeshConfig YAML (trustDomain, extensionProviders, modules, ...)")
    serve.add_argument("--trust-policy", metavar="FILE",
                       help="who may sign Wasm modules (mesh-wide default; the mesh config's modules section "
                            "may override it per namespace)")
    serve.add_argument("--module-cache", metavar="DIR", help="where verified modules are kept "
                                                             "(default $XDG_CACHE_HOME/wasmesh/controlplane/modules)")
    serve.add_argument("--module-refresh", type=float, metavar="SECONDS",
                       help="re-resolve modules that always pull (Always, :latest) this often")
    serve.add_argument("-v", "--verbose", action="store_true")
    serve.set_defaults(handler=_serve)

    boot = commands.add_parser("bootstrap", help="print a proxy bootstrap pointing at the control plane")
    boot.add_argument("--name", required=True)
    boot.add_argument("--namespace", default="default")
    boot.add_argument("--labels", action="append", default=[], metavar="K=V[,K=V]")
    boot.add_argument("--port", action="append", default=[], type=int, help="application port (repeatable)")
    boot.add_argument("--xds", default="127.0.0.1:15010", metavar="HOST:PORT")
    boot.add_argument("--ip", default="127.0.0.1", help="the workload's address")
    boot.add_argument("--service-account", default="default")
    boot.add_argument("--outbound", action="append", default=[], metavar="SERVICEPORT=LOCALPORT",
                      help="bind the outbound listener of a service port locally")
    boot.add_argument("--inbound", action="append", default=[], metavar="APPPORT=LOCALPORT",
                      help="bind an inbound listener in front of an application port")
    boot.add_argument("--admin-port", type=int, default=15000)
    boot.add_argument("--router", action="store_true", help="an ingress/egress gateway rather than a sidecar")
    boot.add_argument("--delta", action="store_true", help="use incremental (delta) xDS instead of state of the world")
    boot.add_argument("--grpc", action="store_true", help="a GRPC_XDS_BOOTSTRAP file for proxyless gRPC")
    boot.add_argument("--token-file", metavar="FILE", help="bootstrap token (wasmesh token): join mesh mTLS")
    boot.add_argument("--xds-ca", metavar="FILE", help="roots that sign the control plane's certificate "
                                                      "(<ca-dir>/trust-bundle.pem); connects with TLS")
    boot.add_argument("--identity-agent", action="store_true",
                      help="for a wasmesh sidecar: it generates its own key and gets its certificate from the CA "
                           "(the control plane mints none); not for Envoy")
    boot.add_argument("--trust-domain", default="cluster.local", help="the mesh's trust domain (the agent's SPIFFE ID)")
    boot.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    boot.set_defaults(handler=_bootstrap)

    token = commands.add_parser("token", help="issue a bootstrap token for a workload identity")
    token.add_argument("namespace")
    token.add_argument("service_account")
    token.add_argument("--ca-dir", required=True, metavar="DIR", help="the control plane's --ca-dir")
    token.add_argument("--ttl", type=int, default=24 * 3600, help="seconds the token is valid")
    token.add_argument("-o", "--output", metavar="FILE", help="write it to FILE (mode 0600) instead of printing")
    token.set_defaults(handler=_token)

    apply = commands.add_parser("apply", help="apply manifests to the control plane")
    apply.add_argument("-f", "--files", action="append", required=True, metavar="PATH")
    apply.add_argument("-n", "--namespace", default="default")
    _client_options(apply)
    apply.set_defaults(handler=_apply)

    get = commands.add_parser("get", help="list mesh resources of a kind")
    get.add_argument("kind")
    get.add_argument("name", nargs="?")
    get.add_argument("-n", "--namespace", default="default")
    get.add_argument("-A", "--all-namespaces", action="store_true")
    get.add_argument("-o", "--output", choices=("table", "yaml", "json"), default="table")
    _client_options(get)
    get.set_defaults(handler=_get)

    delete = commands.add_parser("delete", help="delete an applied resource")
    delete.add_argument("kind")
    delete.add_argument("name")
    delete.add_argument("-n", "--namespace", default="default")
    _client_options(delete)
    delete.set_defaults(handler=_delete)

    dashboard = commands.add_parser("dashboard", help="print (or open) the mesh console's URL")
    dashboard.add_argument("--open", action="store_true", help="also open it in a browser")
    _client_options(dashboard)
    dashboard.set_defaults(handler=_dashboard)

    status = commands.add_parser("proxy-status", help="push status of every connected proxy")
    status.add_argument("-o", "--output", choices=("table", "json"), default="table")
    _client_options(status)
    status.set_defaults(handler=_proxy_status)

    config = commands.add_parser("proxy-config", help="what a proxy was sent")
    config.add_argument("type", choices=("listeners", "routes", "clusters", "endpoints", "ecds", "secret", "all"))
    config.add_argument("proxy", help="proxy id, NAME.NAMESPACE or NAME")
    config.add_argument("-o", "--output", choices=("table", "yaml", "json"), default="table")
    config.add_argument("--admin", metavar="HOST:PORT",
                        help="secret: ask the proxy's admin endpoint (/config_dump) instead of the control plane, "
                             "for a sidecar whose identity agent keeps its key")
    _client_options(config)
    config.set_defaults(handler=_proxy_config)

    authz = commands.add_parser("authz", help="authorization policies applied to a proxy")
    authz_commands = authz.add_subparsers(dest="authz_command", required=True, metavar="COMMAND")
    check = authz_commands.add_parser("check", help="which security policies apply to a connected proxy")
    check.add_argument("proxy", help="proxy id, NAME.NAMESPACE or NAME")
    check.add_argument("-o", "--output", choices=("table", "json"), default="table")
    _client_options(check)
    check.set_defaults(handler=_authz_check)


def main(argv: Sequence[str] | None = None) -> int:
    """These commands alone (until the root CLI registers this module)."""
    parser = argparse.ArgumentParser(prog="wasmesh")
    register(parser.add_subparsers(dest="command", metavar="COMMAND"))
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except UsageError as err:
        print(f"wasmesh: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
