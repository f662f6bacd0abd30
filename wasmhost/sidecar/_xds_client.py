"""The sidecar's xDS client: debounced updates over one ADS stream to the control plane.

I/O only at the edge: ``_xds_sotw`` (state of the world) and ``_xds_delta`` (incremental) are
the sans-io protocols, ``_xds_transport`` runs the gRPC stream in a thread. ``XdsClient`` ties
them together: it debounces responses (a burst becomes one plan rebuild), runs an ``Update``
for the batch, hands the plan to its ``XdsTarget`` (the single-process sidecar or the
supervisor), sends the verdicts (ACK, or NACK naming the refused resource and field) and keeps
the subscriptions in step. A refused resource keeps its last good version serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from envoy.service.discovery.v3 import discovery_pb2

from ._dynamic import describe
from ._errors import ConfigError
from ._filter_registry import WorkerServices
from ._worker import ListenerBindError
from ._xds_delta import DeltaAdsProtocol, decode_delta
from ._xds_resources import (
    CLUSTER,
    LISTENER,
    SHORT_NAMES,
    WILDCARD,
    XdsResource,
    decode_resources,
    subscriptions,
)
from ._xds_settings import AdsSettings
from ._xds_sotw import AdsProtocol
from ._xds_transport import AdsTransport
from ._xds_update import Failure, Update, UpdateRefused, XdsState

log = logging.getLogger("wasmesh.config")

USER_AGENT = "wasmesh-sidecar"


class XdsTarget(Protocol):
    """Where plans built from xDS go: the single-process sidecar or the supervisor."""

    @property
    def services(self) -> WorkerServices | None: ...

    def build(self, bootstrap: Any) -> Any:
        """Build a plan from an assembled bootstrap (in a worker thread); raise ``ConfigError``."""
        ...

    async def activate(self, plan: Any) -> None:
        """Serve ``plan``; raise ``ListenerBindError`` (or ``OSError``) if it cannot."""
        ...

    def publish(self, snapshot: XdsSnapshot) -> None:
        """What xDS delivered changed (for /config_dump and readiness)."""
        ...


@dataclass(frozen=True)
class XdsSnapshot:
    """A consistent view of the xDS state for the admin endpoint."""

    resources: Mapping[str, Mapping[str, XdsResource]]
    serving: Mapping[str, Mapping[str, XdsResource]]
    warming: Mapping[tuple[str, str], str]
    failures: Mapping[tuple[str, str], Failure]
    versions: Mapping[str, str]
    initialized: bool
    connected: bool
    control_plane: str
    updates: int
    last_error: str = ""


@dataclass
class _Pending:
    """What arrived for one type since the last update."""

    version: str
    nonce: str
    resources: dict[str, XdsResource]
    errors: list[str]
    removed: set[str] = field(default_factory=set)
    # incremental xDS answers every response: (nonce, names it carried or removed, its problems)
    responses: list[tuple[str, set[str], list[str]]] = field(default_factory=list)


class XdsClient:
    """Subscribes, debounces, builds, serves and answers; everything runs on one event loop."""

    def __init__(self, static: Any, settings: AdsSettings, target: XdsTarget, *,
                 debounce: float = 0.05, max_delay: float = 0.5) -> None:
        node = type(static.node)()
        node.CopyFrom(static.node)
        if not node.user_agent_name:
            node.user_agent_name = USER_AGENT
        wildcard = tuple(t for t, wanted in ((CLUSTER, settings.subscribe_clusters),
                                              (LISTENER, settings.subscribe_listeners)) if wanted)
        self.static = static
        self.settings = settings
        self.target = target
        self.debounce = debounce
        self.max_delay = max_delay
        self.delta = settings.delta
        self.protocol: Any = (DeltaAdsProtocol if self.delta else AdsProtocol)(
            node, wildcard, settings.node_on_first_message_only)
        self.state = XdsState()
        self._pending: dict[str, _Pending] = {}
        self._seen: set[str] = set()  # wildcard types answered at least once
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: AdsTransport | None = None
        self._stream = 0
        self._connected = False
        self._timer: asyncio.TimerHandle | None = None
        self._first_pending = 0.0
        self._cycle: asyncio.Task[None] | None = None
        self._last_error = ""
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_due = False
        self.updates = 0  # plan rebuilds done for xDS
        self.responses = 0
        self._local: dict[str, dict[str, XdsResource]] = {}  # resources from inside the sidecar, by type
        self._local_due = False
        #: named resources wanted though no listener or cluster names them (the agent's trust bundle)
        self.extra_subscriptions: dict[str, frozenset[str]] = {}

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport = AdsTransport(self.settings, self._post)
        self._transport.start()
        self._publish()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._expiry is not None:
            self._expiry.cancel()
        if self._transport is not None:
            transport, self._transport = self._transport, None
            await asyncio.get_running_loop().run_in_executor(None, transport.stop)
        if self._cycle is not None:
            self._cycle.cancel()

    def set_local(self, type_url: str, resources: Mapping[str, XdsResource]) -> None:
        """Resources held inside the sidecar (the identity agent's secrets) changed: build with them.

        They take part in every update like accepted resources, but are never ACKed or NACKed.
        """
        self._local[type_url] = dict(resources)
        self._local_due = True
        self._schedule()

    @property
    def initialized(self) -> bool:
        return all(t in self._seen for t in self.protocol.wildcard)

    def _post(self, kind: str, stream_id: int, payload: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._on_event, kind, stream_id, payload)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _send(self, requests: list[discovery_pb2.DiscoveryRequest]) -> None:
        if requests and self._transport is not None:
            self._transport.send(self._stream, requests)

    # --- events from the stream -----------------------------------------------------------------

    def _on_event(self, kind: str, stream_id: int, payload: Any) -> None:
        if kind == "connected":
            self._stream = stream_id
            self._connected = True
            self._pending.clear()
            log.info("xDS stream to %s open", self.settings.target)
            self._send(self.protocol.connected(self.state.resources))
            self._publish()
        elif kind == "closed":
            if stream_id == self._stream:
                self._connected = False
                self._last_error = str(payload)
                log.warning("xDS stream to %s closed: %s (reconnecting)", self.settings.target, payload)
                self._publish()
        elif kind == "response" and stream_id == self._stream:
            self._on_response(payload)

    def _on_response(self, response: Any) -> None:
        self.responses += 1
        if self.delta:
            self._on_delta_response(response)
            return
        type_url = response.type_url
        decoded, errors = decode_resources(type_url, response.version_info, response.resources)
        pending = self._pending.get(type_url)
        if pending is None or type_url in WILDCARD:
            self._pending[type_url] = _Pending(response.version_info, response.nonce, decoded, errors)
        else:
            pending.version, pending.nonce = response.version_info, response.nonce
            pending.resources.update(decoded)
            pending.errors.extend(errors)
        log.debug("xDS %s version %s: %d resources", SHORT_NAMES.get(type_url, type_url), response.version_info,
                  len(decoded))
        self._schedule()

    def _on_delta_response(self, response: Any) -> None:
        type_url = response.type_url
        decoded, removed, errors = decode_delta(response)
        pending = self._pending.setdefault(type_url, _Pending(response.system_version_info, response.nonce, {}, []))
        pending.version, pending.nonce = response.system_version_info, response.nonce
        for name in removed:
            pending.resources.pop(name, None)
        pending.removed |= removed
        pending.removed -= set(decoded)
        pending.resources.update(decoded)
        pending.errors.extend(errors)
        pending.responses.append((response.nonce, set(decoded) | removed, errors))
        log.debug("xDS %s (delta) %s: %d resources, %d removed", SHORT_NAMES.get(type_url, type_url),
                  response.system_version_info, len(decoded), len(removed))
        self._schedule()

    def _schedule(self) -> None:
        """Run one update once responses stop arriving for ``debounce`` (at most ``max_delay`` late)."""
        loop = self._loop
        if loop is None or (self._cycle is not None and not self._cycle.done()):
            return  # the running update picks the batch up when it ends
        now = loop.time()
        if self._timer is None:
            self._first_pending = now
        else:
            self._timer.cancel()
        delay = max(0.0, min(self.debounce, self._first_pending + self.max_delay - now))
        self._timer = loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        assert self._loop is not None
        self._cycle = self._loop.create_task(self._update())

    # --- one update -----------------------------------------------------------------------------

    async def _update(self) -> None:
        batch, self._pending = self._pending, {}
        expiry, self._expiry_due = self._expiry_due, False
        local, self._local_due = self._local_due, False
        try:
            if batch or expiry or local:
                await self._apply(batch)
        except Exception:  # noqa: BLE001 - a failed update must not stop the client
            log.exception("xDS update failed")
        finally:
            self._cycle = None
            if self._pending or self._expiry_due or self._local_due:
                self._schedule()
            self._arm_expiry()

    def _arm_expiry(self) -> None:
        """Rebuild when an initial fetch timeout runs out, so what waits for it serves without it."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        deadline = self.state.next_deadline()
        if deadline is None or self._loop is None:
            return
        self._expiry = self._loop.call_later(max(0.0, deadline - time.monotonic()) + 0.01, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        log.info("xDS initial fetch timeout: serving what waited without the missing resources")
        self._expiry_due = True
        self._schedule()

    async def _apply(self, batch: dict[str, _Pending]) -> None:
        loop = asyncio.get_running_loop()
        received: dict[str, dict[str, XdsResource]] = {t: p.resources for t, p in batch.items()}
        removed: dict[str, set[str]] = {}
        if self.delta:
            for type_url, pending in batch.items():
                if type_url in WILDCARD:  # the whole set, as the state-of-the-world merge expects
                    held = self.state.resources.get(type_url, {})
                    received[type_url] = {**{n: r for n, r in held.items() if n not in pending.removed},
                                          **pending.resources}
                else:
                    removed[type_url] = pending.removed
        received.update((type_url, dict(found)) for type_url, found in self._local.items())
        update = Update(self.static, self.state, received, {t: p.errors for t, p in batch.items()},
                        removed=removed, node=self.protocol.node, services=self.target.services)
        refused = ""
        started = time.monotonic()
        try:
            while True:
                try:
                    plan, assembly = await loop.run_in_executor(None, update.prepare, self.target.build)
                except UpdateRefused as err:
                    refused = str(err)
                    break
                try:
                    await self.target.activate(plan)
                except ListenerBindError as err:
                    plan.retire()
                    update.reject(LISTENER, err.name, describe(LISTENER, err.name, ConfigError("address", err.strerror or str(err))))
                    continue
                except OSError as err:
                    plan.retire()
                    refused = f"cannot serve the update: {err}"
                    break
                update.commit(assembly)
                self.updates += 1
                break
        finally:
            update.release()
        if self.delta:
            self._answer_delta(batch, update, refused, started)
            return
        verdicts: dict[str, tuple[str, str, str]] = {}
        for type_url in (set(batch) | set(update.nacks)) - set(self._local):
            answered = batch.get(type_url)
            version = answered.version if answered else self.protocol.accepted.get(type_url, "")
            nonce = answered.nonce if answered else self.protocol.nonces.get(type_url, "")
            error = "; ".join(update.nacks.get(type_url, [])) or (refused if answered else "")
            verdicts[type_url] = (version, nonce, error)
            if error:
                log.warning("xDS %s version %s rejected: %s", SHORT_NAMES.get(type_url, type_url), version, error)
            if type_url in WILDCARD:
                self._seen.add(type_url)
        if refused:
            now = time.time()
            for type_url, pending in batch.items():
                for name, resource in pending.resources.items():
                    self.state.failures[(type_url, name)] = Failure(refused, resource.version, now, resource.message)
        for type_url, (version, _, error) in verdicts.items():
            if not error:
                self.state.versions[type_url] = version
        wanted = self._wanted()
        self._send(self.protocol.answer(verdicts, wanted))
        self._prune(wanted)
        log.info("xDS update applied in %.0f ms (%s)", (time.monotonic() - started) * 1000,
                 ", ".join(f"{SHORT_NAMES.get(t, t)} {v[0]}{' NACK' if v[2] else ''}" for t, v in verdicts.items()))
        self._publish()

    def _answer_delta(self, batch: dict[str, _Pending], update: Update, refused: str, started: float) -> None:
        """Incremental xDS: ACK or NACK every response of the batch on its own nonce."""
        verdicts: dict[str, list[tuple[str, str]]] = {}
        refused_names = {key: failure.message for key, failure in update.refused.items()}
        for type_url, pending in batch.items():
            answers = verdicts.setdefault(type_url, [])
            for nonce, names, errors in pending.responses:
                problems = list(errors) + sorted({refused_names[(type_url, n)] for n in names
                                                  if (type_url, n) in refused_names})
                error = "; ".join(problems) or refused
                answers.append((nonce, error))
                if error:
                    log.warning("xDS %s (delta) nonce %s rejected: %s", SHORT_NAMES.get(type_url, type_url), nonce,
                                error)
            if type_url in WILDCARD:
                self._seen.add(type_url)
            if not any(error for _, error in answers):
                self.state.versions[type_url] = pending.version
        if refused:
            now = time.time()
            for type_url, pending in batch.items():
                for name, resource in pending.resources.items():
                    self.state.failures[(type_url, name)] = Failure(refused, resource.version, now, resource.message)
        wanted = self._wanted()
        self._send(self.protocol.answer(verdicts, wanted))
        self._prune(wanted)
        log.info("xDS (delta) update applied in %.0f ms (%s)", (time.monotonic() - started) * 1000,
                 ", ".join(f"{SHORT_NAMES.get(t, t)} x{len(a)}{' NACK' if any(e for _, e in a) else ''}"
                           for t, a in verdicts.items()))
        self._publish()

    def _wanted(self) -> dict[str, frozenset[str]]:
        wanted = subscriptions(self.static, self.state.resources, self.state.serving)
        for type_url, names in self.extra_subscriptions.items():
            wanted[type_url] = wanted.get(type_url, frozenset()) | names
        return wanted

    def _prune(self, wanted: Mapping[str, frozenset[str]]) -> None:
        """Forget named resources nobody subscribes to any more."""
        for type_url, names in wanted.items():
            held = self.state.resources.get(type_url, {})
            if any(name not in names for name in held):
                self.state.resources[type_url] = {n: r for n, r in held.items() if n in names}
            answered = self.state.received.get(type_url)
            if answered is not None:
                answered &= names
        failures = self.state.failures
        for type_url, name in list(failures):
            if type_url in wanted and name not in wanted[type_url]:
                del failures[(type_url, name)]

    def _publish(self) -> None:
        state = self.state
        self.target.publish(XdsSnapshot(
            resources={t: dict(r) for t, r in state.resources.items()},
            serving={t: dict(r) for t, r in state.serving.items()},
            warming=dict(state.warming), failures=dict(state.failures), versions=dict(state.versions),
            initialized=self.initialized, connected=self._connected, control_plane=self.settings.target,
            updates=self.updates, last_error=self._last_error))


__all__ = ["XdsClient", "XdsSnapshot", "XdsTarget"]
