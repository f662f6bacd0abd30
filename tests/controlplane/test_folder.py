"""The folder source and the store: changes picked up, last good versions kept, versions stable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controlplane._folder import FolderSource
from controlplane._resources import ResourceKey
from controlplane._store import ConfigStore

VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: [reviews]
  http: [{{route: [{{destination: {{host: reviews}}}}], timeout: {timeout}}}]
"""


def write(path: Path, text: str) -> None:
    path.write_text(text)
    stamp = path.stat().st_mtime_ns + 1_000_000_000  # a distinct stamp even within one clock tick
    os.utime(path, ns=(stamp, stamp))


@pytest.fixture
def folder(tmp_path: Path) -> tuple[FolderSource, ConfigStore, list[int]]:
    store = ConfigStore()
    calls: list[int] = []
    store.subscribe(lambda: calls.append(1))
    return FolderSource(tmp_path, store), store, calls


def timeout_of(store: ConfigStore, name: str) -> str:
    resource = store.get(ResourceKey("VirtualService", "default", name))
    assert resource is not None
    return str(resource.spec["http"][0]["timeout"])


def test_new_changed_and_deleted_files(folder: tuple[FolderSource, ConfigStore, list[int]], tmp_path: Path) -> None:
    source, store, calls = folder
    write(tmp_path / "a.yaml", VS.format(name="a", timeout="1s"))
    assert source.scan() is True and calls == [1]
    version = store.resources()[0].resource_version
    assert source.scan() is False and calls == [1]  # nothing changed, nobody told
    write(tmp_path / "a.yaml", VS.format(name="a", timeout="1s") + "\n# a comment\n")
    assert source.scan() is False and store.resources()[0].resource_version == version  # same content, same version
    write(tmp_path / "a.yaml", VS.format(name="a", timeout="2s"))
    assert source.scan() is True and timeout_of(store, "a") == "2s"
    assert store.resources()[0].resource_version != version
    (tmp_path / "a.yaml").unlink()
    assert source.scan() is True and store.resources() == []


def test_invalid_edit_keeps_last_good_version_and_reports(folder: tuple[FolderSource, ConfigStore, list[int]],
                                                          tmp_path: Path) -> None:
    source, store, _ = folder
    write(tmp_path / "a.yaml", VS.format(name="a", timeout="1s") + "---\n" + VS.format(name="b", timeout="1s"))
    source.scan()
    write(tmp_path / "a.yaml", VS.format(name="a", timeout="soon") + "---\n" + VS.format(name="b", timeout="4s"))
    source.scan()
    assert timeout_of(store, "a") == "1s" and timeout_of(store, "b") == "4s"
    [finding] = store.findings()
    assert finding.origin.file == "a.yaml" and finding.path == "spec.http[0].timeout"
    write(tmp_path / "a.yaml", "this: is: not yaml: [")
    source.scan()
    assert timeout_of(store, "a") == "1s" and timeout_of(store, "b") == "4s"
    assert "keeping the last good version" in store.findings()[0].message
    write(tmp_path / "a.yaml", VS.format(name="a", timeout="3s"))
    source.scan()
    assert timeout_of(store, "a") == "3s" and store.findings() == []
    assert [r.name for r in store.resources()] == ["a"]


def test_hidden_files_and_other_kinds_are_ignored(folder: tuple[FolderSource, ConfigStore, list[int]],
                                                  tmp_path: Path) -> None:
    source, store, _ = folder
    (tmp_path / ".hidden").mkdir()
    write(tmp_path / ".hidden" / "x.yaml", VS.format(name="hidden", timeout="1s"))
    write(tmp_path / "notes.txt", VS.format(name="txt", timeout="1s"))
    write(tmp_path / "deploy.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n")
    source.scan()
    assert store.resources() == [] and store.findings() == []


def test_applied_resources_are_files_under_applied(folder: tuple[FolderSource, ConfigStore, list[int]],
                                                   tmp_path: Path) -> None:
    source, store, _ = folder
    write(tmp_path / "mine.yaml", VS.format(name="mine", timeout="1s"))
    source.scan()
    from controlplane._validation import analyze_text

    [resource] = analyze_text(VS.format(name="api", timeout="2s")).resources
    path = source.write(resource)
    assert path == tmp_path / "applied" / "virtualservice.default.api.yaml"
    source.scan()
    assert timeout_of(store, "api") == "2s"
    with pytest.raises(PermissionError, match="mine.yaml"):
        source.remove(ResourceKey("VirtualService", "default", "mine"))
    source.remove(ResourceKey("VirtualService", "default", "api"))
    source.scan()
    assert [r.name for r in store.resources()] == ["mine"]
    with pytest.raises(KeyError):
        source.remove(ResourceKey("VirtualService", "default", "api"))


def test_pull_secrets_from_the_folder_reach_the_plugin_config(folder: tuple[FolderSource, ConfigStore, list[int]],
                                                              tmp_path: Path) -> None:
    import base64
    import json

    from controlplane._generate import generate
    from controlplane._mesh import Mesh
    from controlplane._protos import EXTENSION_CONFIG, LISTENER, to_dict
    from tests.controlplane._fixtures import sidecar

    source, store, _ = folder
    docker_config = json.dumps({"auths": {"registry.local": {"auth": base64.b64encode(b"u:p").decode()}}})
    write(tmp_path / "secret.yaml", f"""apiVersion: v1
kind: Secret
metadata: {{name: pull-creds}}
type: kubernetes.io/dockerconfigjson
data: {{.dockerconfigjson: {base64.b64encode(docker_config.encode()).decode()}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: broken}}
type: kubernetes.io/dockerconfigjson
data: {{.dockerconfigjson: "%%%"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: opaque}}
type: Opaque
stringData: {{password: hunter2}}
""")
    write(tmp_path / "plugin.yaml", """apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: auth}
spec: {url: "oci://registry.local/auth:v1", imagePullSecret: pull-creds}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a}
spec: {hosts: [a.default.svc.cluster.local], ports: [{number: 80, name: http, protocol: HTTP}]}
""")
    source.scan()
    [problem] = store.findings()
    assert problem.message == "data..dockerconfigjson: not base64 of UTF-8 text" and problem.origin.document == 1
    snapshot = generate(Mesh(store.resources()), sidecar())
    assert "0.0.0.0_80" in snapshot.resources(LISTENER)
    env = to_dict(snapshot.resources(EXTENSION_CONFIG)["default.auth"])["typed_config"]["config"]["vm_config"][
        "environment_variables"]["key_values"]
    assert json.loads(env["ISTIO_META_WASM_IMAGE_PULL_SECRET"]) == json.loads(docker_config)
    assert "hunter2" not in repr(store.resources())
