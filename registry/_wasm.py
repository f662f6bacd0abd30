"""Wasm module images in the formats Istio pulls, built and read without I/O.

Build: the ``oci`` variant (two layers: runtime config JSON and the raw module, custom
media types), the ``compat`` variant (a standard OCI image whose single layer is a
tar.gz holding ``plugin.wasm``, annotated ``module.wasm.image/variant: compat``) and the
``docker`` variant (the same as a Docker schema 2 image). Read: any of those, plus the
CNCF ``application/wasm`` layer; a tar layer is searched for ``plugin.wasm`` by basename.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import _mediatypes as mt
from ._digest import Digest
from ._errors import RegistryError
from ._manifest import Descriptor, Manifest

MAX_MODULE_SIZE = 256 * 1024 * 1024
WASM_MAGIC = b"\0asm"
VARIANTS = ("oci", "compat", "docker")
TAR_LAYERS = frozenset({mt.OCI_LAYER_TAR_GZIP, mt.DOCKER_LAYER_TAR_GZIP, "application/vnd.oci.image.layer.v1.tar",
                        "application/vnd.docker.image.rootfs.diff.tar"})
RAW_WASM_LAYERS = frozenset({mt.WASM_CONTENT_LAYER, "application/wasm"})


class ModuleFormatError(RegistryError):
    """An image that does not hold a usable Wasm module; the message says what is wrong."""

    def __init__(self, message: str):
        super().__init__("MANIFEST_INVALID", message)


@dataclass
class Artifact:
    """A manifest ready to push, with the blobs it references (config first)."""

    manifest: bytes
    media_type: str
    blobs: list[tuple[Descriptor, bytes]] = field(default_factory=list)

    @property
    def digest(self) -> Digest:
        return Digest.of(self.manifest)


def validate_module(data: bytes, where: str = "module") -> bytes:
    if len(data) < 8 or not data.startswith(WASM_MAGIC):
        raise ModuleFormatError(f"{where} is not a WebAssembly binary (expected the \\0asm header)")
    if len(data) > MAX_MODULE_SIZE:
        raise ModuleFormatError(f"{where} is {len(data)} bytes; the limit is {MAX_MODULE_SIZE}")
    return data


def _canonical(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def runtime_config(root_ids: Sequence[str] = (), abi_versions: Sequence[str] = ()) -> bytes:
    return _canonical({"type": "envoy_proxy", "abiVersions": list(abi_versions), "config": {"root_ids": list(root_ids)}})


def _tar_gz(files: dict[str, bytes]) -> tuple[bytes, bytes]:
    """Deterministic tarball (and its gzip) so the same module always gives the same digest."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    compressed = io.BytesIO()
    with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return raw.getvalue(), compressed.getvalue()


def build_artifact(module: bytes, variant: str = "oci", *, root_ids: Sequence[str] = (),
                   abi_versions: Sequence[str] = (), annotations: dict[str, str] | None = None) -> Artifact:
    """The image for ``module`` in one of ``VARIANTS``."""
    validate_module(module)
    config_json = runtime_config(root_ids, abi_versions)
    notes = dict(annotations or {})
    if variant == "oci":
        config = Descriptor.for_bytes(mt.WASM_CONFIG, config_json, {mt.TITLE_ANNOTATION: "runtime-config.json"})
        content = Descriptor.for_bytes(mt.WASM_CONTENT_LAYER, module, {mt.TITLE_ANNOTATION: "filter.wasm"})
        doc: dict[str, object] = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config.to_json(),
                                  "layers": [config.to_json(), content.to_json()]}
        if notes:
            doc["annotations"] = notes
        return Artifact(_canonical(doc), mt.OCI_MANIFEST, [(config, config_json), (content, module)])
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    docker = variant == "docker"
    tar, tgz = _tar_gz({"plugin.wasm": module, "runtime-config.json": config_json})
    image_config = _canonical({"architecture": "wasm", "os": "wasip1", "config": {},
                               "rootfs": {"type": "layers", "diff_ids": [str(Digest.of(tar))]}})
    config = Descriptor.for_bytes(mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG, image_config)
    layer = Descriptor.for_bytes(mt.DOCKER_LAYER_TAR_GZIP if docker else mt.OCI_LAYER_TAR_GZIP, tgz)
    media_type = mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST
    doc = {"schemaVersion": 2, "mediaType": media_type, "config": config.to_json(), "layers": [layer.to_json()]}
    if not docker:
        doc["annotations"] = {mt.WASM_VARIANT_ANNOTATION: "compat", **notes}
    return Artifact(_canonical(doc), media_type, [(config, image_config), (layer, tgz)])


