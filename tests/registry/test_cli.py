"""The wasmesh registry/login/plugin commands, run in-process against a live registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane.cli import main
from registry import Authenticator, PasswordFile, hash_password
from registry.testing import RunningRegistry, running_registry


@pytest.fixture(autouse=True)
def isolated_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    return tmp_path / "docker" / "config.json"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_push_sign_pull_verify_inspect(live_registry: RunningRegistry, wasm_module: bytes, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    module = tmp_path / "echo.wasm"
    module.write_bytes(wasm_module)
    prefix = str(tmp_path / "team")
    code, out, _ = run(capsys, "plugin", "keygen", "--output-prefix", prefix)
    assert code == 0 and "NOT encrypted" in out
    ref = f"oci://{live_registry.host}/plugins/echo:v1"
    code, out, _ = run(capsys, "plugin", "push", str(module), ref, "--sign", f"{prefix}.key", "--variant", "compat")
    assert code == 0 and "compat variant" in out and "signed sha256:" in out
    code, out, _ = run(capsys, "plugin", "verify", ref, "--key", f"{prefix}.pub")
    assert code == 0 and "signed by key sha256:" in out
    pulled = tmp_path / "pulled.wasm"
    code, out, _ = run(capsys, "plugin", "pull", ref, "-o", str(pulled), "--key", f"{prefix}.pub")
    assert code == 0 and pulled.read_bytes() == wasm_module and "signed by key" in out
    code, out, _ = run(capsys, "plugin", "inspect", ref, "--json")
    info = json.loads(out)
    assert code == 0 and info["cosignSignatures"]["count"] == 1 and len(info["referrers"]) == 1
    assert info["annotations"]["module.wasm.image/variant"] == "compat"


def test_verification_failures_exit_1_with_the_reason(live_registry: RunningRegistry, wasm_module: bytes,
                                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = tmp_path / "echo.wasm"
    module.write_bytes(wasm_module)
    run(capsys, "plugin", "keygen", "--output-prefix", str(tmp_path / "trusted"))
    run(capsys, "plugin", "keygen", "--output-prefix", str(tmp_path / "other"))
    ref = f"oci://{live_registry.host}/plugins/echo:v1"
    assert run(capsys, "plugin", "push", str(module), ref, "-q")[0] == 0
    code, _, err = run(capsys, "plugin", "verify", ref, "--key", str(tmp_path / "trusted.pub"))
    assert code == 1 and "verification failed" in err and "is not signed" in err
    assert run(capsys, "plugin", "sign", ref, "--key", str(tmp_path / "other.key"))[0] == 0
    out_file = tmp_path / "never.wasm"
    code, _, err = run(capsys, "plugin", "pull", ref, "-o", str(out_file), "--key", str(tmp_path / "trusted.pub"))
    assert code == 1 and "not signed by any trusted key" in err and not out_file.exists()
    code, _, err = run(capsys, "plugin", "pull", ref, "-o", str(out_file), "--sha256", "0" * 64)
    assert code == 1 and "DIGEST_INVALID" in err and not out_file.exists()


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "plugin", "pull", "https://example/x", "-o", str(tmp_path / "x"))
    assert code == 2 and "scheme must be oci://" in err
    not_wasm = tmp_path / "x.wasm"
    not_wasm.write_bytes(b"hello")
    code, _, err = run(capsys, "plugin", "push", str(not_wasm), "oci://127.0.0.1:1/a:b")
    assert code == 2 and "not a WebAssembly binary" in err
    code, _, err = run(capsys, "plugin", "verify", "oci://127.0.0.1:1/a:b")
    assert code == 2 and "--key" in err
    code, _, err = run(capsys, "registry")
    assert code == 2 and "--data" in err


def test_login_checks_credentials_and_stores_them(tmp_path: Path, isolated_docker_config: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    passwords = PasswordFile({"alice": hash_password("right", scheme="pbkdf2-sha256")})
    with running_registry(tmp_path / "data", Authenticator("token", passwords)) as reg:
        code, _, err = run(capsys, "login", reg.host, "-u", "alice", "-p", "wrong")
        assert code == 1 and "invalid username or password" in err and not isolated_docker_config.exists()
        code, out, _ = run(capsys, "login", reg.host, "-u", "alice", "-p", "right")
        assert code == 0 and reg.host in json.loads(isolated_docker_config.read_text())["auths"]
        module = tmp_path / "m.wasm"
        module.write_bytes(b"\0asm\x01\0\0\0")
        assert run(capsys, "plugin", "push", str(module), f"oci://{reg.host}/a/b:v1", "-q")[0] == 0
        assert run(capsys, "logout", reg.host)[0] == 0
        code, _, err = run(capsys, "plugin", "inspect", f"oci://{reg.host}/a/b:v1")
        assert code == 1 and "DENIED: anonymous token (no credentials were given) lacks repository:a/b:pull" in err


def test_registry_gc_and_add_user_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    htpasswd = tmp_path / "htpasswd"
    code, out, _ = run(capsys, "registry", "--htpasswd", str(htpasswd), "--add-user", "bob", "--password", "pw")
    assert code == 0 and PasswordFile.load(htpasswd).verify("bob", "pw")
    from registry import Storage

    storage = Storage(tmp_path / "data")
    storage.put_blob("repo", b"orphan")
    code, out, _ = run(capsys, "registry", "--data", str(tmp_path / "data"), "--gc", "--grace", "0", "--dry-run")
    assert code == 0 and out.startswith("would delete 1 blobs (6 bytes)")
    code, out, _ = run(capsys, "registry", "--data", str(tmp_path / "data"), "--gc", "--grace", "0")
    assert code == 0 and out.startswith("deleted 1 blobs") and not any(storage.all_blobs())
