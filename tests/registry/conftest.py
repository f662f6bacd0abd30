from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.testing import RunningRegistry, running_registry

from ._tools import DATA, build_wat


@pytest.fixture(scope="session")
def wasm_module() -> bytes:
    return build_wat((DATA / "echo_plugin.wat").read_text())


@pytest.fixture
def other_module() -> bytes:
    return build_wat('(module (func (export "proxy_abi_version_0_2_1")) (memory (export "memory") 2))')


@pytest.fixture
def live_registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    with running_registry(tmp_path / "data") as running:
        yield running
