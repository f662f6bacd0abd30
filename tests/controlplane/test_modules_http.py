"""`https://` (and `http://`) module URLs resolved by the control plane, against pytest-httpserver:
redirects, a downgrade to http, 404, slow and truncated responses, checksums, wrappers, TLS trust,
and retries of server errors by the resolver."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane._module_cache import ModuleCache
from controlplane._module_config import ModulesConfig
from controlplane._module_fetch import Fetcher, FetchRequest, ModuleRefused
from controlplane._module_placement import ModuleSlot, Served
from controlplane._modules import ModuleResolver
from controlplane._resources import ResourceKey
from registry import TrustPolicy
from tests.wasmhost.sidecar._certs import Pki, make_pki

try:
    from pytest_httpserver import HTTPServer
    from werkzeug import Request, Response
except ImportError:  # the dev dependency is missing: skip, but never under CI
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("pytest-httpserver is not installed", allow_module_level=True)

MODULE = b"\0asm\x01\0\0\0" + b"module bytes " * 100
SHA = hashlib.sha256(MODULE).hexdigest()
POLICY = TrustPolicy()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def https(pki: Pki) -> Iterator[HTTPServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server.cert, pki.server.key)
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context)
    server.start()
    try:
        yield server
    finally:
        server.clear()
        if server.is_running():
            server.stop()


def fetcher(tmp_path: Path, pki: Pki | None, timeout: float = 5.0) -> Fetcher:
    return Fetcher(ModuleCache(tmp_path / "cache"), timeout=timeout, ca_file=pki.ca if pki is not None else None)


def refused(fetch: Fetcher, url: str, sha256: str | None = None) -> ModuleRefused:
    with pytest.raises(ModuleRefused) as caught:
        fetch.fetch(FetchRequest(url, POLICY, sha256))
    return caught.value


def test_https_module_with_its_checksum_is_cached(https: HTTPServer, pki: Pki, tmp_path: Path) -> None:
    https.expect_request("/m.wasm").respond_with_data(MODULE, content_type="application/wasm")
    fetch = fetcher(tmp_path, pki)
    fetched = fetch.fetch(FetchRequest(https.url_for("/m.wasm"), POLICY, SHA))
    assert fetched.module_sha256 == SHA and fetched.pulled and "checksum" in fetched.verification
    assert fetch.cache.read(SHA) == MODULE
    again = fetch.fetch(FetchRequest(https.url_for("/m.wasm"), POLICY, SHA))  # IfNotPresent: no request
    assert not again.pulled and len(https.log) == 1


def test_redirects_are_followed_but_never_to_plain_http(https: HTTPServer, httpserver: HTTPServer, pki: Pki,
                                                        tmp_path: Path) -> None:
    https.expect_request("/old").respond_with_response(Response(status=302, headers={"location": "/new"}))
    https.expect_request("/new").respond_with_data(MODULE)
    assert fetcher(tmp_path, pki).fetch(FetchRequest(https.url_for("/old"), POLICY, SHA)).module_sha256 == SHA
    httpserver.expect_request("/m.wasm").respond_with_data(MODULE)
    https.expect_request("/down").respond_with_response(
        Response(status=301, headers={"location": httpserver.url_for("/m.wasm")}))
    error = refused(fetcher(tmp_path, pki), https.url_for("/down"))
    assert "refusing to follow a redirect from https" in str(error) and not httpserver.log


def test_not_found_names_the_status(https: HTTPServer, pki: Pki, tmp_path: Path) -> None:
    https.expect_request("/missing").respond_with_data("no", status=404)
    error = refused(fetcher(tmp_path, pki), https.url_for("/missing"))
    assert error.condition == "Resolved" and "HTTP 404" in str(error) and not error.retryable


def test_a_slow_server_times_out(https: HTTPServer, pki: Pki, tmp_path: Path) -> None:
    def slow(request: Request) -> Response:
        time.sleep(1.5)
        return Response(MODULE)

    https.expect_request("/slow").respond_with_handler(slow)
    started = time.monotonic()
    error = refused(fetcher(tmp_path, pki, timeout=0.3), https.url_for("/slow"))
    assert "timed out" in str(error) and error.retryable and time.monotonic() - started < 1.4


def test_a_truncated_body_is_refused(https: HTTPServer, pki: Pki, tmp_path: Path) -> None:
    def truncated(request: Request) -> Response:
        # a streamed body keeps werkzeug from correcting the announced length
        return Response(iter([MODULE[:100]]), headers={"content-length": str(len(MODULE)), "connection": "close"})

    https.expect_request("/cut").respond_with_handler(truncated)
    error = refused(fetcher(tmp_path, pki), https.url_for("/cut"))
    assert "truncated" in str(error) and error.retryable


def test_checksum_format_and_wrappers(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/m.wasm").respond_with_data(MODULE)
    httpserver.expect_request("/text").respond_with_data(b"<html>not a module</html>")
    httpserver.expect_request("/m.wasm.gz").respond_with_data(gzip.compress(MODULE))
    fetch = fetcher(tmp_path, None)
    error = refused(fetch, httpserver.url_for("/m.wasm"), "0" * 64)
    assert error.condition == "Verified" and error.reason == "ChecksumMismatch" and SHA in str(error)
    assert refused(fetch, httpserver.url_for("/text")).reason == "InvalidModule"
    assert fetch.fetch(FetchRequest(httpserver.url_for("/m.wasm.gz"), POLICY)).module_sha256 == SHA
    assert not fetch.cache.has("0" * 64)


def test_an_untrusted_certificate_is_refused(https: HTTPServer, tmp_path: Path) -> None:
    https.expect_request("/m.wasm").respond_with_data(MODULE)
    error = refused(fetcher(tmp_path, None), https.url_for("/m.wasm"))
    assert "CERTIFICATE_VERIFY_FAILED" in str(error)


def test_the_resolver_retries_server_errors_and_reports_the_module(https: HTTPServer, pki: Pki,
                                                                    tmp_path: Path) -> None:
    for _ in range(2):
        https.expect_ordered_request("/flaky").respond_with_data("busy", status=503)
    https.expect_ordered_request("/flaky").respond_with_data(MODULE)
    config = ModulesConfig(ca_file=pki.ca)
    resolver = ModuleResolver(config, ModuleCache(tmp_path / "cache"), backoff=0.01)
    slot = ModuleSlot("WasmPlugin default/p", ResourceKey("WasmPlugin", "default", "p"), "default.p",
                      https.url_for("/flaky"), SHA)
    changes: list[Any] = []
    resolver.on_change = lambda: changes.append(resolver.placements().slots[slot.key])

    async def run() -> None:
        resolver.track([slot])
        await resolver.settled()

    asyncio.run(run())
    assert changes == [Served(SHA)] and len(https.log) == 3
    status = resolver.status_of(slot.owner)
    assert status is not None and status["module"]["sha256"] == SHA
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("Resolved", "True", "Resolved"), ("Verified", "True", "ChecksumPinned"), ("Distributed", "True", "ControlPlane")]
