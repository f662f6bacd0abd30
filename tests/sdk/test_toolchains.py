"""Toolchain builders and the conformance plugin tree they build.

Every plugin under tests/data/plugins is compiled by the real toolchain (clang wasm32-wasi,
asc + @solo-io/proxy-runtime, wasmtime's WAT assembler) and then inspected with wasmtime: the
ABI marker, allocator, callbacks and the exact signature of every proxy-wasm import. Together
the plugins must import every host function and export every callback of ABI 0.2.1/0.2.0/0.1.0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime

from sdk.toolchains import (
    BuildResult,
    ToolchainError,
    ToolchainMissing,
    build_assemblyscript,
    build_c,
    build_tree,
    build_wat,
    discover_plugins,
    ensure_npm_workdir,
)

REPO = Path(__file__).resolve().parents[2]
PLUGINS_SRC = REPO / "tests" / "data" / "plugins"
NPM_WORKDIR = REPO / "build" / "npm"
ENGINE = wasmtime.Engine()

I32, I64 = "i32", "i64"
ABI_MARKERS = {"proxy_abi_version_0_1_0", "proxy_abi_version_0_2_0", "proxy_abi_version_0_2_1"}
ALLOCATORS = {"malloc", "proxy_on_memory_allocate"}


def _sig(
    n_params: int, *, i64_at: int | None = None, result: bool = True
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    params = tuple(I64 if i == i64_at else I32 for i in range(n_params))
    return params, ((I32,) if result else ())


# Host functions (module "env") with their wasm types, per the ABI reference tables.
HOST_FUNCTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "proxy_log": _sig(3),
    "proxy_get_log_level": _sig(1),
    "proxy_get_current_time_nanoseconds": _sig(1),
    "proxy_set_tick_period_milliseconds": _sig(1),
    "proxy_done": _sig(0),
    "proxy_set_effective_context": _sig(1),
    "proxy_call_foreign_function": _sig(6),
    "proxy_get_buffer_bytes": _sig(5),
    "proxy_get_buffer_status": _sig(3),
    "proxy_set_buffer_bytes": _sig(5),
    "proxy_get_header_map_size": _sig(2),
    "proxy_get_header_map_pairs": _sig(3),
    "proxy_set_header_map_pairs": _sig(3),
    "proxy_get_header_map_value": _sig(5),
    "proxy_add_header_map_value": _sig(5),
    "proxy_replace_header_map_value": _sig(5),
    "proxy_remove_header_map_value": _sig(3),
    "proxy_continue_stream": _sig(1),
    "proxy_close_stream": _sig(1),
    "proxy_send_local_response": _sig(8),
    "proxy_get_status": _sig(3),
    "proxy_http_call": _sig(10),
    "proxy_grpc_call": _sig(12),
    "proxy_grpc_stream": _sig(9),
    "proxy_grpc_send": _sig(4),
    "proxy_grpc_cancel": _sig(1),
    "proxy_grpc_close": _sig(1),
    "proxy_get_shared_data": _sig(5),
    "proxy_set_shared_data": _sig(5),
    "proxy_register_shared_queue": _sig(3),
    "proxy_resolve_shared_queue": _sig(5),
    "proxy_enqueue_shared_queue": _sig(3),
    "proxy_dequeue_shared_queue": _sig(3),
    "proxy_define_metric": _sig(4),
    "proxy_increment_metric": _sig(2, i64_at=1),
    "proxy_record_metric": _sig(2, i64_at=1),
    "proxy_get_metric": _sig(2),
    "proxy_get_property": _sig(4),
    "proxy_set_property": _sig(4),
    # ABI 0.1.0 only
    "proxy_get_configuration": _sig(2),
    "proxy_continue_request": _sig(0),
    "proxy_continue_response": _sig(0),
    "proxy_clear_route_cache": _sig(0),
}
ENV_EXTRAS = {
    "emscripten_notify_memory_growth": ((I32,), ()),
    "pthread_equal": ((I32, I32), (I32,)),
}

# Callbacks (exports) of ABI 0.2.x with their wasm types; header callbacks differ in 0.1.0.
CALLBACKS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "proxy_on_context_create": _sig(2, result=False),
    "proxy_on_vm_start": _sig(2),
    "proxy_validate_configuration": _sig(2),
    "proxy_on_configure": _sig(2),
    "proxy_on_tick": _sig(1, result=False),
    "proxy_on_queue_ready": _sig(2, result=False),
    "proxy_on_new_connection": _sig(1),
    "proxy_on_downstream_data": _sig(3),
    "proxy_on_upstream_data": _sig(3),
    "proxy_on_downstream_connection_close": _sig(2, result=False),
    "proxy_on_upstream_connection_close": _sig(2, result=False),
    "proxy_on_request_headers": _sig(3),
    "proxy_on_response_headers": _sig(3),
    "proxy_on_request_body": _sig(3),
    "proxy_on_response_body": _sig(3),
    "proxy_on_request_trailers": _sig(2),
    "proxy_on_response_trailers": _sig(2),
    "proxy_on_request_metadata": _sig(2),
    "proxy_on_response_metadata": _sig(2),
    "proxy_on_http_call_response": _sig(5, result=False),
    "proxy_on_grpc_receive_initial_metadata": _sig(3, result=False),
    "proxy_on_grpc_receive": _sig(3, result=False),
    "proxy_on_grpc_receive_trailing_metadata": _sig(3, result=False),
    "proxy_on_grpc_close": _sig(3, result=False),
    "proxy_on_foreign_function": _sig(3, result=False),
    "proxy_on_done": _sig(1),
    "proxy_on_log": _sig(1, result=False),
    "proxy_on_delete": _sig(1, result=False),
}
HEADER_CALLBACKS_0_1_0 = {"proxy_on_request_headers": _sig(2), "proxy_on_response_headers": _sig(2)}

# The 45 WASI preview1 functions of the reference table, with their exact types.
WASI_FUNCTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    name: (tuple(params.split()), ((I32,) if name != "proc_exit" else ()))
    for name, params in {
        "args_get": "i32 i32",
        "args_sizes_get": "i32 i32",
        "environ_get": "i32 i32",
        "environ_sizes_get": "i32 i32",
        "clock_res_get": "i32 i32",
        "clock_time_get": "i32 i64 i32",
        "fd_advise": "i32 i64 i64 i32",
        "fd_allocate": "i32 i64 i64",
        "fd_close": "i32",
        "fd_datasync": "i32",
        "fd_fdstat_get": "i32 i32",
        "fd_fdstat_set_flags": "i32 i32",
        "fd_fdstat_set_rights": "i32 i64 i64",
        "fd_filestat_get": "i32 i32",
        "fd_filestat_set_size": "i32 i64",
        "fd_filestat_set_times": "i32 i64 i64 i32",
        "fd_pread": "i32 i32 i32 i64 i32",
        "fd_prestat_get": "i32 i32",
        "fd_prestat_dir_name": "i32 i32 i32",
        "fd_pwrite": "i32 i32 i32 i64 i32",
        "fd_read": "i32 i32 i32 i32",
        "fd_readdir": "i32 i32 i32 i64 i32",
        "fd_renumber": "i32 i32",
        "fd_seek": "i32 i64 i32 i32",
        "fd_sync": "i32",
        "fd_tell": "i32 i32",
        "fd_write": "i32 i32 i32 i32",
        "path_create_directory": "i32 i32 i32",
        "path_filestat_get": "i32 i32 i32 i32 i32",
        "path_filestat_set_times": "i32 i32 i32 i32 i64 i64 i32",
        "path_link": "i32 i32 i32 i32 i32 i32 i32",
        "path_open": "i32 i32 i32 i32 i32 i64 i64 i32 i32",
        "path_readlink": "i32 i32 i32 i32 i32 i32",
        "path_remove_directory": "i32 i32 i32",
        "path_rename": "i32 i32 i32 i32 i32 i32",
        "path_symlink": "i32 i32 i32 i32 i32",
        "path_unlink_file": "i32 i32 i32",
        "poll_oneoff": "i32 i32 i32 i32",
        "proc_exit": "i32",
        "random_get": "i32 i32",
        "sched_yield": "",
        "sock_accept": "i32 i32 i32",
        "sock_recv": "i32 i32 i32 i32 i32 i32",
        "sock_send": "i32 i32 i32 i32 i32",
        "sock_shutdown": "i32 i32",
    }.items()
}
WASI_MODULES = {"wasi_snapshot_preview1", "wasi_unstable"}

C_CORE = {"_initialize"}
AS_CORE = {
    "proxy_on_context_create",
    "proxy_on_configure",
    "proxy_on_request_headers",
    "proxy_on_response_headers",
}

GRPC_CALLBACKS = {
    "proxy_on_grpc_receive_initial_metadata",
    "proxy_on_grpc_receive",
    "proxy_on_grpc_receive_trailing_metadata",
    "proxy_on_grpc_close",
}
GRPC_HOSTCALLS = {
    "proxy_grpc_call", "proxy_grpc_stream", "proxy_grpc_send", "proxy_grpc_cancel", "proxy_grpc_close", "proxy_get_status",
}

# name → (marker or None, allocators that must be exported, exports required, env imports required)
EXPECTED: dict[str, tuple[str | None, set[str], set[str], set[str]]] = {
    "headers": (
        "proxy_abi_version_0_2_1",
        {"malloc"},
        C_CORE
        | {
            "proxy_on_configure",
            "proxy_on_request_headers",
            "proxy_on_request_trailers",
            "proxy_on_response_headers",
            "proxy_on_response_trailers",
        },
        {
            "proxy_get_header_map_pairs",
            "proxy_set_header_map_pairs",
            "proxy_get_header_map_value",
            "proxy_add_header_map_value",
            "proxy_replace_header_map_value",
            "proxy_remove_header_map_value",
            "proxy_get_header_map_size",
            "proxy_get_buffer_bytes",
        },
    ),
    "body": (
        "proxy_abi_version_0_2_1",
        {"malloc"},
        C_CORE | {"proxy_on_request_body", "proxy_on_response_body"},
        {"proxy_get_buffer_bytes", "proxy_get_buffer_status", "proxy_set_buffer_bytes"},
    ),
    "late_headers": (
        "proxy_abi_version_0_2_1",
        {"malloc"},
        C_CORE
        | {
            "proxy_on_request_headers",
            "proxy_on_request_body",
            "proxy_on_request_trailers",
            "proxy_on_response_headers",
            "proxy_on_response_body",
            "proxy_on_tick",
            "proxy_on_log",
            "proxy_on_delete",
        },
        {
            "proxy_get_header_map_pairs",
            "proxy_get_header_map_value",
            "proxy_add_header_map_value",
            "proxy_replace_header_map_value",
            "proxy_remove_header_map_value",
            "proxy_get_header_map_size",
            "proxy_set_effective_context",
            "proxy_continue_stream",
            "proxy_set_tick_period_milliseconds",
        },
    ),
    "buffer_all": (
        "proxy_abi_version_0_2_1",
        {"malloc"},
        C_CORE
        | {
            "proxy_on_configure",
            "proxy_on_request_headers",
            "proxy_on_request_body",
            "proxy_on_response_headers",
            "proxy_on_response_body",
        },
        {"proxy_get_buffer_bytes", "proxy_log"},
    ),
    "local_reply": (
        "proxy_abi_version_0_2_1",
        {"malloc"},
        C_CORE | {"proxy_on_request_headers"},
        {"proxy_send_local_response", "proxy_get_header_map_value"},
    ),
    "http_call": (
        "proxy_abi_version_0_2_1",
        {"malloc"},
        C_CORE | {"proxy_on_http_call_response"},
        {
            "proxy_http_call",
            "proxy_get_status",
            "proxy_set_effective_context",
            "proxy_continue_stream",
            "proxy_send_local_response",
        },
    ),
    "grpc": ("proxy_abi_version_0_2_1", {"malloc"}, C_CORE | GRPC_CALLBACKS, GRPC_HOSTCALLS),
    "grpc_lifecycle": (
        "proxy_abi_version_0_2_1",
        {"malloc"},
        C_CORE | GRPC_CALLBACKS,
        GRPC_HOSTCALLS | {"proxy_set_effective_context", "proxy_continue_stream"},
    ),
    "shared": (
        "proxy_abi_version_0_2_1",
        {"malloc"},
        C_CORE | {"proxy_on_queue_ready"},
        {
            "proxy_get_shared_data",
            "proxy_set_shared_data",
            "proxy_register_shared_queue",
            "proxy_resolve_shared_queue",
            "proxy_enqueue_shared_queue",
            "proxy_dequeue_shared_queue",
        },
    ),
    "metrics": (
        "proxy_abi_version_0_2_1",
        {"malloc"},
        C_CORE | {"proxy_on_log"},
        {"proxy_define_metric", "proxy_increment_metric", "proxy_record_metric", "proxy_get_metric"},
    ),
    "properties": (
        "proxy_abi_version_0_2_1",
        {"malloc"},
        C_CORE,
        {"proxy_get_property", "proxy_set_property"},
    ),
    "tick": (
        "proxy_abi_version_0_2_1",
        {"malloc"},
        C_CORE | {"proxy_on_tick"},
        {"proxy_set_tick_period_milliseconds", "proxy_get_current_time_nanoseconds"},
    ),
    "foreign": (
        "proxy_abi_version_0_2_1",
        {"malloc"},
        C_CORE | {"proxy_on_foreign_function"},
        {"proxy_call_foreign_function"},
    ),
    "lifecycle": (
        "proxy_abi_version_0_2_1",
        {"malloc", "proxy_on_memory_allocate"},
        C_CORE
        | {name for name in CALLBACKS if name.startswith(("proxy_on_request", "proxy_on_response"))}
        | {
            "proxy_on_context_create",
            "proxy_on_vm_start",
            "proxy_validate_configuration",
            "proxy_on_configure",
            "proxy_on_log",
            "proxy_on_done",
            "proxy_on_delete",
            "proxy_on_tick",
        },
        {"proxy_done"},
    ),
    "wasi": ("proxy_abi_version_0_2_1", {"malloc"}, C_CORE | {"proxy_on_vm_start"}, set()),
    "log_level": ("proxy_abi_version_0_2_1", {"malloc"}, C_CORE, {"proxy_get_log_level", "proxy_log"}),
    "tcp": (
        "proxy_abi_version_0_2_1",
        {"malloc"},
        C_CORE
        | {
            "proxy_on_new_connection",
            "proxy_on_downstream_data",
            "proxy_on_upstream_data",
            "proxy_on_downstream_connection_close",
            "proxy_on_upstream_connection_close",
        },
        {"proxy_close_stream"},
    ),
    "stream_control": (
        "proxy_abi_version_0_2_1",
        {"malloc"},
        C_CORE | {"proxy_on_tick"},
        {"proxy_continue_stream", "proxy_close_stream", "proxy_set_effective_context"},
    ),
    "bench_6hostcalls": (
        "proxy_abi_version_0_2_1",
        {"malloc"},
        C_CORE | {"proxy_on_request_headers"},
        {
            "proxy_get_header_map_value",
            "proxy_add_header_map_value",
            "proxy_get_property",
            "proxy_increment_metric",
            "proxy_replace_header_map_value",
            "proxy_log",
        },
    ),
    "abi010_headers": (
        "proxy_abi_version_0_1_0",
        {"malloc"},
        C_CORE | {"proxy_on_tick"},
        {
            "proxy_get_configuration",
            "proxy_continue_request",
            "proxy_continue_response",
            "proxy_clear_route_cache",
        },
    ),
    "abi020_headers": (
        "proxy_abi_version_0_2_0",
        {"malloc"},
        C_CORE | {"proxy_on_request_headers"},
        {"proxy_add_header_map_value"},
    ),
    # @solo-io/proxy-runtime 0.1.8 emits the 0.2.0 marker and imports proc_exit from wasi_unstable.
    "as_add_header": ("proxy_abi_version_0_2_0", {"malloc"}, AS_CORE, {"proxy_get_buffer_bytes"}),
    "as_http_call": (
        "proxy_abi_version_0_2_0",
        {"malloc"},
        AS_CORE | {"proxy_on_http_call_response"},
        {"proxy_http_call", "proxy_send_local_response", "proxy_continue_stream"},
    ),
    "as_deny": ("proxy_abi_version_0_2_0", {"malloc"}, AS_CORE, {"proxy_send_local_response"}),
    "bad_pointers": ("proxy_abi_version_0_2_1", {"malloc"}, {"proxy_on_request_headers"}, {"proxy_log"}),
    "trap": ("proxy_abi_version_0_2_1", {"malloc"}, {"proxy_on_request_headers"}, {"proxy_log"}),
    "infinite_loop": ("proxy_abi_version_0_2_1", {"malloc"}, {"proxy_on_request_headers"}, {"proxy_log"}),
    "memory_bomb": ("proxy_abi_version_0_2_1", {"malloc"}, {"proxy_on_request_headers"}, {"proxy_log"}),
    "no_abi_marker": (None, {"malloc"}, {"proxy_on_request_headers"}, set()),
    "no_allocator": ("proxy_abi_version_0_2_1", set(), {"proxy_on_request_headers"}, set()),
    "minimal": ("proxy_abi_version_0_2_1", {"malloc"}, set(), set()),
    "go_style_allocator": (
        "proxy_abi_version_0_2_0",
        {"proxy_on_memory_allocate"},
        {"_start"},
        {"proxy_get_header_map_value"},
    ),
    "emscripten_like": (
        "proxy_abi_version_0_2_1",
        {"malloc"},
        {"_initialize"},
        {"emscripten_notify_memory_growth", "pthread_equal"},
    ),
    "all_wasi": ("proxy_abi_version_0_2_1", {"malloc"}, {"proxy_on_vm_start"}, {"proxy_log"}),
}


def _tool_missing(reason: str) -> None:
    """Skip when a toolchain is missing, but fail under CI (CI must never pass by skipping)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a missing toolchain fails the run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuildResult]:
    """The whole plugin tree, built once per session into a fresh directory."""
    out = tmp_path_factory.mktemp("plugins")
    try:
        results = build_tree(out, PLUGINS_SRC, NPM_WORKDIR)
    except ToolchainMissing as exc:
        _tool_missing(str(exc))
    return {r.name: r for r in results}


