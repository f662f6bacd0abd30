"""Plugin metrics through real instances: Envoy's statuses and semantics for each metric
type, bad pointers, the caps, and the C ``metrics`` conformance plugin."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator

import pytest
import wasmtime

from tests._tools import plugin_path
from wasmhost import Environment, LogLevel, Plugin, PluginSpec, Runtime

RESULT = 0x100  # i32 statuses, one slot per call
IDS = 0x400  # metric ids written by proxy_define_metric
VALUES = 0x500  # u64s written by proxy_get_metric
NAMES = 0x1000
BAD = 0x1FFFE
COUNTER, GAUGE, HISTOGRAM = 0, 1, 2
OK, NOT_FOUND, BAD_ARGUMENT, INVALID_MEMORY_ACCESS = 0, 1, 2, 6
U64 = 1 << 64
PREFILL = "\\aa" * 64  # WAT escapes: out-parameters start as 0xAA bytes

IMPORTS = """
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $increment (param i32 i64) (result i32)))
  (import "env" "proxy_record_metric" (func $record (param i32 i64) (result i32)))
  (import "env" "proxy_get_metric" (func $get (param i32 i32) (result i32)))"""


class Script:
    """Builds a proxy_on_vm_start body: each call's status goes to the next result slot."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names = b""

    def _store(self, expr: str) -> int:
        slot = len(self.lines)
        self.lines.append(f"(i32.store (i32.const {RESULT + 4 * slot}) {expr})")
        return slot

    def define(self, metric_type: int, name: bytes, id_slot: int, *, name_ptr: int | None = None,
               ret: int | None = None) -> int:
        ptr = NAMES + len(self.names) if name_ptr is None else name_ptr
        self.names += name
        out = IDS + 4 * id_slot if ret is None else ret
        return self._store(f"(call $define (i32.const {metric_type}) (i32.const {ptr}) (i32.const {len(name)}) (i32.const {out}))")

    @staticmethod
    def id(ref: int | str) -> str:
        """A metric id: an int is literal, ``"#n"`` loads the id defined into slot n."""
        if isinstance(ref, str):
            return f"(i32.load (i32.const {IDS + 4 * int(ref[1:])}))"
        return f"(i32.const {ref})"

    def increment(self, ref: int | str, delta: int) -> int:
        return self._store(f"(call $increment {self.id(ref)} (i64.const {delta}))")

    def record(self, ref: int | str, value: int) -> int:
        return self._store(f"(call $record {self.id(ref)} (i64.const {value}))")

    def get(self, ref: int | str, value_slot: int, *, ret: int | None = None) -> int:
        out = VALUES + 8 * value_slot if ret is None else ret
        return self._store(f"(call $get {self.id(ref)} (i32.const {out}))")

    def wasm(self) -> bytes:
        data = "".join(f"\\{b:02x}" for b in self.names)
        text = f"""(module {IMPORTS}
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 0x8000))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) {' '.join(self.lines)} (i32.const 1))
  (data (i32.const {IDS}) "{PREFILL}")
  (data (i32.const {VALUES}) "{PREFILL}")
  (data (i32.const {NAMES}) "{data}"))"""
        return bytes(wasmtime.wat2wasm(text))


class CaptureEnv(Environment):
    log_level = LogLevel.TRACE

    def __init__(self) -> None:
        self.lines: list[tuple[LogLevel, str]] = []

    def log(self, spec: PluginSpec, level: LogLevel, message: str) -> None:
        self.lines.append((level, message))


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    rt = Runtime(environment=CaptureEnv())
    try:
        yield rt
    finally:
        rt.close()


def run(runtime: Runtime, script: Script, name: str = "metrics-test") -> Plugin:
    plugin = Plugin(runtime, runtime.compile(script.wasm()), PluginSpec(name=name))
    plugin.start()
    return plugin


def statuses(plugin: Plugin, script: Script) -> list[int]:
    assert plugin.vm is not None
    raw = plugin.vm.read(RESULT, 4 * len(script.lines))
    assert raw is not None
    return list(struct.unpack(f"<{len(script.lines)}i", raw))


def u32(plugin: Plugin, addr: int) -> int:
    assert plugin.vm is not None
    raw = plugin.vm.read(addr, 4)
    assert raw is not None
    return int.from_bytes(raw, "little")


def u64(plugin: Plugin, slot: int) -> int:
    assert plugin.vm is not None
    raw = plugin.vm.read(VALUES + 8 * slot, 8)
    assert raw is not None
    return int.from_bytes(raw, "little")


