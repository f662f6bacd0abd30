"""JWKS documents: inline or fetched from ``jwksUri``, cached, refreshed, refetched on a new kid.

Fetched documents are kept for ``cache_duration`` (Envoy's default: 5 minutes). A token
whose ``kid`` is not in a cached document triggers one refetch, at most once per
``min_refetch_interval`` per URI, so a flood of tokens with random kids cannot turn the
sidecar into a JWKS request amplifier. Concurrent lookups of one URI share one fetch.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jwt import PyJWK
from jwt.exceptions import PyJWKError

Fetcher = Callable[[str, float], Awaitable[bytes]]


class JwksError(Exception):
    """A JWKS document could not be fetched or read."""


def _fetch_blocking(uri: str, timeout: float) -> bytes:
    with urllib.request.urlopen(uri, timeout=timeout) as reply:  # noqa: S310 - http(s) checked by the rule parser
        return bytes(reply.read(1 << 20))


async def fetch_jwks(uri: str, timeout: float) -> bytes:
    """The default fetcher: an HTTP(S) GET in a worker thread."""
    try:
        return await asyncio.to_thread(_fetch_blocking, uri, timeout)
    except (OSError, ValueError) as exc:
        raise JwksError(f"fetching {uri}: {exc}") from exc


def parse_jwks(document: Mapping[str, Any] | bytes, source: str) -> dict[str, PyJWK]:
    """Usable keys by kid ("" for a key without kid); unusable keys (e.g. encryption) are skipped."""
    if isinstance(document, bytes):
        try:
            document = json.loads(document)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise JwksError(f"{source}: not JSON") from exc
    keys = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(keys, list):
        raise JwksError(f"{source}: no 'keys' list")
    usable: dict[str, PyJWK] = {}
    for entry in keys:
        if not isinstance(entry, Mapping) or entry.get("use", "sig") != "sig":
            continue
        try:
            usable[str(entry.get("kid", ""))] = PyJWK(dict(entry))
        except PyJWKError:
            continue
    return usable


@dataclass
class _Entry:
    keys: dict[str, PyJWK]
    fetched_at: float


class JwksCache:
    def __init__(
        self,
        *,
        fetcher: Fetcher = fetch_jwks,
        cache_duration: float = 300.0,
        min_refetch_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetcher = fetcher
        self.cache_duration = cache_duration
        self.min_refetch_interval = min_refetch_interval
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Future[_Entry]] = {}
        self.fetches = 0

    async def _refresh(self, uri: str, timeout: float) -> _Entry:
        pending = self._inflight.get(uri)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_Entry] = asyncio.get_running_loop().create_future()
        self._inflight[uri] = future
        try:
            self.fetches += 1
            entry = _Entry(parse_jwks(await self._fetcher(uri, timeout), uri), self._clock())
            self._entries[uri] = entry
            future.set_result(entry)
            return entry
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: other waiters get it through shield
            raise
        finally:
            del self._inflight[uri]

    async def keys(self, uri: str, kid: str, *, timeout: float = 5.0) -> list[PyJWK]:
        """Candidate keys for ``kid`` (all keys when the token names none), fetching or
        refetching from ``uri`` as the rules above say."""
        now = self._clock()
        entry = self._entries.get(uri)
        if entry is None or now - entry.fetched_at >= self.cache_duration:
            try:
                entry = await self._refresh(uri, timeout)
            except JwksError:
                if entry is None:
                    raise
        found = candidates(entry.keys, kid)
        if not found and now - entry.fetched_at >= self.min_refetch_interval:
            entry = await self._refresh(uri, timeout)
            found = candidates(entry.keys, kid)
        return found


def candidates(keys: Mapping[str, PyJWK], kid: str) -> list[PyJWK]:
    if kid:
        return [keys[kid]] if kid in keys else []
    return list(keys.values())
