"""`wasmesh plugin run` as a user runs it: a separate process, flags in, one JSON object (or a
transcript) out, and one-line errors with exit status 2.

The plugins are WAT modules assembled by wasmtime into the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.wasmhost.wat_plugin import OUT_LEN, OUT_PTR, WatPlugin, log, num, out_bytes

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
# the console script's entry point, run with this interpreter from the repository
ENTRY = "import sys; from controlplane.cli import main; sys.exit(main())"


def wasmesh(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-c", ENTRY, *map(str, args)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def run_json(*args: str | Path) -> dict[str, Any]:
    done = wasmesh("plugin", "run", *args, "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)  # exactly one object: json.loads rejects trailing data
    assert isinstance(document, dict)
    return document


def fails_with_one_line(*args: str | Path) -> str:
    done = wasmesh("plugin", "run", *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("wasmesh: error: ")
    return lines[0]


def write(tmp_path: Path, name: str, module: bytes) -> Path:
    path = tmp_path / f"{name}.wasm"
    path.write_bytes(module)
    return path


def gateway_plugin(tmp_path: Path) -> Path:
    """Asks cluster "authz" (body "check"), tags the request with the answer, counts requests,
    logs the plugin configuration, and tags the response."""
    w = WatPlugin()
    on_response = f"""
(func (export "proxy_on_http_call_response") (param $root i32) (param $token i32) (param $nh i32) (param $nb i32) (param $nt i32)
  (drop (call $set_effective_context (global.get $stream)))
  (drop (call $get_buffer (i32.const 4) (i32.const 0) (local.get $nb) (i32.const {OUT_PTR}) (i32.const {OUT_LEN})))
  (drop (call $add_header (i32.const 0) {w.s('x-authz')} {out_bytes()}))
  {log(1, w.s('authz answered'))}
  (drop (call $continue_stream (i32.const 0))))"""
    module = w.build(
        f"""
(func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
  (drop (call $get_buffer (i32.const 7) (i32.const 0) (local.get $size) (i32.const {OUT_PTR}) (i32.const {OUT_LEN})))
  {log(2, out_bytes())}
  (drop (call $define_metric (i32.const 0) {w.s('gateway_requests')} (i32.const 1032)))
  (global.set $metric (i32.load (i32.const 1032)))
  (i32.const 1))
(func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
  (global.set $stream (local.get $ctx))
  (drop (call $increment_metric (global.get $metric) (i64.const 1)))
  (global.set $count (call $http_call {w.s('authz')}
    {w.pairs([(':method', 'POST'), (':path', '/check'), (':authority', 'authz')])} {w.s('check')}
    (i32.const 0) (i32.const 0) (i32.const 500) (i32.const 1032)))
  (if (global.get $count)
    (then
      (drop (call $local_response (i32.const 503) {w.s('no authz')} {w.s('authz unavailable')}
        (i32.const 0) (i32.const 0) (i32.const -1)))))
  (i32.const 1))