def _types(item: wasmtime.FuncType) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(str(p) for p in item.params), tuple(str(r) for r in item.results)


def _inspect(path: Path) -> tuple[dict[str, wasmtime.ExternType], dict[tuple[str, str], wasmtime.ExternType]]:
    module = wasmtime.Module.from_file(ENGINE, str(path))
    exports = {e.name: e.type for e in module.exports}
    imports = {(i.module, i.name): i.type for i in module.imports}
    return exports, imports


def test_expected_table_matches_the_source_tree() -> None:
    names = {source.stem for _, source in discover_plugins(PLUGINS_SRC)}
    assert names == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_plugin_builds_with_intended_abi_surface(built: dict[str, BuildResult], name: str) -> None:
    marker, allocators, required_exports, required_env = EXPECTED[name]
    module_path = built[name].module
    assert wasmtime.Module.validate(ENGINE, module_path.read_bytes()) is None
    exports, imports = _inspect(module_path)

    assert set(exports) & ABI_MARKERS == ({marker} if marker else set())
    assert set(exports) & ALLOCATORS == allocators
    assert required_exports <= set(exports)
    env_imports = {n for (m, n) in imports if m == "env"}
    assert required_env <= env_imports

    header_sigs = HEADER_CALLBACKS_0_1_0 if marker == "proxy_abi_version_0_1_0" else {}
    for export_name, export_type in exports.items():
        expected = header_sigs.get(export_name) or CALLBACKS.get(export_name)
        if expected is not None:
            assert isinstance(export_type, wasmtime.FuncType)
            assert _types(export_type) == expected, export_name
    for (module_name, import_name), import_type in imports.items():
        assert isinstance(import_type, wasmtime.FuncType), (module_name, import_name)
        if module_name == "env":
            known = HOST_FUNCTIONS.get(import_name) or ENV_EXTRAS.get(import_name)
            assert known is not None, f"{name} imports unknown env.{import_name}"
        else:
            assert module_name in WASI_MODULES, f"{name} imports from {module_name}"
            known = WASI_FUNCTIONS.get(import_name)
            assert known is not None, f"{name} imports unknown {module_name}.{import_name}"
        assert _types(import_type) == known, f"{name}: {module_name}.{import_name}"