# -- define -----------------------------------------------------------------------------------------

def test_define_gives_ids_tagged_with_their_type(runtime: Runtime) -> None:
    s = Script()
    for slot, kind in enumerate((COUNTER, GAUGE, HISTOGRAM)):
        s.define(kind, f"m{kind}".encode(), slot)
    plugin = run(runtime, s)
    assert statuses(plugin, s) == [OK, OK, OK]
    ids = [u32(plugin, IDS + 4 * i) for i in range(3)]
    assert [i & 3 for i in ids] == [COUNTER, GAUGE, HISTOGRAM]
    assert len(set(ids)) == 3


def test_redefining_a_name_reaches_the_same_metric(runtime: Runtime) -> None:
    s = Script()
    s.define(COUNTER, b"requests", 0)
    s.define(COUNTER, b"requests", 1)
    s.increment("#0", 2)
    s.increment("#1", 3)
    s.get("#0", 0)
    plugin = run(runtime, s)
    assert statuses(plugin, s) == [OK] * 5
    assert u64(plugin, 0) == 5
    assert runtime.metrics.snapshot()["requests"] == 5


@pytest.mark.parametrize("kind, name_ptr, ret, status", [
    (3, None, None, BAD_ARGUMENT),
    (7, None, None, BAD_ARGUMENT),
    (COUNTER, BAD, None, INVALID_MEMORY_ACCESS),
    (COUNTER, None, BAD, INVALID_MEMORY_ACCESS),
], ids=["type-3", "type-7", "bad-name", "bad-id-pointer"])
def test_define_rejects(runtime: Runtime, kind: int, name_ptr: int | None, ret: int | None, status: int) -> None:
    s = Script()
    s.define(kind, b"rejected", 0, name_ptr=name_ptr, ret=ret)
    plugin = run(runtime, s)
    assert statuses(plugin, s) == [status]
    assert u32(plugin, IDS) == 0xAAAAAAAA
    # as Envoy, only a bad id pointer is found after the stat exists
    expected = ["rejected"] if ret is not None else []
    assert [m.name for m in runtime.metrics.all()] == expected


def test_define_rejects_overlong_names(runtime: Runtime) -> None:
    from wasmhost.limits import MAX_METRIC_NAME_BYTES

    s = Script()
    s.define(COUNTER, b"n" * (MAX_METRIC_NAME_BYTES + 1), 0)
    s.define(COUNTER, b"n" * MAX_METRIC_NAME_BYTES, 1)
    plugin = run(runtime, s)
    assert statuses(plugin, s) == [BAD_ARGUMENT, OK]


