"""Differential tests: every HTTP conformance plugin behaves in our host exactly as in Envoy.

Two comparisons per case. ``test_plugin_behaves_as_in_envoy`` runs all of a case's requests
through one long-running Envoy and one long-running host. ``test_plugin_run_matches_envoy``
runs each of the case's requests on its own through ``wasmesh plugin run --json`` (the real
CLI, in process) and through a fresh Envoy (``run_plugin_in_envoy``), start-up logs included.

Each case starts one real Envoy (``EnvoyPluginSession``) and one of our hosts
(``tests.wasmhost._conformance.ConformanceHost``, which embeds ``wasmhost`` the way Envoy's
HTTP filter manager drives a filter) with the same module and configuration, sends them the
same requests in the same order, and compares ``comparable()`` of both results: upstream
request, client response, callouts, plugin logs, metrics and whether the plugin trapped.
Plugin state carries over between a case's requests on both sides, so counters, shared data
and a failed VM are compared too.

Normalisation beyond ``comparable()`` is limited to values neither side can reproduce:
``connection: close`` (Envoy's HTTP/1.1 connection management when a reply leaves a request
body unread), wall/monotonic clock readings and random bytes (only their format is
compared). Plugins left out, and why: ``tcp`` (a network filter; this harness drives HTTP),
``infinite_loop`` (Envoy's V8 has no CPU deadline, the worker would spin forever),
``memory_bomb`` (V8 grows to its own 4 GiB cap; nothing comparable), ``all_wasi`` (Envoy
refuses preview1's 7-parameter ``path_link``, which cpp-host declares with 6) and the gRPC
success paths (the harness has no gRPC upstream; dispatch failure is compared).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from controlplane.cli import main as wasmesh
from tests._tools import plugin_path
from tests.e2e._envoy import (
    UPSTREAM_CLUSTER,
    EnvoyPluginSession,
    EnvoyStartError,
    comparable,
    run_plugin_in_envoy,
)
from tests.wasmhost._conformance import ConformanceHost
from wasmhost import FailurePolicy, ModuleError, PluginStartError, StreamInfo

Result = dict[str, Any]
Normaliser = Callable[[Result], Result]


def _drop_connection_close(result: Result) -> Result:
    response = result["response"]
    if response is not None:
        response["headers"] = [h for h in response["headers"] if h != ["connection", "close"]]
    return result


def _response_values(patterns: Mapping[str, str]) -> Normaliser:
    """Replace the values of these response headers by their pattern once they match it."""

    def normalise(result: Result) -> Result:
        response = result["response"]
        for header in response["headers"] if response is not None else []:
            pattern = patterns.get(header[0])
            if pattern is not None:
                assert re.fullmatch(pattern, header[1]), f"{header[0]}: {header[1]!r} is not {pattern}"
                header[1] = pattern
        return result

    return normalise


@dataclass(frozen=True)
class Case:
    """One plugin, one configuration, and the requests both hosts get, in order."""

    id: str
    plugin: str
    requests: tuple[dict[str, Any], ...]
    configuration: str = ""
    vm_configuration: str = ""
    root_id: str = ""
    failure_policy: str = "FAIL_CLOSED"
    callouts: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    #: route facts Envoy's bootstrap gives the stream, told to our host through StreamInfo
    info: Mapping[str, Any] = field(default_factory=dict)
    normalise: Normaliser | None = None


POST = {"method": "POST", "body": "payload", "response_body": "from upstream"}
CASES = [
    Case(
        "headers-config-ops",
        "headers",
        (
            {"headers": [("x-remove-me", "1"), ("x-keep", "v")], "response_headers": [("x-up", "1")]},
            {"path": "/a/b?c=d", **POST},
        ),
        configuration="add request x-added one two\nreplace request x-keep replaced\n"
        "remove request x-remove-me\nadd response x-resp-added yes\nremove response x-up\nbogus line",
    ),
    Case("headers-no-config", "headers", ({"headers": [("x-a", "1"), ("x-a", "2")]},)),
    Case("body-suffix", "body", (POST, {}, {"method": "PUT", "body": "MiXeD case"}), configuration=" [sfx]"),
    Case("body-default-suffix", "body", ({"response_body": "r"},)),
    Case(
        "abi010",
        "abi010_headers",
        (
            {},
            {"headers": [("x-pause", "1")]},
            {"headers": [("x-pause-response", "1")], "response_body": "x"},
        ),
        configuration="cfg-010",
    ),
    Case("abi020", "abi020_headers", ({}, POST)),
    Case("bench", "bench_6hostcalls", ({"headers": [("x-bench-in", "1")]}, {})),
    Case(
        "lifecycle",
        "lifecycle",
        ({}, POST, {"response_status": 404}),
        configuration="plugin-cfg",
        vm_configuration="vm-cfg",
    ),
    Case(
        "local-reply",
        "local_reply",
        (
            {"headers": [("x-deny", "yes")]},
            {},
            {"headers": [("x-deny", "with body")], **POST},
        ),
        normalise=_drop_connection_close,
    ),
    Case("log-level", "log_level", ({},)),
    Case("metrics", "metrics", ({}, {"headers": [("x-a", "1")]}, {})),
    Case("shared", "shared", ({"path": "/one"}, {"path": "/two"}, {"path": "/three"})),
    Case(
        "stream-control",
        "stream_control",
        (
            {},
            {"headers": [("x-pause-response", "1")], "response_body": "r"},
            {"headers": [("x-close", "1")]},
            {"headers": [("x-close-response", "1")]},
        ),
    ),
    Case(
        "http-call",
        "http_call",
        (
            {},
            POST,
            {"callouts": {"authz": (503, "busy")}},
        ),
        configuration=" authz\n",
        callouts={"authz": (200, "granted\r\nline two")},
    ),
    Case("http-call-unknown-cluster", "http_call", ({},), configuration="nowhere"),
    Case(
        "as-http-call",
        "as_http_call",
        (
            {"path": "/p"},
            {"path": "/q", "callouts": {"auth": (403, "no")}},
        ),
        callouts={"auth": (200, "")},
    ),
    Case("as-add-header", "as_add_header", ({},), configuration="from config"),
    Case("as-add-header-root-id", "as_add_header", ({},), root_id="as_add_header"),
    Case("as-deny", "as_deny", ({"headers": [("x-deny", "v")]}, {}, {"headers": [("x-deny", "")]})),
    Case("foreign-compress", "foreign", ({},), configuration="compress hello hello hello"),
    Case("foreign-unknown", "foreign", ({},)),
    Case("grpc-dispatch-failure", "grpc", ({"headers": [("x-grpc-mode", "unary")]}, {})),
    Case(
        "properties",
        "properties",
        ({"path": "/p?q=1", "headers": [("user-agent", "ua"), ("referer", "r")], "body": "abc"},),
        configuration="\n".join(
            [
                "request.path",
                "request.url_path",
                "request.host",
                "request.scheme",
                "request.method",
                "request.protocol",
                "request.query",
                "request.referer",
                "request.useragent",
                "request.id",
                "request.size",
                "request.headers_bytes",
                "request.x",
                "plugin_name",
                "plugin_root_id",
                "plugin_vm_id",
                "connection.mtls",
                "xds.cluster_name",
                "xds.virtual_host_name",
                "xds.route_name",
                "xds.node.id",
                "xds.node.cluster",
                "xds.node.metadata",
                "xds.listener_metadata",
                "cluster_name",
                "route_name",
                "listener_direction",
                "request_protocol",
                "source.address.x",
            ]
        ),
        info={"cluster_name": UPSTREAM_CLUSTER, "virtual_host_name": "all"},
    ),
    Case(
        "tick-slow",
        "tick",
        ({},),
        configuration="3600000",
        normalise=_response_values({"x-now-ns": r"[0-9]{19}"}),
    ),
    Case(
        "wasi",
        "wasi",
        ({},),
        normalise=_response_values(
            {
                "x-wasi-realtime-ns": r"[0-9]{19}",
                "x-wasi-monotonic-ns": r"[0-9]+",
                "x-wasi-entropy": r"[0-9a-f]{32}",
                "x-wasi-random": r"[0-9a-f]{8}",
            }
        ),
    ),
    Case("bad-pointers", "bad_pointers", ({}, {})),
    Case("trap-fail-closed", "trap", ({}, {})),
    Case("trap-fail-reload", "trap", ({}, {}), failure_policy="FAIL_RELOAD"),
    Case("trap-fail-open", "trap", ({}, {}), failure_policy="FAIL_OPEN"),
    Case("minimal", "minimal", (POST,)),
    Case("emscripten-like", "emscripten_like", ({},)),
    Case("go-style-allocator", "go_style_allocator", ({"path": "/go"},)),
]
KNOWN_DIFFERENCES = {
}


def _params() -> Iterator[Any]:
    for case in CASES:
        reason = KNOWN_DIFFERENCES.get(case.id)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(case, id=case.id, marks=marks)


def _ours(case: Case) -> ConformanceHost:
    return ConformanceHost(
        plugin_path(case.plugin),
        root_id=case.root_id,
        configuration=case.configuration,
        vm_configuration=case.vm_configuration,
        failure_policy=FailurePolicy[case.failure_policy],
        callouts=case.callouts,
        info=StreamInfo(**case.info),
    )


def _envoy(case: Case, binary: str) -> EnvoyPluginSession:
    return EnvoyPluginSession(
        plugin_path(case.plugin),
        root_id=case.root_id,
        configuration=case.configuration,
        vm_configuration=case.vm_configuration,
        failure_policy=case.failure_policy,
        callouts=case.callouts,
        binary=binary,
    )


@pytest.mark.e2e
@pytest.mark.envoy
@pytest.mark.parametrize("case", list(_params()))
def test_plugin_behaves_as_in_envoy(case: Case, envoy_binary: str) -> None:
    normalise = case.normalise or (lambda result: result)
    with _envoy(case, envoy_binary) as envoy, _ours(case) as ours:
        assert ours.startup_logs == envoy.startup_logs, "start-up logs"
        for index, request in enumerate(case.requests):
            expected = normalise(comparable(envoy.request(**request)))
            actual = normalise(comparable(ours.request(**request)))
            assert actual == expected, f"request {index} {request}"


REFUSED = [
    pytest.param("no_abi_marker", "", "", id="no-abi-marker"),
    pytest.param("no_allocator", "", "", id="no-allocator"),
    pytest.param("http_call", "", "", id="http-call-empty-config"),
    pytest.param("lifecycle", "reject", "", id="lifecycle-configure-false"),
    pytest.param("lifecycle", "", "reject", id="lifecycle-vm-start-false"),
    pytest.param("tick", "10x", "", id="tick-bad-config"),
]


@pytest.mark.e2e
@pytest.mark.envoy
@pytest.mark.parametrize(("plugin", "configuration", "vm_configuration"), REFUSED)
def test_plugin_refused_by_envoy_is_refused_by_us(
    plugin: str, configuration: str, vm_configuration: str, envoy_binary: str
) -> None:
    session = EnvoyPluginSession(
        plugin_path(plugin),
        configuration=configuration,
        vm_configuration=vm_configuration,
        binary=envoy_binary,
    )
    with pytest.raises(EnvoyStartError):
        session.start()
    with pytest.raises((ModuleError, PluginStartError)):
        with ConformanceHost(
            plugin_path(plugin), configuration=configuration, vm_configuration=vm_configuration
        ):
            pass


PLUGIN_RUN_KNOWN_DIFFERENCES = {
}


def _plugin_run_params() -> Iterator[Any]:
    for case in CASES:
        for index in range(len(case.requests)):
            reason = PLUGIN_RUN_KNOWN_DIFFERENCES.get(
                f"{case.id}/{index}", PLUGIN_RUN_KNOWN_DIFFERENCES.get(case.id)
            )
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(case, index, id=f"{case.id}/{index}", marks=marks)


def _plugin_run_args(case: Case, module: Path, request: Mapping[str, Any]) -> list[str]:
    """``wasmesh plugin run`` flags for this case's configuration and one request."""
    args = ["plugin", "run", str(module), "--json", "--root-id", case.root_id, "--config", case.configuration]
    args += ["--vm-config", case.vm_configuration, "--failure-policy", case.failure_policy]
    args += ["--method", request.get("method", "GET"), "--path", request.get("path", "/")]
    for name, value in request.get("headers", ()):
        args += ["-H", f"{name}: {value}"]
    args += ["--body", request.get("body", ""), "--response-body", request.get("response_body", "")]
    args += ["--response-status", str(request.get("response_status", 200))]
    for name, value in request.get("response_headers", ()):
        args += ["--response-header", f"{name}: {value}"]
    for cluster, (status, body) in {**case.callouts, **request.get("callouts", {})}.items():
        args += ["--callout", f"{cluster}={status}:{body}"]
    for field_name, value in case.info.items():
        args += ["--property", f"xds.{field_name}={value}"]
    return args


@pytest.mark.e2e
@pytest.mark.envoy
@pytest.mark.parametrize(("case", "index"), list(_plugin_run_params()))
def test_plugin_run_matches_envoy(
    case: Case, index: int, envoy_binary: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Request ``index`` of the case on its own: a fresh plugin on both sides."""
    normalise = case.normalise or (lambda result: result)
    request = case.requests[index]
    module = tmp_path / "plugin.wasm"  # plugin run names the plugin after the file, as Envoy's "plugin"
    shutil.copyfile(plugin_path(case.plugin), module)
    capsys.readouterr()
    assert wasmesh(_plugin_run_args(case, module, request)) == 0
    ours = json.loads(capsys.readouterr().out)
    envoy_request = {k: v for k, v in request.items() if k != "callouts"}
    expected = run_plugin_in_envoy(
        module,
        root_id=case.root_id,
        configuration=case.configuration,
        vm_configuration=case.vm_configuration,
        failure_policy=case.failure_policy,
        callouts={**case.callouts, **request.get("callouts", {})},
        binary=envoy_binary,
        **envoy_request,
    )
    assert normalise(comparable(ours)) == normalise(comparable(expected))