(func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
  (drop (call $add_header (i32.const 2) {w.s('x-gateway')} {num('(local.get $n)')}))
  {log(3, w.s('response seen'))}
  (i32.const 0))"""
        + on_response
    )
    return write(tmp_path, "gateway", module)


def test_json_reports_upstream_request_response_callouts_logs_metrics(tmp_path: Path) -> None:
    plugin = gateway_plugin(tmp_path)
    document = run_json(
        plugin, "--config", "mode=strict", "--method", "POST", "--path", "/orders", "--authority", "shop",
        "-H", "x-user: ann", "--body", "{}", "--response-status", "201", "--response-header", "x-r: 1",
        "--response-body", "created", "--callout", "authz=200:allow:all",
    )
    assert document == {
        "upstream_request": {
            "headers": [
                [":authority", "shop"], [":path", "/orders"], [":method", "POST"], [":scheme", "http"],
                ["x-user", "ann"], ["content-length", "2"], ["x-forwarded-proto", "http"], ["x-authz", "allow:all"],
            ],
            "body": "{}",
        },
        "response": {
            "status": 201,
            "headers": [["x-r", "1"], ["content-length", "7"], ["x-gateway", "3"]],
            "body": "created",
        },
        "callouts": [
            {
                "cluster": "authz",
                "headers": [[":method", "POST"], [":path", "/check"], [":authority", "authz"]],
                "body": "check",
            }
        ],
        "logs": [
            {"level": "info", "message": "mode=strict"},
            {"level": "debug", "message": "authz answered"},
            {"level": "warn", "message": "response seen"},
        ],
        "metrics": {"gateway_requests": 1},
        "trap": None,
    }


def test_unknown_cluster_makes_the_plugin_answer_locally(tmp_path: Path) -> None:
    document = run_json(gateway_plugin(tmp_path), "--log-level", "warn")
    assert document["upstream_request"] is None
    assert document["callouts"] == []
    assert document["response"] == {
        "status": 503,
        # passed through the plugin's response callback, as Envoy does with local replies
        "headers": [["content-length", "17"], ["content-type", "text/plain"], ["x-gateway", "3"]],
        "body": "authz unavailable",
    }
    assert document["logs"] == [{"level": "warn", "message": "response seen"}]


def test_config_file_and_root_id(tmp_path: Path) -> None:
    w = WatPlugin()
    module = w.build(
        f"""
