"""The module agent: turns a plugin's ``url`` into a verified module file on disk.

Never on the request path: the sidecar asks when a plugin config arrives and gets either
a ``CachedModule`` or a ``FetchError`` whose message it reports (``/config_dump``,
WasmPlugin status) before applying the plugin's fail strategy. Concurrent requests for
the same module share one fetch; transient failures are retried with exponential
backoff; when the source stays down, a previously fetched module for the same URL is
served (marked stale) unless the request pins another checksum.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry import TrustPolicy, key_id

from ._fetch import FetchedModule, FetchError, fetch_file, fetch_http, fetch_oci
from ._source import ModuleRequest
from ._store import CachedModule, ModuleStore


@dataclass
class ModuleStatus:
    """The last outcome for one URL, for config dumps and resource status."""

    url: str
    ok: bool
    message: str
    checksum: str | None = None
    at: float = 0.0


class ModuleAgent:
    def __init__(self, store: ModuleStore, policy: TrustPolicy, *, attempts: int = 3, backoff: float = 0.5,
                 timeout: float = 30.0, client_options: dict[str, Any] | None = None,
                 fetcher: Callable[[ModuleRequest], FetchedModule] | None = None):
        self.store = store
        self.policy = policy
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self.client_options = client_options or {}
        self._fetcher = fetcher or self._fetch_blocking
        self._inflight: dict[tuple[str, str | None, str], asyncio.Future[CachedModule]] = {}
        self.statuses: dict[str, ModuleStatus] = {}
        self.fetch_count = 0

    def _fetch_blocking(self, request: ModuleRequest) -> FetchedModule:
        kind = request.source.kind
        if kind == "file":
            return fetch_file(request)
        if kind == "http":
            return fetch_http(request, timeout=self.timeout, backoff=self.backoff)
        return fetch_oci(request, self.policy, timeout=self.timeout, client_options=self.client_options)

    def _trusted(self, request: ModuleRequest, entry: CachedModule) -> bool:
        """A cache hit is used only if its recorded signer is still trusted by the current policy."""
        ref = request.source.reference
        if ref is None:
            return True
        decision = self.policy.decide(ref)
        if not decision.require_signature:
            return True
        trusted = {f"key {key_id(k)}" for k in decision.keys}
        trusted |= {f"sigstore {i.subject} ({i.issuer})" for i in decision.identities}
        return any(s in trusted for s in entry.signers)

    def _cached(self, request: ModuleRequest) -> CachedModule | None:
        name = request.source.cache_name
        pinned = request.pinned
        if pinned is not None:
            entry = self.store.get(name, pinned)
            return entry if entry is not None and self._trusted(request, entry) else None
        latest = self.store.latest(request.url)
        if latest is None:
            return None
        checksum, version = latest
        if request.always_pull and version != request.resource_version:
            return None
        entry = self.store.get(name, checksum)
        return entry if entry is not None and self._trusted(request, entry) else None

    async def get(self, request: ModuleRequest) -> CachedModule:
        """The module for ``request``; raises ``FetchError`` with the reason when there is none."""
        if request.source.kind == "file":
            fetched = await asyncio.to_thread(fetch_file, request)
            path = request.source.path
            assert path is not None
            return CachedModule(Path(path), fetched.checksum, fetched.module_sha256)
        hit = self._cached(request)
        if hit is not None:
            self._record(request, True, "cache hit", hit.checksum)
            return hit
        key = (request.url, request.sha256, request.resource_version if request.always_pull else "")
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[CachedModule] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await self._fetch_with_retries(request)
            future.set_result(result)
            return result
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # mark retrieved: waiters get it, nobody else must
            raise
        finally:
            del self._inflight[key]

    async def _fetch_with_retries(self, request: ModuleRequest) -> CachedModule:
        error: FetchError | None = None
        fetched: FetchedModule | None = None
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                self.fetch_count += 1
                fetched = await asyncio.to_thread(self._fetcher, request)
                break
            except FetchError as err:
                error = err
                if not err.retryable:
                    break
        if fetched is None:
            assert error is not None
            stale = self._stale(request) if error.retryable else None
            if stale is not None:
                self._record(request, True, f"source unavailable, serving cached module: {error}", stale.checksum)
                return stale
            self._record(request, False, str(error))
            raise error
        entry = self.store.put(request.source.cache_name, request.url, fetched.checksum, fetched.module,
                               tuple(str(s) for s in fetched.signers), request.resource_version)
        self._record(request, True, "fetched", entry.checksum)
        return entry

    def _stale(self, request: ModuleRequest) -> CachedModule | None:
        latest = self.store.latest(request.url)
        if latest is None or (request.pinned is not None and latest[0] != request.pinned):
            return None
        entry = self.store.get(request.source.cache_name, latest[0])
        if entry is None or not self._trusted(request, entry):
            return None
        return CachedModule(entry.path, entry.checksum, entry.module_sha256, entry.signers, stale=True)

    def _record(self, request: ModuleRequest, ok: bool, message: str, checksum: str | None = None) -> None:
        self.statuses[request.url] = ModuleStatus(request.url, ok, message, checksum, time.time())
