"""The CA as its own process (``python -m controlplane.ca``): token, serve, an agent's CSR,
and a root rotation step seen by the next renewal."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import subprocess
import sys

import pytest
from cryptography import x509

from tests._tools import ROOT
from wasmhost.security import GrpcCertificateClient, IdentityAgent, SpiffeId, verify_peer_chain

pytestmark = pytest.mark.e2e


def ca_cli(folder, *args):
    return subprocess.run([sys.executable, "-m", "controlplane.ca", "--dir", str(folder), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout.strip()


def test_ca_process_issues_to_an_agent_and_rotates(tmp_path):
    folder = tmp_path / "ca"
    token = ca_cli(folder, "token", "shop", "cart")
    process = subprocess.Popen([sys.executable, "-m", "controlplane.ca", "--dir", str(folder), "serve", "--port", "0"],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("listening "), line
        address = line.split()[1]
        root_pem = (folder / "root-cert.pem").read_bytes()
        identity = SpiffeId("cluster.local", "shop", "cart")

        async def renew_twice():
            client = GrpcCertificateClient(address, ca_roots_pem=root_pem, token=lambda: token)
            agent = IdentityAgent(identity, client, validity=dt.timedelta(hours=1))
            try:
                first = await agent.start(timeout=20)
                ca_cli(folder, "rotate", "stage")
                second = await agent.renew_now()
                ca_cli(folder, "rotate", "activate")
                third = await agent.renew_now()
            finally:
                await agent.stop()
                await client.close()
            return first, second, third

        first, second, third = asyncio.run(renew_twice())
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    root = x509.load_pem_x509_certificate(root_pem)
    assert verify_peer_chain(first.chain, [root]) == identity
    assert len(first.trust_bundle) == 1 and len(second.trust_bundle) == 2
    assert root in second.trust_bundle
    # after "activate" the running server signs with the staged root, still trusting the old one
    new_root = next(r for r in second.trust_bundle if r != root)
    assert verify_peer_chain(third.chain, [new_root]) == identity
    assert set(third.trust_bundle) == {root, new_root}
    assert process.returncode == 0
