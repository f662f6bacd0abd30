"""WASI preview1 through real instances: every function, both module names, bad pointers,
restricted windows, proc_exit, and the C ``wasi`` conformance plugin built by clang.

Test modules are WAT whose imports take their types from wasmtime's own WASI linker, so a
wrong signature in the host fails to link instead of passing silently.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import wasmtime

from tests._tools import plugin_path
from wasmhost import (
    Environment,
    Limits,
    LogLevel,
    Plugin,
    PluginSpec,
    PluginStartError,
    Runtime,
    SendLocalReply,
)

PREVIEW1 = "wasi_snapshot_preview1"
RESULT = 0x100  # i32 results, one slot per call
OUT = 0x400  # out-parameters; prefilled with 0xAA so every write is visible
DATA = 0x1000  # inputs laid out by the test
BAD = 0x1FFFE  # two bytes before the end of the 2-page memory: any 4- or 8-byte access faults
PREFILL = b"\xaa" * 0x400
NOW_NS = 1_700_000_000_123_456_789
MONOTONIC_NS = 42_000_000_007

ALL_PREVIEW1 = (
    "args_get args_sizes_get environ_get environ_sizes_get clock_res_get clock_time_get fd_advise "
    "fd_allocate fd_close fd_datasync fd_fdstat_get fd_fdstat_set_flags fd_fdstat_set_rights "
    "fd_filestat_get fd_filestat_set_size fd_filestat_set_times fd_pread fd_prestat_get "
    "fd_prestat_dir_name fd_pwrite fd_read fd_readdir fd_renumber fd_seek fd_sync fd_tell fd_write "
    "path_create_directory path_filestat_get path_filestat_set_times path_link path_open path_readlink "
    "path_remove_directory path_rename path_symlink path_unlink_file poll_oneoff proc_exit proc_raise "
    "sched_yield random_get sock_accept sock_recv sock_send sock_shutdown"
).split()


def _reference_signatures() -> dict[str, tuple[list[str], list[str]]]:
    """preview1 signatures as wasmtime's own WASI implementation declares them."""
    engine = wasmtime.Engine()
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    out = {}
    for name in ALL_PREVIEW1:
        item = linker.get(store, PREVIEW1, name)
        assert isinstance(item, wasmtime.Func)
        ty = item.type(store)
        out[name] = ([str(p) for p in ty.params], [str(r) for r in ty.results])
    return out


SIGNATURES = _reference_signatures()


# -- building test modules ----------------------------------------------------------------------

def wat_bytes(data: bytes) -> str:
    return "".join(f"\\{b:02x}" for b in data)


def wasi_import(name: str, module: str = PREVIEW1) -> str:
    params, results = SIGNATURES[name]
    res = f"(result {' '.join(results)})" if results else ""
    return f'(import "{module}" "{name}" (func ${name} (param {" ".join(params)}) {res}))'


def call(name: str, *args: int, slot: int | None = None) -> str:
    """A call expression; with ``slot`` its i32 result is stored at RESULT + 4*slot."""
    params, results = SIGNATURES[name]
    assert len(args) == len(params), name
    operands = " ".join(f"({p}.const {a})" for p, a in zip(params, args, strict=True))
    expr = f"(call ${name} {operands})"
    if slot is None:
        return expr if not results else f"(drop {expr})"
    return f"(i32.store (i32.const {RESULT + 4 * slot}) {expr})"


BUMP_MALLOC = """
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))"""


def module(imports: list[str], vm_start: str = "", *, data: dict[int, bytes] | None = None, extra: str = "",
           malloc: str = BUMP_MALLOC) -> bytes:
    segments = {OUT: PREFILL, **(data or {})}
    text = f"""(module
  {' '.join(imports)}
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 0x8000))
  {malloc}
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) {vm_start} (i32.const 1))
  {extra}
  {' '.join(f'(data (i32.const {addr}) "{wat_bytes(blob)}")' for addr, blob in segments.items())}
)"""
    return bytes(wasmtime.wat2wasm(text))


