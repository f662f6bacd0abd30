"""A plugin that raises: CPython propagates the exception, the compiled module logs it and
traps (the host then applies its failure policy). Multi-file plugins compile too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import wasmtime

from sdk.compiler import compile_file
from tests.sdk.compiler._harness import differential, start_plugin
from tests.sdk.compiler._stubhost import StubHost, WasmRunner

RAISING = '''
from sdk import proxywasm
from sdk.types import Action, HttpContext, PluginContext, VMContext


class Http(HttpContext):
    def on_http_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        proxywasm.log_info("before")
        proxywasm.get_http_request_header("x-required")
        proxywasm.log_info("never")
        return Action.CONTINUE


class Plugin(PluginContext):
    def new_http_context(self, context_id: int) -> HttpContext:
        return Http()


class VM(VMContext):
    def new_plugin_context(self, context_id: int) -> PluginContext:
        return Plugin()


proxywasm.set_vm_context(VM())
'''


def request(runner: Any) -> list[Any]:
    results = start_plugin(runner)
    runner.call("proxy_on_context_create", 2, 1)
    results.append(runner.call("proxy_on_request_headers", 2, 0, 1))
    return results


def test_uncaught_exception_traps_after_logging_it(tmp_path: Path) -> None:
    path = tmp_path / "raising.py"
    path.write_text(RAISING, encoding="utf-8")
    python, wasm = differential(path, request)
    assert python.error == wasm.error == "NotFoundError"
    assert wasm.state["logs"] == python.state["logs"] == [(2, "before")]
    host = StubHost()
    runner = WasmRunner(compile_file(path), host)
    with pytest.raises(wasmtime.Trap):
        request(runner)
    assert host.logs[-1] == (4, "uncaught exception NotFoundError: proxy_get_header_map_value: NOT_FOUND")


def test_plugin_split_over_several_files(tmp_path: Path) -> None:
    (tmp_path / "rules.py").write_text(
        "BLOCKED = ['/admin', '/debug']\n\n\ndef blocked(path: str) -> bool:\n"
        "    return any_prefix(path, BLOCKED)\n\n\ndef any_prefix(path: str, prefixes: list[str]) -> bool:\n"
        "    for p in prefixes:\n        if path.startswith(p):\n            return True\n    return False\n",
        encoding="utf-8",
    )
    (tmp_path / "plugin.py").write_text(
        RAISING.replace("from sdk import proxywasm", "from sdk import proxywasm\nimport rules").replace(
            '''        proxywasm.log_info("before")
        proxywasm.get_http_request_header("x-required")
        proxywasm.log_info("never")''',
            '''        path = proxywasm.get_http_request_header(":path")
        if rules.blocked(path):
            proxywasm.send_http_response(403, [], b"blocked")
            return Action.PAUSE''',
        ),
        encoding="utf-8",
    )

    def scenario(runner: Any) -> list[Any]:
        results = start_plugin(runner)
        for ctx, path in ((2, b"/admin/x"), (3, b"/ok")):
            runner.host.maps[0] = [(b":path", path)]
            runner.call("proxy_on_context_create", ctx, 1)
            results.append(runner.call("proxy_on_request_headers", ctx, 1, 1))
        return results

    python, wasm = differential(tmp_path / "plugin.py", scenario)
    assert wasm.results == python.results == [1, 1, 1, 0]
    assert wasm.state["local_response"] == python.state["local_response"] == (403, b"", b"blocked", [], -1)
