from __future__ import annotations

from pathlib import Path

import pytest

from registry import (
    AccessPolicy,
    PasswordFile,
    PasswordFileError,
    Scope,
    TokenIssuer,
    add_user,
    hash_password,
)
from registry._passwords import bcrypt_available

from ._tools import require_module


def test_pbkdf2_hashes_verify_with_the_standard_library() -> None:
    hashed = hash_password("secret", scheme="pbkdf2-sha256")
    assert hashed.startswith("$pbkdf2-sha256$")
    users = PasswordFile.parse(f"alice:{hashed}\n")
    assert users.verify("alice", "secret")
    assert not users.verify("alice", "Secret")
    assert not users.verify("mallory", "secret")


def test_bcrypt_hashes_as_htpasswd_writes_them() -> None:
    require_module("bcrypt", "pip install bcrypt")
    hashed = hash_password("secret", scheme="bcrypt")
    users = PasswordFile.parse(f"# comment\n\nalice:{hashed.replace('$2b$', '$2y$', 1)}\n")
    assert users.verify("alice", "secret")
    assert not users.verify("alice", "secret ")


def test_weak_or_malformed_lines_name_file_and_line() -> None:
    with pytest.raises(PasswordFileError, match=r"users:2: unsupported or weak hash scheme 'apr1'"):
        PasswordFile.parse("ok:" + hash_password("x", scheme="pbkdf2-sha256") + "\nbob:$apr1$abc$def\n", "users")
    with pytest.raises(PasswordFileError, match="users:1: expected 'user:hash'"):
        PasswordFile.parse("no colon here\n", "users")
    with pytest.raises(PasswordFileError, match="weak"):
        PasswordFile.parse("carol:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n", "users")


def test_add_user_replaces_an_existing_entry(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    add_user(path, "alice", "one")
    add_user(path, "bob", "two")
    add_user(path, "alice", "three")
    users = PasswordFile.load(path)
    assert sorted(users.users) == ["alice", "bob"]
    assert users.verify("alice", "three") and not users.verify("alice", "one")
    expected = "$2" if bcrypt_available() else "$pbkdf2-sha256$"
    assert users.users["bob"].startswith(expected)


def test_access_policy_globs_and_actions() -> None:
    policy = AccessPolicy.parse("""
rules:
  - users: [alice]
    repositories: ["team/*"]
    actions: [pull, push]
  - users: [anonymous]
    repositories: ["public/*"]
    actions: [pull]
  - users: ["*"]
    repositories: ["team/shared"]
    actions: [pull]
""")
    scope = Scope.parse("repository:team/app:pull,push,delete")
    assert policy.granted("alice", scope) == {"pull", "push"}
    assert policy.granted("bob", scope) == frozenset()
    assert policy.granted("bob", Scope.parse("repository:team/shared:pull")) == {"pull"}
    assert policy.granted(None, Scope.parse("repository:public/x:pull,push")) == {"pull"}
    assert policy.granted(None, Scope.parse("repository:team/shared:pull")) == frozenset()


def test_access_policy_errors_name_the_rule() -> None:
    with pytest.raises(ValueError, match=r"rules\[0\].actions: unknown action"):
        AccessPolicy.parse("rules:\n- {users: [a], repositories: [x], actions: [write]}\n", "acl.yaml")
    with pytest.raises(ValueError, match=r"rules\[0\].users"):
        AccessPolicy.parse("rules:\n- {users: [], repositories: [x], actions: [pull]}\n")


def test_tokens_are_signed_scoped_and_expire() -> None:
    issuer = TokenIssuer("svc", lifetime=60)
    token = issuer.issue("alice", [Scope.parse("repository:a/b:pull,push")])
    user, scopes = issuer.check(token)
    assert user == "alice" and scopes == [Scope("repository", "a/b", frozenset({"pull", "push"}))]
    with pytest.raises(ValueError, match="signature"):
        TokenIssuer("svc").check(token)  # another secret
    with pytest.raises(ValueError, match="another service"):
        TokenIssuer("other", secret=issuer.secret).check(token)
    expired = TokenIssuer("svc", secret=issuer.secret, lifetime=-10).issue("alice", [])
    with pytest.raises(ValueError, match="expired"):
        issuer.check(expired)
    with pytest.raises(ValueError, match="not a JWT"):
        issuer.check("garbage")