def iovecs(*chunks: bytes, at: int = DATA) -> dict[int, bytes]:
    """An iovec table at ``at`` pointing at the chunks laid out after it."""
    table = b""
    blobs = b""
    base = at + 8 * len(chunks)
    for chunk in chunks:
        table += struct.pack("<II", base + len(blobs), len(chunk))
        blobs += chunk
    return {at: table + blobs}


# -- running them --------------------------------------------------------------------------------

class CaptureEnv(Environment):
    """Records plugin log lines and answers fixed clocks."""

    log_level = LogLevel.TRACE

    def __init__(self) -> None:
        self.lines: list[tuple[str, LogLevel, str]] = []

    def log(self, spec: PluginSpec, level: LogLevel, message: str) -> None:
        self.lines.append((spec.name, level, message))

    def now_ns(self) -> int:
        return NOW_NS

    def monotonic_ns(self) -> int:
        return MONOTONIC_NS

    def messages(self, level: LogLevel) -> list[str]:
        return [m for _, lv, m in self.lines if lv == level]


@dataclass
class Host:
    env: CaptureEnv
    runtime: Runtime
    plugins: list[Plugin] = field(default_factory=list)

    def start(self, wasm: bytes, **spec: object) -> Plugin:
        plugin = Plugin(self.runtime, self.runtime.compile(wasm), PluginSpec(name="wasi-test", **spec))  # type: ignore[arg-type]
        self.plugins.append(plugin)
        plugin.start()
        return plugin


def make_host(limits: Limits | None = None) -> Iterator[Host]:
    env = CaptureEnv()
    runtime = Runtime(environment=env, limits=limits or Limits())
    try:
        yield Host(env, runtime)
    finally:
        runtime.close()


@pytest.fixture
def host() -> Iterator[Host]:
    yield from make_host()


def results(plugin: Plugin, count: int) -> list[int]:
    assert plugin.vm is not None
    raw = plugin.vm.read(RESULT, 4 * count)
    assert raw is not None
    return list(struct.unpack(f"<{count}i", raw))


def out(plugin: Plugin, offset: int, length: int) -> bytes:
    assert plugin.vm is not None
    raw = plugin.vm.read(OUT + offset, length)
    assert raw is not None
    return raw


# -- signatures ----------------------------------------------------------------------------------

def test_every_preview1_function_is_declared_with_wasmtimes_signature_under_both_names() -> None:
    from wasmhost._registry import HOST_FUNCTIONS

    short = {"i32": "i", "i64": "I"}
    for module_name in ("wasi_snapshot_preview1", "wasi_unstable"):
        declared = {n for (m, n) in HOST_FUNCTIONS if m == module_name}
        assert declared == set(ALL_PREVIEW1), module_name
        for name, (params, results_) in SIGNATURES.items():
            hf = HOST_FUNCTIONS[(module_name, name)]
            assert (hf.params, hf.results) == ("".join(short[p] for p in params), "".join(short[r] for r in results_))


# -- the table: one call per row, checked errno and out-parameters --------------------------------

@dataclass(frozen=True)
class Row:
    name: str
    args: tuple[int, ...]
    errno: int
    writes: dict[int, bytes] = field(default_factory=dict)  # OUT offset -> expected bytes
    data: dict[int, bytes] = field(default_factory=dict)

    def id(self) -> str:
        return f"{self.name}{self.args}".replace(" ", "")


U32_0 = b"\0" * 4
U64_0 = b"\0" * 8
UNTOUCHED4 = b"\xaa" * 4
FDSTAT_STDIO = bytes(8) + struct.pack("<Q", 64) + bytes(8)

