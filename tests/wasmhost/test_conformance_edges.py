"""Conformance: WAT edge cases — bad pointers, traps, runaway loops, memory bombs, modules that
must be refused, and the smallest valid module.

Every bad guest pointer, length or enum gets a status (INVALID_MEMORY_ACCESS, BAD_ARGUMENT,
NOT_FOUND), never a host exception. A trap, a CPU deadline hit or the memory cap fails the VM
and the stream gets Envoy's 503 ``wasm_fail_stream`` (fail closed); the host keeps serving.
"""

from __future__ import annotations

import pytest

from tests._tools import plugin_path
from tests.wasmhost._conformance import ConformanceHost
from wasmhost import FailurePolicy, Limits, ModuleError, SendLocalReply

BAD_POINTER_STATUSES = {
    "log_ptr_oob": 6,
    "log_len_overflow": 6,
    "log_ptr_end_of_memory": 6,
    "log_bad_level": 2,
    "get_header_key_oob": 6,
    "get_header_key_len_huge": 6,
    "get_header_ret_oob": 6,
    "get_header_bad_map": 2,
    "add_header_value_oob": 6,
    "get_pairs_ret_oob": 6,
    "get_pairs_bad_map": 2,
    "get_buffer_bad_type": 2,
    "get_buffer_status_ret_oob": 6,  # Envoy: the body buffer exists (empty), the out-pointer is bad
    "get_property_path_oob": 6,
    "get_property_ret_oob": 6,
    "define_metric_bad_type": 2,
    "define_metric_ret_oob": 6,
    "get_time_ret_oob": 6,
    "continue_stream_bad_type": 2,
    "close_stream_bad_type": 2,
    "set_effective_context_unknown": 2,
    "set_shared_key_oob": 6,
    "get_shared_ret_oob": 6,
    "enqueue_unknown_queue": 1,
    "http_call_malformed_pairs": 2,
    "http_call_token_oob": 6,
    "send_local_response_body_oob": 6,
}


def test_bad_pointers_get_statuses_and_the_request_continues() -> None:
    with ConformanceHost(plugin_path("bad_pointers")) as host:
        for _ in range(2):  # and again: the VM is still healthy
            result = host.request()
            lines = [e["message"].removeprefix("bad_pointers: ") for e in result["logs"]]
            assert lines[-1] == "done"
            assert {k: int(v) for k, v in (line.split("=") for line in lines[:-1])} == BAD_POINTER_STATUSES
            assert result["trap"] is None
            assert result["upstream_request"] is not None  # no local reply from the bad call
            assert ["x-bad-pointers", "survived"] in result["response"]["headers"]


@pytest.mark.parametrize("policy", [FailurePolicy.FAIL_CLOSED, FailurePolicy.FAIL_RELOAD])
def test_trap_fails_the_stream_closed(policy: FailurePolicy) -> None:
    with ConformanceHost(plugin_path("trap"), failure_policy=policy) as host:
        result = host.request()
        assert result["logs"] == [{"level": "warn", "message": "trap: about to execute unreachable"}]
        assert result["trap"] is not None and "unreachable" in result["trap"]
        assert result["upstream_request"] is None
        assert result["response"] == {"status": 503, "headers": [["content-length", "0"]], "body": ""}


def test_fail_closed_keeps_failing_without_entering_the_vm() -> None:
    with ConformanceHost(plugin_path("trap")) as host:
        host.request()
        later = host.request()
        assert (later["logs"], later["trap"], later["response"]["status"]) == ([], None, 503)


def test_fail_open_passes_later_streams_through_untouched() -> None:
    with ConformanceHost(plugin_path("trap"), failure_policy=FailurePolicy.FAIL_OPEN) as host:
        host.request()
        later = host.request(response_body="up")
        assert later["logs"] == [] and later["response"]["body"] == "up"
        assert later["upstream_request"] is not None


def test_infinite_loop_hits_the_cpu_deadline_and_the_host_moves_on() -> None:
    limits = Limits(callback_deadline_ms=50, epoch_tick_ms=5)
    with ConformanceHost(plugin_path("infinite_loop"), limits=limits) as host:
        result = host.request()
        assert result["logs"] == [{"level": "warn", "message": "infinite_loop: entering"}]
        assert result["trap"] is not None and "deadline" in result["trap"]
        assert result["response"]["status"] == 503
        assert host.runtime.counters.deadline_hits == 1


def test_memory_bomb_stops_at_the_cap() -> None:
    cap = 8 * 1024 * 1024
    with ConformanceHost(plugin_path("memory_bomb"), limits=Limits(max_vm_memory=cap)) as host:
        result = host.request()
        assert result["logs"] == [{"level": "error", "message": "memory_bomb: grow failed"}]
        assert result["trap"] is not None
        assert result["response"]["status"] == 503
        vm = host.plugin.vm
        assert vm is not None and vm.memory.refresh() <= cap


def test_the_failure_reply_is_envoys_wasm_fail_stream() -> None:
    with ConformanceHost(plugin_path("trap")) as host:
        stream = host.plugin.new_http_stream()
        stream.on_request_headers([(b":path", b"/")], True)
        [reply] = [c for c in host.runtime.take_commands() if isinstance(c, SendLocalReply)]
        assert (reply.status, reply.details, reply.grpc_status, reply.body) == (
            503,
            "wasm_fail_stream",
            14,
            b"",
        )
        stream.finish()


@pytest.mark.parametrize(
    ("plugin", "message"),
    [("no_abi_marker", "ABI version"), ("no_allocator", "allocator")],
)
def test_modules_without_marker_or_allocator_are_refused_by_name(plugin: str, message: str) -> None:
    with pytest.raises(ModuleError, match=message):
        ConformanceHost(plugin_path(plugin))


def test_minimal_module_runs_with_no_callbacks() -> None:
    with ConformanceHost(plugin_path("minimal")) as host:
        result = host.request(method="POST", body="in", response_body="out")
        assert result["upstream_request"]["body"] == "in"
        assert result["response"]["body"] == "out"
        assert (result["logs"], result["trap"]) == ([], None)
