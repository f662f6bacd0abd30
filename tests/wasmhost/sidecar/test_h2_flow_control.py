"""HTTP/2 codec flow control: a stream's window follows its consumer, the connection window does not."""

from __future__ import annotations

import h2.connection
import h2.events

from tests.wasmhost.sidecar.test_h2 import Events, exchange, peer
from wasmhost.sidecar import HeaderMap
from wasmhost.sidecar._h2 import Http2Codec, SendBacklog

WINDOW = 65536
REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a")]


def server_and_client(window: int = WINDOW) -> tuple[Http2Codec, h2.connection.H2Connection, Events]:
    sink = Events()
    codec = Http2Codec(sink, client_side=False, initial_stream_window=window, initial_connection_window=window)
    client = peer(client_side=True)
    exchange(codec, client)
    return codec, client, sink


def upload(codec: Http2Codec, client: h2.connection.H2Connection, stream_id: int, size: int) -> None:
    """Send ``size`` bytes on ``stream_id`` in frames, delivering each to the codec."""
    while size > 0:
        chunk = min(size, 16384, client.local_flow_control_window(stream_id))
        assert chunk > 0, f"stream {stream_id} blocked with {size} bytes left"
        client.send_data(stream_id, b"u" * chunk)
        size -= chunk
        exchange(codec, client)


def test_a_paused_stream_keeps_its_window_while_the_connection_and_other_streams_flow() -> None:
    codec, client, sink = server_and_client()
    client.send_headers(1, REQUEST)
    client.send_headers(3, REQUEST)
    exchange(codec, client)
    codec.pause_reading(1, True)
    upload(codec, client, 1, WINDOW)  # all the window allows, not handed back
    assert client.local_flow_control_window(1) == 0
    assert client.outbound_flow_control_window == WINDOW  # the connection window came back
    upload(codec, client, 3, 3 * WINDOW)  # a stream whose consumer keeps up is not held
    assert client.local_flow_control_window(3) > 0
    received = sum(len(e[2]) for e in sink.events if e[0] == "data")
    assert received == 4 * WINDOW
    codec.pause_reading(1, False)
    exchange(codec, client)
    assert client.local_flow_control_window(1) == WINDOW
    assert not codec.reading_paused(1)


def test_queued_counts_what_waits_for_the_peers_window() -> None:
    codec, client, _ = server_and_client()
    client.send_headers(1, REQUEST, end_stream=True)
    exchange(codec, client)
    codec.send_headers(1, HeaderMap([(b":status", b"200")]), False)
    codec.send_data(1, b"d" * 100_000, False)
    codec.send_data(1, b"e" * 1000, True)
    assert codec.queued(1) == 101_000 - 65535  # the client's default window took the rest
    events = exchange(codec, client)
    taken = sum(e.flow_controlled_length for e in events if isinstance(e, h2.events.DataReceived))
    client.acknowledge_received_data(taken, 1)
    exchange(codec, client)
    assert codec.queued(1) == 0


def test_a_reset_forgets_the_streams_queue_and_pause() -> None:
    codec, client, _ = server_and_client()
    client.send_headers(1, REQUEST)
    exchange(codec, client)
    codec.pause_reading(1, True)
    codec.send_headers(1, HeaderMap([(b":status", b"200")]), False)
    codec.send_data(1, b"d" * 100_000, False)
    codec.reset_stream(1)
    assert (codec.queued(1), codec.reading_paused(1)) == (0, False)


def test_the_backlog_pauses_a_streams_feeder_over_the_limit_and_resumes_it_at_half() -> None:
    codec, client, _ = server_and_client()
    for stream_id in (1, 3):
        client.send_headers(stream_id, REQUEST, end_stream=True)
    exchange(codec, client)
    calls: list[tuple[str, bool]] = []
    backlog = SendBacklog(codec, 10_000, lambda owner, paused: calls.append((owner, paused)))
    owners = {1: "feeder-1", 3: "feeder-3"}
    codec.send_headers(1, HeaderMap([(b":status", b"200")]), False)
    codec.send_data(1, b"d" * (65535 + 30_000), False)  # 30 000 bytes wait for the client's window
    backlog.sent(1, owners[1])
    backlog.sent(1, owners[1])  # still over: no second pause
    backlog.socket(True, owners)  # a full socket pauses the others; stream 1 is paused already
    backlog.socket(False, owners)
    client.increment_flow_control_window(15_000, 1)
    client.increment_flow_control_window(15_000)
    exchange(codec, client)
    backlog.windows_opened(owners)  # 15 000 left: above half the limit, still paused
    client.increment_flow_control_window(15_000, 1)
    client.increment_flow_control_window(15_000)
    exchange(codec, client)
    backlog.windows_opened(owners)
    assert calls == [("feeder-1", True), ("feeder-3", True), ("feeder-3", False), ("feeder-1", False)]
    assert not backlog.blocked


def test_a_stream_that_ends_paused_resumes_its_feeder_and_new_streams_wait_for_a_full_socket() -> None:
    codec, client, _ = server_and_client()
    client.send_headers(1, REQUEST, end_stream=True)
    exchange(codec, client)
    calls: list[tuple[str, bool]] = []
    backlog = SendBacklog(codec, 10_000, lambda owner, paused: calls.append((owner, paused)))
    backlog.socket(True, {})
    backlog.sent(5, "late")  # started while the socket is full: paused at once
    backlog.forget(5, "late")
    backlog.forget(7, "never-paused")
    backlog.socket(False, {})
    assert calls == [("late", True), ("late", False)]


def test_finished_streams_leave_no_flow_control_state() -> None:
    codec, client, _ = server_and_client()
    client.send_headers(1, REQUEST)
    exchange(codec, client)
    upload(codec, client, 1, 1000)
    client.send_headers(1, [(b"x-trailer", b"t")], end_stream=True)  # END_STREAM on trailers
    exchange(codec, client)
    codec.pause_reading(1, True)  # a late pause for a stream the client has finished
    assert (codec._stream_unacked, codec._read_paused) == ({}, set())
