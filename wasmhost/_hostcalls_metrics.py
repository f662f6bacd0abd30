"""Host functions for plugin-defined metrics (counters, gauges, histograms).

Metrics live in the runtime's :class:`~wasmhost._metrics.MetricStore`; an id carries its
type in the low two bits, so a call on the wrong kind of metric is answered from the id
alone, exactly where Envoy answers it. Statuses are Envoy's (reference §1.3), all within
what the Rust SDK accepts (§1.6). Envoy keeps every value as a u64; counters wrap the
same way here, gauges are kept signed (so exporters can show a negative gauge) and
``proxy_get_metric`` hands back the same 64 bits Envoy would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._abi import MetricType, Status
from ._metrics import Metric
from ._registry import hostcall
from .limits import MAX_METRIC_NAME_BYTES, MAX_METRICS

if TYPE_CHECKING:
    from ._vm import WasmVM

OK = int(Status.OK)
NOT_FOUND = int(Status.NOT_FOUND)
BAD_ARGUMENT = int(Status.BAD_ARGUMENT)
INVALID_MEMORY_ACCESS = int(Status.INVALID_MEMORY_ACCESS)

_TYPE_MASK = 0x3
_COUNTER = int(MetricType.COUNTER)
_GAUGE = int(MetricType.GAUGE)
_HISTOGRAM = int(MetricType.HISTOGRAM)
_I64_SIGN = 1 << 63
_U64 = 1 << 64


def _signed(value: int) -> int:
    """An i64 argument arrives as u64; give it back its sign."""
    return value - _U64 if value & _I64_SIGN else value


def _lookup(vm: WasmVM, metric_id: int) -> Metric | None:
    return vm.runtime.metrics.get(metric_id)


@hostcall("proxy_define_metric", "iiii")
def define_metric(vm: WasmVM, metric_type: int, name_ptr: int, name_len: int, ret_id: int) -> int:
    """Envoy creates or reuses the stat ``wasmcustom.<name>``, BAD_ARGUMENT for type > 2; we also cap name size and count."""
    name = vm.read(name_ptr, name_len) if name_len <= MAX_METRIC_NAME_BYTES else b""
    if name is None:
        return INVALID_MEMORY_ACCESS
    if metric_type > _HISTOGRAM or name_len > MAX_METRIC_NAME_BYTES:
        return BAD_ARGUMENT
    store = vm.runtime.metrics
    kind = MetricType(metric_type)
    text = name.decode("utf-8", "replace")
    existing = store.all()
    if len(existing) >= MAX_METRICS and not any(m.name == text and m.type is kind for m in existing):
        return BAD_ARGUMENT
    metric = store.define(kind, text)  # as Envoy: the stat exists even if the id cannot be returned
    if not vm.memory.write_u32(ret_id, metric.id):
        return INVALID_MEMORY_ACCESS
    return OK


@hostcall("proxy_increment_metric", "iI")
def increment_metric(vm: WasmVM, metric_id: int, delta: int) -> int:
    """Envoy: counters take only positive deltas, gauges move either way, anything else is BAD_ARGUMENT."""
    kind = metric_id & _TYPE_MASK
    if kind not in (_COUNTER, _GAUGE):
        return BAD_ARGUMENT
    metric = vm.runtime.metrics.get(metric_id)
    if metric is None:
        return NOT_FOUND
    offset = delta - _U64 if delta & _I64_SIGN else delta  # the i64 arrives as a u64
    if kind == _COUNTER:
        if offset <= 0:
            return BAD_ARGUMENT
        metric.value = (metric.value + offset) % _U64
    else:
        metric.value += offset
    return OK


@hostcall("proxy_record_metric", "iI")
def record_metric(vm: WasmVM, metric_id: int, value: int) -> int:
    """Envoy: a counter adds the value, a gauge is set to it, a histogram records it; unknown ids are NOT_FOUND."""
    metric = _lookup(vm, metric_id)
    if metric is None:
        return NOT_FOUND
    if metric.type is MetricType.COUNTER:
        metric.value = (metric.value + value) % _U64
    elif metric.type is MetricType.GAUGE:
        metric.value = _signed(value)
    else:
        metric.record_sample(value)
    return OK


@hostcall("proxy_get_metric", "ii")
def get_metric(vm: WasmVM, metric_id: int, ret_value: int) -> int:
    """Envoy: the u64 value of a counter or gauge; a histogram (or type 3) id is BAD_ARGUMENT."""
    if metric_id & _TYPE_MASK not in (_COUNTER, _GAUGE):
        return BAD_ARGUMENT
    metric = _lookup(vm, metric_id)
    if metric is None:
        return NOT_FOUND
    return OK if vm.memory.write_u64(ret_value, metric.value) else INVALID_MEMORY_ACCESS