ROWS = [
    Row("fd_pwrite", (1, DATA, 1, 99, OUT), 0, {0: struct.pack("<I", 3)}, iovecs(b"pw\n")),
    Row("fd_pwrite", (5, DATA, 1, 0, OUT), 8, {0: UNTOUCHED4}, iovecs(b"x")),
    Row("fd_read", (0, DATA, 1, OUT), 52, {0: UNTOUCHED4}),
    Row("fd_pread", (0, DATA, 1, 0, OUT), 52, {0: UNTOUCHED4}),
    Row("fd_seek", (1, 5, 0, OUT), 0, {0: UNTOUCHED4 * 2}),
    Row("fd_close", (1,), 0),
    Row("fd_fdstat_get", (1, OUT), 0, {0: FDSTAT_STDIO}),
    Row("fd_fdstat_get", (2, OUT), 0, {0: FDSTAT_STDIO}),
    Row("fd_fdstat_get", (3, OUT), 8, {0: UNTOUCHED4}),
    Row("fd_fdstat_get", (1, BAD), 21),
    Row("fd_fdstat_set_flags", (1, 0), 52),
    Row("fd_fdstat_set_rights", (2, 64, 0), 0),
    Row("fd_fdstat_set_rights", (5, 64, 0), 8),
    Row("fd_prestat_get", (3, OUT), 8, {0: UNTOUCHED4}),
    Row("fd_prestat_dir_name", (3, OUT, 8), 52),
    Row("fd_filestat_get", (1, OUT), 8, {0: UNTOUCHED4}),
    Row("fd_filestat_set_size", (2, 10), 0),
    Row("fd_filestat_set_size", (3, 10), 8),
    Row("fd_filestat_set_times", (1, 1, 2, 0), 0),
    Row("fd_filestat_set_times", (4, 1, 2, 0), 8),
    Row("fd_advise", (9, 0, 10, 0), 0),
    Row("fd_allocate", (1, 0, 10), 0),
    Row("fd_allocate", (0, 0, 10), 8),
    Row("fd_datasync", (2,), 0),
    Row("fd_datasync", (7,), 8),
    Row("fd_sync", (1,), 0),
    Row("fd_sync", (0,), 8),
    Row("fd_tell", (1, OUT), 0, {0: U64_0}),
    Row("fd_tell", (3, OUT), 8, {0: UNTOUCHED4}),
    Row("fd_tell", (1, BAD), 21),
    Row("fd_readdir", (3, DATA, 64, 0, OUT), 54, {0: U32_0}),
    Row("fd_readdir", (3, DATA, 64, 0, BAD), 21),
    Row("fd_renumber", (1, 2), 58),
    Row("fd_renumber", (1, 5), 8),
    Row("path_open", (3, 0, DATA, 4, 0, 0, 0, 0, OUT), 44, {0: UNTOUCHED4}),
    Row("path_filestat_get", (3, 0, DATA, 4, OUT), 58, {0: UNTOUCHED4}),
    Row("path_filestat_set_times", (3, 0, DATA, 4, 1, 2, 0), 58),
    Row("path_create_directory", (3, DATA, 4), 58),
    Row("path_remove_directory", (3, DATA, 4), 58),
    Row("path_unlink_file", (3, DATA, 4), 58),
    Row("path_readlink", (3, DATA, 4, DATA + 16, 16, OUT), 58, {0: U32_0}),
    Row("path_readlink", (3, DATA, 4, DATA + 16, 16, BAD), 21),
    Row("path_rename", (3, DATA, 4, 3, DATA + 8, 4), 58),
    Row("path_link", (3, 0, DATA, 4, 3, DATA + 8, 4), 58),
    Row("path_symlink", (DATA, 4, 3, DATA + 8, 4), 58),
    Row("sock_accept", (3, 0, OUT), 58, {0: U32_0 + UNTOUCHED4}),
    Row("sock_accept", (3, 0, BAD), 21),
    Row("sock_recv", (3, DATA, 1, 0, OUT, OUT + 8), 58, {0: U32_0, 8: b"\0\0\xaa\xaa"}),
    Row("sock_recv", (3, DATA, 1, 0, OUT, BAD + 1), 21),
    Row("sock_send", (3, DATA, 1, 0, OUT), 58, {0: U32_0}),
    Row("sock_send", (3, DATA, 1, 0, BAD), 21),
    Row("sock_shutdown", (3, 0), 58),
    Row("args_sizes_get", (OUT, OUT + 4), 0, {0: U32_0 + U32_0}),
    Row("args_sizes_get", (OUT, BAD), 21),
    Row("args_get", (OUT, OUT + 4), 0, {0: UNTOUCHED4 * 2}),
    Row("clock_time_get", (0, 1, OUT), 0, {0: struct.pack("<Q", NOW_NS)}),
    Row("clock_time_get", (1, 1000, OUT), 0, {0: struct.pack("<Q", MONOTONIC_NS)}),
    Row("clock_time_get", (2, 1, OUT), 58, {0: UNTOUCHED4}),
    Row("clock_time_get", (3, 1, OUT), 58, {0: UNTOUCHED4}),
    Row("clock_time_get", (0, 1, BAD), 21),
    Row("clock_res_get", (0, OUT), 0, {0: struct.pack("<Q", 1)}),
    Row("clock_res_get", (1, OUT), 0, {0: struct.pack("<Q", 1)}),
    Row("clock_res_get", (2, OUT), 58, {0: UNTOUCHED4}),
    Row("clock_res_get", (1, BAD), 21),
    Row("random_get", (OUT, 0), 0, {0: UNTOUCHED4}),
    Row("random_get", (OUT, 64 * 1024 + 1), 28, {0: UNTOUCHED4}),
    Row("random_get", (BAD, 4), 21),
    Row("sched_yield", (), 0),
    Row("poll_oneoff", (DATA, DATA + 64, 1, OUT), 0, {0: U32_0}),
    Row("poll_oneoff", (DATA, DATA + 64, 1, BAD), 21),
    Row("proc_raise", (6,), 58),
    Row("environ_sizes_get", (OUT, BAD), 21),
    Row("fd_write", (1, BAD, 1, OUT), 21, {0: UNTOUCHED4}),
]


