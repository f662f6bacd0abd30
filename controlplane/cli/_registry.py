"""``wasmesh registry``, ``wasmesh login/logout`` and the publishing commands under
``wasmesh plugin``: push, pull, inspect, keygen, sign, verify.

Thin argument handling over the ``registry`` package; transfers show rich progress
bars on a terminal. Registry and verification failures print one line and exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from controlplane.cli import UsageError

KEY_PASSWORD_ENV = "COSIGN_PASSWORD"


# ---- shared helpers ---------------------------------------------------------------------
def _fail(message: str) -> int:
    print(f"wasmesh: error: {message}", file=sys.stderr)
    return 1


def _reference(text: str) -> Any:
    from registry import Reference

    try:
        return Reference.parse(text)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read {what} {path}: {err.strerror}") from None


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("registry connection")
    group.add_argument("--config", metavar="FILE", help="docker-style credentials file (default: ~/.docker/config.json)")
    group.add_argument("--plain-http", action="store_true", help="talk HTTP, not HTTPS")
    group.add_argument("--insecure", action="store_true", help="do not verify the registry's TLS certificate")
    group.add_argument("--ca-file", metavar="FILE", help="CA bundle to verify the registry's certificate")


@contextlib.contextmanager
def _progress(enabled: bool = True) -> Iterator[Callable[[str, int, int | None], None] | None]:
    """A rich progress display fed by the client's ``progress(label, done, total)`` calls."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    tasks: dict[str, Any] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  transient=False, console=None) as bar:
        def update(label: str, done: int, total: int | None) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, total=total)

        yield update


def _client(args: argparse.Namespace, ref: Any, progress: Callable[[str, int, int | None], None] | None = None) -> Any:
    from registry import CredentialsError, CredentialStore, client_for

    try:
        store = CredentialStore(args.config) if args.config else CredentialStore()
        return client_for(ref, store, scheme="http" if args.plain_http else "auto", insecure_tls=args.insecure,
                          ca_file=args.ca_file, progress=progress)
    except CredentialsError as err:
        raise UsageError(str(err)) from None


def _key_password(args: argparse.Namespace) -> bytes | None:
    value = os.environ.get(getattr(args, "password_env", None) or KEY_PASSWORD_ENV)
    return value.encode() if value else None


def _load_signing_key(args: argparse.Namespace, path: str) -> Any:
    from registry import KeyFileError, load_private_key

    data = _read_file(path, "signing key")
    password = _key_password(args)
    try:
        return load_private_key(data, password, path)
    except KeyFileError as err:
        if password is None and "password" in str(err) and sys.stdin.isatty():
            return load_private_key(data, getpass.getpass(f"password for {path}: ").encode(), path)
        raise UsageError(str(err)) from None


def _run(action: Callable[[], int]) -> int:
    """Turn the registry package's errors into one line and exit status 1."""
    from registry import CredentialsError, KeyFileError, RegistryError, TrustPolicyError, VerificationError

    try:
        return action()
    except VerificationError as err:
        return _fail(f"verification failed: {err}")
    except RegistryError as err:
        return _fail(str(err))
    except (CredentialsError, KeyFileError, TrustPolicyError) as err:
        raise UsageError(str(err)) from None


