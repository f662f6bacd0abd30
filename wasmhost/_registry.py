"""The one list of host functions a module can import.

Every ``env.proxy_*`` function, every WASI preview1 function (under both
``wasi_snapshot_preview1`` and ``wasi_unstable``) and the odd toolchain imports are
declared here through :func:`hostcall` / :func:`wasi`, next to their implementation in a
``_hostcalls_*.py`` / ``_wasi.py`` module. The VM links exactly this list; restricted
windows (VM start, inside the allocator) are derived from the flags, as cpp-host does.

An implementation is ``impl(vm, *args) -> int | None`` where every argument arrives as an
unsigned integer (i32 as u32, i64 as u64); it returns the status (or WASI errno).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

WASI_MODULES = ("wasi_snapshot_preview1", "wasi_unstable")


@dataclass(frozen=True, slots=True)
class HostFunction:
    module: str
    name: str
    params: str  # "i" = i32, "I" = i64
    results: str
    impl: Callable[..., Any]
    #: allowed while the VM runs _initialize/_start/main (cpp-host's start window)
    during_start: bool
    #: allowed while the host is inside the guest's allocator
    during_alloc: bool
    #: value returned instead of running the function in a restricted window
    restricted_result: int


HOST_FUNCTIONS: dict[tuple[str, str], HostFunction] = {}

_INTERNAL_FAILURE = 10
_WASI_NOTCAPABLE = 76


def hostcall(
    name: str,
    params: str,
    results: str = "i",
    *,
    module: str = "env",
    during_start: bool = False,
    during_alloc: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a proxy-wasm (or other ``env``) host function."""

    def register(impl: Callable[..., Any]) -> Callable[..., Any]:
        key = (module, name)
        if key in HOST_FUNCTIONS:
            raise RuntimeError(f"host function {module}.{name} declared twice")
        HOST_FUNCTIONS[key] = HostFunction(
            module, name, params, results, impl, during_start, during_alloc, _INTERNAL_FAILURE
        )
        return impl

    return register


def wasi(name: str, params: str, results: str = "i", *, during_alloc: bool = False) -> Callable[
    [Callable[..., Any]], Callable[..., Any]
]:
    """Declare a WASI preview1 function under both WASI module names."""

    def register(impl: Callable[..., Any]) -> Callable[..., Any]:
        for module in WASI_MODULES:
            key = (module, name)
            if key in HOST_FUNCTIONS:
                raise RuntimeError(f"host function {module}.{name} declared twice")
            HOST_FUNCTIONS[key] = HostFunction(
                module, name, params, results, impl, True, during_alloc, _WASI_NOTCAPABLE
            )
        return impl

    return register
