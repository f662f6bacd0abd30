"""The compiled copies of the request path: used only while they match their sources."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._tools import ROOT
from wasmhost import _native, _native_build


def fake_build(source_dir: Path, compiled_dir: Path, sources: dict[str, str]) -> None:
    """Sources plus a manifest and placeholder copies, as a build of them would leave."""
    source_dir.mkdir(parents=True, exist_ok=True)
    compiled_dir.mkdir(parents=True, exist_ok=True)
    digests = {}
    for name, text in sources.items():
        (source_dir / f"{name}.py").write_text(text)
        (compiled_dir / f"{name}{_native.extension_suffix()}").write_bytes(b"")
        digests[name] = _native.source_digest(source_dir / f"{name}.py")
    manifest = {"ext_suffix": _native.extension_suffix(), "builder": _native.builder_digest(), "modules": digests}
    (compiled_dir / _native.MANIFEST_NAME).write_text(json.dumps(manifest))


def test_nothing_built_is_not_stale_but_absent(tmp_path: Path) -> None:
    assert _native.stale_modules(tmp_path / "src", tmp_path / "compiled") is None


def test_current_copies_are_not_stale(tmp_path: Path) -> None:
    fake_build(tmp_path / "src", tmp_path / "compiled", {"_a": "A = 1\n", "_b": "B = 2\n"})
    assert _native.stale_modules(tmp_path / "src", tmp_path / "compiled") == []


def test_an_edited_source_makes_its_copy_stale(tmp_path: Path) -> None:
    fake_build(tmp_path / "src", tmp_path / "compiled", {"_a": "A = 1\n", "_b": "B = 2\n"})
    (tmp_path / "src" / "_b.py").write_text("B = 3\n")
    assert _native.stale_modules(tmp_path / "src", tmp_path / "compiled") == ["_b"]


def test_a_missing_copy_or_source_is_stale(tmp_path: Path) -> None:
    fake_build(tmp_path / "src", tmp_path / "compiled", {"_a": "A = 1\n", "_b": "B = 2\n"})
    (tmp_path / "compiled" / f"_a{_native.extension_suffix()}").unlink()
    (tmp_path / "src" / "_b.py").unlink()
    assert _native.stale_modules(tmp_path / "src", tmp_path / "compiled") == ["_a", "_b"]


def test_copies_for_another_interpreter_are_all_stale(tmp_path: Path) -> None:
    fake_build(tmp_path / "src", tmp_path / "compiled", {"_a": "A = 1\n"})
    manifest_path = tmp_path / "compiled" / _native.MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["ext_suffix"] = ".cpython-39-other.so"
    manifest_path.write_text(json.dumps(manifest))
    assert _native.stale_modules(tmp_path / "src", tmp_path / "compiled") == ["_a"]


def test_copies_from_another_builder_are_all_stale(tmp_path: Path) -> None:
    """Other directives or flags may change behaviour (e.g. function attributes), so they rebuild."""
    fake_build(tmp_path / "src", tmp_path / "compiled", {"_a": "A = 1\n", "_b": "B = 2\n"})
    manifest_path = tmp_path / "compiled" / _native.MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["builder"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    assert _native.stale_modules(tmp_path / "src", tmp_path / "compiled") == ["_a", "_b"]


def test_a_damaged_manifest_counts_as_nothing_built(tmp_path: Path) -> None:
    (tmp_path / "compiled").mkdir()
    (tmp_path / "compiled" / _native.MANIFEST_NAME).write_text("{not json")
    assert _native.stale_modules(tmp_path / "src", tmp_path / "compiled") is None


def test_activation_puts_current_copies_first_and_refuses_stale_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_build(tmp_path / "src", tmp_path / "_compiled" / "pkg", {"_a": "A = 1\n"})
    monkeypatch.setitem(_native.PACKAGES, "demo.pkg", (tmp_path / "src", "pkg"))
    monkeypatch.setattr(_native, "COMPILED_ROOT", tmp_path / "_compiled")
    monkeypatch.delenv(_native.DISABLE_ENV, raising=False)
    path = [str(tmp_path / "src")]
    assert _native.activate(path, "demo.pkg")
    assert path == [str(tmp_path / "_compiled" / "pkg"), str(tmp_path / "src")]

    (tmp_path / "src" / "_a.py").write_text("A = 2\n")
    path = [str(tmp_path / "src")]
    assert not _native.activate(path, "demo.pkg")
    assert path == [str(tmp_path / "src")]


def test_the_switch_turns_current_copies_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_build(tmp_path / "src", tmp_path / "_compiled" / "pkg", {"_a": "A = 1\n"})
    monkeypatch.setitem(_native.PACKAGES, "demo.pkg", (tmp_path / "src", "pkg"))
    monkeypatch.setattr(_native, "COMPILED_ROOT", tmp_path / "_compiled")
    monkeypatch.setenv(_native.DISABLE_ENV, "1")
    path = [str(tmp_path / "src")]
    assert not _native.activate(path, "demo.pkg")
    assert path == [str(tmp_path / "src")]


def test_every_listed_module_exists_as_source() -> None:
    for package, names in _native_build.MODULES.items():
        source_dir = _native.PACKAGES[package][0]
        missing = [name for name in names if not _native.module_source(source_dir, name).is_file()]
        assert not missing, f"{package}: {missing}"


def _module_files(env: dict[str, str]) -> dict[str, str]:
    probe = ("import json, wasmhost.sidecar._stream as s, wasmhost._vm as v; "
             "print(json.dumps({'sidecar': s.__file__, 'core': v.__file__}))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout
    files: dict[str, str] = json.loads(out)
    return files


def test_the_built_copies_are_what_the_packages_import() -> None:
    """After ``make native`` the request path runs compiled; the switch brings the sources back."""
    report = _native.status()
    if not all(entry["built"] and not entry["stale"] for entry in report.values()):
        # `make test` builds them first; a developer who just edited a module runs the sources
        reason = f"the compiled copies are missing or stale; `make native` builds them ({report})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    compiled = _module_files(dict(os.environ, **{_native.DISABLE_ENV: ""}))
    assert all(path.endswith(_native.extension_suffix()) for path in compiled.values()), compiled
    assert all(f"{os.sep}_compiled{os.sep}" in path for path in compiled.values()), compiled
    plain = _module_files(dict(os.environ, **{_native.DISABLE_ENV: "1"}))
    assert all(path.endswith(".py") for path in plain.values()), plain


def test_the_compiled_path_uses_the_c_crossings() -> None:
    """With the copies active, guest calls and host functions go through ``_fastcall``."""
    from wasmhost import _capi

    if not _native.ACTIVE.get("wasmhost"):
        reason = "the compiled copies are not active in this run; `make native` builds them"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    assert _capi.FASTCALL is not None
    assert _capi.FASTCALL.__file__.endswith(_native.extension_suffix())


def test_the_ctypes_path_still_passes_the_capi_tests() -> None:
    """The plain-Python crossings stay the fallback and the reference: same tests, other path."""
    env = dict(os.environ, **{_native.DISABLE_ENV: "1"})
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/wasmhost/test_capi.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