# ---- wasmesh registry -------------------------------------------------------------------
def _cmd_registry(args: argparse.Namespace) -> int:
    from registry import (
        AccessPolicy,
        Authenticator,
        PasswordFile,
        PasswordFileError,
        RegistryApp,
        Storage,
        add_user,
        collect_garbage,
        serve,
        tls_context,
    )

    if args.add_user:
        if not args.htpasswd:
            raise UsageError("--add-user needs --htpasswd FILE")
        password = args.password if args.password is not None else getpass.getpass(f"password for {args.add_user}: ")
        try:
            add_user(args.htpasswd, args.add_user, password)
        except PasswordFileError as err:
            raise UsageError(str(err)) from None
        print(f"added {args.add_user} to {args.htpasswd}")
        return 0
    if not args.data:
        raise UsageError("--data DIR is required")
    storage = Storage(args.data)
    if args.gc:
        report = collect_garbage(storage, delete_untagged=args.delete_untagged, dry_run=args.dry_run,
                                 grace_seconds=args.grace)
        verb = "would delete" if args.dry_run else "deleted"
        print(f"{verb} {len(report.blobs_deleted)} blobs ({report.bytes_freed} bytes), "
              f"{len(report.manifests_deleted)} manifests, {report.links_deleted} links, "
              f"{report.uploads_deleted} stale uploads")
        for line in report.errors:
            print(f"warning: {line}", file=sys.stderr)
        return 0
    try:
        passwords = PasswordFile.load(args.htpasswd) if args.htpasswd else None
        policy = AccessPolicy.load(args.access) if args.access else None
    except (OSError, ValueError) as err:
        raise UsageError(str(err)) from None
    mode = args.auth or ("basic" if passwords else "none")
    if mode == "basic" and passwords is None:
        raise UsageError("--auth basic needs --htpasswd FILE")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    try:
        context = tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot load TLS certificate/key: {err}") from None
    app = RegistryApp(storage, Authenticator(mode, passwords, policy))

    def ready(server: Any) -> None:
        print(f"registry listening on {server.url} (data {args.data}, auth {mode})", flush=True)

    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        serve(app, args.host, args.port, context, ready)
    except OSError as err:
        return _fail(f"cannot listen on {args.host}:{args.port}: {err.strerror}")
    except KeyboardInterrupt:
        pass
    return 0


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# ---- login / logout ---------------------------------------------------------------------
def _cmd_login(args: argparse.Namespace) -> int:
    from registry import Credentials, CredentialStore, RegistryClient

    password = args.password
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    if password is None:
        password = getpass.getpass("password: ")
    if not args.username:
        raise UsageError("--username is required")
    credentials = Credentials(args.username, password)

    def action() -> int:
        if not args.no_check:
            with RegistryClient(args.host, credentials, scheme="http" if args.plain_http else "auto",
                                insecure_tls=args.insecure, ca_file=args.ca_file) as client:
                client.ping()
        store = CredentialStore(args.config) if args.config else CredentialStore()
        store.set(args.host, credentials)
        print(f"login succeeded; credentials for {args.host} saved in {store.path}")
        return 0

    return _run(action)


def _cmd_logout(args: argparse.Namespace) -> int:
    from registry import CredentialStore

    store = CredentialStore(args.config) if args.config else CredentialStore()
    if not store.remove(args.host):
        return _fail(f"not logged in to {args.host}")
    print(f"removed credentials for {args.host}")
    return 0


# ---- plugin push / pull / inspect ----------------------------------------------------------
def _cmd_push(args: argparse.Namespace) -> int:
    from registry import ModuleFormatError, build_artifact, push_artifact, sign_image

    ref = _reference(args.reference)
    module = _read_file(args.module, "module")
    try:
        artifact = build_artifact(module, args.variant, root_ids=tuple(args.root_id or ()))
    except ModuleFormatError as err:
        raise UsageError(f"{args.module}: {err.message}") from None
    key = _load_signing_key(args, args.sign) if args.sign else None

    def action() -> int:
        with _progress(not args.quiet) as progress, _client(args, ref, progress) as client:
            digest = push_artifact(client, ref, artifact)
        print(f"pushed {ref.with_digest(digest)} ({args.variant} variant, {len(module)} bytes)")
        if key is not None:
            with _client(args, ref) as client:
                result = sign_image(client, ref.with_digest(digest), key)
            print(f"signed {digest} with key {result.key_id} (tag {result.signature_tag})")
        return 0

    return _run(action)


def _policy_from_args(args: argparse.Namespace) -> Any:
    from registry import SigstoreIdentity, TrustPolicy, TrustRule, load_public_key_file

    if args.policy:
        return TrustPolicy.load(args.policy)
    keys = [load_public_key_file(k) for k in args.key or ()]
    identities: tuple[Any, ...] = ()
    if args.identity:
        if not args.issuer or not args.trusted_root:
            raise UsageError("--identity needs --issuer and --trusted-root")
        identities = (SigstoreIdentity(args.identity, args.issuer),)
    if not keys and not identities:
        return None
    root = Path(args.trusted_root) if args.trusted_root else None
    return TrustPolicy([TrustRule(("*",), tuple(keys), identities)], True, root)


def _add_trust_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("trust (any of)")
    group.add_argument("--key", action="append", metavar="PUB", help="trusted public key (PEM); repeatable")
    group.add_argument("--policy", metavar="FILE", help="trust policy YAML")
    group.add_argument("--trusted-root", metavar="FILE", help="Sigstore trusted root JSON (offline)")
    group.add_argument("--identity", metavar="SUBJECT", help="Sigstore certificate identity (e-mail, URI)")
    group.add_argument("--issuer", metavar="URL", help="OIDC issuer of the Sigstore identity")


