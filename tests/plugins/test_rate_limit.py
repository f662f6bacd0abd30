"""plugins/rate_limit, source and compiled module held to the same expectations."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdk.testing import HostEmulator, PluginLoader, PluginStartError, plugin_fixture
from tests.plugins._paths import config, source

plugin = plugin_fixture(source("rate_limit"))

BUCKET = "rate_limit:default:bucket:"


def send(host: HostEmulator, headers: dict[str, str] | None = None) -> int | tuple[int, list[tuple[str, str]], bytes]:
    """200 when the request went on, else the local reply's (status, headers, body)."""
    stream = host.initialize_http_context()
    host.call_on_request_headers(stream, {":path": "/", **(headers or {})}, True)
    reply = host.local_response(stream)
    host.complete_http_context(stream)
    return 200 if reply is None else (reply.status, reply.headers, reply.body)


def statuses(host: HostEmulator, count: int, headers: dict[str, str] | None = None) -> list[int]:
    return [r if isinstance(r, int) else r[0] for r in (send(host, headers) for _ in range(count))]


def test_the_bucket_empties_then_answers_429_with_retry_after(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=config({"max_tokens": 3, "fill_interval_ms": 10_000}))
    assert statuses(host, 3) == [200, 200, 200]
    assert send(host) == (429, [("retry-after", "10")], b"rate limited\n")
    host.advance_time(2_500)
    assert send(host) == (429, [("retry-after", "8")], b"rate limited\n")  # 7.5 s to the next fill, rounded up
    assert host.logs("debug") == ["rate_limit: bucket '' is empty"] * 2


def test_the_tick_refills_per_interval_up_to_the_maximum(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=config({"max_tokens": 4, "tokens_per_fill": 2, "fill_interval_ms": 1000}))
    assert host.tick_period_ms == 1000
    assert statuses(host, 5) == [200] * 4 + [429]
    assert host.advance_time(1000) == 1
    assert statuses(host, 3) == [200, 200, 429]
    assert host.advance_time(5000) == 5
    assert host.shared_data(BUCKET).split()[0] == b"4"  # capped at max_tokens
    assert statuses(host, 5) == [200] * 4 + [429]


def test_a_key_header_gives_each_value_its_own_bucket(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=config({"max_tokens": 1, "key_header": "X-User", "max_keys": 2}))
    assert statuses(host, 2, {"x-user": "ann"}) == [200, 429]
    assert statuses(host, 2, {"x-user": "bob"}) == [200, 429]
    # beyond max_keys, new keys share one overflow bucket
    assert statuses(host, 1, {"x-user": "cat"}) == [200]
    assert statuses(host, 1, {"x-user": "dan"}) == [429]
    assert host.shared_data("rate_limit:default:buckets") == b"ann\nbob\n*\n"
    host.advance_time(1000)
    assert statuses(host, 1, {"x-user": "ann"}) == [200]
    assert statuses(host, 1, {"x-user": "dan"}) == [200]


def test_requests_without_the_key_header_share_a_bucket(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=config({"max_tokens": 1, "key_header": "x-user", "domain": "api"}))
    assert statuses(host, 2) == [200, 429]
    assert host.shared_data("rate_limit:api:bucket:") is not None


def test_a_bucket_written_by_someone_else_is_respected(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=config({"max_tokens": 5}))
    assert statuses(host, 1) == [200]
    stored = host.shared_data(BUCKET)
    assert stored is not None and stored.split()[0] == b"4"
    host.set_shared_data(BUCKET, b"0 " + stored.split()[1])
    assert statuses(host, 1) == [429]
    host.set_shared_data(BUCKET, b"garbage")  # unreadable: counted as empty, then refilled
    assert statuses(host, 1) == [429]
    host.advance_time(1000)
    assert statuses(host, 1) == [200]


def test_an_empty_bucket_stays_empty_until_the_tick_refills_it(plugin: PluginLoader) -> None:
    """A refill that is overdue (the tick is late) does not let requests through before it happens."""
    host = plugin(plugin_config=config({"max_tokens": 2}))
    assert statuses(host, 1) == [200]
    host.set_shared_data(BUCKET, b"0 1")  # empty, last filled long ago
    assert send(host) == (429, [("retry-after", "1")], b"rate limited\n")
    assert send(host) == (429, [("retry-after", "1")], b"rate limited\n")
    host.tick()
    assert statuses(host, 3) == [200, 200, 429]


def test_workers_share_one_bucket_and_refill_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two hosts mapping one shared-state file, as the sidecar's worker processes do."""
    monkeypatch.setenv("WASMESH_SHARED_STATE", str(tmp_path / "shared.state"))
    for mode in ("python", "wasm"):
        loaders = [PluginLoader(source("rate_limit"), mode), PluginLoader(source("rate_limit"), mode)]
        try:
            cfg = config({"max_tokens": 2, "fill_interval_ms": 1000, "domain": mode})
            first, second = (loader(plugin_config=cfg) for loader in loaders)
            assert [statuses(first, 1), statuses(second, 1), statuses(first, 1), statuses(second, 1)] == [
                [200], [200], [429], [429]
            ]
            first.advance_time(1000)
            second.advance_time(1000)
            assert statuses(first, 1) + statuses(second, 1) + statuses(first, 1) == [200, 200, 429]
        finally:
            for loader in loaders:
                loader.close()


@pytest.mark.parametrize(("bad", "message"), [
    ({"max_tokens": 0}, "max_tokens: expected a positive integer"),
    ({"fill_interval_ms": "1s"}, "fill_interval_ms: expected a positive integer"),
    ({"status": 200}, "status: expected an HTTP error status (400-599)"),
    ({"key_header": ""}, "key_header: expected a header name"),
    ({"domain": "a:b"}, "domain: expected a non-empty name without ':'"),
    ({"burst": 1}, "burst: unknown field (use max_tokens, tokens_per_fill, fill_interval_ms, key_header, max_keys, "
                   "domain, status, body)"),
])
def test_a_bad_configuration_is_rejected_naming_the_field(plugin: PluginLoader, bad: object, message: str) -> None:
    host = plugin(plugin_config=config(bad), start=False)
    with pytest.raises(PluginStartError):
        host.start_plugin()
    assert host.logs("error") == [f"rate_limit: {message}"]