def test_the_table_calls_every_function_that_returns() -> None:
    covered = {row.name for row in ROWS} | {"fd_write", "environ_get", "environ_sizes_get", "proc_exit"}
    assert covered == set(ALL_PREVIEW1)


@pytest.mark.parametrize("row", ROWS, ids=Row.id)
def test_wasi_function(host: Host, row: Row) -> None:
    plugin = host.start(module([wasi_import(row.name)], call(row.name, *row.args, slot=0), data=row.data))
    assert results(plugin, 1) == [row.errno]
    for offset, expected in row.writes.items():
        assert out(plugin, offset, len(expected)) == expected


@pytest.mark.parametrize("name, args, errno", [
    ("fd_fdstat_get", (1, OUT), 0),
    ("path_open", (3, 0, DATA, 4, 0, 0, 0, 0, OUT), 44),
    ("clock_time_get", (0, 1, OUT), 0),
    ("sched_yield", (), 0),
])
def test_the_same_functions_answer_under_wasi_unstable(host: Host, name: str, args: tuple[int, ...], errno: int) -> None:
    plugin = host.start(module([wasi_import(name, "wasi_unstable")], call(name, *args, slot=0)))
    assert results(plugin, 1) == [errno]


def test_cpu_time_clocks_are_unsupported_but_realtime_reads_the_environment(host: Host) -> None:
    plugin = host.start(module([wasi_import("clock_time_get")], call("clock_time_get", 0, 0, OUT, slot=0)))
    assert results(plugin, 1) == [0]
    assert struct.unpack("<Q", out(plugin, 0, 8))[0] == NOW_NS


# -- stdout / stderr --------------------------------------------------------------------------------

def test_stdout_is_one_info_line_from_all_iovecs_with_one_newline_stripped(host: Host) -> None:
    plugin = host.start(module([wasi_import("fd_write")], call("fd_write", 1, DATA, 3, OUT, slot=0),
                               data=iovecs(b"hello ", b"", b"world\n\n")))
    assert results(plugin, 1) == [0]
    assert struct.unpack("<I", out(plugin, 0, 4))[0] == 13
    assert host.env.lines == [("wasi-test", LogLevel.INFO, "hello world\n")]


def test_stderr_is_an_error_line(host: Host) -> None:
    host.start(module([wasi_import("fd_write")], call("fd_write", 2, DATA, 1, OUT, slot=0), data=iovecs(b"oops\n")))
    assert host.env.lines == [("wasi-test", LogLevel.ERROR, "oops")]