def test_define_stops_at_the_metric_cap_but_still_finds_existing_names(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wasmhost import _hostcalls_metrics

    monkeypatch.setattr(_hostcalls_metrics, "MAX_METRICS", 2)
    s = Script()
    s.define(COUNTER, b"a", 0)
    s.define(GAUGE, b"b", 1)
    s.define(COUNTER, b"c", 2)
    s.define(GAUGE, b"b", 3)
    plugin = run(runtime, s)
    assert statuses(plugin, s) == [OK, OK, BAD_ARGUMENT, OK]
    assert u32(plugin, IDS + 12) == u32(plugin, IDS + 4)


# -- semantics per type --------------------------------------------------------------------------------

def test_counter_takes_only_positive_increments_and_record_adds(runtime: Runtime) -> None:
    s = Script()
    s.define(COUNTER, b"hits", 0)
    s.increment("#0", 5)
    s.increment("#0", 0)
    s.increment("#0", -1)
    s.record("#0", 7)
    s.increment("#0", 1 << 40)
    s.get("#0", 0)
    plugin = run(runtime, s)
    assert statuses(plugin, s) == [OK, OK, BAD_ARGUMENT, BAD_ARGUMENT, OK, OK, OK]
    assert u64(plugin, 0) == 12 + (1 << 40)
    assert runtime.metrics.snapshot()["hits"] == 12 + (1 << 40)


def test_gauge_moves_both_ways_and_record_sets_it(runtime: Runtime) -> None:
    s = Script()
    s.define(GAUGE, b"inflight", 0)
    s.increment("#0", 10)
    s.increment("#0", -3)
    s.get("#0", 0)
    s.record("#0", 42)
    s.get("#0", 1)
    s.increment("#0", -50)
    s.get("#0", 2)
    plugin = run(runtime, s)
    assert statuses(plugin, s) == [OK] * 8
    assert [u64(plugin, i) for i in range(3)] == [7, 42, U64 - 8]  # Envoy's u64 bits for -8
    assert runtime.metrics.snapshot()["inflight"] == -8


def test_gauge_record_of_a_negative_i64_reads_back_as_its_u64_bits(runtime: Runtime) -> None:
    s = Script()
    s.define(GAUGE, b"level", 0)
    s.record("#0", -1)
    s.get("#0", 0)
    plugin = run(runtime, s)
    assert statuses(plugin, s) == [OK, OK, OK]
    assert u64(plugin, 0) == U64 - 1


def test_histogram_records_samples_but_cannot_be_incremented_or_read(runtime: Runtime) -> None:
    s = Script()
    s.define(HISTOGRAM, b"sizes", 0)
    s.increment("#0", 1)
    s.record("#0", 5)
    s.record("#0", 9)
    s.get("#0", 0)
    plugin = run(runtime, s)
    assert statuses(plugin, s) == [OK, BAD_ARGUMENT, OK, OK, BAD_ARGUMENT]
    assert u64(plugin, 0) == 0xAAAAAAAAAAAAAAAA  # untouched
    assert runtime.metrics.snapshot()["sizes"] == {"count": 2, "sum": 14}


@pytest.mark.parametrize("metric_id, expected", [
    (0x7FFFFFF0, [NOT_FOUND, NOT_FOUND, NOT_FOUND]),  # counter-tagged, never defined
    (0x7FFFFFF1, [NOT_FOUND, NOT_FOUND, NOT_FOUND]),  # gauge-tagged
    (0x7FFFFFF2, [BAD_ARGUMENT, NOT_FOUND, BAD_ARGUMENT]),  # histogram-tagged
    (0x7FFFFFF3, [BAD_ARGUMENT, NOT_FOUND, BAD_ARGUMENT]),  # no such type
])
def test_unknown_ids_answer_like_envoy(runtime: Runtime, metric_id: int, expected: list[int]) -> None:
    s = Script()
    s.increment(metric_id, 1)
    s.record(metric_id, 1)
    s.get(metric_id, 0)
    assert statuses(run(runtime, s), s) == expected


def test_get_metric_with_a_bad_pointer(runtime: Runtime) -> None:
    s = Script()
    s.define(COUNTER, b"c", 0)
    s.get("#0", 0, ret=BAD)
    assert statuses(run(runtime, s), s) == [OK, INVALID_MEMORY_ACCESS]


def test_plugins_of_one_runtime_share_metrics_by_name(runtime: Runtime) -> None:
    s = Script()
    s.define(COUNTER, b"shared_total", 0)
    s.increment("#0", 4)
    run(runtime, s, "first")
    run(runtime, s, "second")
    assert runtime.metrics.snapshot()["shared_total"] == 8


# -- the C conformance plugin -----------------------------------------------------------------------

def test_c_metrics_plugin(runtime: Runtime) -> None:
    plugin = Plugin(runtime, runtime.compile(plugin_path("metrics").read_bytes()), PluginSpec(name="metrics-c"))
    plugin.start()
    env = runtime.environment
    assert isinstance(env, CaptureEnv)
    defined = [m for level, m in env.lines if level == LogLevel.INFO and m.startswith("metrics: defined")]
    assert len(defined) == 1
    assert re.fullmatch(r"metrics: defined counter=\d+ inflight=\d+ last=\d+ histogram=\d+ bad_type_status=2", defined[0])
    header_counts = []
    for number, extra in enumerate(([], [(b"x-a", b"1"), (b"x-b", b"2")]), start=1):
        stream = plugin.new_http_stream()
        request = [(b":path", b"/"), (b":method", b"GET"), *extra]
        header_counts.append(len(request))
        stream.on_request_headers(request, True)
        response = [(b":status", b"200")]
        stream.on_response_headers(response, True)
        added = {k.decode(): v.decode() for k, v in response[1:]}
        assert added == {
            "x-counter": str(number),
            "x-inflight": "1",
            "x-last-header-count": str(len(request)),
            "x-histogram-get-status": "2",
            "x-bad-metric-type-status": "2",
            "x-unknown-metric-status": "1",
        }
        stream.finish()
        assert runtime.metrics.snapshot()["wasmesh_test_inflight"] == 0  # on_log took it back down
    snapshot = runtime.metrics.snapshot()
    assert snapshot["wasmesh_test_requests_total"] == 2
    assert snapshot["wasmesh_test_last_header_count"] == header_counts[-1]
    assert snapshot["wasmesh_test_header_count"] == {"count": 2, "sum": sum(header_counts)}
    assert plugin.failed is None
