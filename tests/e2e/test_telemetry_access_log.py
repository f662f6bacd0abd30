"""A ``Telemetry`` access-log filter, from the control plane to the lines a sidecar writes.

The control plane turns ``accessLogging[].filter.expression`` into Envoy's CEL extension
filter on the HCM ``access_log``; the sidecar runs exactly that configuration and must
write a line only for the streams the expression selects. A filter outside the supported
CEL subset is refused when the configuration loads, naming the field.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from envoy.config.accesslog.v3 import accesslog_pb2
from google.protobuf import json_format

from controlplane._telemetry import SERVER, access_logs
from tests.controlplane.test_telemetry import REVIEWS, mesh_of, telemetry
from tests.wasmhost.sidecar._bootstrap import bootstrap
from tests.wasmhost.sidecar._process import SidecarProcess, http_request
from wasmhost.sidecar._access_log import access_log_filter
from wasmhost.sidecar._errors import ConfigError

EXPRESSION = ("response.code >= 500 || (request.headers['x-debug'] == 'on' && !(request.method == 'HEAD'))")


def routes() -> list[dict[str, object]]:
    def direct(prefix: str, status: int) -> dict[str, object]:
        return {"match": {"prefix": prefix}, "direct_response": {"status": status, "body": {"inline_string": "x"}}}

    return [{"name": "all", "domains": ["*"], "routes": [direct("/fail", 503), direct("/", 200)]}]


def test_only_selected_streams_are_logged(tmp_path: Path) -> None:
    log_file = tmp_path / "access.log"
    mesh = mesh_of(
        telemetry("mesh-default", "istio-system", {"accessLogging": [
            {"providers": [{"name": "file-log"}], "filter": {"expression": EXPRESSION}}]}),
        providers=[{"name": "file-log", "envoyFileAccessLog": {
            "path": str(log_file), "logFormat": {"text": "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE%\n"}}}])
    logs = access_logs(mesh, REVIEWS, SERVER)
    assert logs[0]["filter"]["extension_filter"]["typed_config"]["expression"] == EXPRESSION
    sidecar = SidecarProcess(bootstrap(virtual_hosts=routes(), clusters=[], hcm_extra={"access_log": logs}),
                             workdir=tmp_path / "sidecar")
    sidecar.start()
    try:
        port = sidecar.listener_ports()["listener_0"]
        sent = [("GET", "/plain", []), ("GET", "/fail/a", []), ("GET", "/debug", [("x-debug", "on")]),
                ("HEAD", "/debug-head", [("x-debug", "on")]), ("GET", "/debug-off", [("x-debug", "off")]),
                ("GET", "/fail/last", [])]
        for method, path, headers in sent:
            http_request(port, method=method, path=path, headers=headers)
        deadline = time.monotonic() + 10
        while "/fail/last" not in (log_file.read_text() if log_file.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        sidecar.stop()
    assert log_file.read_text().splitlines() == ["GET /fail/a 503", "GET /debug 200", "GET /fail/last 503"]


@pytest.mark.parametrize(("log", "field", "reason"), [
    ({"filter": {"extension_filter": {"name": "cel", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
        "expression": "response.code in [500, 503]"}}}},
     "access_log[0].filter.extension_filter.typed_config.expression", ""),
    ({"filter": {"status_code_filter": {"comparison": {"op": "GE", "value": {"default_value": 500,
                                                                            "runtime_key": "k"}}}}},
     "access_log[0].filter.status_code_filter", "only the CEL extension filter"),
])
def test_unsupported_filters_are_refused_by_field(log: dict[str, object], field: str, reason: str) -> None:
    message = json_format.ParseDict(log, accesslog_pb2.AccessLog())
    with pytest.raises(ConfigError) as caught:
        access_log_filter(message, "access_log[0]")
    assert caught.value.path == field
    assert reason in str(caught.value)