def _cmd_pull(args: argparse.Namespace) -> int:
    from registry import pull_module, verify_module

    ref = _reference(args.reference)
    policy = _policy_from_args(args)
    expected = f"sha256:{args.sha256}" if args.sha256 else None

    def action() -> int:
        with _progress(not args.quiet) as progress, _client(args, ref, progress) as client:
            if policy is not None:
                verified = verify_module(ref, policy, client=client, expected_digest=expected)
                module, digest, signers = verified.module, verified.manifest_digest, verified.signers
            else:
                from registry import Digest

                pulled = pull_module(client, ref, expected_digest=Digest.parse(expected) if expected else None)
                module, digest, signers = pulled.module, pulled.manifest_digest, ()
        out = Path(args.output)
        tmp = out.with_name(out.name + ".part")
        tmp.write_bytes(module)
        os.replace(tmp, out)
        who = f", signed by {', '.join(str(s) for s in signers)}" if signers else " (signature not checked)"
        print(f"pulled {ref.with_digest(digest)} -> {out} ({len(module)} bytes{who})")
        return 0

    return _run(action)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from registry import describe

    ref = _reference(args.reference)

    def action() -> int:
        with _client(args, ref) as client:
            info = describe(client, ref)
        if args.json:
            print(json.dumps(info, indent=2))
            return 0
        from rich.console import Console
        from rich.table import Table

        console = Console()
        console.print(f"[bold]{info['reference']}[/bold]\n  digest       {info['digest']}\n"
                      f"  mediaType    {info['mediaType']}\n  artifactType {info['artifactType']}")
        table = Table("layer media type", "digest", "size", "title")
        for layer in info["layers"]:
            title = (layer.get("annotations") or {}).get("org.opencontainers.image.title", "")
            table.add_row(layer["mediaType"], layer["digest"][:19] + "…", str(layer["size"]), title)
        console.print(table)
        sigs = info["cosignSignatures"]
        console.print(f"  cosign signatures: {sigs['count']} at {sigs['tag']}" if sigs else "  cosign signatures: none")
        console.print(f"  referrers: {len(info['referrers'])}")
        for entry in info["referrers"]:
            console.print(f"    {entry.get('artifactType')}  {entry['digest']}")
        return 0

    return _run(action)


# ---- keygen / sign / verify ---------------------------------------------------------------------
def _cmd_keygen(args: argparse.Namespace) -> int:
    from registry import generate_keypair, key_id, load_public_key

    private_path, public_path = Path(f"{args.output_prefix}.key"), Path(f"{args.output_prefix}.pub")
    for path in (private_path, public_path):
        if path.exists() and not args.force:
            raise UsageError(f"{path} exists (use --force to overwrite)")
    password = _key_password(args)
    private_pem, public_pem = generate_keypair(password)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    public_path.write_bytes(public_pem)
    state = "encrypted" if password else "NOT encrypted (set COSIGN_PASSWORD to encrypt)"
    print(f"wrote {private_path} ({state}) and {public_path}; key id {key_id(load_public_key(public_pem))}")
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    from registry import attach_bundle, sign_image

    ref = _reference(args.reference)
    if not args.key and not args.bundle:
        raise UsageError("give --key KEY (sign) or --bundle FILE (attach a Sigstore bundle)")
    key = _load_signing_key(args, args.key) if args.key else None
    bundle = _read_file(args.bundle, "bundle") if args.bundle else None

    def action() -> int:
        with _client(args, ref) as client:
            if key is not None:
                result = sign_image(client, ref, key, referrer=not args.no_referrer)
                where = f"tag {result.signature_tag}" + (f" and referrer {result.referrer_digest}"
                                                          if result.referrer_digest else "")
                print(f"signed {ref.with_digest(result.digest)} with key {result.key_id} ({where})")
            if bundle is not None:
                digest = attach_bundle(client, ref, bundle)
                print(f"attached Sigstore bundle to {ref} as referrer {digest}")
        return 0

    return _run(action)


def _cmd_verify(args: argparse.Namespace) -> int:
    from registry import verify_module

    ref = _reference(args.reference)
    policy = _policy_from_args(args)
    if policy is None:
        raise UsageError("give --key PUB, --policy FILE or --identity/--issuer/--trusted-root")

    def action() -> int:
        with _client(args, ref) as client:
            verified = verify_module(ref, policy, client=client)
        print(f"verified {ref.with_digest(verified.manifest_digest)} (module {verified.module_digest}, "
              f"{verified.variant} variant)")
        for signer in verified.signers:
            print(f"  signed by {signer}")
        return 0

    return _run(action)


