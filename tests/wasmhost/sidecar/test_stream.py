"""Filter chain state machine, playbook style: events in, filter calls and commands out."""

from __future__ import annotations

from typing import Any

from tests.wasmhost.sidecar._core import (
    Responder,
    chain,
    commands_summary,
    get_request,
    make_runtime,
    new_stream,
    take,
)
from wasmhost.sidecar import DataStatus, HeaderMap, HeadersStatus, TrailersStatus


def setup(*scripts: tuple[str, dict[str, Any]]) -> tuple[Any, list[tuple[Any, ...]], list[Responder], Any]:
    journal: list[tuple[Any, ...]] = []
    terminals: list[Responder] = []
    _, ctx, _ = make_runtime(filters=chain(journal, scripts, terminals))
    stream = new_stream(ctx)
    return ctx, journal, terminals, stream


def test_headers_and_body_pass_through_in_order() -> None:
    ctx, journal, terminals, stream = setup(("a", {}), ("b", {}))
    stream.on_request_headers(get_request(method="POST"), False)
    stream.on_request_data(b"hello", True)
    assert journal == [
        ("a", "decode_headers", False), ("b", "decode_headers", False), ("terminal", "decode_headers", False),
        ("a", "decode_data", b"hello", True), ("b", "decode_data", b"hello", True),
        ("terminal", "decode_data", b"hello", True),
    ]
    journal.clear()
    terminals[0].respond(201, b"done")
    # encoders run in reverse order; then the stream completes and every filter is logged and destroyed
    assert journal == [
        ("b", "encode_headers", b"201", False), ("a", "encode_headers", b"201", False),
        ("b", "encode_data", b"done", True), ("a", "encode_data", b"done", True),
        ("a", "on_log"), ("b", "on_log"), ("a", "on_destroy"), ("b", "on_destroy"),
    ]
    assert commands_summary(take(ctx)) == [("SendHeaders", b"201", False), ("SendData", b"done", True),
                                           ("StreamEnded",)]


def test_stop_iteration_holds_headers_but_lets_data_reach_the_stopping_filter() -> None:
    ctx, journal, terminals, stream = setup(("a", {"decode_headers": HeadersStatus.StopIteration,
                                                   "decode_data": DataStatus.StopIterationAndBuffer}), ("b", {}))
    stream.on_request_headers(get_request(method="POST"), False)
    stream.on_request_data(b"one", False)
    stream.on_request_data(b"two", True)
    assert journal == [("a", "decode_headers", False), ("a", "decode_data", b"one", False),
                       ("a", "decode_data", b"two", True)]
    journal.clear()
    assert stream.dec.buffer is not None and stream.dec.buffer.to_bytes() == b"onetwo"
    stream.callbacks[0].continue_decoding()
    assert journal == [("b", "decode_headers", False), ("terminal", "decode_headers", False),
                       ("b", "decode_data", b"onetwo", True), ("terminal", "decode_data", b"onetwo", True)]


def test_stop_all_buffers_without_calling_the_filter_until_it_continues() -> None:
    """As Envoy's ``iterate_from_current_filter_``: the body and trailers parked behind a
    StopAll filter start at that filter once it continues (it has not seen them yet)."""
    ctx, journal, terminals, stream = setup(("a", {"decode_headers": HeadersStatus.StopAllIterationAndBuffer}),
                                            ("b", {}))
    stream.on_request_headers(get_request(method="POST"), False)
    stream.on_request_data(b"x", False)
    stream.on_request_data(b"y", False)
    stream.on_request_trailers(HeaderMap([(b"t", b"1")]))
    assert journal == [("a", "decode_headers", False)]
    journal.clear()
    stream.callbacks[0].continue_decoding()
    assert journal == [("b", "decode_headers", False), ("terminal", "decode_headers", False),
                       ("a", "decode_data", b"xy", False), ("b", "decode_data", b"xy", False),
                       ("terminal", "decode_data", b"xy", False),
                       ("a", "decode_trailers"), ("b", "decode_trailers"), ("terminal", "decode_trailers")]


