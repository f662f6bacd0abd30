"""Garbage collection: delete blobs no manifest references (mark and sweep).

Mark: every manifest kept in a repository marks its own blob, its config and layers, and
(for an index) its child manifests. With ``delete_untagged`` only tagged manifests, what
they reach, and referrers of kept manifests (signatures) are kept. Sweep: repository links
and then shared blob files that nothing marked. A grace period protects blobs uploaded
for a manifest that has not been pushed yet, since the server keeps serving during GC.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ._digest import Digest
from ._errors import RegistryError
from ._manifest import parse_manifest
from ._storage import Storage


@dataclass
class GcReport:
    """What a collection removed (or would remove, in a dry run)."""

    blobs_deleted: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    manifests_deleted: list[str] = field(default_factory=list)
    links_deleted: int = 0
    uploads_deleted: int = 0
    errors: list[str] = field(default_factory=list)


def _kept_manifests(storage: Storage, repo: str, delete_untagged: bool, report: GcReport) -> set[Digest]:
    present = set(storage.manifest_digests(repo))
    if not delete_untagged:
        return present
    kept: set[Digest] = set(storage.tag_map(repo).values()) & present
    queue = list(kept)
    while queue:
        digest = queue.pop()
        try:
            data, media_type = storage.get_manifest(repo, digest)
            manifest = parse_manifest(data, media_type)
        except RegistryError as err:
            report.errors.append(f"{repo}@{digest}: {err.message}")
            continue
        reached = [d.digest for d in manifest.manifests]
        reached += [Digest.parse(str(r["digest"])) for r in storage.referrers(repo, digest)]
        for child in reached:
            if child in present and child not in kept:
                kept.add(child)
                queue.append(child)
    return kept


def collect_garbage(storage: Storage, *, delete_untagged: bool = False, grace_seconds: float = 3600.0,
                    upload_max_age: float = 86400.0, dry_run: bool = False) -> GcReport:
    report = GcReport()
    now = time.time()
    marked: set[Digest] = set()
    for repo in storage.repositories():
        kept = _kept_manifests(storage, repo, delete_untagged, report)
        repo_marked: set[Digest] = set()
        for digest in storage.manifest_digests(repo):
            if digest not in kept:
                report.manifests_deleted.append(f"{repo}@{digest}")
                if not dry_run:
                    storage.delete_manifest(repo, digest)
                continue
            repo_marked.add(digest)
            try:
                data, media_type = storage.get_manifest(repo, digest)
                manifest = parse_manifest(data, media_type)
            except RegistryError as err:
                report.errors.append(f"{repo}@{digest}: {err.message}")
                continue
            repo_marked.update(d.digest for d in manifest.blob_references())
        for digest, link in list(storage.blob_links(repo)):
            if digest in repo_marked or now - link.stat().st_mtime < grace_seconds:
                marked.add(digest)
                continue
            report.links_deleted += 1
            if dry_run:
                continue
            link.unlink()
        if not dry_run:
            storage.remove_empty_repo(repo)
        marked |= repo_marked
    for digest, path in list(storage.all_blobs()):
        if digest in marked or now - path.stat().st_mtime < grace_seconds:
            continue
        report.blobs_deleted.append(str(digest))
        report.bytes_freed += path.stat().st_size
        if not dry_run:
            path.unlink()
    for upload_id in storage.stale_uploads(upload_max_age):
        report.uploads_deleted += 1
        if not dry_run:
            storage.remove_upload(upload_id)
    return report
