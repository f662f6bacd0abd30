"""``wasmesh sidecar -c envoy.yaml``: run the sidecar proxy from an Envoy v3 bootstrap."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

_LEVELS = {"trace": 5, "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "warn": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL, "off": 100}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sidecar",
        help="run the sidecar proxy from an Envoy v3 bootstrap (YAML or JSON)",
        description="Serve an Envoy v3 bootstrap; the file is watched and reloaded live.",
    )
    parser.add_argument("-c", "--config-path", required=True, help="bootstrap file (YAML or JSON)")
    parser.add_argument("-l", "--log-level", default="info", choices=sorted(_LEVELS), help="log level")
    parser.add_argument("--concurrency", type=int, default=1, help="worker processes sharing the listen ports")
    parser.add_argument("--admin-address-path", default="", help="write the admin host:port to this file")
    parser.add_argument("--validate", action="store_true", help="only check the bootstrap and exit")
    agent = parser.add_argument_group(
        "identity agent", "for a bootstrap written with `wasmesh bootstrap --identity-agent`: the sidecar generates "
                          "its key itself and gets its certificate from the CA (defaults come from the ADS connection)")
    agent.add_argument("--ca-address", default="", metavar="HOST:PORT", help="the CA's CSR service")
    agent.add_argument("--ca-root-cert", default="", metavar="FILE", help="roots the CA's serving certificate chains to")
    agent.add_argument("--identity-token-file", default="", metavar="FILE",
                       help="bootstrap token to authenticate to the CA with (read again for every request)")
    agent.add_argument("--secret-ttl", type=float, default=0.0, metavar="SECONDS",
                       help="certificate lifetime to ask for (default: the CA's)")
    parser.set_defaults(handler=_run)


def _configure_logging(level_name: str) -> None:
    logging.addLevelName(5, "TRACE")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(levelname)s][%(name)s] %(message)s"))
    root = logging.getLogger("wasmesh")
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level_name])
    root.propagate = False


def _run(args: argparse.Namespace) -> int:
    from controlplane.cli import UsageError

    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    _configure_logging(args.log_level)
    from wasmhost.sidecar import ConfigError, load_plan
    from wasmhost.sidecar._reload import read_config

    if args.secret_ttl < 0:
        raise UsageError("--secret-ttl must not be negative")
    options: dict[str, Any] = {"log_level": args.log_level, "concurrency": args.concurrency}
    for flag in ("ca_address", "ca_root_cert", "identity_token_file", "secret_ttl"):
        if getattr(args, flag):
            options[flag] = getattr(args, flag)
    if args.validate:
        from wasmhost.sidecar._identity import IdentityOptions, identity_settings
        from wasmhost.sidecar._xds_settings import ads_settings

        try:
            plan = load_plan(read_config(args.config_path), args.config_path, 1)
            identity_settings(plan.bootstrap, ads_settings(plan.bootstrap), IdentityOptions.from_options(options))
        except ConfigError as err:
            print(f"invalid bootstrap: {err}", file=sys.stderr)
            return 1
        print(f"{args.config_path}: OK")
        return 0
    if args.concurrency > 1:
        from wasmhost.sidecar._supervisor import run_supervisor

        return run_supervisor(args.config_path, args.concurrency, options, args.admin_address_path)
    import uvloop

    from wasmhost.sidecar import run_sidecar

    return uvloop.run(run_sidecar(args.config_path, options, args.admin_address_path))