def test_continue_from_data_releases_stopped_headers() -> None:
    ctx, journal, terminals, stream = setup(("a", {"decode_headers": HeadersStatus.StopIteration}))
    stream.on_request_headers(get_request(method="POST"), False)
    stream.on_request_data(b"body", True)  # a returns Continue for data: headers and data move on
    assert journal == [("a", "decode_headers", False), ("a", "decode_data", b"body", True),
                       ("terminal", "decode_headers", False), ("terminal", "decode_data", b"body", True)]


def test_header_only_request_continued_later_keeps_end_stream() -> None:
    ctx, journal, terminals, stream = setup(("a", {"decode_headers": HeadersStatus.StopIteration}))
    stream.on_request_headers(get_request(), True)
    stream.callbacks[0].continue_decoding()
    assert journal == [("a", "decode_headers", True), ("terminal", "decode_headers", True)]


def test_stop_iteration_no_buffer_then_end_stream_delivers_empty_end() -> None:
    ctx, journal, terminals, stream = setup(("a", {"decode_data": DataStatus.StopIterationNoBuffer}))
    stream.on_request_headers(get_request(method="POST"), False)
    stream.on_request_data(b"swallowed", True)
    stream.callbacks[0].continue_decoding()
    assert journal[-1] == ("terminal", "decode_data", b"", True)


def test_buffer_limit_answers_413() -> None:
    ctx, journal, terminals, stream = setup(("a", {"decode_data": DataStatus.StopIterationAndBuffer}))
    stream.dec.buffer_limit = 8
    stream.on_request_headers(get_request(method="POST"), False)
    take(ctx)
    stream.on_request_data(b"12345", False)
    stream.on_request_data(b"67890", False)
    commands = commands_summary(take(ctx))
    assert commands[:2] == [("CloseAfterResponse",), ("SendHeaders", b"413", False)]
    assert ("SendData", b"Payload Too Large", True) in commands
    assert stream.info.response_code_details == "request_payload_too_large"


def test_local_reply_from_a_decoder_runs_through_encoders_and_stops_decoding() -> None:
    def reply(flt: Any, end_stream: bool) -> HeadersStatus:
        flt.callbacks.send_local_reply(403, b"denied", [(b"x-why", b"policy")], details="test_denied")
        return HeadersStatus.StopIteration

    ctx, journal, terminals, stream = setup(("a", {}), ("b", {"decode_headers": reply}))
    stream.on_request_headers(get_request(method="POST"), False)
    stream.on_request_data(b"ignored", True)
    assert ("terminal", "decode_headers", False) not in journal
    assert ("b", "encode_headers", b"403", False) in journal and ("a", "encode_headers", b"403", False) in journal
    commands = take(ctx)
    assert commands_summary(commands) == [("CloseAfterResponse",), ("SendHeaders", b"403", False),
                                          ("SendData", b"denied", True), ("StreamEnded",)]
    headers = commands[1].headers
    assert headers.get(b"content-type") == b"text/plain" and headers.get(b"x-why") == b"policy"
    assert headers.get(b"content-length") == b"6" and headers.get(b"server") == b"envoy"
    assert stream.info.response_code_details == "test_denied"


def test_local_reply_for_grpc_is_trailers_only() -> None:
    def reply(flt: Any, end_stream: bool) -> HeadersStatus:
        flt.callbacks.send_local_reply(503, b"unavailable")
        return HeadersStatus.StopIteration

    ctx, journal, terminals, stream = setup(("a", {"decode_headers": reply}))
    stream.on_request_headers(get_request(method="POST", extra=[(b"content-type", b"application/grpc")]), False)
    reply = [c for c in take(ctx) if type(c).__name__ == "SendHeaders"][0]
    headers = reply.headers
    assert headers.get(b":status") == b"200" and headers.get(b"grpc-status") == b"14"
    assert headers.get(b"grpc-message") == b"unavailable" and reply.end_stream


