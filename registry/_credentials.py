"""Registry credentials in docker's ``config.json`` format (also Kubernetes pull secrets).

``{"auths": {"HOST": {"auth": base64("user:password")}}}``; ``username``/``password``
fields are read too. The file is ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``
unless a path is given; it is written atomically with mode 0600. Credential helpers
(``credsStore``/``credHelpers``) are not run: a host that uses one gets a clear error.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


class CredentialsError(ValueError):
    """A credentials file or entry that cannot be used; names the file and host."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def default_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _host_keys(host: str) -> list[str]:
    keys = [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"]
    if host in DOCKER_HUB_KEYS:
        keys += list(DOCKER_HUB_KEYS)
    return keys


class CredentialStore:
    """Reads and writes one docker-config JSON file (or holds a pull secret in memory)."""

    def __init__(self, path: Path | str | None = None, *, document: dict[str, Any] | None = None):
        self.path = Path(path) if path is not None else (None if document is not None else default_config_path())
        self._doc: dict[str, Any] = document if document is not None else self._load()

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "pull secret") -> CredentialStore:
        """A store from docker config JSON text, e.g. a Kubernetes ``.dockerconfigjson`` secret."""
        try:
            doc = json.loads(text)
        except ValueError as err:
            raise CredentialsError(f"{source}: not JSON: {err}") from None
        if not isinstance(doc, dict):
            raise CredentialsError(f"{source}: expected a JSON object")
        if "auths" not in doc:  # legacy .dockercfg: the host map at the top level
            doc = {"auths": doc}
        return cls(document=doc)

    def _load(self) -> dict[str, Any]:
        assert self.path is not None
        if not self.path.exists():
            return {}
        try:
            doc = json.loads(self.path.read_text())
        except ValueError as err:
            raise CredentialsError(f"{self.path}: not JSON: {err}") from None
        if not isinstance(doc, dict):
            raise CredentialsError(f"{self.path}: expected a JSON object")
        return doc

    def get(self, host: str) -> Credentials | None:
        source = str(self.path) if self.path else "pull secret"
        auths = self._doc.get("auths") or {}
        if not isinstance(auths, dict):
            raise CredentialsError(f"{source}: 'auths' must be an object")
        for key in _host_keys(host):
            entry = auths.get(key)
            if entry is None:
                continue
            if not isinstance(entry, dict):
                raise CredentialsError(f"{source}: auths[{key!r}] must be an object")
            if entry.get("auth"):
                try:
                    user, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
                except (binascii.Error, UnicodeDecodeError, TypeError):
                    raise CredentialsError(f"{source}: auths[{key!r}].auth is not base64 'user:password'") from None
                if not sep:
                    raise CredentialsError(f"{source}: auths[{key!r}].auth lacks ':' between user and password")
                return Credentials(user, password)
            if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
                return Credentials(entry["username"], entry["password"])
        helpers = self._doc.get("credHelpers") or {}
        helper = helpers.get(host) if isinstance(helpers, dict) else None
        if helper or (self._doc.get("credsStore") and not auths):
            name = helper or self._doc.get("credsStore")
            raise CredentialsError(f"{source}: credentials for {host} are kept by the credential helper "
                                   f"{name!r}, which wasmesh does not run; use 'wasmesh login' instead")
        return None

    def set(self, host: str, credentials: Credentials) -> None:
        auth = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
        self._doc.setdefault("auths", {})[host] = {"auth": auth}
        self._save()

    def remove(self, host: str) -> bool:
        auths = self._doc.get("auths") or {}
        found = [k for k in _host_keys(host) if k in auths]
        for key in found:
            del auths[key]
        if found:
            self._save()
        return bool(found)

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self._doc, f, indent=2)
        os.replace(tmp, self.path)
