"""Load a bootstrap file into a plan, and notice when the file changes.

``load_plan`` does the whole parse → validate → build pipeline and is meant to
run off the event loop (in a thread), because filter factories may do slow work
such as compiling Wasm modules. ``FileWatcher`` polls the file (cheap and
portable) and reports new content once it has settled.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from ._config_load import parse_bootstrap_text
from ._errors import ConfigError
from ._plan import Plan
from ._plan_build import build_plan

log = logging.getLogger("wasmesh.config")


def read_config(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as err:
        raise ConfigError("", f"cannot read {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError("", f"{path} is not UTF-8 text") from None


def load_plan(text: str, source: str, version: int, services: Any = None) -> Plan:
    """Parse, validate and build; raise ``ConfigError`` naming the offending field."""
    bootstrap = parse_bootstrap_text(text, source)
    if bootstrap.HasField("dynamic_resources"):
        # what the bootstrap holds itself; listeners and clusters waiting for xDS are left out
        from ._dynamic import assemble

        built = build_plan(assemble(bootstrap, {}, {}).bootstrap, version=version, source=source,
                           services=services)
        built.bootstrap = bootstrap
        return built
    return build_plan(bootstrap, version=version, source=source, services=services)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class FileWatcher:
    """Polls ``path``; calls ``on_change(text)`` when its content changes (not merely its mtime)."""

    def __init__(self, path: str, on_change: Callable[[str], Awaitable[None]], interval: float = 0.5,
                 initial_digest: str = "") -> None:
        self.path = path
        self.on_change = on_change
        self.interval = interval
        self._digest = initial_digest
        self._stamp: tuple[int, int, int] | None = self._stat()
        self._task: asyncio.Task[None] | None = None

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            stamp = self._stat()
            if stamp is None or stamp == self._stamp:
                continue
            # let a writer finish: wait until the file stops changing for one more interval
            await asyncio.sleep(min(self.interval, 0.2))
            if self._stat() != stamp:
                continue
            self._stamp = stamp
            try:
                text = read_config(self.path)
            except ConfigError as err:
                log.error("config reload rejected: %s", err)
                continue
            new_digest = digest(text)
            if new_digest == self._digest:
                continue
            self._digest = new_digest
            try:
                await self.on_change(text)
            except Exception:
                log.exception("config reload failed")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
