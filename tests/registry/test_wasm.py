from __future__ import annotations

import gzip
import io
import json
import tarfile

import pytest

from registry import Digest, ModuleFormatError, build_artifact, extract_module, parse_manifest
from registry import _mediatypes as mt
from registry._manifest import Descriptor
from registry._wasm import pick_platform


def _read(artifact_blobs: list[tuple[Descriptor, bytes]]):  # type: ignore[no-untyped-def]
    blobs = {desc.digest: data for desc, data in artifact_blobs}
    return lambda desc: blobs[desc.digest]


@pytest.mark.parametrize("variant", ["oci", "compat", "docker"])
def test_every_variant_round_trips(wasm_module: bytes, variant: str) -> None:
    artifact = build_artifact(wasm_module, variant, root_ids=("root",))
    manifest = parse_manifest(artifact.manifest, artifact.media_type)
    module, found = extract_module(manifest, _read(artifact.blobs))
    assert module == wasm_module and found == variant
    assert build_artifact(wasm_module, variant, root_ids=("root",)).digest == artifact.digest  # deterministic


def test_oci_variant_layout_matches_what_istio_accepts(wasm_module: bytes) -> None:
    artifact = build_artifact(wasm_module, "oci", root_ids=("my_root",))
    doc = json.loads(artifact.manifest)
    assert [layer["mediaType"] for layer in doc["layers"]] == [mt.WASM_CONFIG, mt.WASM_CONTENT_LAYER]
    assert doc["layers"][1]["annotations"][mt.TITLE_ANNOTATION] == "filter.wasm"
    config = dict((str(d.digest), data) for d, data in artifact.blobs)[doc["layers"][0]["digest"]]
    assert json.loads(config) == {"type": "envoy_proxy", "abiVersions": [], "config": {"root_ids": ["my_root"]}}


def test_compat_variant_is_annotated_and_docker_variant_uses_docker_types(wasm_module: bytes) -> None:
    compat = json.loads(build_artifact(wasm_module, "compat").manifest)
    assert compat["annotations"][mt.WASM_VARIANT_ANNOTATION] == "compat"
    assert compat["layers"][0]["mediaType"] == mt.OCI_LAYER_TAR_GZIP
    docker = json.loads(build_artifact(wasm_module, "docker").manifest)
    assert docker["mediaType"] == mt.DOCKER_MANIFEST
    assert docker["layers"][-1]["mediaType"] == mt.DOCKER_LAYER_TAR_GZIP


def _image_with_layer(layer: bytes, media_type: str = mt.DOCKER_LAYER_TAR_GZIP) -> tuple[bytes, dict]:  # type: ignore[type-arg]
    desc = Descriptor.for_bytes(media_type, layer)
    cfg = Descriptor.for_bytes(mt.DOCKER_CONFIG, b"{}")
    doc = {"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST, "config": cfg.to_json(), "layers": [desc.to_json()]}
    return json.dumps(doc).encode(), {desc.digest: layer}


def _tgz(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue())


def test_plain_docker_image_with_plugin_wasm_in_a_subdirectory(wasm_module: bytes) -> None:
    manifest, blobs = _image_with_layer(_tgz({"etc/readme": b"x", "app/plugin.wasm": wasm_module}))
    module, variant = extract_module(parse_manifest(manifest), lambda d: blobs[d.digest])
    assert module == wasm_module and variant == "docker"


@pytest.mark.parametrize(("files", "message"), [
    ({"other.wasm": b"\0asm\1\0\0\0"}, "has no plugin.wasm"),
    ({"plugin.wasm": b"MZ not wasm at all"}, "not a WebAssembly binary"),
])
def test_bad_layers_are_named(files: dict[str, bytes], message: str) -> None:
    manifest, blobs = _image_with_layer(_tgz(files))
    with pytest.raises(ModuleFormatError, match=message):
        extract_module(parse_manifest(manifest), lambda d: blobs[d.digest])


def test_non_wasm_images_and_corrupt_layers() -> None:
    manifest, blobs = _image_with_layer(b"\x1f\x8b garbage")
    with pytest.raises(ModuleFormatError, match="gzip data is corrupt|not a tar"):
        extract_module(parse_manifest(manifest), lambda d: blobs[d.digest])
    manifest, blobs = _image_with_layer(b"{}", "application/json")
    with pytest.raises(ModuleFormatError, match="no Wasm layer"):
        extract_module(parse_manifest(manifest), lambda d: blobs[d.digest])
    with pytest.raises(ModuleFormatError, match="not a WebAssembly binary"):
        build_artifact(b"hello", "oci")


def test_index_picks_the_wasm_platform() -> None:
    wasm = {"mediaType": mt.OCI_MANIFEST, "digest": str(Digest.of(b"w")), "size": 1,
            "platform": {"architecture": "wasm", "os": "wasip1"}}
    amd = {"mediaType": mt.OCI_MANIFEST, "digest": str(Digest.of(b"a")), "size": 1,
           "platform": {"architecture": "amd64", "os": "linux"}}
    index = parse_manifest(json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [amd, wasm]}).encode())
    assert pick_platform(index).digest == Digest.of(b"w")
    only_amd = parse_manifest(json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                                          "manifests": [amd, dict(amd, digest=str(Digest.of(b"b")))]}).encode())
    with pytest.raises(ModuleFormatError, match="none for platform wasm"):
        pick_platform(only_amd)
