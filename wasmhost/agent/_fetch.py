"""Fetching module bytes from each kind of source, with verification.

- ``file://``: read the file; the module must be a Wasm binary; ``sha256`` is checked.
- ``http(s)://``: GET with a timeout and a size cap (through the ECDS cluster's endpoint and
  TLS settings when the request carries them, `_transport`); 5xx (except 501/505/511) and
  connection errors are retried with exponential backoff; gzip and tar wrappers are
  unpacked until a ``\\0asm`` binary appears (as Istio does); ``sha256`` is checked.
- ``oci://``: ``registry.verify_module`` — manifest digest pinned by ``sha256``,
  signatures checked against the trust policy, module pulled by digest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from registry import (
    CredentialsError,
    CredentialStore,
    RegistryError,
    Signer,
    TrustPolicy,
    VerificationError,
    client_for,
    validate_module,
    verify_module,
)

from ._source import ModuleRequest
from ._transport import HttpStatusError, PeerRefused, get

MAX_MODULE_SIZE = 256 * 1024 * 1024
NO_RETRY_STATUSES = frozenset({501, 505, 511})


class FetchError(Exception):
    """Why a module could not be fetched or was refused; ``retryable`` for transient causes."""

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class FetchedModule:
    module: bytes
    checksum: str  # manifest digest hex for OCI, module sha256 otherwise (Istio's meaning)
    module_sha256: str
    signers: tuple[Signer, ...] = ()


def unwrap(data: bytes, where: str) -> bytes:
    """Peel gzip and tar layers until a Wasm binary appears."""
    for _ in range(4):
        if data.startswith(b"\0asm"):
            break
        if data[:2] == b"\x1f\x8b":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as err:
                raise FetchError(f"{where}: corrupt gzip: {err}") from None
            continue
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
                member = next((m for m in tar if m.isfile()), None)
                handle = tar.extractfile(member) if member is not None else None
                if handle is None:
                    raise FetchError(f"{where}: empty tar archive")
                data = handle.read(MAX_MODULE_SIZE + 1)
        except tarfile.TarError:
            break
    try:
        return validate_module(data, where)
    except RegistryError as err:
        raise FetchError(err.message) from None


def _check_sha(request: ModuleRequest, module: bytes) -> str:
    digest = hashlib.sha256(module).hexdigest()
    if request.sha256 and digest != request.sha256:
        raise FetchError(f"module downloaded from {request.url} has checksum {digest}, which does not match "
                         f"the expected {request.sha256}")
    return digest


def fetch_file(request: ModuleRequest) -> FetchedModule:
    path = request.source.path
    assert path is not None
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MODULE_SIZE + 1)
    except OSError as err:
        raise FetchError(f"{request.url}: {err.strerror}") from None
    module = unwrap(data, request.url)
    digest = _check_sha(request, module)
    return FetchedModule(module, digest, digest)


def fetch_http(request: ModuleRequest, *, timeout: float = 15.0, attempts: int = 5, backoff: float = 0.5,
               sleep: Callable[[float], None] = time.sleep) -> FetchedModule:
    last = ""
    for attempt in range(attempts):
        if attempt:
            sleep(backoff * 2 ** (attempt - 1))
        try:
            if request.transport is not None:  # through the cluster ECDS names, with its TLS settings
                data = get(request.url, request.transport, timeout, MAX_MODULE_SIZE)
            else:
                with urllib.request.urlopen(request.url, timeout=timeout) as response:
                    data = response.read(MAX_MODULE_SIZE + 1)
            if len(data) > MAX_MODULE_SIZE:
                raise FetchError(f"{request.url}: body exceeds {MAX_MODULE_SIZE} bytes")
            module = unwrap(data, request.url)
            digest = _check_sha(request, module)
            return FetchedModule(module, digest, digest)
        except PeerRefused as err:
            raise FetchError(f"{request.url}: {err}") from None
        except (urllib.error.HTTPError, HttpStatusError) as err:
            last = f"HTTP {err.code}"
            if err.code < 500 or err.code in NO_RETRY_STATUSES:
                raise FetchError(f"{request.url}: {last}") from None
        except (urllib.error.URLError, OSError) as err:
            last = str(getattr(err, "reason", err))
    raise FetchError(f"{request.url}: failed after {attempts} attempts: {last}", retryable=True)


def fetch_oci(request: ModuleRequest, policy: TrustPolicy, *, timeout: float = 30.0,
              client_options: dict[str, object] | None = None) -> FetchedModule:
    try:
        store = CredentialStore.from_json(request.pull_secret, "imagePullSecret") if request.pull_secret else None
    except CredentialsError as err:
        raise FetchError(str(err)) from None
    ref = request.source.reference
    assert ref is not None
    expected = f"sha256:{request.sha256}" if request.sha256 else None
    try:
        with client_for(ref, store, timeout=timeout, **(client_options or {})) as client:
            verified = verify_module(ref, policy, expected_digest=expected, client=client)
    except VerificationError as err:
        raise FetchError(f"signature verification failed: {err}") from None
    except RegistryError as err:
        transient = err.status == 0 or err.status >= 500 or err.status == 429
        raise FetchError(f"{request.url}: {err}", retryable=transient) from None
    except CredentialsError as err:
        raise FetchError(str(err)) from None
    return FetchedModule(verified.module, verified.manifest_digest.hex, verified.module_digest.hex, verified.signers)
