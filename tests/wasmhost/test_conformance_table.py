"""The coverage table in ``docs/conformance.md`` stays honest.

Every host function the host links (``wasmhost._registry.HOST_FUNCTIONS``) and every callback
of the ABI (plus any callback a conformance plugin exports) has a row; every row names at
least one test; every named test file, test function and differential case exists; and the
host-function sections name nothing the host does not provide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from wasmhost import Runtime  # noqa: F401 - importing the package registers every host function
from wasmhost._registry import HOST_FUNCTIONS, WASI_MODULES

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "docs" / "conformance.md"
PLUGIN_SOURCES = ROOT / "tests" / "data" / "plugins"

#: The callbacks (module exports) of proxy-wasm ABI 0.1.0-0.2.1 and the entry points hosts call.
ABI_CALLBACKS = frozenset(
    """
    _initialize main __main_void _start malloc proxy_on_memory_allocate
    proxy_abi_version_0_1_0 proxy_abi_version_0_2_0 proxy_abi_version_0_2_1
    proxy_on_context_create proxy_on_vm_start proxy_validate_configuration proxy_on_configure
    proxy_on_tick proxy_on_queue_ready proxy_on_new_connection proxy_on_downstream_data
    proxy_on_upstream_data proxy_on_downstream_connection_close proxy_on_upstream_connection_close
    proxy_on_request_headers proxy_on_request_body proxy_on_request_trailers proxy_on_request_metadata
    proxy_on_response_headers proxy_on_response_body proxy_on_response_trailers proxy_on_response_metadata
    proxy_on_http_call_response proxy_on_grpc_receive_initial_metadata proxy_on_grpc_receive
    proxy_on_grpc_receive_trailing_metadata proxy_on_grpc_close proxy_on_foreign_function
    proxy_on_log proxy_on_done proxy_on_delete
    """.split()
)
#: the sections whose tables map names to tests (the others describe, they do not cover)
COVERAGE_SECTIONS = ("Host functions", "WASI", "Callbacks", "Edge cases")
_CODE = re.compile(r"`([^`]+)`")
_REFERENCE = re.compile(r"^(tests/[\w/]+\.py)(?:::(\w+)(?:\[([\w.-]+)\])?)?$")


@dataclass(frozen=True)
class Row:
    section: str
    names: tuple[str, ...]
    references: tuple[str, ...]


def table_rows() -> list[Row]:
    rows: list[Row] = []
    section = ""
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("| ") and not line.startswith("| ---") and section.startswith(COVERAGE_SECTIONS):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            references = tuple(code for code in _CODE.findall(cells[-1]) if code.startswith("tests/"))
            names = tuple(code for code in _CODE.findall(cells[0]) if not code.startswith("tests/"))
            if references or names:
                rows.append(Row(section, names, references))
    return rows


def covered(section_prefix: str) -> set[str]:
    return {name for row in table_rows() if row.section.startswith(section_prefix) for name in row.names}


def exported_callbacks() -> set[str]:
    """Callbacks the conformance plugins export, read from their sources."""
    found: set[str] = set()
    for source in PLUGIN_SOURCES.rglob("*"):
        if source.suffix == ".c":
            found |= set(re.findall(r"PW_EXPORT\((\w+)\)", source.read_text(encoding="utf-8")))
        elif source.suffix == ".wat":
            found |= set(re.findall(r'\(export "(\w+)"', source.read_text(encoding="utf-8")))
    return {name for name in found if name.startswith(("proxy_on_", "proxy_validate", "proxy_abi_"))}


def test_every_env_host_function_has_a_row() -> None:
    env = {name for module, name in HOST_FUNCTIONS if module == "env"}
    assert sorted(env - covered("Host functions")) == []
    assert sorted(covered("Host functions") - env) == []  # no row for a function the host lacks


def test_every_wasi_function_has_a_row() -> None:
    wasi = {name for module, name in HOST_FUNCTIONS if module in WASI_MODULES}
    assert sorted(wasi - covered("WASI")) == []
    assert sorted(covered("WASI") - wasi) == []


def test_every_callback_has_a_row() -> None:
    callbacks = covered("Callbacks")
    assert sorted(ABI_CALLBACKS - callbacks) == []
    assert sorted(exported_callbacks() - callbacks) == []


def test_every_row_names_a_test() -> None:
    assert [row.names for row in table_rows() if not row.references] == []


@pytest.mark.parametrize("reference", sorted({ref for row in table_rows() for ref in row.references}))
def test_every_referenced_test_exists(reference: str) -> None:
    match = _REFERENCE.match(reference)
    assert match is not None, f"{reference!r} is not tests/...py[::test[ [case] ]]"
    path, function, case = match.groups()
    source = (ROOT / path).read_text(encoding="utf-8")
    if function:
        assert re.search(rf"^def {function}\(", source, re.MULTILINE), f"{path} has no {function}"
    if case:
        assert f'"{case}"' in source, f"{path} has no case {case!r}"