@pytest.mark.parametrize("fd, errno", [(0, 8), (3, 8)])
def test_fd_write_to_other_descriptors_is_badf_and_logs_nothing(host: Host, fd: int, errno: int) -> None:
    plugin = host.start(module([wasi_import("fd_write")], call("fd_write", fd, DATA, 1, OUT, slot=0), data=iovecs(b"x")))
    assert results(plugin, 1) == [errno]
    assert host.env.lines == []


@pytest.mark.parametrize("iovs, nwritten", [(DATA, BAD), (DATA + 0x100, OUT)], ids=["bad-nwritten", "bad-buffer"])
def test_fd_write_faults_on_bad_memory_without_logging(host: Host, iovs: int, nwritten: int) -> None:
    data = iovecs(b"fine") | {DATA + 0x100: struct.pack("<II", BAD, 16)}
    plugin = host.start(module([wasi_import("fd_write")], call("fd_write", 1, iovs, 1, nwritten, slot=0), data=data))
    assert results(plugin, 1) == [21]
    assert host.env.lines == []


def test_empty_write_logs_nothing_and_reports_zero(host: Host) -> None:
    plugin = host.start(module([wasi_import("fd_write")], call("fd_write", 1, DATA, 1, OUT, slot=0), data=iovecs(b"")))
    assert results(plugin, 1) == [0]
    assert out(plugin, 0, 4) == U32_0
    assert host.env.lines == []


def test_too_many_iovecs_is_inval(host: Host) -> None:
    plugin = host.start(module([wasi_import("fd_write")], call("fd_write", 1, DATA, 1025, OUT, slot=0)))
    assert results(plugin, 1) == [28]


def test_long_lines_are_truncated_to_the_log_cap_but_fully_acknowledged() -> None:
    for host in make_host(Limits(max_log_message=8)):
        plugin = host.start(module([wasi_import("fd_write")], call("fd_write", 1, DATA, 2, OUT, slot=0),
                                   data=iovecs(b"hello ", b"world!")))
        assert results(plugin, 1) == [0]
        assert struct.unpack("<I", out(plugin, 0, 4))[0] == 12
        assert host.env.lines == [("wasi-test", LogLevel.INFO, "hello wo")]


def test_lines_below_the_log_level_are_dropped_but_acknowledged(host: Host) -> None:
    host.env.log_level = LogLevel.WARN
    body = call("fd_write", 1, DATA, 1, OUT, slot=0) + call("fd_write", 2, DATA, 1, OUT + 4, slot=1)
    plugin = host.start(module([wasi_import("fd_write")], body, data=iovecs(b"msg")))
    assert results(plugin, 2) == [0, 0]
    assert out(plugin, 0, 8) == struct.pack("<II", 3, 3)
    assert host.env.lines == [("wasi-test", LogLevel.ERROR, "msg")]


def test_fd_seek_and_fd_close_log_an_error_like_envoy(host: Host) -> None:
    body = call("fd_seek", 1, 0, 0, OUT, slot=0) + call("fd_close", 1, slot=1)
    plugin = host.start(module([wasi_import("fd_seek"), wasi_import("fd_close")], body))
    assert results(plugin, 2) == [0, 0]
    errors = host.env.messages(LogLevel.ERROR)
    assert len(errors) == 2 and "fd_seek" in errors[0] and "fd_close" in errors[1]


# -- environment ---------------------------------------------------------------------------------------