def _untar_plugin(layer: bytes, where: str) -> bytes:
    if layer[:2] == b"\x1f\x8b":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            layer = inflater.decompress(layer, MAX_MODULE_SIZE * 2)
        except zlib.error as err:
            raise ModuleFormatError(f"{where}: gzip data is corrupt: {err}") from None
        if inflater.unconsumed_tail:
            raise ModuleFormatError(f"{where}: uncompressed layer exceeds {MAX_MODULE_SIZE * 2} bytes")
    try:
        with tarfile.open(fileobj=io.BytesIO(layer), mode="r:") as tar:
            for member in tar:
                if member.isfile() and member.name.rsplit("/", 1)[-1] == "plugin.wasm":
                    handle = tar.extractfile(member)
                    assert handle is not None
                    return validate_module(handle.read(), f"{where}: plugin.wasm")
    except tarfile.TarError as err:
        raise ModuleFormatError(f"{where}: not a tar archive: {err}") from None
    raise ModuleFormatError(f"{where}: the layer has no plugin.wasm")


def extract_module(manifest: Manifest, fetch: Callable[[Descriptor], bytes]) -> tuple[bytes, str]:
    """The module bytes and the variant name (``oci``, ``compat``, ``docker``, ``wasm``)."""
    if manifest.is_index:
        raise ModuleFormatError("an image index has no module itself; resolve a platform manifest first")
    raw = [layer for layer in manifest.layers if layer.media_type in RAW_WASM_LAYERS]
    if len(raw) > 1:
        raise ModuleFormatError(f"image has {len(raw)} Wasm content layers; expected exactly one")
    if raw:
        layer = raw[0]
        if layer.size > MAX_MODULE_SIZE:
            raise ModuleFormatError(f"Wasm layer is {layer.size} bytes; the limit is {MAX_MODULE_SIZE}")
        variant = "oci" if layer.media_type == mt.WASM_CONTENT_LAYER else "wasm"
        return validate_module(fetch(layer), f"layer {layer.digest}"), variant
    if not manifest.layers:
        raise ModuleFormatError("image has no layers")
    last = manifest.layers[-1]
    if last.media_type not in TAR_LAYERS:
        kinds = ", ".join(sorted({layer.media_type for layer in manifest.layers}))
        raise ModuleFormatError(f"image has no Wasm layer (layer media types: {kinds}); expected "
                                f"{mt.WASM_CONTENT_LAYER} or a tar+gzip layer with plugin.wasm")
    if last.size > MAX_MODULE_SIZE:
        raise ModuleFormatError(f"last layer is {last.size} bytes; the limit is {MAX_MODULE_SIZE}")
    module = _untar_plugin(fetch(last), f"layer {last.digest}")
    return module, "docker" if manifest.media_type == mt.DOCKER_MANIFEST else "compat"


def pick_platform(index: Manifest) -> Descriptor:
    """From an index, the Wasm platform entry (or the only entry)."""
    images = [d for d in index.manifests if d.media_type in mt.IMAGE_MANIFESTS]
    for desc in images:
        platform = desc.platform or {}
        if platform.get("architecture") == "wasm" or str(platform.get("os", "")).startswith("wasi"):
            return desc
    if len(images) == 1:
        return images[0]
    raise ModuleFormatError(f"image index lists {len(images)} images and none for platform wasm/wasi")
