"""``verify_module``: the one call the sidecar agent and control plane make before loading.

Order matters: resolve the tag to a manifest digest, check the pinned digest (Istio's
``sha256``), check signatures on that digest against the trust policy, and only then
pull the module *by digest*, so a tag moved in between cannot swap in other content.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._client import RegistryClient
from ._credentials import CredentialStore
from ._digest import Digest
from ._errors import RegistryError
from ._modules import client_for, pull_module, resolve
from ._reference import Reference
from ._signing import Signer, VerificationError, find_signatures, verify_signatures
from ._sigstore import find_bundles, verify_bundle
from ._trust import TrustPolicy


@dataclass(frozen=True)
class VerifiedModule:
    """Module bytes that passed the digest pin and the trust policy, and who signed them."""

    module: bytes
    reference: Reference
    manifest_digest: Digest
    module_digest: Digest
    signers: tuple[Signer, ...]
    variant: str


def _check_signatures(client: RegistryClient, ref: Reference, digest: Digest, policy: TrustPolicy) -> list[Signer]:
    decision = policy.decide(ref)
    if not decision.require_signature:
        return []
    if not decision.covered:
        raise VerificationError(f"no trust policy rule covers {ref.name}; unsigned or unknown signers are refused")
    if not decision.keys and not decision.identities:
        raise VerificationError(f"the trust policy names no key or identity for {ref.name}")
    reasons: list[str] = []
    signers: list[Signer] = []
    try:
        if decision.keys:
            try:
                signers += verify_signatures(find_signatures(client, ref.repository, digest), digest, decision.keys)
            except VerificationError as err:
                reasons.append(str(err))
        if decision.identities and not signers:
            if policy.trusted_root is None:
                reasons.append("Sigstore identities are trusted but the policy has no trustedRoot")
            else:
                bundles = find_bundles(client, ref.repository, digest)
                if not bundles:
                    reasons.append(f"{digest} has no Sigstore bundle")
                for bundle in bundles:
                    try:
                        signers.append(verify_bundle(bundle, digest, policy.trusted_root, list(decision.identities)))
                        break
                    except VerificationError as err:
                        reasons.append(str(err))
    except RegistryError as err:
        raise VerificationError(f"cannot read the signatures of {ref}: {err}") from None
    if not signers:
        raise VerificationError(f"{ref}: " + "; ".join(reasons))
    return signers


def verify_module(url: str | Reference, policy: TrustPolicy, *, credentials: CredentialStore | None = None,
                  expected_digest: Digest | str | None = None, client: RegistryClient | None = None,
                  **client_options: object) -> VerifiedModule:
    """Fetch a module from ``oci://`` ``url`` that the policy accepts; raise why not otherwise.

    Raises ``VerificationError`` (signature/policy), ``RegistryError`` (registry, digest,
    format), ``ValueError`` (malformed reference).
    """
    ref = url if isinstance(url, Reference) else Reference.parse(url)
    pinned = Digest.parse(expected_digest) if isinstance(expected_digest, str) else expected_digest
    if pinned is None:
        pinned = ref.digest
    elif ref.digest is not None and ref.digest != pinned:
        raise RegistryError("DIGEST_INVALID", f"{ref} is pinned to {ref.digest} but sha256 says {pinned}")
    own_client = client is None
    active = client or client_for(ref, credentials, **client_options)
    try:
        _, _, digest = resolve(active, ref)
        if pinned is not None and digest != pinned:
            raise RegistryError("DIGEST_INVALID", f"module {ref} has manifest digest {digest}, which does not "
                                f"match the expected {pinned}")
        signers = _check_signatures(active, ref, digest, policy)
        pulled = pull_module(active, ref.with_digest(digest), expected_digest=digest)
    finally:
        if own_client:
            active.close()
    return VerifiedModule(pulled.module, pulled.reference, digest, pulled.module_digest, tuple(signers), pulled.variant)
