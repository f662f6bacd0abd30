"""Run the CA on its own: ``python -m controlplane.ca serve|token|rotate``.

``serve`` starts the CSR service (port 15012 unless ``--port``) with the CA folder
``--dir`` (created on first start) and the bootstrap-token secret ``--token-secret``
(created 0600 when missing); it prints ``listening <host:port>`` and runs until SIGTERM.
``token`` prints a bootstrap token for a namespace/service account. ``rotate stage|activate|
retire`` performs one step of the root rotation (see ``CertificateAuthority``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import signal
import sys
import threading
from pathlib import Path

from ._auth import BootstrapTokens
from ._authority import CertificateAuthority
from ._service import SECURE_XDS_PORT, CsrServer


def _secret(path: Path) -> bytes:
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
    return path.read_bytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controlplane.ca", description="wasmesh certificate authority")
    parser.add_argument("--dir", type=Path, required=True, help="CA folder (cacerts layout)")
    parser.add_argument("--trust-domain", default="cluster.local")
    parser.add_argument("--token-secret", type=Path, help="bootstrap token secret file (default: <dir>/token-secret)")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=SECURE_XDS_PORT)
    serve.add_argument("--ttl", type=float, default=24 * 3600, help="default certificate lifetime, seconds")
    serve.add_argument("--max-ttl", type=float, default=None, help="longest lifetime granted, seconds")
    token = commands.add_parser("token")
    token.add_argument("namespace")
    token.add_argument("service_account")
    token.add_argument("--ttl", type=int, default=3600)
    rotate = commands.add_parser("rotate")
    rotate.add_argument("step", choices=["stage", "activate", "retire"])
    args = parser.parse_args(argv)

    secret_path = args.token_secret or args.dir / "token-secret"
    args.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if args.command == "token":
        print(BootstrapTokens(_secret(secret_path)).issue(args.namespace, args.service_account, ttl_seconds=args.ttl))
        return 0
    ttl = dt.timedelta(seconds=getattr(args, "ttl", 24 * 3600))
    max_ttl = dt.timedelta(seconds=args.max_ttl) if getattr(args, "max_ttl", None) else max(ttl, dt.timedelta(days=90))
    ca = CertificateAuthority(args.dir, args.trust_domain, default_ttl=ttl, max_ttl=max_ttl)
    if args.command == "rotate":
        if args.step == "stage":
            ca.stage_root()
        elif args.step == "activate":
            ca.activate_next_root()
        else:
            ca.retire_previous_root()
        print(f"trust bundle: {len(ca.trust_bundle())} root(s); signing with {ca.root.subject.rfc4514_string()}")
        return 0
    server = CsrServer(ca, BootstrapTokens(_secret(secret_path)), host=args.host, port=args.port).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"listening {server.address}", flush=True)
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
