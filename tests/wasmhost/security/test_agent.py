"""The identity agent with the real CA in-process (no network): schedule, backoff, rotation."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from cryptography import x509

from tests.wasmhost.security._pki import make_ca, spiffe
from wasmhost.security import (
    DEFAULT_SECRET,
    ROOT_SECRET,
    IdentityAgent,
    RenewalPolicy,
    SignedChain,
    SigningError,
)


class InProcessSigner:
    """The real CA called directly; ``fail_next`` makes the next calls fail like an outage."""

    def __init__(self, ca, identity):
        self.ca, self.identity = ca, identity
        self.fail_next = 0
        self.csrs = []

    async def sign(self, csr_pem, validity_seconds):
        self.csrs.append(csr_pem)
        if self.fail_next:
            self.fail_next -= 1
            raise SigningError("UNAVAILABLE: CA down", retryable=True)
        issued = self.ca.sign(csr_pem, self.identity, validity_seconds=validity_seconds)
        return SignedChain(issued.cert_chain, "".join(issued.trust_bundle).encode())


class RecordingSleep:
    """Records each requested delay and stops the agent after ``limit`` of them."""

    def __init__(self, limit):
        self.delays, self.limit = [], limit
        self.done = asyncio.Event()

    async def __call__(self, delay):
        self.delays.append(delay)
        if len(self.delays) >= self.limit:
            self.done.set()
            await asyncio.Event().wait()  # park until cancelled
        await asyncio.sleep(0)


def _run_agent(ca, *, limit, fail_first=0, rand=0.5, validity=dt.timedelta(seconds=1000)):
    identity = spiffe("shop", "cart")
    signer = InProcessSigner(ca, identity)
    signer.fail_next = fail_first
    sleep = RecordingSleep(limit)
    seen = []

    async def run():
        agent = IdentityAgent(identity, signer, validity=validity, rand=lambda: rand, sleep=sleep,
                              policy=RenewalPolicy(initial_backoff=1.0, max_backoff=60.0))
        agent.subscribe(seen.append)
        task = asyncio.ensure_future(agent.start(timeout=10))
        await asyncio.wait_for(sleep.done.wait(), 10)
        await task
        await agent.stop()
        return agent

    return asyncio.run(run()), signer, sleep, seen


def test_agent_renews_at_half_life_with_a_new_key_each_time(tmp_path):
    agent, signer, sleep, seen = _run_agent(make_ca(tmp_path), limit=3)
    assert len(seen) == 3
    assert all(d == pytest.approx(500, abs=2) for d in sleep.delays)
    keys = {s.key.public_key().public_numbers() for s in seen}
    assert len(keys) == 3
    serials = {s.leaf.serial_number for s in seen}
    assert len(serials) == 3
    assert agent.tls.generation == 3
    assert agent.svid is seen[-1]
    assert agent.status()["renewals"] == 3


def test_agent_backs_off_exponentially_then_recovers(tmp_path):
    agent, signer, sleep, seen = _run_agent(make_ca(tmp_path), limit=4, fail_first=3)
    assert sleep.delays[:3] == [0.75, 1.5, 3.0]  # rand=0.5 -> 3/4 of 1, 2, 4 s
    assert sleep.delays[3] == pytest.approx(500, abs=2)
    assert agent.failures == 3 and agent.last_error == ""
    assert len(seen) == 1


def test_jitter_spreads_renewal_inside_the_band(tmp_path):
    low = _run_agent(make_ca(tmp_path / "a"), limit=1, rand=0.0)[2].delays[0]
    high = _run_agent(make_ca(tmp_path / "b"), limit=1, rand=0.999)[2].delays[0]
    assert 398 <= low <= 401 and 598 <= high <= 601


def test_start_times_out_with_the_last_error_when_the_ca_stays_down(tmp_path):
    identity = spiffe()
    signer = InProcessSigner(make_ca(tmp_path), identity)
    signer.fail_next = 10**6

    async def run():
        agent = IdentityAgent(identity, signer, policy=RenewalPolicy(initial_backoff=0.01, max_backoff=0.02))
        try:
            with pytest.raises(TimeoutError, match="CA down"):
                await agent.start(timeout=0.3)
        finally:
            await agent.stop()
        return agent

    agent = asyncio.run(run())
    assert agent.failures >= 3


def test_agent_refuses_a_certificate_for_another_identity(tmp_path):
    ca = make_ca(tmp_path)
    signer = InProcessSigner(ca, spiffe("other", "sa"))

    class Swapping:
        async def sign(self, csr_pem, validity_seconds):
            # a misbehaving CA signing someone else's CSR: the agent must not use it
            from wasmhost.security import build_csr, generate_key
            issued = ca.sign(build_csr(generate_key(), spiffe("other", "sa")), spiffe("other", "sa"))
            return SignedChain(issued.cert_chain, b"")

    async def run():
        agent = IdentityAgent(spiffe("shop", "cart"), Swapping(),
                              policy=RenewalPolicy(initial_backoff=0.01, max_backoff=0.02))
        try:
            with pytest.raises(TimeoutError):
                await agent.start(timeout=0.2)
        finally:
            await agent.stop()
        return agent

    agent = asyncio.run(run())
    assert "does not certify this agent's key" in agent.last_error
    assert signer.csrs == []


def test_staged_root_reaches_the_agent_bundle_and_its_sds_secrets(tmp_path):
    ca = make_ca(tmp_path)
    new_root = ca.stage_root()
    agent, _, _, seen = _run_agent(ca, limit=1)
    assert set(agent.svid.trust_bundle) == {ca.root, new_root}
    secrets = agent.secrets()
    bundle = secrets[ROOT_SECRET].validation_context.trusted_ca.inline_bytes
    assert set(x509.load_pem_x509_certificates(bundle)) == {ca.root, new_root}
    chain = secrets[DEFAULT_SECRET].tls_certificate.certificate_chain.inline_bytes
    assert x509.load_pem_x509_certificates(chain)[0] == agent.svid.leaf
    assert b"PRIVATE KEY" in secrets[DEFAULT_SECRET].tls_certificate.private_key.inline_bytes
