"""One test, both ways: a pytest fixture that runs each test on the Python source and on the .wasm.

.. code-block:: python

    from sdk.testing import plugin_fixture

    plugin = plugin_fixture("plugins/rate_limit/plugin.py")

    def test_third_request_is_limited(plugin):
        host = plugin(plugin_config='{"max_tokens": 2}')
        ...

The fixture is parametrized over :data:`MODES`: ``python`` loads the source into CPython
(:meth:`HostEmulator.load_python`), ``wasm`` compiles it with ``sdk.compiler`` (once per
process and source version) and loads the module; the same assertions then hold for both.
A project directory whose plugin is AssemblyScript or C runs in ``wasm`` mode only, built by
``sdk.scaffold.build_project``. :func:`assert_modes_agree` runs one scenario both ways and
compares everything it returns, plus the logs and metrics, for checks that are easier to
state as "same as the other mode" than as literal values.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ._emulator import HostEmulator

#: The two ways a Python plugin runs: its source in CPython, its compiled module in wasmtime.
MODES: tuple[str, ...] = ("python", "wasm")
#: Comma-separated modes to keep (``wasmesh plugin test --mode`` sets it); unset: all.
MODES_ENV = "WASMESH_TEST_MODES"

_compiled: dict[tuple[str, str], bytes] = {}
_compile_lock = threading.Lock()


def _source_digest(source: Path) -> str:
    """Hash of every Python file next to the plugin (a plugin may import its siblings)."""
    digest = hashlib.sha256()
    for path in sorted(source.parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def compiled_module(source: str | Path) -> bytes:
    """``sdk.compiler.compile_file(source)``, cached for this process until a source changes."""
    from sdk.compiler import compile_file

    path = Path(source).resolve()
    key = (str(path), _source_digest(path))
    with _compile_lock:
        if key not in _compiled:
            _compiled[key] = compile_file(path)
        return _compiled[key]


def _python_source(source: Path) -> Path | None:
    if source.suffix == ".py":
        return source
    if source.is_dir() and (source / "plugin.py").is_file():
        return source / "plugin.py"
    return None


def available_modes(source: str | Path) -> tuple[str, ...]:
    """Both modes for a Python plugin; ``wasm`` only for a module or another language."""
    return MODES if _python_source(Path(source)) is not None else ("wasm",)


class PluginLoader:
    """What the fixture gives a test: ``loader(**options)`` opens a started emulator.

    Options are :class:`HostEmulator`'s; ``start=False`` leaves the plugin unstarted.
    Every emulator opened is closed when the test ends.
    """

    def __init__(self, source: str | Path, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: use one of {MODES}")
        self.source = Path(source)
        self.mode = mode
        self._opened: list[HostEmulator] = []

    def module(self) -> bytes:
        """The ``.wasm`` this loader runs in ``wasm`` mode (built when needed)."""
        python = _python_source(self.source)
        if python is not None:
            return compiled_module(python)
        if self.source.is_dir():
            from sdk.scaffold import build_project

            return build_project(self.source).read_bytes()
        return self.source.read_bytes()

    def __call__(self, *, start: bool = True, **options: Any) -> HostEmulator:
        if self.mode == "python":
            python = _python_source(self.source)
            if python is None:
                raise ValueError(f"{self.source}: no Python source to run in CPython mode")
            host = HostEmulator.load_python(python, **options)
        else:
            host = HostEmulator.load(self.module(), **options)
        self._opened.append(host)
        if start:
            host.start_plugin()
        return host

    def close(self) -> None:
        for host in self._opened:
            host.close()
        self._opened.clear()


def plugin_fixture(source: str | Path, *, name: str = "plugin", modes: Sequence[str] | None = None) -> Any:
    """A pytest fixture named ``name`` giving a :class:`PluginLoader`, once per mode.

    ``source`` is a Python plugin file, a project directory (``wasmesh plugin init``) or a
    ``.wasm``; ``modes`` defaults to every mode the source supports, narrowed by the
    ``WASMESH_TEST_MODES`` environment variable when it is set.
    """
    import pytest

    chosen = list(modes) if modes is not None else list(available_modes(source))
    wanted = os.environ.get(MODES_ENV, "")
    if wanted:
        chosen = [mode for mode in chosen if mode in wanted.split(",")]

    def loader(request: Any) -> Iterator[PluginLoader]:
        plugin_loader = PluginLoader(source, request.param)
        try:
            yield plugin_loader
        finally:
            plugin_loader.close()

    return pytest.fixture(params=chosen, name=name)(loader)


def assert_modes_agree(
    source: str | Path, scenario: Callable[[HostEmulator], Any], **options: Any
) -> Any:
    """Run ``scenario(host)`` in both modes; assert results, logs and metrics are equal.

    Returns the (common) result. The emulator is started before ``scenario`` runs.
    """
    outcomes: dict[str, tuple[Any, list[str], dict[str, Any], bool]] = {}
    for mode in MODES:
        loader = PluginLoader(source, mode)
        try:
            host = loader(**options)
            result = scenario(host)
            outcomes[mode] = (result, host.logs(), host.metrics(), host.trap is not None)
        finally:
            loader.close()
    python, wasm = outcomes["python"], outcomes["wasm"]
    for what, index in (("result", 0), ("logs", 1), ("metrics", 2), ("trapped", 3)):
        if python[index] != wasm[index]:
            raise AssertionError(f"the modes disagree on {what}:\n  python: {python[index]!r}\n  wasm:   {wasm[index]!r}")
    return python[0]
