"""The module agent against a live registry, a local HTTP server and files."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry import (
    Reference,
    RegistryClient,
    TrustPolicy,
    generate_keypair,
    load_private_key,
    load_public_key,
    push_module,
    sign_image,
)
from registry.testing import running_registry
from tests.registry._tools import DATA, build_wat
from wasmhost.agent import FetchError, ModuleAgent, ModuleRequest, ModuleSource, ModuleStore, PullPolicy


@pytest.fixture(scope="module")
def module() -> bytes:
    return build_wat((DATA / "echo_plugin.wat").read_text())


@pytest.fixture(scope="module")
def keys():  # type: ignore[no-untyped-def]
    private_pem, public_pem = generate_keypair()
    return load_private_key(private_pem), load_public_key(public_pem)


def test_sources_and_pull_policy_follow_istio() -> None:
    assert ModuleSource.parse("reg.example/p/m:v1").kind == "oci"
    assert ModuleSource.parse("oci://reg.example/p/m@sha256:" + "a" * 64).cache_name == "reg.example/p/m"
    assert ModuleSource.parse("file:///opt/m.wasm").path == "/opt/m.wasm"
    assert ModuleRequest("oci://reg.example/p/m").always_pull  # implicit :latest
    assert not ModuleRequest("oci://reg.example/p/m:v1").always_pull
    assert ModuleRequest("oci://reg.example/p/m:v1", pull_policy=PullPolicy.ALWAYS).always_pull
    assert not ModuleRequest("oci://reg.example/p/m:latest", pull_policy=PullPolicy.IF_NOT_PRESENT).always_pull
    for bad, message in [("ftp://x/y", "scheme ftp"), ("file://host/x", "file:///absolute"), ("", "empty")]:
        with pytest.raises(ValueError, match=message):
            ModuleSource.parse(bad)
    with pytest.raises(ValueError, match="sha256"):
        ModuleRequest("oci://r.example/a:b", sha256="XYZ")
    with pytest.raises(ValueError, match="pinned to"):
        ModuleRequest("oci://r.example/a@sha256:" + "a" * 64, sha256="b" * 64)
    with pytest.raises(ValueError, match="imagePullPolicy"):
        PullPolicy.parse("Sometimes")


def _signed(reg_host: str, module: bytes, keys, tag: str = "v1") -> tuple[str, str]:  # type: ignore[no-untyped-def]
    ref = Reference.parse(f"{reg_host}/plugins/echo:{tag}")
    with RegistryClient(reg_host) as client:
        digest = push_module(client, ref, module)
        sign_image(client, ref, keys[0])
    return str(ref), digest.hex


def test_oci_fetch_verifies_caches_and_dedupes(tmp_path: Path, module: bytes, keys) -> None:  # type: ignore[no-untyped-def]
    with running_registry(tmp_path / "reg") as reg:
        url, digest = _signed(reg.host, module, keys)
        agent = ModuleAgent(ModuleStore(tmp_path / "cache"), TrustPolicy.with_keys([keys[1]]))

        async def many() -> list[Path]:
            results = await asyncio.gather(*(agent.get(ModuleRequest(url)) for _ in range(10)))
            return [r.path for r in results]

        paths = asyncio.run(many())
        assert agent.fetch_count == 1 and len(set(paths)) == 1
        assert paths[0].read_bytes() == module
        again = asyncio.run(agent.get(ModuleRequest(url, sha256=digest)))
        assert again.checksum == digest and agent.fetch_count == 1
        assert agent.statuses[url].ok


def test_unsigned_or_mismatched_modules_are_refused_and_not_cached(tmp_path: Path, module: bytes,
                                                                    keys) -> None:  # type: ignore[no-untyped-def]
    with running_registry(tmp_path / "reg") as reg:
        ref = Reference.parse(f"{reg.host}/plugins/unsigned:v1")
        with RegistryClient(reg.host) as client:
            push_module(client, ref, module)
        store = ModuleStore(tmp_path / "cache")
        agent = ModuleAgent(store, TrustPolicy.with_keys([keys[1]]), attempts=1)
        with pytest.raises(FetchError, match="signature verification failed.*is not signed"):
            asyncio.run(agent.get(ModuleRequest(str(ref))))
        assert store.latest(str(ref)) is None and not agent.statuses[str(ref)].ok
        signed_url, _ = _signed(reg.host, module, keys)
        with pytest.raises(FetchError, match="does not match the expected"):
            asyncio.run(agent.get(ModuleRequest(signed_url, sha256="0" * 64)))


def test_registry_down_serves_the_cache_and_fails_cold(tmp_path: Path, module: bytes,
                                                       keys) -> None:  # type: ignore[no-untyped-def]
    store = ModuleStore(tmp_path / "cache")
    policy = TrustPolicy.with_keys([keys[1]])
    with running_registry(tmp_path / "reg") as reg:
        url, digest = _signed(reg.host, module, keys)
        warm = ModuleAgent(store, policy, backoff=0.01)
        asyncio.run(warm.get(ModuleRequest(url, pull_policy=PullPolicy.ALWAYS, resource_version="1")))
    # registry is gone now; a new resource version asks for a re-pull
    stale = asyncio.run(warm.get(ModuleRequest(url, pull_policy=PullPolicy.ALWAYS, resource_version="2")))
    assert stale.stale and stale.checksum == digest and stale.path.read_bytes() == module
    assert "serving cached module" in warm.statuses[url].message
    cold = ModuleAgent(ModuleStore(tmp_path / "cold"), policy, attempts=2, backoff=0.01)
    with pytest.raises(FetchError, match="cannot reach registry") as err:
        asyncio.run(cold.get(ModuleRequest(url)))
    assert err.value.retryable and cold.fetch_count == 2


def test_cached_module_is_not_used_once_its_signer_is_no_longer_trusted(tmp_path: Path, module: bytes,
                                                                         keys) -> None:  # type: ignore[no-untyped-def]
    store = ModuleStore(tmp_path / "cache")
    with running_registry(tmp_path / "reg") as reg:
        url, _ = _signed(reg.host, module, keys)
        asyncio.run(ModuleAgent(store, TrustPolicy.with_keys([keys[1]])).get(ModuleRequest(url)))
        other = load_public_key(generate_keypair()[1])
        agent = ModuleAgent(store, TrustPolicy.with_keys([other]), attempts=1)
        with pytest.raises(FetchError, match="not signed by any trusted key"):
            asyncio.run(agent.get(ModuleRequest(url)))
        assert agent.fetch_count == 1


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""
    failures = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        cls = type(self)
        if cls.failures > 0:
            cls.failures -= 1
            self.send_response(503)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(cls.body)))
        self.end_headers()
        self.wfile.write(cls.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/plugin.tar.gz", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_http_fetch_unwraps_tar_gz_retries_5xx_and_checks_sha(tmp_path: Path, module: bytes,
                                                              http_server: tuple[str, type[_Handler]]) -> None:
    url, handler = http_server
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size = len(module)
        tar.addfile(info, io.BytesIO(module))
    handler.body = gzip.compress(raw.getvalue())
    handler.failures = 1
    sha = hashlib.sha256(module).hexdigest()
    agent = ModuleAgent(ModuleStore(tmp_path / "cache"), TrustPolicy(), backoff=0.01)
    entry = asyncio.run(agent.get(ModuleRequest(url, sha256=sha)))
    assert entry.path.read_bytes() == module and entry.checksum == sha and handler.failures == 0
    with pytest.raises(FetchError, match="which does not match"):
        asyncio.run(ModuleAgent(ModuleStore(tmp_path / "c2"), TrustPolicy(), attempts=1).get(
            ModuleRequest(url, sha256="1" * 64)))


def test_file_urls_are_read_in_place(tmp_path: Path, module: bytes) -> None:
    path = tmp_path / "m.wasm"
    path.write_bytes(module)
    agent = ModuleAgent(ModuleStore(tmp_path / "cache"), TrustPolicy())
    assert asyncio.run(agent.get(ModuleRequest(f"file://{path}"))).path == path
    with pytest.raises(FetchError, match="does not match"):
        asyncio.run(agent.get(ModuleRequest(f"file://{path}", sha256="2" * 64)))
    path.write_bytes(b"not wasm")
    with pytest.raises(FetchError, match="not a WebAssembly binary"):
        asyncio.run(agent.get(ModuleRequest(f"file://{path}")))


def test_store_drops_corrupt_expired_and_least_recent_entries(tmp_path: Path, module: bytes) -> None:
    now = [1000.0]
    store = ModuleStore(tmp_path, ttl=100, max_bytes=len(module) * 2, clock=lambda: now[0])
    first = store.put("repo", "oci://r/a:1", "c1", module, (), "")
    first.path.write_bytes(module[:-1] + b"\x00")
    assert store.get("repo", "c1") is None  # corrupt: a miss
    store.put("repo", "oci://r/a:1", "c1", module, (), "")
    now[0] += 10
    store.put("repo", "oci://r/a:2", "c2", module, (), "")
    now[0] += 10
    store.get("repo", "c1")  # c1 becomes the most recently used
    store.put("repo", "oci://r/a:3", "c3", module, (), "")  # over the cap: c2 goes
    assert store.get("repo", "c2") is None and store.get("repo", "c1") is not None
    now[0] += 1000
    assert store.purge() > 0 and store.get("repo", "c3") is None
