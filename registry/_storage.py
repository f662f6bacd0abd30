"""Content-addressed storage on disk for the registry server.

Layout under the data directory (every write goes to ``tmp/`` first and is renamed into
place, so a crash never leaves a half-written blob, manifest or tag visible)::

    blobs/<algo>/<hh>/<hex>                       content, shared by all repositories
    uploads/<uuid>  uploads/<uuid>.repo           upload sessions in progress
    repositories/<name>/_repo/blobs/<algo>/<hex>      the repository may serve this blob
    repositories/<name>/_repo/manifests/<algo>/<hex>  manifest revision (file holds its media type)
    repositories/<name>/_repo/tags/<tag>              tag -> digest
    repositories/<name>/_repo/referrers/<algo>/<subject-hex>/<hex>   referrer descriptor (JSON)

Repository names cannot contain a component starting with ``_``, so ``_repo`` never
collides with a nested repository. Digests are verified on every write.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ._digest import Digest
from ._errors import RegistryError
from ._manifest import Descriptor, Manifest
from ._reference import validate_name, validate_tag

COPY_CHUNK = 1024 * 1024


@dataclass
class _Upload:
    repo: str
    path: Path
    hasher: Any  # a hashlib sha256 object, fed while streaming
    offset: int
    lock: threading.Lock


class Storage:
    """The registry's on-disk state; thread-safe (the server runs handlers in a thread pool)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        for sub in ("blobs", "uploads", "repositories", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._uploads: dict[str, _Upload] = {}

    # ---- paths -------------------------------------------------------------------------
    def blob_path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex[:2] / digest.hex

    def _repo_dir(self, repo: str) -> Path:
        return self.root / "repositories" / validate_name(repo) / "_repo"

    def _tmp(self) -> Path:
        return self.root / "tmp" / uuid.uuid4().hex

    def _write_atomic(self, path: Path, data: bytes) -> None:
        tmp = self._tmp()
        tmp.write_bytes(data)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)

    # ---- blobs -------------------------------------------------------------------------
    def repo_exists(self, repo: str) -> bool:
        return self._repo_dir(repo).is_dir()

    def repo_has_blob(self, repo: str, digest: Digest) -> bool:
        link = self._repo_dir(repo) / "blobs" / digest.algorithm / digest.hex
        return link.exists() and self.blob_path(digest).exists()

    def blob_size(self, digest: Digest) -> int:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            raise RegistryError("BLOB_UNKNOWN", detail={"digest": str(digest)}) from None

    def stat_blob(self, repo: str, digest: Digest) -> tuple[Path, int]:
        """Path and size of a blob this repository may serve, else BLOB_UNKNOWN."""
        if not self.repo_has_blob(repo, digest):
            raise RegistryError("BLOB_UNKNOWN", detail={"digest": str(digest)})
        return self.blob_path(digest), self.blob_size(digest)

    def link_blob(self, repo: str, digest: Digest) -> None:
        link = self._repo_dir(repo) / "blobs" / digest.algorithm / digest.hex
        if not link.exists():
            self._write_atomic(link, b"")

    def unlink_blob(self, repo: str, digest: Digest) -> None:
        link = self._repo_dir(repo) / "blobs" / digest.algorithm / digest.hex
        if not link.exists():
            raise RegistryError("BLOB_UNKNOWN", detail={"digest": str(digest)})
        link.unlink()

    def _commit_blob_file(self, tmp: Path, digest: Digest) -> None:
        final = self.blob_path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            tmp.unlink()
        else:
            os.replace(tmp, final)

    def put_blob(self, repo: str, data: bytes, expected: Digest | None = None) -> Digest:
        """Store bytes, checking them against ``expected`` when given; link into ``repo``."""
        actual = Digest.of(data, expected.algorithm if expected else "sha256")
        if expected is not None and actual != expected:
            raise RegistryError("DIGEST_INVALID", detail={"expected": str(expected), "actual": str(actual)})
        tmp = self._tmp()
        tmp.write_bytes(data)
        self._commit_blob_file(tmp, actual)
        self.link_blob(repo, actual)
        return actual

    def read_blob(self, digest: Digest) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise RegistryError("BLOB_UNKNOWN", detail={"digest": str(digest)}) from None

    # ---- uploads -----------------------------------------------------------------------
    def start_upload(self, repo: str) -> str:
        validate_name(repo)
        upload_id = uuid.uuid4().hex
        path = self.root / "uploads" / upload_id
        path.write_bytes(b"")
        (self.root / "uploads" / f"{upload_id}.repo").write_text(repo)
        with self._lock:
            self._uploads[upload_id] = _Upload(repo, path, hashlib.sha256(), 0, threading.Lock())
        return upload_id

    def _upload(self, repo: str, upload_id: str) -> _Upload:
        with self._lock:
            upload = self._uploads.get(upload_id)
            if upload is None and len(upload_id) == 32 and upload_id.isalnum():
                upload = self._reload_upload(upload_id)
        if upload is None or upload.repo != repo:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": upload_id[:64]})
        return upload

    def _reload_upload(self, upload_id: str) -> _Upload | None:
        """Rebuild an upload session after a restart: rehash what was already written."""
        path = self.root / "uploads" / upload_id
        repo_file = self.root / "uploads" / f"{upload_id}.repo"
        if not path.exists() or not repo_file.exists():
            return None
        hasher = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(COPY_CHUNK), b""):
                hasher.update(chunk)
        upload = _Upload(repo_file.read_text(), path, hasher, path.stat().st_size, threading.Lock())
        self._uploads[upload_id] = upload
        return upload

    def upload_offset(self, repo: str, upload_id: str) -> int:
        return self._upload(repo, upload_id).offset

    def append_upload(self, repo: str, upload_id: str, body: BinaryIO, start: int | None = None) -> int:
        """Append a chunk; ``start`` (from Content-Range) must equal the current size."""
        upload = self._upload(repo, upload_id)
        with upload.lock:
            if start is not None and start != upload.offset:
                raise RegistryError(
                    "RANGE_INVALID", f"chunk starts at {start}, but {upload.offset} bytes were received",
                    detail={"offset": upload.offset},
                )
            with upload.path.open("ab") as out:
                for chunk in iter(lambda: body.read(COPY_CHUNK), b""):
                    out.write(chunk)
                    upload.hasher.update(chunk)
                    upload.offset += len(chunk)
            return upload.offset

    def finish_upload(self, repo: str, upload_id: str, digest: Digest, body: BinaryIO | None = None) -> None:
        """Close an upload: verify the whole content against ``digest``, then publish it."""
        upload = self._upload(repo, upload_id)
        if body is not None:
            self.append_upload(repo, upload_id, body)
        with upload.lock:
            if digest.algorithm == "sha256":
                actual_hex = upload.hasher.hexdigest()
            else:
                hasher = digest.hasher()
                with upload.path.open("rb") as f:
                    for chunk in iter(lambda: f.read(COPY_CHUNK), b""):
                        hasher.update(chunk)
                actual_hex = hasher.hexdigest()
            if actual_hex != digest.hex:
                self._drop_upload(upload_id)
                raise RegistryError(
                    "DIGEST_INVALID", f"uploaded content ({upload.offset} bytes) does not match {digest}",
                    detail={"expected": str(digest), "actual": f"{digest.algorithm}:{actual_hex}"},
                )
            tmp = self._tmp()
            os.replace(upload.path, tmp)
            self._commit_blob_file(tmp, digest)
            self.link_blob(repo, digest)
            self._drop_upload(upload_id)

    def cancel_upload(self, repo: str, upload_id: str) -> None:
        self._upload(repo, upload_id)
        self._drop_upload(upload_id)

    def _drop_upload(self, upload_id: str) -> None:
        with self._lock:
            self._uploads.pop(upload_id, None)
        for name in (upload_id, f"{upload_id}.repo"):
            (self.root / "uploads" / name).unlink(missing_ok=True)

    def stale_uploads(self, older_than: float) -> list[str]:
        cutoff = time.time() - older_than
        return [
            p.name for p in (self.root / "uploads").iterdir()
            if not p.name.endswith(".repo") and p.stat().st_mtime < cutoff
        ]

    def remove_upload(self, upload_id: str) -> None:
        self._drop_upload(upload_id)

    # ---- manifests and tags ---------------------------------------------------------------
    def put_manifest(self, repo: str, data: bytes, manifest: Manifest, tag: str | None = None) -> Digest:
        """Store a validated manifest whose references exist in ``repo``; tag it if asked."""
        for desc in manifest.blob_references():
            if not self.repo_has_blob(repo, desc.digest):
                raise RegistryError("MANIFEST_BLOB_UNKNOWN", f"blob {desc.digest} is not in {repo}",
                                    detail={"digest": str(desc.digest)})
        for desc in manifest.manifests:
            if not self.has_manifest(repo, desc.digest):
                raise RegistryError("MANIFEST_BLOB_UNKNOWN", f"manifest {desc.digest} is not in {repo}",
                                    detail={"digest": str(desc.digest)})
        digest = Digest.of(data)
        with self._lock:
            self.put_blob(repo, data, digest)
            repo_dir = self._repo_dir(repo)
            self._write_atomic(repo_dir / "manifests" / digest.algorithm / digest.hex, manifest.media_type.encode())
            if manifest.subject is not None:
                subject = manifest.subject.digest
                entry = Descriptor(manifest.media_type, digest, len(data), manifest.annotations,
                                   manifest.effective_artifact_type)
                ref_path = repo_dir / "referrers" / subject.algorithm / subject.hex / digest.hex
                self._write_atomic(ref_path, json.dumps(entry.to_json()).encode())
            if tag is not None:
                self._write_atomic(repo_dir / "tags" / validate_tag(tag), str(digest).encode())
        return digest

    def has_manifest(self, repo: str, digest: Digest) -> bool:
        return (self._repo_dir(repo) / "manifests" / digest.algorithm / digest.hex).exists()

    def get_manifest(self, repo: str, digest: Digest) -> tuple[bytes, str]:
        """Manifest bytes and media type; the bytes are re-checked against the digest."""
        link = self._repo_dir(repo) / "manifests" / digest.algorithm / digest.hex
        try:
            media_type = link.read_text()
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise RegistryError("MANIFEST_UNKNOWN", detail={"digest": str(digest)}) from None
        if Digest.of(data, digest.algorithm) != digest:
            raise RegistryError("UNKNOWN", f"stored manifest {digest} fails its digest check (storage corrupted)",
                                status=500)
        return data, media_type

    def resolve(self, repo: str, reference: str) -> Digest:
        """A tag or digest to a manifest digest present in ``repo``."""
        if ":" in reference:
            digest = Digest.parse(reference)
        else:
            tag_file = self._repo_dir(repo) / "tags" / validate_tag(reference)
            try:
                digest = Digest.parse(tag_file.read_text().strip())
            except FileNotFoundError:
                raise RegistryError("MANIFEST_UNKNOWN", f"tag {reference!r} not found in {repo}",
                                    detail={"tag": reference}) from None
        if not self.has_manifest(repo, digest):
            raise RegistryError("MANIFEST_UNKNOWN", detail={"digest": str(digest)})
        return digest

    def delete_tag(self, repo: str, tag: str) -> None:
        tag_file = self._repo_dir(repo) / "tags" / validate_tag(tag)
        if not tag_file.exists():
            raise RegistryError("MANIFEST_UNKNOWN", f"tag {tag!r} not found in {repo}")
        tag_file.unlink()

    def delete_manifest(self, repo: str, digest: Digest) -> None:
        """Remove a manifest revision, every tag pointing at it and its referrer entry."""
        with self._lock:
            repo_dir = self._repo_dir(repo)
            link = repo_dir / "manifests" / digest.algorithm / digest.hex
            if not link.exists():
                raise RegistryError("MANIFEST_UNKNOWN", detail={"digest": str(digest)})
            for tag in self.tags(repo):
                if (repo_dir / "tags" / tag).read_text().strip() == str(digest):
                    (repo_dir / "tags" / tag).unlink()
            for ref in (repo_dir / "referrers").glob(f"*/*/{digest.hex}"):
                ref.unlink()
            link.unlink()

    def tags(self, repo: str) -> list[str]:
        tag_dir = self._repo_dir(repo) / "tags"
        return sorted(p.name for p in tag_dir.iterdir()) if tag_dir.is_dir() else []

    def tag_map(self, repo: str) -> dict[str, Digest]:
        tag_dir = self._repo_dir(repo) / "tags"
        return {tag: Digest.parse((tag_dir / tag).read_text().strip()) for tag in self.tags(repo)}

    def manifest_digests(self, repo: str) -> list[Digest]:
        base = self._repo_dir(repo) / "manifests"
        return sorted(Digest(p.parent.name, p.name) for p in base.glob("*/*")) if base.is_dir() else []

    def blob_links(self, repo: str) -> Iterator[tuple[Digest, Path]]:
        base = self._repo_dir(repo) / "blobs"
        if base.is_dir():
            for p in base.glob("*/*"):
                yield Digest(p.parent.name, p.name), p

    def all_blobs(self) -> Iterator[tuple[Digest, Path]]:
        for p in (self.root / "blobs").glob("*/*/*"):
            yield Digest(p.parent.parent.name, p.name), p

    def referrers(self, repo: str, subject: Digest) -> list[dict[str, object]]:
        base = self._repo_dir(repo) / "referrers" / subject.algorithm / subject.hex
        if not base.is_dir():
            return []
        out = []
        for p in sorted(base.iterdir()):
            if self.has_manifest(repo, Digest(subject.algorithm, p.name)):
                out.append(json.loads(p.read_text()))
        return out

    def repositories(self) -> list[str]:
        base = self.root / "repositories"
        found = [str(p.parent.relative_to(base)) for p in base.rglob("_repo") if p.is_dir()]
        return sorted(name.replace(os.sep, "/") for name in found)

    def remove_empty_repo(self, repo: str) -> None:
        repo_dir = self._repo_dir(repo)
        if repo_dir.is_dir() and not self.manifest_digests(repo) and not any(self.blob_links(repo)):
            shutil.rmtree(repo_dir)
