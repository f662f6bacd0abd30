"""Conformance: WASI through real toolchains — ``wasi`` (C, wasi-libc), ``all_wasi`` (WAT, all 45
functions with preview1 types) and ``emscripten_like`` (WAT, Emscripten's import shape).

stdout is an INFO plugin log and stderr an ERROR one (trailing newline stripped); the
environment holds only the VM's configured variables; clocks and random bytes are real; the
errno of every function matches cpp-host; the same functions answer under
``wasi_snapshot_preview1`` and ``wasi_unstable``.
"""

from __future__ import annotations

import time

import pytest

from tests._tools import plugin_path
from tests.wasmhost._conformance import ConformanceHost

ALL_WASI_EXPECTED = {
    "fd_write_stdout": 0,
    "fd_write_stderr": 0,
    "fd_write_bad_fd": 8,
    "fd_read_stdin": 52,
    "fd_fdstat_get_stdout": 0,
    "fd_prestat_get_3": 8,
    "fd_tell_stdout": 0,
    "fd_renumber_stdout_stderr": 58,
    "path_open": 44,
    "clock_time_get_realtime": 0,
    "clock_time_get_monotonic": 0,
    "clock_time_get_process_cputime": 58,
    "clock_res_get_monotonic": 0,
    "random_get_16": 0,
    "random_get_0": 0,
    "random_get_70000": 28,
    "environ_sizes_get": 0,
    "args_sizes_get": 0,
    "sched_yield": 0,
    "poll_oneoff_zero": 0,
    "sock_shutdown": 58,
}


def test_wasi_libc_plugin_stdio_environment_clocks_and_random() -> None:
    with ConformanceHost(
        plugin_path("wasi"), env={"WASMESH_TEST_ENV": "from-vm-config", "OTHER": "x"}
    ) as host:
        assert host.startup_logs == [
            {"level": "info", "message": "wasi: stdout from vm_start"},
            {"level": "error", "message": "wasi: stderr from vm_start"},
        ]
        before_wall, before_mono = time.time_ns(), time.monotonic_ns()
        result = host.request()
        assert result["logs"] == [{"level": "info", "message": "wasi: stdout ctx=2"}]
        headers = dict(result["response"]["headers"])
        assert headers["x-wasi-env"] == "from-vm-config"
        assert headers["x-wasi-env-count"] == "2"
        assert before_wall <= int(headers["x-wasi-realtime-ns"]) <= time.time_ns()
        assert before_mono <= int(headers["x-wasi-monotonic-ns"]) <= time.monotonic_ns()
        assert len(headers["x-wasi-entropy"]) == 32 and len(headers["x-wasi-random"]) == 8
        assert dict(host.request()["response"]["headers"])["x-wasi-entropy"] != headers["x-wasi-entropy"]


def test_no_host_environment_leaks_into_the_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASMESH_TEST_ENV", "from-the-host-process")
    with ConformanceHost(plugin_path("wasi")) as host:
        headers = dict(host.request()["response"]["headers"])
        assert (headers["x-wasi-env"], headers["x-wasi-env-count"]) == ("<unset>", "0")


def test_every_wasi_function_links_and_answers_like_cpp_host() -> None:
    with ConformanceHost(plugin_path("all_wasi")) as host:
        lines = [entry["message"] for entry in host.startup_logs]
        assert lines[0] == "all_wasi: stdout line"
        assert {"level": "error", "message": "all_wasi: stderr line"} in host.startup_logs
        results = {
            line.removeprefix("all_wasi: ").split("=")[0]: int(line.split("=")[1])
            for line in lines
            if "=" in line
        }
        assert results == ALL_WASI_EXPECTED


def test_emscripten_shape_imports_and_both_wasi_namespaces() -> None:
    with ConformanceHost(plugin_path("emscripten_like")) as host:
        assert host.startup_logs == [{"level": "info", "message": "emscripten_like: initialized"}]
        result = host.request()
        assert result["logs"] == [{"level": "error", "message": "emscripten_like: stderr via wasi_unstable"}]
        assert result["upstream_request"]["headers"][-4:] == [
            ["x-pthread-equal", "1"], ["x-pthread-unequal", "0"], ["x-clock-snapshot", "ok"], ["x-clock-unstable", "ok"],
        ]  # fmt: skip
        assert result["trap"] is None
