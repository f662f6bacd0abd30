"""`wasmesh controlplane --ca-dir --kubeconfig` as a process: a Kubernetes service-account token
is a bootstrap credential on the secure port, checked by TokenReview against the API server (the
fake one in `tests/controlplane/_fake_kube.py`, since no kube-apiserver can run here)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from tests._tools import require_tool
from tests.controlplane._fake_kube import FakeKubeApiServer
from tests.e2e.test_mesh_security_process import BANNER, sign, stop
from wasmhost.security import SigningError, SpiffeId, spiffe_id_of

pytestmark = [pytest.mark.e2e]
SA_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ3ZWIifQ.c2ln"


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{server}"}}}}]
users: [{{name: operator, user: {{token: operator-token}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: operator}}}}]
current-context: fake
""")
    return path


def test_service_account_token_gets_a_certificate_from_the_controlplane_process(tmp_path: Path) -> None:
    require_tool("kubernetes", lookup=lambda: __import__("kubernetes").__file__, hint="pip install kubernetes")
    fake = FakeKubeApiServer().start()
    fake.issue_service_account_token(SA_TOKEN, "shop", "web")
    ca_dir = tmp_path / "ca"
    command = [sys.executable, "-m", "controlplane.cli._controlplane", "controlplane", "--ca-dir", str(ca_dir),
               "--xds-address", "127.0.0.1:0", "--secure-address", "127.0.0.1:0",
               "--monitoring-address", "127.0.0.1:0", "--kubeconfig", str(kubeconfig(tmp_path / "kubeconfig", fake.url))]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stopped = False
    try:
        assert process.stdout is not None
        banner = BANNER.match(process.stdout.readline().strip())
        assert banner is not None, process.stderr.read() if process.stderr else ""
        port, roots = int(banner.group(2)), (ca_dir / "trust-bundle.pem").read_bytes()
        web = SpiffeId("cluster.local", "shop", "web")
        assert spiffe_id_of(asyncio.run(sign(port, roots, SA_TOKEN, web))) == web
        with pytest.raises(SigningError, match="PERMISSION_DENIED"):
            asyncio.run(sign(port, roots, SA_TOKEN, SpiffeId("cluster.local", "shop", "admin")))
        with pytest.raises(SigningError, match="UNAUTHENTICATED"):
            asyncio.run(sign(port, roots, "eyJ.never.issued", web))
        assert [r["spec"]["audiences"] for r in fake.token_reviews] == [["istio-ca"], ["istio-ca"]]
        fake.stop()  # ends the open watches first, so the control plane's watch threads stop at once
        stopped = True
        assert stop(process) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if not stopped:
            fake.stop()
