"""Verify a peer's certificate chain against our trust bundle and extract its SPIFFE ID.

Pure (no sockets): the TLS layer already checks chains during the handshake; this is the
check that also pins the expected identity, and the one the control plane or a test uses on
a chain it holds. Refuses: a chain that does not lead to a bundle root, any certificate
outside its validity window, an issuer that is not a CA, a leaf without exactly one SPIFFE
ID, and (when given) an ID outside ``expected``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ._spiffe import SpiffeId, SpiffeIdError, spiffe_id_of

MAX_CHAIN_LENGTH = 5


class PeerVerificationError(Exception):
    """The peer's certificate was refused; the message says why."""


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _check_time(cert: x509.Certificate, now: dt.datetime, label: str) -> None:
    if now < cert.not_valid_before_utc:
        raise PeerVerificationError(f"{label} is not valid before {cert.not_valid_before_utc.isoformat()}")
    if now > cert.not_valid_after_utc:
        raise PeerVerificationError(f"{label} expired at {cert.not_valid_after_utc.isoformat()}")


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def verify_peer_chain(
    chain: Sequence[x509.Certificate],
    trust_bundle: Sequence[x509.Certificate],
    *,
    expected: Collection[SpiffeId] | None = None,
    now: dt.datetime | None = None,
) -> SpiffeId:
    """Return the SPIFFE ID of ``chain[0]`` if the chain is trusted; raise PeerVerificationError.

    ``chain`` is what the peer sent (leaf first, optional intermediates, a root is allowed but
    not needed). ``expected`` empty/None accepts any identity from the trust domain(s) of the
    bundle; otherwise the peer's ID must be one of them.
    """
    if not chain:
        raise PeerVerificationError("the peer sent no certificate")
    if len(chain) > MAX_CHAIN_LENGTH:
        raise PeerVerificationError(f"chain of {len(chain)} certificates exceeds {MAX_CHAIN_LENGTH}")
    when = now or dt.datetime.now(dt.UTC)
    leaf = chain[0]
    try:
        identity = spiffe_id_of(leaf)
    except SpiffeIdError as exc:
        raise PeerVerificationError(f"peer certificate: {exc}") from exc
    if _is_ca(leaf):
        raise PeerVerificationError("peer leaf certificate is a CA certificate")
    _check_time(leaf, when, "peer certificate")
    current = leaf
    intermediates = list(chain[1:])
    for depth in range(MAX_CHAIN_LENGTH):
        root = next((r for r in trust_bundle if _signed_by(current, r)), None)
        if root is not None:
            _check_time(root, when, "trust root")
            break
        parent = next((c for c in intermediates if _signed_by(current, c)), None)
        if parent is None:
            raise PeerVerificationError(
                f"certificate at depth {depth} ({current.issuer.rfc4514_string() or 'empty issuer'}) "
                "is not signed by any root in the trust bundle"
            )
        if not _is_ca(parent):
            raise PeerVerificationError(f"issuer at depth {depth + 1} is not a CA certificate")
        _check_time(parent, when, f"intermediate at depth {depth + 1}")
        intermediates.remove(parent)
        current = parent
    else:
        raise PeerVerificationError("no path to a trust root within the chain length limit")
    if expected and identity not in expected:
        wanted = ", ".join(sorted(str(e) for e in expected))
        raise PeerVerificationError(f"peer identity {identity} is not the expected {wanted}")
    return identity
