"""``wasmesh plugin build``: source in, a loadable module (or a one-line error) out."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import wasmtime

from controlplane.cli import UsageError
from controlplane.cli._plugin_build import register_plugin

PLUGIN = Path(__file__).parent / "plugins" / "hostcalls.py"


def run_build(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="wasmesh plugin")
    register_plugin(parser.add_subparsers(dest="plugin_command"))
    args = parser.parse_args(["build", *argv])
    return int(args.handler(args))


def test_build_writes_a_proxy_wasm_module(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plugin.wasm"
    assert run_build(str(PLUGIN), "-o", str(out)) == 0
    module = wasmtime.Module(wasmtime.Engine(), out.read_bytes())
    exports = {e.name for e in module.exports}
    assert {"proxy_abi_version_0_2_1", "proxy_on_memory_allocate", "malloc", "_initialize", "memory"} <= exports
    assert {"proxy_on_context_create", "proxy_on_request_headers", "proxy_on_http_call_response"} <= exports
    assert {i.module for i in module.imports} == {"env"}
    assert f"wrote {out}" in capsys.readouterr().out


def test_build_can_emit_wat(tmp_path: Path) -> None:
    out = tmp_path / "plugin.wat"
    assert run_build(str(PLUGIN), "--wat", "-o", str(out)) == 0
    text = out.read_text(encoding="utf-8")
    assert text.startswith("(module")
    assert len(wasmtime.wat2wasm(text)) > 1000


def test_compile_error_is_one_usage_error_line(tmp_path: Path) -> None:
    source = tmp_path / "bad.py"
    source.write_text("def f(x):\n    return x\n", encoding="utf-8")
    with pytest.raises(UsageError) as info:
        run_build(str(source))
    assert str(info.value) == f"{source}:1:7: annotate parameter x, e.g. x: int"
    assert not (tmp_path / "bad.wasm").exists()


def test_missing_source_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        run_build(str(tmp_path / "absent.py"))
