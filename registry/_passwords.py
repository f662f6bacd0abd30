"""htpasswd-style password files: ``user:hash`` lines, as docker's registry reads them.

Supported hashes: bcrypt (``$2a$``/``$2b$``/``$2y$``, what ``htpasswd -B`` and the
distribution registry use) through the ``bcrypt`` package when it is installed, and
PBKDF2-SHA256 in passlib's ``$pbkdf2-sha256$rounds$salt$hash`` form through the standard
library. New entries are bcrypt when available, else PBKDF2. Weak schemes (``{SHA}``,
``$apr1$`` MD5, crypt DES, plain text) are refused with the line number.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

try:  # optional: bcrypt is the format other registries use
    import bcrypt as _bcrypt
except ImportError:  # pragma: no cover - depends on the environment
    _bcrypt = None  # type: ignore[assignment]

PBKDF2_ROUNDS = 200_000


class PasswordFileError(ValueError):
    """A password file line that cannot be used; the message names the file and line."""


def _ab64_encode(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=").replace("+", ".")


def _ab64_decode(text: str) -> bytes:
    text = text.replace(".", "+")
    return base64.b64decode(text + "=" * (-len(text) % 4))


def bcrypt_available() -> bool:
    return _bcrypt is not None


def hash_password(password: str, *, scheme: str | None = None) -> str:
    """Hash a password for a new entry (``scheme``: ``bcrypt``, ``pbkdf2-sha256`` or best available)."""
    scheme = scheme or ("bcrypt" if _bcrypt is not None else "pbkdf2-sha256")
    if scheme == "bcrypt":
        if _bcrypt is None:
            raise PasswordFileError("bcrypt hashes need the 'bcrypt' package, which is not installed")
        return _bcrypt.hashpw(password.encode(), _bcrypt.gensalt(rounds=10)).decode()
    if scheme == "pbkdf2-sha256":
        salt = os.urandom(16)
        derived = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ROUNDS)
        return f"$pbkdf2-sha256${PBKDF2_ROUNDS}${_ab64_encode(salt)}${_ab64_encode(derived)}"
    raise PasswordFileError(f"unknown password scheme {scheme!r}")


def _check_hash(where: str, hashed: str) -> None:
    if hashed.startswith(("$2a$", "$2b$", "$2y$")):
        if _bcrypt is None:
            raise PasswordFileError(f"{where}: bcrypt hash, but the 'bcrypt' package is not installed")
        return
    if hashed.startswith("$pbkdf2-sha256$"):
        parts = hashed.split("$")
        if len(parts) != 5 or not parts[2].isdigit():
            raise PasswordFileError(f"{where}: malformed $pbkdf2-sha256$ hash")
        return
    scheme = hashed.split("$")[1] if hashed.startswith("$") else hashed[:5]
    raise PasswordFileError(f"{where}: unsupported or weak hash scheme {scheme!r} (use bcrypt or pbkdf2-sha256)")


def verify_hash(password: str, hashed: str) -> bool:
    if hashed.startswith(("$2a$", "$2b$", "$2y$")) and _bcrypt is not None:
        try:
            return bool(_bcrypt.checkpw(password.encode(), hashed.encode()))
        except ValueError:
            return False
    if hashed.startswith("$pbkdf2-sha256$"):
        _, _, rounds, salt, expected = hashed.split("$")
        derived = hashlib.pbkdf2_hmac("sha256", password.encode(), _ab64_decode(salt), int(rounds))
        return hmac.compare_digest(derived, _ab64_decode(expected))
    return False


@dataclass
class PasswordFile:
    """Users and password hashes loaded from an htpasswd-style file."""

    users: dict[str, str]

    @classmethod
    def parse(cls, text: str, source: str = "htpasswd") -> PasswordFile:
        users: dict[str, str] = {}
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{source}:{lineno}"
            if ":" not in line:
                raise PasswordFileError(f"{where}: expected 'user:hash'")
            user, hashed = line.split(":", 1)
            if not user:
                raise PasswordFileError(f"{where}: empty user name")
            _check_hash(where, hashed)
            users[user] = hashed
        return cls(users)

    @classmethod
    def load(cls, path: Path | str) -> PasswordFile:
        return cls.parse(Path(path).read_text(), str(path))

    def verify(self, user: str, password: str) -> bool:
        hashed = self.users.get(user)
        if hashed is None:
            verify_hash(password, hash_password_dummy())  # spend similar time for unknown users
            return False
        return verify_hash(password, hashed)


_DUMMY: list[str] = []


def hash_password_dummy() -> str:
    if not _DUMMY:
        _DUMMY.append(hash_password("not-a-password"))
    return _DUMMY[0]


def add_user(path: Path | str, user: str, password: str) -> None:
    """Add or replace ``user`` in a password file (created if missing)."""
    if not user or ":" in user:
        raise PasswordFileError(f"invalid user name {user!r}")
    path = Path(path)
    lines = path.read_text().splitlines() if path.exists() else []
    lines = [line for line in lines if not line.startswith(f"{user}:")]
    lines.append(f"{user}:{hash_password(password)}")
    path.write_text("\n".join(lines) + "\n")
