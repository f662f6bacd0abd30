"""Fetching and verifying one module for the control plane (blocking; run in worker threads).

- `oci://` (or no scheme): resolve the tag to a manifest digest, check the `sha256` pin, and
  reuse the cached module of that digest while its signers are still trusted; otherwise
  `registry.verify_module` checks the signatures against the namespace's trust policy and pulls
  by digest. Concurrent fetches of one digest share a single registry pull. The signed manifest
  and its signatures are kept as the module's provenance, which wasmesh sidecars re-verify
  (`wasmhost.sidecar._module_provenance`, docs/modules.md).
- `https://` / `http://`: GET with redirects (never from https to http), a deadline, a size cap
  and a truncation check; gzip and tar wrappers are peeled off; `sha256` pins the downloaded
  bytes as Istio's agent does. There is no signature scheme for plain URLs.

Every refusal is a `ModuleRefused` naming the condition it fails (Resolved or Verified), a
machine-readable reason and the exact message shown in the WasmPlugin's status.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import ssl
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from controlplane._module_cache import ModuleCache, Origin
from registry import (
    CredentialsError,
    CredentialStore,
    ModuleFormatError,
    Reference,
    RegistryError,
    Signer,
    TrustPolicy,
    VerificationError,
    VerifiedModule,
    client_for,
    find_bundles,
    find_signatures,
    key_id,
    parse_manifest,
    resolve,
    validate_module,
    verify_module,
)
from registry._wasm import pick_platform
from wasmhost.sidecar._module_provenance import Provenance, encode

RESOLVED, VERIFIED = "Resolved", "Verified"
MAX_MODULE_SIZE = 256 * 1024 * 1024
_READ_CHUNK = 256 * 1024


class ModuleRefused(Exception):
    """Why a module was not accepted: the failed condition, a reason code and the message."""

    def __init__(self, condition: str, reason: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.condition = condition
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True)
class FetchRequest:
    url: str
    policy: TrustPolicy
    sha256: str | None = None
    pull_secret: str | None = None  # docker config JSON from the plugin's imagePullSecret
    refresh: bool = False  # ask the source even when this URL was fetched before (Always, :latest)


@dataclass(frozen=True)
class Fetched:
    """A verified module in the cache, and what vouches for it."""

    module_sha256: str
    size: int
    manifest_digest: str | None
    signers: tuple[Signer, ...]
    verification: str  # for the Verified condition's message
    pulled: bool  # whether the bytes came from the source now (False: from the cache)
    provenance: str = ""  # the signature material for wasmesh sidecars to re-verify (oci:// only)


def is_oci(url: str) -> bool:
    return "://" not in url or url.startswith("oci://")


def trusted(policy: TrustPolicy, ref: Reference, signers: tuple[Signer, ...]) -> bool:
    """Whether recorded signers still satisfy `policy` for `ref` (cache reuse after a policy change)."""
    decision = policy.decide(ref)
    if not decision.require_signature:
        return True
    accepted: set[tuple[str, str, str | None]] = {("key", key_id(k), None) for k in decision.keys}
    accepted |= {("sigstore", i.subject, i.issuer) for i in decision.identities}
    return any((s.kind, s.identity, s.issuer) in accepted for s in signers)


def describe_signers(signers: tuple[Signer, ...]) -> str:
    return ", ".join(str(s) for s in signers)


class Fetcher:
    """Fetches into a `ModuleCache`; counts the module pulls it makes (one per digest)."""

    def __init__(self, cache: ModuleCache, *, timeout: float = 30.0, ca_file: Path | None = None,
                 client_options: dict[str, Any] | None = None) -> None:
        self.cache = cache
        self.timeout = timeout
        self.ca_file = ca_file
        self.client_options = client_options or {}
        self.pulls = 0
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def fetch(self, request: FetchRequest) -> Fetched:
        if is_oci(request.url):
            return self._oci(request)
        scheme = urlsplit(request.url).scheme.lower()
        if scheme in ("http", "https"):
            return self._http(request)
        raise ModuleRefused(RESOLVED, "UnsupportedURL", f"url {request.url!r}: scheme {scheme}:// is not oci, "
                            "https or http (file:// modules are read by the proxy itself)")

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    # ---- oci:// ---------------------------------------------------------------------------------------
    def _oci(self, request: FetchRequest) -> Fetched:
        try:
            ref = Reference.parse(request.url if "://" in request.url else f"oci://{request.url}")
        except ValueError as err:
            raise ModuleRefused(RESOLVED, "InvalidURL", str(err)) from None
        if not request.refresh:
            known = self.cache.lookup(f"url:{ref}")
            if known is not None and (request.sha256 in (None, _hex(known.manifest_digest))) \
                    and trusted(request.policy, ref, known.signers):
                return self._from_cache(known)
        try:
            store = CredentialStore.from_json(request.pull_secret, "imagePullSecret") if request.pull_secret else None
        except CredentialsError as err:
            raise ModuleRefused(RESOLVED, "BadPullSecret", str(err)) from None
        try:
            with client_for(ref, store, timeout=self.timeout, **self.client_options) as client:
                try:
                    _, _, digest = resolve(client, ref)
                except RegistryError as err:
                    raise ModuleRefused(RESOLVED, "ManifestUnavailable", f"{ref}: {err}",
                                        retryable=_transient(err)) from None
                if request.sha256 and digest.hex != request.sha256:
                    raise ModuleRefused(VERIFIED, "DigestMismatch",
                                        f"{ref} resolves to manifest {digest}, which does not match the "
                                        f"expected sha256 {request.sha256}")
                with self._lock(str(digest)):  # one pull per digest, however many ask at once
                    known = self.cache.lookup(f"manifest:{digest}")
                    if known is not None and trusted(request.policy, ref, known.signers):
                        fetched = self._from_cache(known)
                    else:
                        fetched = self._pull(client, ref.with_digest(digest), request.policy)
        except CredentialsError as err:
            raise ModuleRefused(RESOLVED, "BadPullSecret", str(err)) from None
        self.cache.record(f"url:{ref}", Origin(fetched.module_sha256, fetched.manifest_digest, fetched.signers,
                                               str(ref)))
        return fetched

    def _pull(self, client: Any, ref: Reference, policy: TrustPolicy) -> Fetched:
        assert ref.digest is not None
        try:
            verified = verify_module(ref, policy, expected_digest=ref.digest, client=client)
        except VerificationError as err:
            raise ModuleRefused(VERIFIED, "SignatureRejected", str(err)) from None
        except RegistryError as err:
            condition = VERIFIED if err.code == "DIGEST_INVALID" else RESOLVED
            raise ModuleRefused(condition, "PullFailed", f"{ref}: {err}", retryable=_transient(err)) from None
        self.pulls += 1  # signatures are checked before the module is pulled: refusals cost no pull
        try:
            carrier = encode(provenance_of(client, ref, verified, policy))
        except (RegistryError, ModuleFormatError) as err:
            raise ModuleRefused(RESOLVED, "PullFailed", f"{ref}: cannot read its signature material: {err}",
                                retryable=True) from None
        sha256 = self.cache.put(verified.module)
        self.cache.put_provenance(str(verified.manifest_digest), carrier)
        origin = Origin(sha256, str(verified.manifest_digest), verified.signers, str(ref))
        self.cache.record(f"manifest:{verified.manifest_digest}", origin)
        return Fetched(sha256, len(verified.module), str(verified.manifest_digest), verified.signers,
                       _verification(verified.signers), pulled=True, provenance=carrier)

    def _from_cache(self, origin: Origin) -> Fetched:
        data = self.cache.read(origin.module_sha256)
        if data is None:
            raise ModuleRefused(RESOLVED, "CacheCorrupt", f"cached module {origin.module_sha256} is unreadable",
                                retryable=True)
        return Fetched(origin.module_sha256, len(data), origin.manifest_digest, origin.signers,
                       _verification(origin.signers), pulled=False,
                       provenance=self.cache.provenance(origin.manifest_digest))

    # ---- http(s):// ----------------------------------------------------------------------------------
    def _http(self, request: FetchRequest) -> Fetched:
        url = request.url
        if not request.refresh:
            known = self.cache.lookup(f"url:{url}")
            if known is not None and request.sha256 in (None, known.manifest_digest):
                return self._from_cache(known)
        with self._lock(f"url:{url}"):
            body = self._download(url)
            self.pulls += 1
            downloaded = hashlib.sha256(body).hexdigest()
            if request.sha256 and downloaded != request.sha256:
                raise ModuleRefused(VERIFIED, "ChecksumMismatch", f"module downloaded from {url} has checksum "
                                    f"{downloaded}, which does not match the expected {request.sha256}")
            module = unwrap(body, url)
            sha256 = self.cache.put(module)
        # for URLs the "manifest digest" slot holds the downloaded bytes' digest (what sha256 pins)
        self.cache.record(f"url:{url}", Origin(sha256, downloaded, (), url))
        verification = (f"checksum {request.sha256} matches" if request.sha256
                        else "no sha256 pinned and no signature scheme for http(s) URLs")
        return Fetched(sha256, len(module), downloaded, (), verification, pulled=True)

    def _download(self, url: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        opener = urllib.request.build_opener(_NoDowngrade(), urllib.request.HTTPSHandler(context=context))
        deadline = time.monotonic() + self.timeout
        try:
            with opener.open(urllib.request.Request(url, headers={"user-agent": "wasmesh-controlplane"}),
                             timeout=self.timeout) as response:
                expected = response.headers.get("content-length")
                return _read_body(response, url, int(expected) if expected and expected.isdigit() else None,
                                  deadline)
        except urllib.error.HTTPError as err:
            raise ModuleRefused(RESOLVED, "FetchFailed", f"{url}: HTTP {err.code} {err.reason}",
                                retryable=err.code >= 500 or err.code == 429) from None
        except urllib.error.URLError as err:
            raise ModuleRefused(RESOLVED, "FetchFailed", f"{url}: {err.reason}", retryable=True) from None
        except http.client.IncompleteRead as err:
            raise ModuleRefused(RESOLVED, "FetchFailed", f"{url}: truncated response: received {len(err.partial)} "
                                f"bytes before the connection closed", retryable=True) from None
        except (OSError, http.client.HTTPException) as err:
            raise ModuleRefused(RESOLVED, "FetchFailed", f"{url}: {err or type(err).__name__}",
                                retryable=True) from None


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follow redirects as urllib does, except from https to http."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> urllib.request.Request | None:
        if urlsplit(req.full_url).scheme == "https" and urlsplit(newurl).scheme != "https":
            raise ModuleRefused(RESOLVED, "FetchFailed", f"{req.full_url}: refusing to follow a redirect from "
                                f"https to {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _read_body(response: Any, url: str, expected: int | None, deadline: float) -> bytes:
    if expected is not None and expected > MAX_MODULE_SIZE:
        raise ModuleRefused(RESOLVED, "FetchFailed", f"{url}: {expected} bytes exceeds the {MAX_MODULE_SIZE} limit")
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() > deadline:
            raise ModuleRefused(RESOLVED, "FetchFailed", f"{url}: download did not finish in time ({size} bytes "
                                "so far)", retryable=True)
        chunk = response.read(_READ_CHUNK)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_MODULE_SIZE:
            raise ModuleRefused(RESOLVED, "FetchFailed", f"{url}: body exceeds {MAX_MODULE_SIZE} bytes")
    if expected is not None and size != expected:
        raise ModuleRefused(RESOLVED, "FetchFailed", f"{url}: truncated response: received {size} of {expected} "
                            "bytes", retryable=True)
    return b"".join(chunks)


def unwrap(data: bytes, where: str) -> bytes:
    """Peel gzip and tar layers until a Wasm binary appears (as Istio's agent does)."""
    for _ in range(4):
        if data.startswith(b"\0asm"):
            break
        if data[:2] == b"\x1f\x8b":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as err:
                raise ModuleRefused(VERIFIED, "InvalidModule", f"{where}: corrupt gzip: {err}") from None
            continue
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
                member = next((m for m in tar if m.isfile()), None)
                handle = tar.extractfile(member) if member is not None else None
                if handle is None:
                    raise ModuleRefused(VERIFIED, "InvalidModule", f"{where}: empty tar archive")
                data = handle.read(MAX_MODULE_SIZE + 1)
        except tarfile.TarError:
            break
    try:
        return validate_module(data, where)
    except RegistryError as err:
        raise ModuleRefused(VERIFIED, "InvalidModule", err.message) from None


def provenance_of(client: Any, ref: Reference, verified: VerifiedModule, policy: TrustPolicy) -> Provenance:
    """What a wasmesh sidecar needs to re-verify `verified` without the registry: the signed
    manifest, every cosign signature (and Sigstore bundle) attached to it, and the layer when the
    module is wrapped in a tar archive."""
    digest = verified.manifest_digest
    data, media_type, _ = client.get_manifest(ref.repository, str(digest))
    platform = b""
    manifest = parse_manifest(data, media_type)
    if manifest.is_index:
        chosen = pick_platform(manifest)
        platform, platform_type, _ = client.get_manifest(ref.repository, str(chosen.digest))
        manifest = parse_manifest(platform, platform_type)
    layer = b""
    if verified.variant in ("compat", "docker") and manifest.layers:
        last = manifest.layers[-1]
        layer = client.get_blob(ref.repository, last.digest, last.size)
    signatures = tuple((c.payload, c.signature) for c in find_signatures(client, ref.repository, digest))
    bundles = tuple(find_bundles(client, ref.repository, digest)) if policy.decide(ref).identities else ()
    named = f"oci://{ref.registry}/{ref.repository}" + (f":{ref.tag}" if ref.tag else "")
    return Provenance(named, data, media_type, signatures, bundles, platform, layer)


def _verification(signers: tuple[Signer, ...]) -> str:
    return f"signed by {describe_signers(signers)}" if signers else "the trust policy does not require a signature"


def _hex(digest: str | None) -> str | None:
    return digest.split(":", 1)[1] if digest and ":" in digest else digest


def _transient(err: RegistryError) -> bool:
    return err.status == 0 or err.status >= 500 or err.status == 429


Fetch = Callable[[FetchRequest], Fetched]

__all__ = ["RESOLVED", "VERIFIED", "Fetch", "FetchRequest", "Fetched", "Fetcher", "ModuleRefused",
           "describe_signers", "is_oci", "trusted", "unwrap"]