# ---- registration ---------------------------------------------------------------------------
def register(commands: Any) -> None:
    reg = commands.add_parser("registry", help="run the OCI registry (or collect its garbage, add users)")
    reg.add_argument("--data", metavar="DIR", help="storage directory")
    reg.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    reg.add_argument("--port", type=int, default=5000, help="port (default 5000; 0 picks a free one)")
    reg.add_argument("--htpasswd", metavar="FILE", help="password file (bcrypt or pbkdf2-sha256 hashes)")
    reg.add_argument("--auth", choices=("none", "basic", "token"), help="auth mode (default basic with --htpasswd)")
    reg.add_argument("--access", metavar="FILE", help="access rules YAML (users x repositories x actions)")
    reg.add_argument("--tls-cert", metavar="FILE")
    reg.add_argument("--tls-key", metavar="FILE")
    reg.add_argument("--gc", action="store_true", help="collect unreferenced blobs and exit")
    reg.add_argument("--delete-untagged", action="store_true", help="with --gc: also drop untagged manifests")
    reg.add_argument("--dry-run", action="store_true", help="with --gc: only report")
    reg.add_argument("--grace", type=float, default=3600.0, help="with --gc: keep blobs younger than this (s)")
    reg.add_argument("--add-user", metavar="USER", help="add USER to --htpasswd and exit")
    reg.add_argument("--password", help="with --add-user (default: prompt)")
    reg.set_defaults(handler=_cmd_registry)

    login = commands.add_parser("login", help="store registry credentials (docker config.json format)")
    login.add_argument("host", help="registry host[:port]")
    login.add_argument("-u", "--username")
    login.add_argument("-p", "--password")
    login.add_argument("--password-stdin", action="store_true")
    login.add_argument("--no-check", action="store_true", help="store without testing the credentials")
    _add_client_options(login)
    login.set_defaults(handler=_cmd_login)

    logout = commands.add_parser("logout", help="forget registry credentials")
    logout.add_argument("host")
    logout.add_argument("--config", metavar="FILE")
    logout.set_defaults(handler=_cmd_logout)


def register_plugin(plugin: Any) -> None:
    push = plugin.add_parser("push", help="push a .wasm module as an OCI image")
    push.add_argument("module", metavar="MODULE.wasm")
    push.add_argument("reference", metavar="oci://HOST/REPO:TAG")
    push.add_argument("--variant", choices=("oci", "compat", "docker"), default="oci",
                      help="image format (Istio pulls all three; default oci)")
    push.add_argument("--root-id", action="append", help="root id recorded in the runtime config")
    push.add_argument("--sign", metavar="KEY", help="sign the pushed manifest with this private key")
    push.add_argument("--password-env", metavar="VAR", help=f"env var with the key password (default {KEY_PASSWORD_ENV})")
    push.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _add_client_options(push)
    push.set_defaults(handler=_cmd_push)

    pull = plugin.add_parser("pull", help="pull a module (verifying signatures when trust is given)")
    pull.add_argument("reference", metavar="oci://HOST/REPO[:TAG|@DIGEST]")
    pull.add_argument("-o", "--output", required=True, metavar="FILE")
    pull.add_argument("--sha256", metavar="HEX", help="expected manifest digest (as WasmPlugin.sha256)")
    pull.add_argument("-q", "--quiet", action="store_true")
    _add_trust_options(pull)
    _add_client_options(pull)
    pull.set_defaults(handler=_cmd_pull)

    inspect = plugin.add_parser("inspect", help="show an image's manifest, layers, signatures and referrers")
    inspect.add_argument("reference")
    inspect.add_argument("--json", action="store_true")
    _add_client_options(inspect)
    inspect.set_defaults(handler=_cmd_inspect)

    keygen = plugin.add_parser("keygen", help="create an ECDSA P-256 key pair (PREFIX.key, PREFIX.pub)")
    keygen.add_argument("--output-prefix", default="cosign", metavar="PREFIX")
    keygen.add_argument("--force", action="store_true")
    keygen.add_argument("--password-env", metavar="VAR", help=f"env var with the key password (default {KEY_PASSWORD_ENV})")
    keygen.set_defaults(handler=_cmd_keygen)

    sign = plugin.add_parser("sign", help="sign an image (cosign format) or attach a Sigstore bundle")
    sign.add_argument("reference")
    sign.add_argument("--key", metavar="KEY", help="private key (PEM)")
    sign.add_argument("--bundle", metavar="FILE", help="Sigstore bundle JSON to attach as a referrer")
    sign.add_argument("--no-referrer", action="store_true", help="only the cosign .sig tag, no OCI 1.1 referrer")
    sign.add_argument("--password-env", metavar="VAR")
    _add_client_options(sign)
    sign.set_defaults(handler=_cmd_sign)

    verify = plugin.add_parser("verify", help="check an image's signatures against keys or a trust policy")
    verify.add_argument("reference")
    _add_trust_options(verify)
    _add_client_options(verify)
    verify.set_defaults(handler=_cmd_verify)