def test_local_reply_after_response_started_resets() -> None:
    ctx, journal, terminals, stream = setup(("a", {}))
    stream.on_request_headers(get_request(), True)
    terminals[0].callbacks.encode_headers(HeaderMap([(b":status", b"200")]), False)
    take(ctx)
    stream.send_local_reply(500, b"late")
    assert commands_summary(take(ctx)) == [("ResetDownstream", "local_reply_after_response_started"),
                                           ("StreamEnded",)]


def test_encoder_stop_and_continue() -> None:
    ctx, journal, terminals, stream = setup(("a", {"encode_headers": HeadersStatus.StopIteration,
                                                   "encode_data": DataStatus.StopIterationAndBuffer}))
    stream.on_request_headers(get_request(), True)
    terminals[0].respond(200, b"payload")
    assert take(ctx) == []
    assert stream.enc.buffer is not None and stream.enc.buffer.to_bytes() == b"payload"
    stream.callbacks[0].continue_encoding()
    assert commands_summary(take(ctx)) == [("SendHeaders", b"200", False), ("SendData", b"payload", True),
                                           ("StreamEnded",)]


def test_continue_and_end_stream_turns_the_rest_header_only() -> None:
    ctx, journal, terminals, stream = setup(("a", {"decode_headers": HeadersStatus.ContinueAndEndStream}))
    stream.on_request_headers(get_request(method="POST"), False)
    stream.on_request_data(b"dropped", True)
    assert ("terminal", "decode_headers", True) in journal
    assert not any(entry[:2] == ("terminal", "decode_data") for entry in journal)


def test_trailers_stop_and_continue() -> None:
    ctx, journal, terminals, stream = setup(("a", {"decode_trailers": TrailersStatus.StopIteration}))
    stream.on_request_headers(get_request(method="POST"), False)
    stream.on_request_data(b"d", False)
    stream.on_request_trailers(HeaderMap([(b"x-t", b"1")]))
    assert journal[-1] == ("a", "decode_trailers")
    stream.callbacks[0].continue_decoding()
    assert journal[-1] == ("terminal", "decode_trailers")


def test_downstream_reset_destroys_filters_once() -> None:
    ctx, journal, terminals, stream = setup(("a", {}))
    stream.on_request_headers(get_request(method="POST"), False)
    stream.on_downstream_reset()
    stream.on_downstream_reset()
    assert journal.count(("a", "on_destroy")) == 1
    assert commands_summary(take(ctx)) == [("StreamEnded",)]
    assert stream.info.flags_string() == "DC"


def test_add_decoded_data_is_seen_by_later_filters() -> None:
    def add(flt: Any, end_stream: bool) -> HeadersStatus:
        flt.callbacks.add_decoded_data(b"injected")
        return HeadersStatus.Continue

    ctx, journal, terminals, stream = setup(("a", {"decode_headers": add}))
    stream.on_request_headers(get_request(method="POST"), True)
    stream.callbacks[0].continue_decoding()  # no-op: a is not stopped
    assert stream.dec.buffer is not None and stream.dec.buffer.to_bytes() == b"injected"


def test_http10_is_refused_by_default() -> None:
    _, ctx, _ = make_runtime()
    from wasmhost.sidecar._stream import HttpStream

    stream = HttpStream(ctx, 1, ("10.0.0.1", 1), ("127.0.0.1", 2), protocol="HTTP/1.0")
    stream.on_request_headers(get_request(), True)
    assert commands_summary(take(ctx))[0] == ("SendHeaders", b"426", True)


def test_missing_authority_is_a_400() -> None:
    _, ctx, _ = make_runtime()
    stream = new_stream(ctx)
    stream.on_request_headers(HeaderMap([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/")]), True)
    assert commands_summary(take(ctx))[0] == ("SendHeaders", b"400", False)
