"""The sidecar's identity agent: keeps a valid SPIFFE certificate for the workload.

It generates an EC P-256 key in this process (a new one per renewal; keys never leave the
process), sends a CSR for its SPIFFE ID to the CA, and renews at about half the lifetime
(``RenewalPolicy``: jitter, exponential backoff on failure). Every new SVID is pushed to
``TlsContexts`` (new connections use it, existing ones keep theirs) and to subscribers, e.g.
an SDS server handing ``default``/``ROOTCA`` to a co-located Envoy.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography import x509

from ._csr_client import CertificateSigner, SigningError
from ._renewal import RenewalPolicy
from ._sds import sds_secrets
from ._spiffe import SpiffeId
from ._svid import WorkloadSvid, build_csr, generate_key, load_pem_certificates
from ._tls import TlsContexts

log = logging.getLogger(__name__)
Subscriber = Callable[[WorkloadSvid], None]


class IdentityAgent:
    """Obtains and renews the SVID for ``identity`` from ``signer``."""

    def __init__(
        self,
        identity: SpiffeId,
        signer: CertificateSigner,
        *,
        validity: dt.timedelta = dt.timedelta(hours=24),
        policy: RenewalPolicy | None = None,
        extra_roots: Callable[[], list[x509.Certificate]] | None = None,
        on_roots_changed: Callable[[bytes], None] | None = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.identity = identity
        self.signer = signer
        self.validity = validity
        self.policy = policy or RenewalPolicy()
        self.tls = TlsContexts()
        self._extra_roots = extra_roots
        self._on_roots_changed = on_roots_changed
        self._clock, self._rand, self._sleep = clock, rand, sleep
        self._svid: WorkloadSvid | None = None
        self._answered_roots: tuple[x509.Certificate, ...] = ()  # the bundle of the CA's last answer
        self._distributed_roots: tuple[x509.Certificate, ...] = ()
        self._subscribers: list[Subscriber] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.renewals = 0
        self.failures = 0
        self.last_error = ""
        self.next_attempt_at = 0.0

    # --- what the sidecar reads ----------------------------------------------------------------

    @property
    def has_certificate(self) -> bool:
        return self._svid is not None

    @property
    def svid(self) -> WorkloadSvid:
        if self._svid is None:
            raise RuntimeError(f"no certificate for {self.identity} yet")
        return self._svid

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call ``subscriber(svid)`` now (if there is one) and on every renewal."""
        self._subscribers.append(subscriber)
        if self._svid is not None:
            subscriber(self._svid)

    def secrets(self) -> dict[str, Any]:
        """The SDS secrets ``default`` and ``ROOTCA`` for the current SVID."""
        return sds_secrets(self.svid)

    def status(self) -> dict[str, Any]:
        """What ``wasmesh proxy-config secret`` shows: identity, validity, bundle, health."""
        svid = self._svid
        return {
            "identity": str(self.identity),
            "serial": format(svid.leaf.serial_number, "x") if svid else None,
            "not_before": svid.not_before.isoformat() if svid else None,
            "not_after": svid.not_after.isoformat() if svid else None,
            "trust_bundle": [r.subject.rfc4514_string() for r in svid.trust_bundle] if svid else [],
            "renewals": self.renewals,
            "failures": self.failures,
            "last_error": self.last_error,
            "next_attempt_in": max(0.0, self.next_attempt_at - self._clock()),
        }

    # --- lifecycle -------------------------------------------------------------------------------

    def launch(self) -> None:
        """Start renewing in the background without waiting (subscribers hear of each SVID)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"identity-agent {self.identity}")

    async def start(self, *, timeout: float | None = 30.0) -> WorkloadSvid:
        """Start renewing in the background and wait for the first certificate."""
        self.launch()
        assert self._task is not None
        waiter = asyncio.ensure_future(self._ready.wait())
        done, _ = await asyncio.wait({waiter, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            if self._task in done:
                self._task.result()
            raise TimeoutError(f"no certificate for {self.identity} within {timeout} s: {self.last_error}")
        return self.svid

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def renew_now(self) -> WorkloadSvid:
        """One CSR round trip outside the schedule (e.g. after a trust bundle push)."""
        await self._renew_once()
        return self.svid

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._renew_once()
            except SigningError as exc:
                self._record_failure(str(exc))
            except Exception as exc:  # noqa: BLE001 - the loop must survive a bad CA answer; it reports it
                self._record_failure(f"{type(exc).__name__}: {exc}")
            else:
                attempt = 0
                received = self._clock()
                delay = self.policy.renew_delay(received, self.svid.not_after.timestamp(), self._rand())
                self.next_attempt_at = received + delay
                await self._sleep(delay)
                continue
            until_expiry = self._svid.not_after.timestamp() - self._clock() if self._svid else None
            delay = self.policy.retry_delay(attempt, self._rand(), until_expiry=until_expiry)
            attempt += 1
            self.next_attempt_at = self._clock() + delay
            await self._sleep(delay)

    def _record_failure(self, message: str) -> None:
        self.failures += 1
        self.last_error = message
        log.warning("certificate request for %s failed: %s", self.identity, message)

    async def _renew_once(self) -> None:
        key = generate_key()
        signed = await self.signer.sign(build_csr(key, self.identity), int(self.validity.total_seconds()))
        roots = load_pem_certificates(signed.trust_bundle_pem, what="trust bundle") if signed.trust_bundle_pem else []
        if self._extra_roots is not None:
            roots += self._extra_roots()
        svid = WorkloadSvid.from_response(key, signed.cert_chain, roots)
        if svid.spiffe_id != self.identity:
            raise SigningError(f"the CA issued {svid.spiffe_id}, not {self.identity}", retryable=True)
        self._answered_roots = svid.trust_bundle
        if self._distributed_roots:
            svid = svid.with_trust_bundle([*svid.trust_bundle, *self._distributed_roots])
        self.renewals += 1
        self.last_error = ""
        self._use(svid)

    def trust_distributed_roots(self, roots: list[x509.Certificate]) -> bool:
        """Also trust ``roots`` (what the control plane distributes, e.g. a staged root) from now on.

        Returns whether the trust bundle changed; the new one reaches ``tls`` and subscribers at
        once, without a certificate request.
        """
        self._distributed_roots = tuple(roots)
        current = self._svid
        if current is None:
            return False
        svid = current.with_trust_bundle([*self._answered_roots, *roots])
        if svid.trust_bundle == current.trust_bundle:
            return False
        self._use(svid)
        return True

    def _use(self, svid: WorkloadSvid) -> None:
        previous = self._svid
        self.tls.update(svid)
        self._svid = svid
        if self._on_roots_changed is not None and (previous is None or previous.trust_bundle != svid.trust_bundle):
            self._on_roots_changed(svid.bundle_pem())
        for subscriber in list(self._subscribers):
            subscriber(svid)
        self._ready.set()
