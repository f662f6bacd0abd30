"""Test support: run a real registry server in a background thread on 127.0.0.1:0.

Used by this package's tests and by any component (the sidecar's module agent, the
control plane) that needs a live OCI registry in a test without spawning a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ._api import RegistryApp
from ._auth import Authenticator
from ._server import RegistryServer
from ._storage import Storage


@dataclass
class RunningRegistry:
    """A live registry: ``host`` is ``127.0.0.1:<port>`` for references and clients."""

    server: RegistryServer
    app: RegistryApp
    storage: Storage

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @property
    def url(self) -> str:
        return self.server.url


@contextlib.contextmanager
def running_registry(data_dir: Path | str, auth: Authenticator | None = None,
                     ssl_context: ssl.SSLContext | None = None) -> Iterator[RunningRegistry]:
    """Start a registry on a free port; stop it (and its loop thread) on exit."""
    storage = Storage(data_dir)
    app = RegistryApp(storage, auth)
    server = RegistryServer(app, "127.0.0.1", 0, ssl_context)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="registry-loop", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
        yield RunningRegistry(server, app, storage)
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(server.close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