def test_plugins_together_cover_every_host_function_and_callback(built: dict[str, BuildResult]) -> None:
    imported: set[str] = set()
    exported: set[str] = set()
    for result in built.values():
        exports, imports = _inspect(result.module)
        imported |= {n for (m, n) in imports if m == "env"}
        exported |= set(exports)
    assert set(HOST_FUNCTIONS) - imported == set()
    assert set(CALLBACKS) - exported == set()
    assert ABI_MARKERS <= exported


def test_all_wasi_imports_all_45_wasi_functions(built: dict[str, BuildResult]) -> None:
    _, imports = _inspect(built["all_wasi"].module)
    wasi = {n for (m, n) in imports if m == "wasi_snapshot_preview1"}
    assert len(WASI_FUNCTIONS) == 45
    assert wasi == set(WASI_FUNCTIONS)


def test_emscripten_like_uses_both_wasi_namespaces(built: dict[str, BuildResult]) -> None:
    _, imports = _inspect(built["emscripten_like"].module)
    assert ("wasi_snapshot_preview1", "fd_write") in imports
    assert ("wasi_unstable", "fd_write") in imports
    assert ("wasi_unstable", "clock_time_get") in imports


def test_no_allocator_and_no_marker_really_lack_them(built: dict[str, BuildResult]) -> None:
    exports, _ = _inspect(built["no_allocator"].module)
    assert not set(exports) & ALLOCATORS
    exports, _ = _inspect(built["no_abi_marker"].module)
    assert not set(exports) & ABI_MARKERS


