"""The module endpoint: content-addressed GET/HEAD with ETag, ranges and exact lengths, only for
published modules, and many concurrent fetches of one module answered from one in-memory copy."""

from __future__ import annotations

import hashlib
import http.client
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from controlplane._module_server import parse_range, respond
from tests.controlplane._running import RunningControlPlane

MODULE = b"\0asm\x01\0\0\0" + os.urandom(100_000)
SHA = hashlib.sha256(MODULE).hexdigest()
PATH = f"/modules/sha256/{SHA}"


def lookup(sha256: str) -> bytes | None:
    return MODULE if sha256 == SHA else None


def header(reply: object, name: str) -> str | None:
    return dict(reply.headers).get(name)  # type: ignore[attr-defined]


def test_full_response_is_content_addressed_and_cacheable() -> None:
    reply = respond("GET", PATH, {}, lookup)
    assert reply.status == 200 and bytes(reply.body) == MODULE
    assert header(reply, "content-length") == str(len(MODULE)) and header(reply, "content-type") == "application/wasm"
    assert header(reply, "etag") == f'"{SHA}"' and "immutable" in (header(reply, "cache-control") or "")
    assert header(reply, "accept-ranges") == "bytes"


@pytest.mark.parametrize("value", [f'"{SHA}"', f'W/"{SHA}"', f'"other", "{SHA}"', "*"])
def test_if_none_match_answers_not_modified(value: str) -> None:
    reply = respond("GET", PATH, {"if-none-match": value}, lookup)
    assert reply.status == 304 and reply.body == b"" and header(reply, "etag") == f'"{SHA}"'


def test_if_none_match_with_another_tag_sends_the_module() -> None:
    assert respond("GET", PATH, {"if-none-match": '"stale"'}, lookup).status == 200


@pytest.mark.parametrize(("value", "start", "end"), [
    ("bytes=0-99", 0, 99), ("bytes=100-", 100, len(MODULE) - 1), ("bytes=-10", len(MODULE) - 10, len(MODULE) - 1),
    ("bytes=50-999999999", 50, len(MODULE) - 1), ("bytes=-999999999", 0, len(MODULE) - 1)])
def test_single_ranges(value: str, start: int, end: int) -> None:
    reply = respond("GET", PATH, {"range": value}, lookup)
    assert reply.status == 206 and bytes(reply.body) == MODULE[start:end + 1]
    assert header(reply, "content-range") == f"bytes {start}-{end}/{len(MODULE)}"
    assert header(reply, "content-length") == str(end - start + 1)


@pytest.mark.parametrize("value", [f"bytes={len(MODULE)}-", f"bytes={len(MODULE) + 5}-{len(MODULE) + 9}", "bytes=-0"])
def test_unsatisfiable_ranges(value: str) -> None:
    reply = respond("GET", PATH, {"range": value}, lookup)
    assert reply.status == 416 and header(reply, "content-range") == f"bytes */{len(MODULE)}"


@pytest.mark.parametrize("value", ["bytes=0-1,5-9", "items=0-5", "bytes=9-3", "bytes=x-", "bytes=-"])
def test_ranges_a_server_may_ignore_get_the_whole_module(value: str) -> None:
    assert parse_range(value, len(MODULE)) is None
    assert respond("GET", PATH, {"range": value}, lookup).status == 200


def test_if_range_with_another_tag_sends_the_whole_module() -> None:
    assert respond("GET", PATH, {"range": "bytes=0-9", "if-range": '"old"'}, lookup).status == 200
    assert respond("GET", PATH, {"range": "bytes=0-9", "if-range": f'"{SHA}"'}, lookup).status == 206


@pytest.mark.parametrize(("method", "target", "status"), [
    ("GET", "/modules/sha256/" + "0" * 64, 404), ("GET", "/modules/sha256/XYZ", 400),
    ("GET", "/modules/sha256/" + SHA.upper(), 400), ("POST", PATH, 405), ("GET", "/modules/md5/abc", 404)])
def test_errors_name_the_problem(method: str, target: str, status: int) -> None:
    reply = respond(method, target, {}, lookup)
    assert reply.status == status and bytes(reply.body).strip()
    assert header(reply, "content-length") == str(len(reply.body))


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[RunningControlPlane]:
    running = RunningControlPlane(None)
    running.settings.module_cache_dir = tmp_path / "cache"
    with running:
        yield running


def fetch(address: str, path: str, headers: dict[str, str] | None = None, method: str = "GET",
          ) -> tuple[int, dict[str, str], bytes]:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def test_only_published_modules_are_served_and_concurrent_fetches_get_identical_bytes(
        plane: RunningControlPlane) -> None:
    assert plane.plane is not None
    resolver = plane.plane.modules
    resolver.cache.put(MODULE)
    assert fetch(plane.api_address, PATH)[0] == 404  # verified and cached, but no proxy was told about it
    resolver.published.add(SHA)
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(lambda _: fetch(plane.api_address, PATH), range(64)))
    assert all(status == 200 and body == MODULE and headers["content-length"] == str(len(MODULE))
               for status, headers, body in results)
    status, headers, body = fetch(plane.api_address, PATH, {"Range": "bytes=8-15"})
    assert status == 206 and body == MODULE[8:16] and headers["content-range"] == f"bytes 8-15/{len(MODULE)}"
    status, headers, body = fetch(plane.api_address, PATH, method="HEAD")
    assert status == 200 and body == b"" and headers["content-length"] == str(len(MODULE))
    assert fetch(plane.api_address, PATH, {"If-None-Match": headers["etag"]})[0] == 304


def test_a_module_altered_on_disk_is_never_served(plane: RunningControlPlane, tmp_path: Path) -> None:
    assert plane.plane is not None
    resolver = plane.plane.modules
    other = b"\0asm\x01\0\0\0tampered-later"
    sha = resolver.cache.put(other)
    resolver.cache._memory.clear()  # as after a restart: the next read comes from disk
    (tmp_path / "cache" / "sha256" / sha).write_bytes(other + b"!")
    resolver.published.add(sha)
    assert fetch(plane.api_address, f"/modules/sha256/{sha}")[0] == 404