def test_environment_comes_only_from_the_vm_env(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASMESH_HOST_ONLY", "must-not-leak")
    env = (("A", "1"), ("LONGER_NAME", "v=with=equals"), ("UNI", "\u00fc"))
    entries = [b"A=1\0", b"LONGER_NAME=v=with=equals\0", "UNI=\u00fc\0".encode()]
    body = call("environ_sizes_get", OUT, OUT + 4, slot=0) + call("environ_get", OUT + 16, OUT + 64, slot=1)
    plugin = host.start(module([wasi_import("environ_sizes_get"), wasi_import("environ_get")], body), env=env)
    assert results(plugin, 2) == [0, 0]
    count, size = struct.unpack("<II", out(plugin, 0, 8))
    assert (count, size) == (3, sum(len(e) for e in entries))
    pointers = struct.unpack("<3I", out(plugin, 16, 12))
    assert out(plugin, 28, 4) == UNTOUCHED4  # no terminating NULL pointer: wasi-libc adds its own
    offset = OUT + 64
    for pointer, entry in zip(pointers, entries, strict=True):
        assert pointer == offset
        assert out(plugin, pointer - OUT, len(entry)) == entry
        offset += len(entry)


def test_an_empty_vm_env_exposes_nothing_of_the_host(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASMESH_HOST_ONLY", "must-not-leak")
    body = call("environ_sizes_get", OUT, OUT + 4, slot=0) + call("environ_get", OUT + 16, OUT + 64, slot=1)
    plugin = host.start(module([wasi_import("environ_sizes_get"), wasi_import("environ_get")], body))
    assert results(plugin, 2) == [0, 0]
    assert out(plugin, 0, 8) == U64_0
    assert out(plugin, 16, 4) == UNTOUCHED4 and out(plugin, 64, 4) == UNTOUCHED4


@pytest.mark.parametrize("array, buf", [(OUT, BAD), (BAD, OUT)], ids=["bad-strings", "bad-pointers"])
def test_environ_get_writes_nothing_when_either_buffer_is_out_of_bounds(host: Host, array: int, buf: int) -> None:
    plugin = host.start(module([wasi_import("environ_get")], call("environ_get", array, buf, slot=0)),
                        env=(("K", "V"),))
    assert results(plugin, 1) == [21]
    assert out(plugin, 0, 4) == UNTOUCHED4


# -- randomness ---------------------------------------------------------------------------------------------

def test_random_get_fills_each_buffer_with_fresh_bytes(host: Host) -> None:
    body = call("random_get", OUT, 32, slot=0) + call("random_get", OUT + 32, 32, slot=1)
    plugin = host.start(module([wasi_import("random_get")], body))
    assert results(plugin, 2) == [0, 0]
    first, second = out(plugin, 0, 32), out(plugin, 32, 32)
    assert first != second and PREFILL[:32] not in (first, second)
    assert out(plugin, 64, 4) == UNTOUCHED4


def test_random_get_cap_follows_the_limits() -> None:
    for host in make_host(Limits(max_random_bytes=16)):
        body = call("random_get", OUT, 16, slot=0) + call("random_get", OUT + 16, 17, slot=1)
        plugin = host.start(module([wasi_import("random_get")], body))
        assert results(plugin, 2) == [0, 28]
        assert out(plugin, 16, 4) == UNTOUCHED4


# -- restricted windows ---------------------------------------------------------------------------------

def test_wasi_runs_during_initialize(host: Host) -> None:
    extra = f'(func (export "_initialize") {call("fd_write", 1, DATA, 1, OUT, slot=0)})'
    plugin = host.start(module([wasi_import("fd_write")], extra=extra, data=iovecs(b"from _initialize\n")))
    assert results(plugin, 1) == [0]
    assert host.env.lines == [("wasi-test", LogLevel.INFO, "from _initialize")]


def test_only_fd_write_clock_and_poll_run_inside_the_allocator(host: Host) -> None:
    malloc = f"""
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    {call("fd_write", 1, DATA, 1, OUT, slot=0)}
    {call("clock_time_get", 0, 1, OUT + 8, slot=1)}
    {call("poll_oneoff", DATA + 64, DATA + 128, 1, OUT + 16, slot=2)}
    {call("random_get", OUT + 24, 8, slot=3)}
    {call("environ_sizes_get", OUT + 32, OUT + 36, slot=4)}
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))"""
    imports = [wasi_import(n) for n in ("fd_write", "clock_time_get", "poll_oneoff", "random_get", "environ_sizes_get")]
    imports.append('(import "env" "proxy_get_buffer_bytes" (func $proxy_get_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))')
    vm_start = "(i32.store (i32.const 0x180) (call $proxy_get_buffer_bytes (i32.const 6) (i32.const 0) (i32.const 64) (i32.const 0x190) (i32.const 0x194)))"
    plugin = host.start(module(imports, vm_start, malloc=malloc, data=iovecs(b"in malloc")), vm_configuration=b"config")
    assert results(plugin, 5) == [0, 0, 0, 76, 76]
    assert host.env.messages(LogLevel.INFO) == ["in malloc"]
    assert struct.unpack("<Q", out(plugin, 8, 8))[0] == NOW_NS
    assert plugin.vm is not None and plugin.vm.read(0x180, 4) == U32_0  # the outer host call still succeeded


# -- proc_exit -------------------------------------------------------------------------------------------

def test_exit_zero_during_initialize_is_a_clean_start(host: Host) -> None:
    extra = f'(func (export "_initialize") {call("proc_exit", 0)} (unreachable))'
    vm_start = "(i32.store (i32.const 0x100) (i32.const 7))"
    plugin = host.start(module([wasi_import("proc_exit")], vm_start, extra=extra))
    assert plugin.failed is None
    assert results(plugin, 1) == [7]  # the plugin still started after the VM exited its initialiser


@pytest.mark.parametrize("where, code", [("_initialize", 3), ("vm_start", 0)])
def test_exit_anywhere_else_fails_the_plugin(host: Host, where: str, code: int) -> None:
    if where == "_initialize":
        wasm = module([wasi_import("proc_exit")], extra=f'(func (export "_initialize") {call("proc_exit", code)})')
    else:
        wasm = module([wasi_import("proc_exit")], call("proc_exit", code))
    with pytest.raises(PluginStartError, match=rf"proc_exit\({code}\)"):
        host.start(wasm)


def test_exit_in_a_stream_callback_fails_the_vm_and_the_stream_closed(host: Host) -> None:
    extra = f'(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) {call("proc_exit", 0)} (i32.const 0))'
    plugin = host.start(module([wasi_import("proc_exit")], extra=extra))
    stream = plugin.new_http_stream()
    stream.on_request_headers([(b":path", b"/")], True)
    stream.finish()
    assert plugin.failed is not None and "proc_exit(0)" in plugin.failed
    replies = [c for c in host.runtime.take_commands() if isinstance(c, SendLocalReply)]
    assert [(r.status, r.details) for r in replies] == [(503, "wasm_fail_stream")]


# -- the C conformance plugin (wasi-libc through clang) ----------------------------------------------------

@pytest.fixture(scope="module")
def wasi_c() -> bytes:
    return plugin_path("wasi").read_bytes()


@pytest.mark.parametrize("env, expected_env, expected_count", [
    ((("WASMESH_TEST_ENV", "from-vm-config"),), "from-vm-config", "1"),
    ((), "<unset>", "0"),
])
def test_c_wasi_plugin(host: Host, wasi_c: bytes, monkeypatch: pytest.MonkeyPatch,
                       env: tuple[tuple[str, str], ...], expected_env: str, expected_count: str) -> None:
    monkeypatch.setenv("WASMESH_TEST_ENV", "from-the-host-process")
    plugin = host.start(wasi_c, env=env)
    assert ("wasi-test", LogLevel.INFO, "wasi: stdout from vm_start") in host.env.lines
    assert ("wasi-test", LogLevel.ERROR, "wasi: stderr from vm_start") in host.env.lines
    stream = plugin.new_http_stream()
    stream.on_request_headers([(b":path", b"/")], True)
    assert stream.ctx is not None
    assert host.env.messages(LogLevel.INFO)[-1] == f"wasi: stdout ctx={stream.ctx.id}"
    response = [(b":status", b"200")]
    stream.on_response_headers(response, True)
    stream.finish()
    added = {k.decode(): v.decode() for k, v in response[1:]}
    assert added["x-wasi-env"] == expected_env
    assert added["x-wasi-env-count"] == expected_count
    assert added["x-wasi-realtime-ns"] == str(NOW_NS)
    assert added["x-wasi-monotonic-ns"] == str(MONOTONIC_NS)
    assert re.fullmatch(r"[0-9a-f]{32}", added["x-wasi-entropy"]) and added["x-wasi-entropy"] != "0" * 32
    assert re.fullmatch(r"[0-9a-f]{8}", added["x-wasi-random"])
    assert plugin.failed is None
