from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from registry import Credentials, CredentialsError, CredentialStore, default_config_path


def test_round_trip_in_docker_format_with_private_permissions(tmp_path: Path) -> None:
    path = tmp_path / "docker" / "config.json"
    store = CredentialStore(path)
    store.set("reg.example:5000", Credentials("alice", "p:w"))
    doc = json.loads(path.read_text())
    assert base64.b64decode(doc["auths"]["reg.example:5000"]["auth"]) == b"alice:p:w"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert CredentialStore(path).get("reg.example:5000") == Credentials("alice", "p:w")
    assert CredentialStore(path).get("other") is None
    assert store.remove("reg.example:5000") and CredentialStore(path).get("reg.example:5000") is None


def test_reads_url_keys_username_fields_and_legacy_pull_secrets() -> None:
    store = CredentialStore.from_json(json.dumps({"auths": {
        "https://reg.example": {"username": "u", "password": "p"},
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()}}}))
    assert store.get("reg.example") == Credentials("u", "p")
    assert store.get("docker.io") == Credentials("hub", "pw")
    legacy = CredentialStore.from_json(json.dumps({"old.example": {"auth": base64.b64encode(b"a:b").decode()}}))
    assert legacy.get("old.example") == Credentials("a", "b")


def test_unusable_entries_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="not base64"):
        CredentialStore.from_json('{"auths": {"r": {"auth": "%%%"}}}').get("r")
    with pytest.raises(CredentialsError, match="lacks ':'"):
        CredentialStore.from_json(json.dumps({"auths": {"r": {"auth": base64.b64encode(b"x").decode()}}})).get("r")
    with pytest.raises(CredentialsError, match="credential helper 'pass'"):
        CredentialStore.from_json('{"auths": {}, "credHelpers": {"r": "pass"}}').get("r")
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(CredentialsError, match="config.json: not JSON"):
        CredentialStore(bad)


def test_default_path_honours_docker_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert default_config_path() == tmp_path / "config.json"
