"""Run ``wasmesh sidecar`` as a real process for tests, the way ``tests/e2e/_envoy.py`` runs Envoy."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
LAUNCH = "import sys; from controlplane.cli import main; sys.exit(main())"


class SidecarError(Exception):
    pass


class SidecarProcess:
    """``wasmesh sidecar -c <workdir>/bootstrap.yaml``; admin and listener ports are discovered."""

    def __init__(self, bootstrap: Mapping[str, Any] | str, *, workdir: Path, concurrency: int = 1,
                 log_level: str = "info", startup_timeout: float = 20.0, extra_args: Sequence[str] = ()) -> None:
        self.workdir = Path(workdir)
        self.bootstrap = bootstrap
        self.concurrency = concurrency
        self.log_level = log_level
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)
        self.config_path = self.workdir / "bootstrap.yaml"
        self.log_path = self.workdir / "sidecar.log"
        self.admin_url = ""
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise SidecarError("not running")
        return self._process.pid

    def write_config(self, bootstrap: Mapping[str, Any] | str) -> None:
        """Replace the bootstrap file atomically (the sidecar watches it)."""
        text = bootstrap if isinstance(bootstrap, str) else yaml.safe_dump(dict(bootstrap), sort_keys=False)
        temporary = self.config_path.with_suffix(".tmp")
        temporary.write_text(text)
        os.replace(temporary, self.config_path)

    def start(self) -> SidecarProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_config(self.bootstrap)
        admin_path = self.workdir / "admin-address"
        admin_path.unlink(missing_ok=True)
        command = [sys.executable, "-c", LAUNCH, "sidecar", "-c", str(self.config_path), "-l", self.log_level,
                   "--concurrency", str(self.concurrency), "--admin-address-path", str(admin_path),
                   *self.extra_args]
        with open(self.log_path, "ab") as log_file:
            self._process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log_file,
                                             stderr=log_file, start_new_session=True)
        try:
            self._wait_ready(admin_path)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, admin_path: Path) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise SidecarError(f"sidecar exited with {self._process.returncode}:\n{self.log_text()}")
            if not self.admin_url and admin_path.exists():
                address = admin_path.read_text().strip()
                if address:
                    self.admin_url = f"http://{address}"
            if self.admin_url:
                try:
                    if self.admin_get("/ready").strip() == "LIVE":
                        return
                except (SidecarError, OSError):
                    pass
            time.sleep(0.05)
        raise SidecarError(f"sidecar not ready after {self.startup_timeout} s:\n{self.log_text()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> SidecarProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def admin_get(self, path: str, timeout: float = 5.0) -> str:
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=timeout) as reply:
                return str(reply.read().decode())
        except urllib.error.HTTPError as exc:
            raise SidecarError(f"admin {path} answered {exc.code}") from exc

    def admin_post(self, path: str, timeout: float = 5.0) -> str:
        request = urllib.request.Request(self.admin_url + path, method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return str(reply.read().decode())

    def listener_ports(self) -> dict[str, int]:
        statuses = json.loads(self.admin_get("/listeners?format=json"))["listener_statuses"]
        return {s["name"]: int(s["local_address"]["socket_address"]["port_value"]) for s in statuses}

    def stats(self) -> dict[str, int]:
        entries = json.loads(self.admin_get("/stats?format=json"))["stats"]
        return {e["name"]: int(e["value"]) for e in entries}

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def http_request(port: int, method: str = "GET", path: str = "/", headers: Sequence[tuple[str, str]] = (),
                 body: bytes | None = None, timeout: float = 10.0) -> tuple[int, list[tuple[str, str]], bytes]:
    """One request on a new connection: (status, headers in order with lower-case names, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.putrequest(method, path, skip_host=any(k.lower() == "host" for k, _ in headers),
                              skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        data = response.read()
        return response.status, [(k.lower(), v) for k, v in response.getheaders()], data
    finally:
        connection.close()
