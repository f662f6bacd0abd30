"""`wasmesh controlplane --ca-dir` as a process: it generates its root on first start, keeps
it across restarts, serves Istio's CSR service on the secure port to identity agents holding a
`wasmesh token`, and refuses a token for another identity."""

from __future__ import annotations

import asyncio
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from tests.e2e._mesh_security import cli
from wasmhost.security import (
    GrpcCertificateClient,
    SigningError,
    SpiffeId,
    build_csr,
    generate_key,
    spiffe_id_of,
)

pytestmark = [pytest.mark.e2e]
BANNER = re.compile(r"wasmesh control plane: xDS 127\.0\.0\.1:(\d+), secure xDS \+ CA 127\.0\.0\.1:(\d+), "
                    r"API 127\.0\.0\.1:(\d+)$")


def start(ca_dir: Path) -> tuple[subprocess.Popen[str], int]:
    command = [sys.executable, "-m", "controlplane.cli._controlplane", "controlplane", "--ca-dir", str(ca_dir),
               "--xds-address", "127.0.0.1:0", "--secure-address", "127.0.0.1:0",
               "--monitoring-address", "127.0.0.1:0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    banner = process.stdout.readline().strip()
    match = BANNER.match(banner)
    if match is None:
        process.kill()
        process.wait()
        raise AssertionError(f"unexpected banner {banner!r}")
    return process, int(match.group(2))


def stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def sign(port: int, roots: bytes, token: str, identity: SpiffeId) -> x509.Certificate:
    client = GrpcCertificateClient(f"127.0.0.1:{port}", ca_roots_pem=roots, token=lambda: token)
    try:
        signed = await client.sign(build_csr(generate_key(), identity), 600)
    finally:
        await client.close()
    return x509.load_pem_x509_certificates(signed.cert_chain[0].encode())[0]


def test_controlplane_runs_the_ca_and_serves_csrs_over_tls(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    process, port = start(ca_dir)
    try:
        assert stat.S_IMODE((ca_dir / "token-secret").stat().st_mode) == 0o600
        assert stat.S_IMODE((ca_dir / "ca-key.pem").stat().st_mode) == 0o600
        root = (ca_dir / "root-cert.pem").read_bytes()
        token = cli("token", "shop", "web", "--ca-dir", str(ca_dir)).strip()
        identity = SpiffeId("cluster.local", "shop", "web")
        leaf = asyncio.run(sign(port, (ca_dir / "trust-bundle.pem").read_bytes(), token, identity))
        assert spiffe_id_of(leaf) == identity
        with pytest.raises(SigningError, match="PERMISSION_DENIED"):
            asyncio.run(sign(port, root, token, SpiffeId("cluster.local", "shop", "admin")))
        assert stop(process) == 0
        # a restart keeps the root, so tokens and certificates issued before stay valid
        process, port = start(ca_dir)
        assert (ca_dir / "root-cert.pem").read_bytes() == root
        assert spiffe_id_of(asyncio.run(sign(port, root, token, identity))) == identity
    finally:
        assert stop(process) == 0