# ---- builders: errors and incrementality ----------------------------------------------------------


def _require_clang() -> None:
    from sdk.toolchains._c import find_clang

    try:
        find_clang()
    except ToolchainMissing as exc:
        _tool_missing(str(exc))


def test_broken_c_source_reports_file_and_first_error(tmp_path: Path) -> None:
    _require_clang()
    src = tmp_path / "broken.c"
    src.write_text("int f(void) { return undefined_name; }\n")
    with pytest.raises(ToolchainError) as info:
        build_c(src, tmp_path / "broken.wasm")
    message = str(info.value)
    assert str(src) in message
    assert "undefined_name" in message
    assert "error" in message
    assert not (tmp_path / "broken.wasm").exists()


def test_broken_wat_source_reports_file_and_error(tmp_path: Path) -> None:
    src = tmp_path / "broken.wat"
    src.write_text('(module (func (export "f") (result i32) (i32.const)))\n')
    with pytest.raises(ToolchainError) as info:
        build_wat(src, tmp_path / "broken.wasm")
    assert str(src) in str(info.value)
    assert "wat2wasm" in str(info.value)


def test_broken_assemblyscript_source_reports_file_and_error(tmp_path: Path) -> None:
    try:
        ensure_npm_workdir(NPM_WORKDIR)
    except ToolchainMissing as exc:
        _tool_missing(str(exc))
    src = tmp_path / "broken.ts"
    src.write_text(
        'export * from "@solo-io/proxy-runtime/proxy";\n'
        "export function f(): i32 { return not_defined_anywhere; }\n"
    )
    with pytest.raises(ToolchainError) as info:
        build_assemblyscript(src, tmp_path / "broken.wasm", NPM_WORKDIR)
    message = str(info.value)
    assert str(src) in message
    assert "not_defined_anywhere" in message


