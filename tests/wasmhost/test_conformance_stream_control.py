"""Conformance: ``stream_control`` (C) and ``tick`` (C) — pause, resume, close, timers.

A paused request or response resumes only through ``proxy_continue_stream`` (here from the
root's ``on_tick`` after ``proxy_set_effective_context``), carried out after the callback
returns; ``proxy_close_stream`` resets the stream (no response). Ticks go to the root that set
the period; period 0 stops them.
"""

from __future__ import annotations

from tests._tools import plugin_path
from tests.wasmhost._conformance import ConformanceHost
from wasmhost import CloseStream, ResumeStream, SetTickPeriod, StreamType
from wasmhost._filter_status import HEADERS_STOP_ALL_WATERMARK


def test_request_resumed_by_tick() -> None:
    with ConformanceHost(plugin_path("stream_control")) as host:
        result = host.request()
        assert ["x-resumed-by", "tick"] in result["upstream_request"]["headers"]
        assert result["response"]["status"] == 200
        assert result["logs"] == [
            {"level": "info", "message": "stream_control: resumed request ctx=2 status=0"}
        ]


def test_response_paused_then_resumed_by_tick() -> None:
    with ConformanceHost(plugin_path("stream_control"), configuration="5") as host:
        assert host.tick_periods == {id(host.plugin.root): 5}
        result = host.request(headers=[("x-pause-response", "1")], response_body="body")
        assert ["x-resumed-by", "tick"] in result["response"]["headers"]
        assert result["response"]["body"] == "body"
        assert [e["message"] for e in result["logs"]] == [
            "stream_control: resumed request ctx=2 status=0",
            "stream_control: resumed response ctx=2 status=0",
        ]


def test_close_on_the_request_resets_the_stream() -> None:
    with ConformanceHost(plugin_path("stream_control")) as host:
        result = host.request(headers=[("x-close", "1")])
        assert (result["upstream_request"], result["response"]) == (None, None)
        assert result["logs"] == [
            {"level": "info", "message": "stream_control: close_stream request status=0"}
        ]


def test_close_on_the_response_resets_after_the_upstream_answered() -> None:
    with ConformanceHost(plugin_path("stream_control")) as host:
        result = host.request(headers=[("x-close-response", "1")])
        assert result["upstream_request"] is not None
        assert result["response"] is None


def test_resume_and_close_are_commands_on_the_stream() -> None:
    with ConformanceHost(plugin_path("stream_control")) as host:
        stream = host.plugin.new_http_stream()
        assert stream.on_request_headers([(b":path", b"/")], True) == HEADERS_STOP_ALL_WATERMARK
        assert host.runtime.take_commands() == []  # nothing happens until the timer fires
        host.plugin.on_tick()
        [resume] = host.runtime.take_commands()
        assert isinstance(resume, ResumeStream)
        assert (resume.stream, resume.direction) == (stream.ctx, StreamType.HTTP_REQUEST)
        closing = host.plugin.new_http_stream()
        closing.on_request_headers([(b"x-close", b"1")], True)
        [close] = host.runtime.take_commands()
        assert isinstance(close, CloseStream) and close.direction is StreamType.HTTP_REQUEST
        for s in (stream, closing):
            s.finish()
        host.environment.take()


def test_tick_counts_in_shared_data_and_stops_after_max_ticks() -> None:
    with ConformanceHost(plugin_path("tick"), configuration="50,3") as host:
        assert host.startup_logs == [{"level": "info", "message": "tick: period=50 max=3 status=0"}]
        logs = [e["message"] for e in host.tick(5)]
        assert logs == [
            "tick: on_tick root=1 count=1 local=1",
            "tick: on_tick root=1 count=2 local=2",
            "tick: on_tick root=1 count=3 local=3",
            "tick: stopped root=1 after=3",
        ]
        assert host.tick_periods[id(host.plugin.root)] == 0
        headers = dict(host.request()["response"]["headers"])
        assert headers["x-tick-count"] == "3"
        assert headers["x-now-ns"].isdigit() and len(headers["x-now-ns"]) == 19


def test_tick_period_is_a_command_for_the_embedder() -> None:
    with ConformanceHost(plugin_path("tick"), configuration="250") as host:
        host.plugin.on_tick()
        assert host.runtime.take_commands() == []  # unlimited ticks: the period stays
        assert host.plugin.root is not None and host.plugin.root.tick_period_ms == 250


def test_malformed_tick_configuration_is_refused() -> None:
    import pytest

    from wasmhost import PluginStartError

    with pytest.raises(PluginStartError):
        with ConformanceHost(plugin_path("tick"), configuration="ten"):
            pass


def test_set_tick_period_command_names_the_root() -> None:
    with ConformanceHost(plugin_path("tick"), configuration="7,1") as host:
        host.plugin.on_tick()
        [stop] = host.runtime.take_commands()
        assert isinstance(stop, SetTickPeriod) and (stop.root, stop.period_ms) == (host.plugin.root, 0)
        host.environment.take()
