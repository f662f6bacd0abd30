"""Module resolution in the control plane: one fetch and one signature check per module, for all proxies.

For every slot (`_module_placement`) in a namespace with `controlplane` distribution, the
resolver fetches and verifies the module (`_module_fetch`, in a worker thread, never on the
push path) into the content-addressed cache, and records the outcome as status conditions:
Resolved, Verified, Distributed — each with the digest, signer or exact reason. Resolutions
of the same module share one fetch. A slot keeps its last good module when a newer one is
refused, together with the PluginConfig it ran with (a proxy never runs old code with the
configuration written for the refused code); when nothing good exists the plugin's fail
strategy applies. Whenever what proxies
should get changes (first module, new digest, first refusal), the control plane is asked to
push. Slots that always pull (`Always`, `:latest`) and slots that failed are resolved again
every `refresh_interval`, and a changed WasmPlugin manifest re-resolves at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from controlplane._module_cache import ModuleCache
from controlplane._module_config import CONTROLPLANE, INLINE, ModulesConfig
from controlplane._module_fetch import (
    RESOLVED,
    VERIFIED,
    Fetch,
    Fetched,
    Fetcher,
    FetchRequest,
    ModuleRefused,
)
from controlplane._module_placement import ModulePlacements, ModuleSlot, Placement, Served, Withheld
from controlplane._module_server import ModuleTlsEndpoint
from controlplane._module_tls import ModuleTls, https_port
from controlplane._resources import ResourceKey

if TYPE_CHECKING:
    from controlplane._security import MeshSecurity

log = logging.getLogger("wasmesh.controlplane.modules")
DISTRIBUTED = "Distributed"


@dataclass
class SlotState:
    """What the resolver knows about one slot."""

    slot: ModuleSlot
    mode: str
    fingerprint: tuple[Any, ...]
    pending: bool = True
    current: Fetched | None = None  # the verified module for the slot as it is now
    error: ModuleRefused | None = None  # why the slot as it is now has none
    last_good: Fetched | None = None  # what proxies keep when a newer module is refused
    good_config: str = ""  # the slot's PluginConfig when `last_good` was current: they travel together
    task: asyncio.Task[None] | None = None
    conditions: dict[str, dict[str, str]] = field(default_factory=dict)

    def placement(self) -> Placement | None:
        if self.mode != CONTROLPLANE:
            return None
        good = self.current or self.last_good
        if good is not None:
            return Served(good.module_sha256, good.provenance, self.good_config)
        if self.error is None:
            return Withheld("resolving", pending=True)
        return Withheld(str(self.error))


class ModuleResolver:
    """Owned by the control plane; every method runs on its event loop."""

    def __init__(self, config: ModulesConfig, cache: ModuleCache, *, fetch: Fetch | None = None,
                 attempts: int = 3, backoff: float = 0.5) -> None:
        self.config = config
        self.cache = cache
        self.fetcher = Fetcher(cache, timeout=config.fetch_timeout, ca_file=config.ca_file)
        self._fetch = fetch or self.fetcher.fetch
        self.attempts = attempts
        self.backoff = backoff
        self.on_change: Callable[[], None] = lambda: None
        # told an owner's new status whenever its conditions change (`_module_status` writes it back)
        self.on_status: Callable[[ResourceKey, dict[str, Any] | None], None] = lambda owner, status: None
        self.host, self.port = "127.0.0.1", 0  # the module endpoint, set once it is bound
        self.tls: ModuleTls | None = None  # set while the endpoint is served over HTTPS (`serve_tls`)
        self._tls_endpoint: ModuleTlsEndpoint | None = None
        self.states: dict[str, SlotState] = {}
        self.published: set[str] = set()  # digests proxies were told about; the endpoint serves only these
        self._inflight: dict[tuple[Any, ...], asyncio.Task[Fetched]] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # ---- tracking the mesh ------------------------------------------------------------------------
    def track(self, slots: Iterable[ModuleSlot]) -> None:
        """Follow the mesh's current slots: resolve new or changed ones, forget removed ones."""
        seen = set()
        for slot in slots:
            seen.add(slot.key)
            mode = self.config.for_namespace(slot.namespace).distribution
            state = self.states.get(slot.key)
            if state is None:
                state = self.states[slot.key] = SlotState(slot, mode, slot.fingerprint())
                self._start(state, refresh=slot.always)
            elif state.fingerprint != slot.fingerprint() or state.mode != mode:
                state.slot, state.mode, state.fingerprint = slot, mode, slot.fingerprint()
                state.pending, state.current, state.error = True, None, None
                self._start(state, refresh=slot.always)
            else:
                state.slot = slot
                if state.current is not None:
                    state.good_config = slot.config  # a new pluginConfig for the module proxies run now
            self._update_conditions(state)
        for key in set(self.states) - seen:
            state = self.states.pop(key)
            if state.task is not None:
                state.task.cancel()

    def placements(self) -> ModulePlacements:
        slots = {key: p for key, state in self.states.items() if (p := state.placement()) is not None}
        inline = {}
        for placement in slots.values():
            if isinstance(placement, Served):
                self.published.add(placement.sha256)
                module = self.cache.read(placement.sha256) if self.config.delivery == INLINE else None
                if module is not None:
                    inline[placement.sha256] = module
        return ModulePlacements(self.host, self.port, slots, f"{self.config.fetch_timeout:g}s", inline, self.tls)

    def module_bytes(self, sha256: str) -> bytes | None:
        """A module the endpoint may serve: published to proxies and intact in the cache."""
        return self.cache.read(sha256) if sha256 in self.published else None

    # ---- resolution ---------------------------------------------------------------------------------
    def _start(self, state: SlotState, refresh: bool) -> None:
        if state.mode != CONTROLPLANE:
            return
        if state.task is not None and not state.task.done():
            state.task.cancel()
        state.task = asyncio.get_running_loop().create_task(self._resolve(state, refresh))

    async def _resolve(self, state: SlotState, refresh: bool) -> None:
        slot, fingerprint = state.slot, state.fingerprint
        policy = self.config.for_namespace(slot.namespace).policy
        request = FetchRequest(slot.url, policy, slot.sha256, slot.pull_secret, refresh)
        fetched: Fetched | None = None
        error: ModuleRefused | None = None
        try:
            fetched = await self._shared(request)
        except ModuleRefused as err:
            error = err
        except Exception as err:  # noqa: BLE001 - any other failure is a refusal with its message
            log.exception("resolving %s failed", slot.url)
            error = ModuleRefused(RESOLVED, "InternalError", f"{type(err).__name__}: {err}")
        if self.states.get(slot.key) is not state or state.fingerprint != fingerprint:
            return  # superseded by a newer version of the slot
        before = state.placement()
        state.pending = False
        state.current, state.error = fetched, error
        if fetched is not None:
            state.last_good, state.good_config = fetched, state.slot.config
            log.info("%s: %s verified as sha256:%s", slot.key, slot.url, fetched.module_sha256)
        else:
            log.warning("%s: %s refused: %s", slot.key, slot.url, error)
        self._update_conditions(state)
        if state.placement() != before:
            self.on_change()

    async def _shared(self, request: FetchRequest) -> Fetched:
        """One fetch for every concurrent request of the same module under the same policy.

        The fetch runs as its own task, so a slot that is superseded (and cancelled) while
        waiting does not cancel the fetch other slots wait for.
        """
        key = (request.url, request.sha256, request.pull_secret, id(request.policy), request.refresh)
        fetch = self._inflight.get(key)
        if fetch is None:
            fetch = asyncio.get_running_loop().create_task(self._with_retries(request))
            self._inflight[key] = fetch

            def done(task: asyncio.Task[Fetched]) -> None:
                self._inflight.pop(key, None)
                if not task.cancelled():
                    task.exception()  # retrieved here: waiters that were cancelled never will

            fetch.add_done_callback(done)
        return await asyncio.shield(fetch)

    async def _with_retries(self, request: FetchRequest) -> Fetched:
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return await asyncio.to_thread(self._fetch, request)
            except ModuleRefused as err:
                if not err.retryable or attempt == self.attempts - 1:
                    raise
        raise AssertionError("unreachable")

    async def refresh_forever(self) -> None:
        """Re-resolve slots that always pull, and slots that failed, every refresh interval."""
        while True:
            await asyncio.sleep(self.config.refresh_interval)
            self.refresh()

    def refresh(self) -> None:
        for state in list(self.states.values()):
            busy = state.task is not None and not state.task.done()
            if not busy and (state.slot.always or state.error is not None):
                self._start(state, refresh=True)

    def start(self) -> None:
        self._refresher = asyncio.get_running_loop().create_task(self.refresh_forever())

    async def serve_tls(self, security: MeshSecurity, host: str | None = None, port: int | None = None) -> int:
        """Serve the module endpoint over HTTPS with a mesh CA certificate (`_module_tls`) and tell
        proxies to fetch from it from now on; returns the bound port."""
        endpoint = ModuleTlsEndpoint(security, self.module_bytes)
        self.port = await endpoint.start(host or self.host,
                                         https_port(port if port is not None else self.config.https_port,
                                                    security.settings.secure_port))
        self._tls_endpoint, self.tls = endpoint, endpoint.tls
        self._tasks.append(asyncio.get_running_loop().create_task(self._renew_tls_forever(endpoint)))
        self.on_change()
        return self.port

    async def _renew_tls_forever(self, endpoint: ModuleTlsEndpoint, interval: float = 1.0) -> None:
        """A new certificate, or a new trust bundle, reaches proxies with the next push."""
        while True:
            await asyncio.sleep(interval)
            try:
                renewed = endpoint.renew_if_due()
            except Exception:  # noqa: BLE001 - retried on the next tick
                log.exception("renewing the module endpoint's certificate failed")
                continue
            if renewed and endpoint.tls != self.tls:
                self.tls = endpoint.tls
                self.on_change()

    async def stop(self) -> None:
        if self._tls_endpoint is not None:
            await self._tls_endpoint.close()
        tasks: list[asyncio.Task[Any]] = [s.task for s in self.states.values() if s.task is not None]
        tasks += list(self._inflight.values()) + ([self._refresher] if self._refresher is not None else [])
        tasks += self._tasks
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass

    async def settled(self, timeout: float = 30.0) -> None:
        """Wait until no resolution is running (tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while any(s.task is not None and not s.task.done() for s in self.states.values()):
            if time.monotonic() > deadline:
                raise TimeoutError("module resolutions still running")
            await asyncio.sleep(0.01)

    # ---- status ---------------------------------------------------------------------------------------
    def _update_conditions(self, state: SlotState) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        policy_source = self.config.for_namespace(state.slot.namespace).policy_source
        before = dict(state.conditions)
        for kind, status, reason, message in _conditions(state, policy_source, self.config.delivery):
            previous = state.conditions.get(kind)
            since = previous["lastTransitionTime"] if previous and previous["status"] == status else now
            state.conditions[kind] = {"type": kind, "status": status, "reason": reason, "message": message,
                                      "lastTransitionTime": since}
        if state.conditions != before:
            try:
                self.on_status(state.slot.owner, self.status_of(state.slot.owner))
            except Exception:  # noqa: BLE001 - reporting a status must never break resolution
                log.exception("reporting the status of %s failed", state.slot.owner)

    def status_of(self, owner: ResourceKey) -> dict[str, Any] | None:
        """The `status` of a WasmPlugin (conditions + module) or EnvoyFilter (one entry per module)."""
        states = [s for s in self.states.values() if s.slot.owner == owner]
        if not states:
            return None
        if owner.kind == "WasmPlugin":
            return _slot_status(states[0])
        return {"modules": [{"name": s.slot.name, **_slot_status(s)} for s in states]}

    def proxy_view(self, extension_names: Iterable[str]) -> list[dict[str, str]]:
        """One line per module a proxy was sent: what it runs and why (for proxy-status)."""
        names = set(extension_names)
        out = []
        for state in sorted(self.states.values(), key=lambda s: s.slot.key):
            if state.slot.name not in names:
                continue
            distributed = state.conditions.get(DISTRIBUTED, {})
            placement = state.placement()
            served = placement.sha256 if isinstance(placement, Served) else ""
            out.append({"name": state.slot.name, "owner": str(state.slot.owner), "distribution": state.mode,
                        "sha256": served, "state": distributed.get("reason", ""),
                        "message": distributed.get("message", "")})
        return out


def _conditions(state: SlotState, policy_source: str, delivery: str) -> list[tuple[str, str, str, str]]:
    slot = state.slot
    if state.mode != CONTROLPLANE:
        note = "distribution is direct: each sidecar's module agent pulls and verifies the module itself"
        return [(RESOLVED, "Unknown", "Direct", note), (VERIFIED, "Unknown", "Direct", note),
                (DISTRIBUTED, "True", "Direct", f"proxies are sent {slot.url} and pull it from its source")]
    out: list[tuple[str, str, str, str]] = []
    error, current = state.error, state.current
    if state.pending:
        out += [(RESOLVED, "Unknown", "Resolving", f"fetching {slot.url}"),
                (VERIFIED, "Unknown", "Resolving", f"fetching {slot.url}")]
    elif current is not None:
        where = f"manifest {current.manifest_digest}" if current.manifest_digest and ":" in current.manifest_digest \
            else f"{current.size} bytes"
        reason = "Signed" if current.signers else ("ChecksumPinned" if slot.sha256 else "NotSigned")
        out += [(RESOLVED, "True", "Resolved", f"{slot.url} resolved to {where}"),
                (VERIFIED, "True", reason, f"{current.verification} (trust policy: {policy_source})")]
    elif error is not None and error.condition == RESOLVED:
        out += [(RESOLVED, "False", error.reason, str(error)),
                (VERIFIED, "Unknown", "NotResolved", "nothing to verify: the module could not be fetched")]
    elif error is not None:
        out += [(RESOLVED, "True", "Resolved", f"{slot.url} answered"),
                (VERIFIED, "False", error.reason, f"{error} (trust policy: {policy_source})")]
    good = current or state.last_good
    if current is not None:
        how = "in their ECDS config" if delivery == INLINE else "from the control plane's module endpoint"
        out.append((DISTRIBUTED, "True", "ControlPlane", f"proxies get sha256:{current.module_sha256} {how}"))
    elif good is not None:
        why = "the new module is still resolving" if state.pending else "the new module was refused"
        out.append((DISTRIBUTED, "True", "LastGoodVersion",
                    f"proxies keep sha256:{good.module_sha256} with the pluginConfig it ran with: {why}"))
    elif state.pending:
        out.append((DISTRIBUTED, "False", "Pending", "waiting for the first verified module; proxies keep their "
                                                     "current listeners until it arrives"))
    elif slot.fail_open:
        out.append((DISTRIBUTED, "False", "FailOpen", "no verified module: FAIL_OPEN leaves the plugin out"))
    else:
        out.append((DISTRIBUTED, "False", "FailClose",
                    "no verified module: FAIL_CLOSE puts a deny-all RBAC filter in the plugin's place"))
    return out


def _slot_status(state: SlotState) -> dict[str, Any]:
    good = state.current or state.last_good
    module: dict[str, Any] = {"url": state.slot.url, "distribution": state.mode}
    if good is not None:
        if good.manifest_digest and ":" in good.manifest_digest:
            module["digest"] = good.manifest_digest
        module["sha256"] = good.module_sha256
        module["size"] = good.size
        module["signers"] = [str(s) for s in good.signers]
    order = (RESOLVED, VERIFIED, DISTRIBUTED)
    return {"conditions": [state.conditions[k] for k in order if k in state.conditions], "module": module}


__all__ = ["DISTRIBUTED", "ModuleResolver", "SlotState"]
