"""AuthorizationPolicy evaluation in Istio's documented order (sans-io).

1. CUSTOM policies that match send the request to their ext_authz provider; a deny there
   denies the request (the caller performs the check: ``Evaluation.custom_provider``).
2. Any matching DENY policy denies.
3. No ALLOW policy for the workload: allow.
4. Any matching ALLOW policy: allow.
5. Otherwise deny.
AUDIT policies never change the decision; a match marks the request for auditing. Policies
annotated ``istio.io/dry-run: "true"`` are evaluated into ``shadow_*`` and not enforced.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ._policy import Action, AuthorizationPolicy, PolicyError
from ._request import AuthzRequest


@dataclass(frozen=True)
class AuthzDecision:
    allowed: bool
    reason: str
    policy: str = ""  # the policy that decided, "ns/name", if any
    audit_policies: tuple[str, ...] = ()
    shadow_allowed: bool | None = None  # the decision dry-run policies would have made
    shadow_policy: str = ""

    @property
    def audit(self) -> bool:
        return bool(self.audit_policies)


@dataclass(frozen=True)
class Evaluation:
    """Everything but the external check: ``decide(custom_allowed)`` finishes the job."""

    custom_provider: str  # non-empty: a CUSTOM policy matched, ask this provider first
    custom_policy: str
    local: AuthzDecision
    audit_policies: tuple[str, ...] = field(default=())

    def decide(self, custom_allowed: bool | None = None, custom_reason: str = "") -> AuthzDecision:
        if self.custom_provider:
            if custom_allowed is None:
                raise ValueError(f"the CUSTOM policy {self.custom_policy} needs the answer of {self.custom_provider!r}")
            if not custom_allowed:
                return AuthzDecision(
                    False, f"denied by ext_authz provider {self.custom_provider!r} ({self.custom_policy})"
                    + (f": {custom_reason}" if custom_reason else ""),
                    self.custom_policy, self.audit_policies, self.local.shadow_allowed, self.local.shadow_policy,
                )
        return self.local


def _first_match(policies: list[AuthorizationPolicy], request: AuthzRequest) -> tuple[AuthorizationPolicy, int] | None:
    for policy in policies:
        index = policy.matching_rule(request)
        if index is not None:
            return policy, index
    return None


def _decide(by_action: dict[Action, list[AuthorizationPolicy]], request: AuthzRequest) -> tuple[bool, str, str]:
    denied = _first_match(by_action[Action.DENY], request)
    if denied is not None:
        policy, rule = denied
        return False, f"denied by DENY policy {policy.key} rule {rule}", policy.key
    if not by_action[Action.ALLOW]:
        return True, "allowed: no ALLOW policy applies to the workload", ""
    allowed = _first_match(by_action[Action.ALLOW], request)
    if allowed is not None:
        policy, rule = allowed
        return True, f"allowed by ALLOW policy {policy.key} rule {rule}", policy.key
    names = ", ".join(p.key for p in by_action[Action.ALLOW])
    return False, f"denied: no rule of the ALLOW policies ({names}) matches", ""


class AuthorizationEngine:
    """The policies that apply to one workload, ready to evaluate requests."""

    def __init__(self, policies: Iterable[AuthorizationPolicy]) -> None:
        self.policies = list(policies)
        self._enforced = self._group(p for p in self.policies if not p.dry_run)
        self._shadow = self._group(p for p in self.policies if p.dry_run or p.action is not Action.CUSTOM)
        self._has_shadow = any(p.dry_run for p in self.policies)
        providers = {p.provider for p in self._enforced[Action.CUSTOM]}
        if len(providers) > 1:
            raise PolicyError(f"CUSTOM policies name {len(providers)} providers ({', '.join(sorted(providers))}); "
                              "a workload may use at most one")

    @staticmethod
    def _group(policies: Iterable[AuthorizationPolicy]) -> dict[Action, list[AuthorizationPolicy]]:
        grouped: dict[Action, list[AuthorizationPolicy]] = {a: [] for a in Action}
        for policy in policies:
            grouped[policy.action].append(policy)
        return grouped

    def evaluate(self, request: AuthzRequest) -> Evaluation:
        audits = tuple(p.key for p in self._enforced[Action.AUDIT] if p.matching_rule(request) is not None)
        allowed, reason, policy = _decide(self._enforced, request)
        shadow_allowed, shadow_policy = None, ""
        if self._has_shadow:
            shadow_allowed, _, shadow_policy = _decide(self._shadow, request)
        local = AuthzDecision(allowed, reason, policy, audits, shadow_allowed, shadow_policy)
        custom = _first_match(self._enforced[Action.CUSTOM], request)
        if custom is None:
            return Evaluation("", "", local, audits)
        return Evaluation(custom[0].provider, custom[0].key, local, audits)

    def check(self, request: AuthzRequest) -> AuthzDecision:
        """Decide without CUSTOM policies' providers (raises if one would be needed)."""
        return self.evaluate(request).decide()
