from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from registry import Digest, RegistryError, Storage, collect_garbage, parse_manifest
from registry import _mediatypes as mt
from registry._manifest import Descriptor


def _manifest(config: bytes, *layers: bytes, subject: Descriptor | None = None) -> bytes:
    doc: dict[str, object] = {
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": Descriptor.for_bytes(mt.OCI_CONFIG, config).to_json(),
        "layers": [Descriptor.for_bytes(mt.OCI_LAYER_TAR_GZIP, layer).to_json() for layer in layers],
    }
    if subject is not None:
        doc["subject"] = subject.to_json()
    return json.dumps(doc).encode()


def _push(storage: Storage, repo: str, config: bytes, *layers: bytes, tag: str | None = None,
          subject: Descriptor | None = None) -> Digest:
    for blob in (config, *layers):
        storage.put_blob(repo, blob)
    data = _manifest(config, *layers, subject=subject)
    return storage.put_manifest(repo, data, parse_manifest(data), tag)


def test_blob_is_content_addressed_and_linked_per_repository(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    digest = storage.put_blob("a/b", b"hello")
    assert digest == Digest.of(b"hello")
    assert storage.blob_path(digest).read_bytes() == b"hello"
    assert storage.repo_has_blob("a/b", digest)
    assert not storage.repo_has_blob("other", digest)
    with pytest.raises(RegistryError) as err:
        storage.stat_blob("other", digest)
    assert err.value.code == "BLOB_UNKNOWN"


def test_put_blob_rejects_content_that_does_not_match_the_digest(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    with pytest.raises(RegistryError) as err:
        storage.put_blob("repo", b"hello", Digest.of(b"something else"))
    assert err.value.code == "DIGEST_INVALID"
    assert not any(storage.all_blobs())


def test_chunked_upload_checks_offsets_and_final_digest(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    upload = storage.start_upload("repo")
    assert storage.append_upload("repo", upload, io.BytesIO(b"abc"), start=0) == 3
    with pytest.raises(RegistryError) as err:
        storage.append_upload("repo", upload, io.BytesIO(b"xyz"), start=5)
    assert err.value.code == "RANGE_INVALID" and err.value.status == 416
    storage.append_upload("repo", upload, io.BytesIO(b"def"), start=3)
    storage.finish_upload("repo", upload, Digest.of(b"abcdef"))
    assert storage.read_blob(Digest.of(b"abcdef")) == b"abcdef"
    assert list((tmp_path / "uploads").iterdir()) == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_upload_with_wrong_digest_is_dropped(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    upload = storage.start_upload("repo")
    storage.append_upload("repo", upload, io.BytesIO(b"truncated"))
    with pytest.raises(RegistryError) as err:
        storage.finish_upload("repo", upload, Digest.of(b"truncated and more"))
    assert err.value.code == "DIGEST_INVALID"
    assert "9 bytes" in err.value.message
    assert not any(storage.all_blobs())
    with pytest.raises(RegistryError) as again:
        storage.upload_offset("repo", upload)
    assert again.value.code == "BLOB_UPLOAD_UNKNOWN"


def test_upload_belongs_to_its_repository_and_survives_a_restart(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    upload = storage.start_upload("repo")
    storage.append_upload("repo", upload, io.BytesIO(b"part"))
    with pytest.raises(RegistryError):
        storage.upload_offset("other", upload)
    restarted = Storage(tmp_path)
    assert restarted.upload_offset("repo", upload) == 4
    restarted.append_upload("repo", upload, io.BytesIO(b"-two"), start=4)
    restarted.finish_upload("repo", upload, Digest.of(b"part-two"))
    assert restarted.read_blob(Digest.of(b"part-two")) == b"part-two"


def test_manifest_needs_its_blobs_in_the_same_repository(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    storage.put_blob("elsewhere", b"cfg")
    data = _manifest(b"cfg")
    with pytest.raises(RegistryError) as err:
        storage.put_manifest("repo", data, parse_manifest(data), "v1")
    assert err.value.code == "MANIFEST_BLOB_UNKNOWN"
    assert str(Digest.of(b"cfg")) in err.value.message


def test_tags_resolve_and_deleting_a_manifest_removes_its_tags(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    digest = _push(storage, "repo", b"cfg", b"layer", tag="v1")
    data = _manifest(b"cfg", b"layer")
    storage.put_manifest("repo", data, parse_manifest(data), "v2")
    assert storage.tags("repo") == ["v1", "v2"]
    assert storage.resolve("repo", "v2") == digest
    storage.delete_manifest("repo", digest)
    assert storage.tags("repo") == []
    with pytest.raises(RegistryError) as err:
        storage.resolve("repo", "v1")
    assert err.value.code == "MANIFEST_UNKNOWN"


def test_referrers_are_indexed_by_subject(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    subject_digest = _push(storage, "repo", b"cfg", b"layer", tag="v1")
    data, media_type = storage.get_manifest("repo", subject_digest)
    subject = Descriptor(media_type, subject_digest, len(data))
    ref_digest = _push(storage, "repo", b"sig-config", b"sig", subject=subject)
    entries = storage.referrers("repo", subject_digest)
    assert [e["digest"] for e in entries] == [str(ref_digest)]
    assert entries[0]["artifactType"] == mt.OCI_CONFIG
    storage.delete_manifest("repo", ref_digest)
    assert storage.referrers("repo", subject_digest) == []


def test_tampered_manifest_in_storage_is_reported_not_served(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    digest = _push(storage, "repo", b"cfg", tag="v1")
    path = storage.blob_path(digest)
    path.write_bytes(path.read_bytes().replace(b"schemaVersion", b"schemaVersioN"))
    with pytest.raises(RegistryError) as err:
        storage.get_manifest("repo", digest)
    assert err.value.status == 500 and "digest check" in err.value.message


def test_catalog_lists_nested_repositories(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    for repo in ("b", "a/x", "a"):
        storage.put_blob(repo, b"x")
    assert storage.repositories() == ["a", "a/x", "b"]


def test_invalid_repository_names_never_reach_the_filesystem(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    for name in ("../escape", "UPPER", "a//b", "_repo", "a/_repo"):
        with pytest.raises(RegistryError) as err:
            storage.put_blob(name, b"x")
        assert err.value.code == "NAME_INVALID"


def _age(path: Path, seconds: float) -> None:
    stamp = path.stat().st_mtime - seconds
    os.utime(path, (stamp, stamp))


def test_gc_removes_unreferenced_blobs_and_keeps_referenced_ones(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    kept = _push(storage, "repo", b"cfg", b"layer", tag="v1")
    orphan = storage.put_blob("repo", b"orphan")
    report = collect_garbage(storage, grace_seconds=0)
    assert report.blobs_deleted == [str(orphan)]
    assert report.bytes_freed == len(b"orphan")
    assert not storage.blob_path(orphan).exists()
    for blob in (b"cfg", b"layer"):
        assert storage.repo_has_blob("repo", Digest.of(blob))
    assert storage.get_manifest("repo", kept)


def test_gc_grace_period_protects_fresh_uploads_and_dry_run_changes_nothing(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    orphan = storage.put_blob("repo", b"orphan")
    assert collect_garbage(storage, grace_seconds=3600).blobs_deleted == []
    report = collect_garbage(storage, grace_seconds=0, dry_run=True)
    assert report.blobs_deleted == [str(orphan)]
    assert storage.blob_path(orphan).exists()


def test_gc_delete_untagged_keeps_signatures_of_tagged_images(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    tagged = _push(storage, "repo", b"cfg", b"layer", tag="v1")
    untagged = _push(storage, "repo", b"cfg2", b"old-layer")
    data, media_type = storage.get_manifest("repo", tagged)
    signature = _push(storage, "repo", b"sigcfg", b"sig", subject=Descriptor(media_type, tagged, len(data)))
    report = collect_garbage(storage, delete_untagged=True, grace_seconds=0)
    assert report.manifests_deleted == [f"repo@{untagged}"]
    assert storage.has_manifest("repo", signature)
    assert not storage.blob_path(Digest.of(b"old-layer")).exists()
    assert storage.blob_path(Digest.of(b"sig")).exists()


def test_gc_removes_stale_uploads(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    upload = storage.start_upload("repo")
    _age(tmp_path / "uploads" / upload, 2 * 86400)
    assert collect_garbage(storage, grace_seconds=0).uploads_deleted == 1
    assert not (tmp_path / "uploads" / upload).exists()