(func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
  (drop (call $get_buffer (i32.const 7) (i32.const 0) (local.get $size) (i32.const {OUT_PTR}) (i32.const {OUT_LEN})))
  {log(2, out_bytes())}
  (drop (call $get_property {w.s('plugin_root_id')} (i32.const {OUT_PTR}) (i32.const {OUT_LEN})))
  {log(2, out_bytes())}
  (i32.const 1))"""
    )
    config = tmp_path / "config.json"
    config.write_text('{"limit": 5}')
    document = run_json(write(tmp_path, "cfg", module), "--config-file", config, "--root-id", "edge")
    assert [entry["message"] for entry in document["logs"]] == ['{"limit": 5}', "edge"]


def trap_plugin(tmp_path: Path) -> Path:
    w = WatPlugin()
    return write(tmp_path, "trap", w.build('(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) unreachable)'))


def test_trap_fails_the_stream_closed_and_reports_the_trap(tmp_path: Path) -> None:
    document = run_json(trap_plugin(tmp_path), "--response-body", "fine")
    assert document["response"] == {"status": 503, "headers": [], "body": ""}
    assert document["upstream_request"] is None
    assert "proxy_on_request_headers" in document["trap"]


def test_fail_open_skips_a_plugin_that_failed_before_the_stream_started(tmp_path: Path) -> None:
    w = WatPlugin()
    module = w.build(
        '(func (export "proxy_on_context_create") (param $ctx i32) (param $parent i32)'
        " (if (local.get $parent) (then unreachable)))",
        context_create=False,
    )
    plugin = write(tmp_path, "create_trap", module)
    assert run_json(plugin, "--response-body", "fine")["response"]["status"] == 503
    # failure_policy FAIL_OPEN (Envoy 1.40) still fails the stream that met the failure ...
    document = run_json(plugin, "--response-body", "fine", "--failure-policy", "fail_open")
    assert document["response"]["status"] == 503
    # ... while the older fail_open: true passes it through
    document = run_json(plugin, "--response-body", "fine", "--fail-open")
    assert document["response"] == {"status": 200, "headers": [["content-length", "4"]], "body": "fine"}
    assert "proxy_on_context_create" in document["trap"]


def test_properties_reach_the_plugin(tmp_path: Path) -> None:
    w = WatPlugin()
    read = (
        f"(drop (call $get_property {w.raw(b'source' + bytes(1) + b'address')} (i32.const {OUT_PTR}) (i32.const {OUT_LEN})))"
        f" {log(2, out_bytes())}"
        f"(drop (call $get_property {w.raw(b'app' + bytes(1) + b'tier')} (i32.const {OUT_PTR}) (i32.const {OUT_LEN})))"
        f" {log(2, out_bytes())}"
    )
    module = w.build(f'(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) {read} (i32.const 0))')
    document = run_json(write(tmp_path, "props", module), "--property", "source.address=10.9.8.7:443",
                        "--property", "app.tier=gold")
    assert [entry["message"] for entry in document["logs"]] == ["10.9.8.7:443", "gold"]


def test_transcript_shows_each_stage(tmp_path: Path) -> None:
    done = wasmesh("plugin", "run", gateway_plugin(tmp_path), "-H", "x-user: ann", "--callout", "authz=200:ok")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for expected in ("request in", "went upstream", "response out", "callouts (1)", "logs (3)", "metrics", "trap",
                     "x-authz: ok", "x-user: ann", "gateway_requests = 1", "authz answered"):
        assert expected in text, expected
    assert text.index("request in") < text.index("went upstream") < text.index("response out")


def test_reset_stream_has_no_response(tmp_path: Path) -> None:
    w = WatPlugin()
    module = w.build(
        '(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)'
        " (drop (call $close_stream (i32.const 0))) (i32.const 1))"
    )
    document = run_json(write(tmp_path, "reset", module))
    assert document["response"] is None and document["upstream_request"] is None
    done = wasmesh("plugin", "run", tmp_path / "reset.wasm")
    assert "the stream was reset" in done.stdout


# -- errors: one line, exit status 2 ----------------------------------------------------------------

def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in fails_with_one_line(tmp_path / "absent.wasm")


def test_not_wasm(tmp_path: Path) -> None:
    text = tmp_path / "plugin.wasm"
    text.write_text("(module)")
    assert "not a WebAssembly module" in fails_with_one_line(text)


def test_no_abi_marker(tmp_path: Path) -> None:
    module = WatPlugin(abi="9_9_9").build("")
    assert "ABI version" in fails_with_one_line(write(tmp_path, "nomarker", module))


def test_missing_allocator_export(tmp_path: Path) -> None:
    import wasmtime

    module = wasmtime.wat2wasm('(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1")))')
    assert "allocator" in fails_with_one_line(write(tmp_path, "noalloc", bytes(module)))


def test_plugin_that_refuses_to_start(tmp_path: Path) -> None:
    w = WatPlugin()
    module = w.build(
        '(func (export "proxy_on_configure") (param i32 i32) (result i32)'
        f' {log(4, w.s("need a cluster name"))} (i32.const 0))'
    )
    line = fails_with_one_line(write(tmp_path, "refuses", module), "--config", "")
    assert "rejected the configuration" in line and "need a cluster name" in line


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["-H", "no-colon"], "-H 'no-colon': expected 'name: value'"),
        (["--callout", "authz"], "expected CLUSTER=STATUS[:BODY]"),
        (["--callout", "authz=ok"], "expected CLUSTER=STATUS[:BODY]"),
        (["--callout", "a=200", "--callout", "a=500"], "given twice"),
        (["--property", "nothing"], "expected PATH=VALUE"),
        (["--property", "source.port=http"], "not an integer"),
        (["--response-status", "42"], "expected an HTTP status"),
    ],
)
def test_malformed_flags(tmp_path: Path, flags: list[str], message: str) -> None:
    plugin = write(tmp_path, "minimal", WatPlugin().build(""))
    assert message in fails_with_one_line(plugin, *flags)


def test_config_and_config_file_are_exclusive(tmp_path: Path) -> None:
    done = wasmesh("plugin", "run", "x.wasm", "--config", "a", "--config-file", "b")
    assert done.returncode == 2
    assert "not allowed with argument" in done.stderr
