"""Who may do what: basic auth, bearer tokens with per-repository scopes, access rules.

Two modes, like the distribution registry: ``basic`` checks ``Authorization: Basic`` on
every request; ``token`` answers 401 with a ``Bearer realm=.../token`` challenge, and the
token endpoint trades (optional) basic credentials for a signed token (JWT, HS256) whose
``access`` claim lists the granted ``repository:<name>:<actions>`` scopes. An access
policy (rules of users x repository globs x actions) decides what is granted.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import hmac
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ._errors import RegistryError
from ._passwords import PasswordFile

ACTIONS = frozenset({"pull", "push", "delete", "*"})
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Scope:
    """One requested or granted access: ``repository:team/app:pull,push``."""

    type: str
    name: str
    actions: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Scope:
        parts = text.split(":")
        if len(parts) < 3:
            raise RegistryError("DENIED", f"malformed scope {text[:200]!r}", status=400)
        kind, actions = parts[0], parts[-1]
        name = ":".join(parts[1:-1])
        return cls(kind, name, frozenset(a for a in actions.split(",") if a))

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"


@dataclass(frozen=True)
class AccessRule:
    users: tuple[str, ...]
    repositories: tuple[str, ...]
    actions: frozenset[str]

    def matches_user(self, user: str | None) -> bool:
        if user is None:
            return ANONYMOUS in self.users
        return "*" in self.users or user in self.users


@dataclass
class AccessPolicy:
    """Rules granting actions on repositories; the first rules are not special, grants add up."""

    rules: list[AccessRule] = field(default_factory=list)

    @classmethod
    def allow_authenticated(cls) -> AccessPolicy:
        """The default with a password file: any known user may do anything, anonymous nothing."""
        return cls([AccessRule(("*",), ("*",), frozenset({"*"}))])

    @classmethod
    def parse(cls, text: str, source: str = "access policy") -> AccessPolicy:
        doc = yaml.safe_load(text) or {}
        if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
            raise ValueError(f"{source}: expected a mapping with a 'rules' list")
        rules = []
        for i, raw in enumerate(doc["rules"]):
            where = f"{source}: rules[{i}]"
            if not isinstance(raw, dict):
                raise ValueError(f"{where}: expected a mapping")
            lists = {}
            for key in ("users", "repositories", "actions"):
                value = raw.get(key)
                if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"{where}.{key}: expected a non-empty list of strings")
                lists[key] = value
            bad = set(lists["actions"]) - ACTIONS
            if bad:
                raise ValueError(f"{where}.actions: unknown action(s) {sorted(bad)} (pull, push, delete, *)")
            rules.append(AccessRule(tuple(lists["users"]), tuple(lists["repositories"]), frozenset(lists["actions"])))
        return cls(rules)

    @classmethod
    def load(cls, path: Path | str) -> AccessPolicy:
        return cls.parse(Path(path).read_text(), str(path))

    def granted(self, user: str | None, scope: Scope) -> frozenset[str]:
        actions: set[str] = set()
        for rule in self.rules:
            if not rule.matches_user(user):
                continue
            if scope.type == "registry":
                if "*" in rule.repositories and "*" in rule.actions:
                    actions |= scope.actions
                continue
            if any(fnmatch.fnmatchcase(scope.name, pattern) for pattern in rule.repositories):
                actions |= set(scope.actions) if "*" in rule.actions else (rule.actions & scope.actions)
        return frozenset(actions)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class TokenIssuer:
    """Signs and checks bearer tokens (JWT, HS256) for one registry service."""

    service: str = "wasmesh-registry"
    secret: bytes = field(default_factory=lambda: os.urandom(32))
    lifetime: int = 300

    def issue(self, user: str | None, access: list[Scope]) -> str:
        now = int(time.time())
        header = {"alg": "HS256", "typ": "JWT"}
        claims = {
            "iss": self.service, "sub": user or "", "aud": self.service, "iat": now, "nbf": now - 5,
            "exp": now + self.lifetime, "jti": uuid.uuid4().hex,
            "access": [{"type": s.type, "name": s.name, "actions": sorted(s.actions)} for s in access],
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = hmac.new(self.secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64url(signature)}"

    def check(self, token: str) -> tuple[str | None, list[Scope]]:
        """The token's user and granted scopes; ``ValueError`` saying why it is not acceptable."""
        parts = token.split(".")
        if len(parts) != 3:
            raise ValueError("token is not a JWT")
        expected = hmac.new(self.secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(expected, _b64url_decode(parts[2])):
                raise ValueError("token signature is invalid")
            claims = json.loads(_b64url_decode(parts[1]))
        except (binascii.Error, ValueError) as err:
            raise ValueError(f"token is malformed or forged: {err}") from None
        now = time.time()
        if claims.get("aud") != self.service:
            raise ValueError("token is for another service")
        if not isinstance(claims.get("exp"), int) or claims["exp"] < now or claims.get("nbf", 0) > now:
            raise ValueError("token has expired or is not yet valid")
        scopes = [Scope(a["type"], a["name"], frozenset(a["actions"])) for a in claims.get("access", [])]
        return claims.get("sub") or None, scopes


class Authenticator:
    """Decides each request; ``authorize`` returns the user or raises 401/403 errors."""

    def __init__(self, mode: str = "none", passwords: PasswordFile | None = None,
                 policy: AccessPolicy | None = None, issuer: TokenIssuer | None = None):
        if mode not in ("none", "basic", "token"):
            raise ValueError(f"unknown auth mode {mode!r}")
        if mode == "basic" and passwords is None:
            raise ValueError("basic auth needs a password file")
        self.mode = mode
        self.passwords = passwords
        self.policy = policy or AccessPolicy.allow_authenticated()
        self.issuer = issuer or TokenIssuer()
        self._verified: dict[tuple[str, bytes], float] = {}  # bcrypt is slow: remember recent successes
        self._lock = threading.Lock()

    def _check_password(self, user: str, password: str) -> bool:
        if self.passwords is None:
            return False
        key = (user, hashlib.sha256(password.encode()).digest())
        with self._lock:
            if self._verified.get(key, 0) > time.monotonic():
                return True
        if not self.passwords.verify(user, password):
            return False
        with self._lock:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[key] = time.monotonic() + 60
        return True

    def basic_user(self, headers: dict[str, str]) -> str | None:
        """The user of valid basic credentials, None without any; UNAUTHORIZED when wrong."""
        value = headers.get("authorization", "")
        if not value.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(value[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise RegistryError("UNAUTHORIZED", "malformed basic credentials", headers=self._challenge([])) from None
        if not self._check_password(user, password):
            raise RegistryError("UNAUTHORIZED", "invalid username or password", headers=self._challenge([]))
        return user

    def _challenge(self, required: list[Scope], host: str = "", scheme: str = "http",
                   error: str | None = None) -> dict[str, str]:
        if self.mode == "basic":
            return {"WWW-Authenticate": f'Basic realm="{self.issuer.service}"'}
        value = f'Bearer realm="{scheme}://{host}/token",service="{self.issuer.service}"'
        if required:
            value += f',scope="{" ".join(str(s) for s in required)}"'
        if error:
            value += f',error="{error}"'
        return {"WWW-Authenticate": value}

    def authorize(self, headers: dict[str, str], required: list[Scope], *, host: str, scheme: str) -> str | None:
        if self.mode == "none":
            return None
        if self.mode == "basic":
            user = self.basic_user(headers)
            anonymous_ok = all(self.policy.granted(None, s) >= s.actions for s in required) and (
                bool(required) or any(rule.matches_user(None) for rule in self.policy.rules))
            if user is None and not anonymous_ok:
                raise RegistryError("UNAUTHORIZED", headers=self._challenge(required))
            for scope in required:
                if not self.policy.granted(user, scope) >= scope.actions:
                    raise RegistryError("DENIED", f"{user or ANONYMOUS} may not {','.join(sorted(scope.actions))} "
                                        f"{scope.type} {scope.name}")
            return user
        value = headers.get("authorization", "")
        if not value.lower().startswith("bearer "):
            raise RegistryError("UNAUTHORIZED", headers=self._challenge(required, host, scheme))
        try:
            user, granted = self.issuer.check(value[7:].strip())
        except ValueError as err:
            raise RegistryError("UNAUTHORIZED", str(err),
                                headers=self._challenge(required, host, scheme, "invalid_token")) from None
        for scope in required:
            have: set[str] = set()
            for g in granted:
                if g.type == scope.type and g.name == scope.name:
                    have |= g.actions
            if not have >= scope.actions:  # RFC 6750: 403 with a challenge naming the scope needed
                who = "anonymous token (no credentials were given)" if user is None else f"token of {user}"
                raise RegistryError("DENIED", f"{who} lacks {scope}",
                                    headers=self._challenge(required, host, scheme, "insufficient_scope"))
        return user

    def token_response(self, headers: dict[str, str], scopes: list[str]) -> dict[str, Any]:
        """The token endpoint: grant what the policy allows of the requested scopes."""
        if self.mode != "token":
            raise RegistryError("UNSUPPORTED", "this registry does not issue tokens")
        user = self.basic_user(headers)
        granted = []
        for text in scopes:
            for part in text.split(" "):
                if not part:
                    continue
                scope = Scope.parse(part)
                actions = self.policy.granted(user, scope)
                if actions:
                    granted.append(Scope(scope.type, scope.name, actions))
        token = self.issuer.issue(user, granted)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return {"token": token, "access_token": token, "expires_in": self.issuer.lifetime, "issued_at": now}
