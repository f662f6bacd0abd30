"""Run ``wasmesh sidecar`` as a real process for tests, on the ``ProxyProcess`` base that runs Envoy too."""

from __future__ import annotations

import http.client
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests._proxy_process import ProxyProcess

ROOT = Path(__file__).resolve().parents[3]
LAUNCH = "import sys; from controlplane.cli import main; sys.exit(main())"


class SidecarError(Exception):
    pass


class SidecarProcess(ProxyProcess):
    """``wasmesh sidecar -c <workdir>/bootstrap.yaml``; admin and listener ports are discovered."""

    name = "sidecar"
    error = SidecarError
    log_name = "sidecar.log"
    append_log = True
    stop_timeout = 15.0
    poll_interval = 0.05
    cwd = ROOT

    def __init__(self, bootstrap: Mapping[str, Any] | str, *, workdir: Path, concurrency: int = 1,
                 log_level: str = "info", startup_timeout: float = 20.0, extra_args: Sequence[str] = ()) -> None:
        super().__init__(bootstrap, workdir=workdir, startup_timeout=startup_timeout)
        self.concurrency = concurrency
        self.log_level = log_level
        self.extra_args = list(extra_args)

    def write_config(self, bootstrap: Mapping[str, Any] | str) -> None:
        """Replace the bootstrap file atomically (the sidecar watches it)."""
        text = bootstrap if isinstance(bootstrap, str) else yaml.safe_dump(dict(bootstrap), sort_keys=False)
        temporary = self.config_path.with_suffix(".tmp")
        temporary.write_text(text)
        os.replace(temporary, self.config_path)

    def command(self, admin_path: Path) -> list[str]:
        return [sys.executable, "-c", LAUNCH, "sidecar", "-c", str(self.config_path), "-l", self.log_level,
                "--concurrency", str(self.concurrency), "--admin-address-path", str(admin_path), *self.extra_args]


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