def test_npm_workdir_is_not_reinstalled_when_versions_match(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        ensure_npm_workdir(NPM_WORKDIR)
    except ToolchainMissing as exc:
        _tool_missing(str(exc))

    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError("npm must not run when the pinned versions are installed")

    monkeypatch.setattr("sdk.toolchains._assemblyscript.subprocess.run", no_subprocess)
    assert ensure_npm_workdir(NPM_WORKDIR) == NPM_WORKDIR.resolve()


def _small_tree(root: Path) -> Path:
    (root / "wat").mkdir(parents=True)
    (root / "c").mkdir()
    (root / "wat" / "one.wat").write_text('(module (func (export "proxy_abi_version_0_2_1")))\n')
    (root / "c" / "two.c").write_text(
        '__attribute__((export_name("proxy_abi_version_0_2_1"))) void marker(void) {}\n'
    )
    return root


def test_build_tree_is_incremental(tmp_path: Path) -> None:
    _require_clang()
    src = _small_tree(tmp_path / "src")
    out = tmp_path / "out"
    first = {r.name: r.rebuilt for r in build_tree(out, src, tmp_path / "npm")}
    assert first == {"one": True, "two": True}
    second = {r.name: r.rebuilt for r in build_tree(out, src, tmp_path / "npm")}
    assert second == {"one": False, "two": False}
    (src / "wat" / "one.wat").write_text('(module (func (export "proxy_abi_version_0_2_0")))\n')
    third = {r.name: r.rebuilt for r in build_tree(out, src, tmp_path / "npm")}
    assert third == {"one": True, "two": False}
    exports, _ = _inspect(out / "one.wasm")
    assert "proxy_abi_version_0_2_0" in exports
    (out / "two.wasm").unlink()
    fourth = {r.name: r.rebuilt for r in build_tree(out, src, tmp_path / "npm")}
    assert fourth == {"one": False, "two": True}


def test_build_tree_rejects_duplicate_names(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "wat").mkdir(parents=True)
    (src / "c").mkdir()
    (src / "wat" / "same.wat").write_text("(module)\n")
    (src / "c" / "same.c").write_text("int x;\n")
    with pytest.raises(ToolchainError, match="same"):
        build_tree(tmp_path / "out", src, tmp_path / "npm")


def test_build_tree_reports_every_failure_but_builds_the_rest(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "wat").mkdir(parents=True)
    (src / "wat" / "good.wat").write_text("(module)\n")
    (src / "wat" / "bad.wat").write_text("(module (oops))\n")
    with pytest.raises(ToolchainError) as info:
        build_tree(tmp_path / "out", src, tmp_path / "npm")
    assert "1 of 2 plugins failed" in str(info.value)
    assert str(src / "wat" / "bad.wat") in str(info.value)
    assert (tmp_path / "out" / "good.wasm").exists()


def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sdk.toolchains", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_cli_builds_a_tree(tmp_path: Path) -> None:
    _require_clang()
    src = _small_tree(tmp_path / "src")
    result = _cli(["build-tree", "--src", str(src), "--out", str(tmp_path / "out")])
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "one.wasm").exists()
    assert (tmp_path / "out" / "two.wasm").exists()
    assert "2 plugins" in result.stderr


def test_cli_exits_2_with_a_clear_message_when_a_toolchain_is_missing(tmp_path: Path) -> None:
    src = _small_tree(tmp_path / "src")
    env = {k: v for k, v in os.environ.items() if k != "PATH"}
    env["PATH"] = str(tmp_path / "empty-bin")
    result = _cli(["build-tree", "--src", str(src), "--out", str(tmp_path / "out")], env=env)
    assert result.returncode == 2
    assert "C toolchain missing" in result.stderr
    assert not (tmp_path / "out" / "one.wasm").exists()


def test_cli_exits_1_naming_the_broken_source(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "wat").mkdir(parents=True)
    (src / "wat" / "bad.wat").write_text("(module (oops))\n")
    result = _cli(["build-tree", "--src", str(src), "--out", str(tmp_path / "out")])
    assert result.returncode == 1
    assert "bad.wat" in result.stderr
