"""The `wasmesh` command line: one console script for every role.

Each area contributes its commands from its own private module through a
``register(subparsers)`` function (top-level commands) or
``register_plugin(plugin_subparsers)`` (commands under ``wasmesh plugin``).
Modules are imported lazily by the command that needs them, so ``wasmesh
--help`` stays fast and one area's optional dependency never breaks another.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that add commands. Each may define ``register`` and/or ``register_plugin``.
_COMMAND_MODULES: tuple[str, ...] = (
    "controlplane.cli._plugin_run",
    "controlplane.cli._sidecar",
    "controlplane.cli._registry",
    "controlplane.cli._controlplane",
    "controlplane.cli._plugin_build",
    "controlplane.cli._plugin_project",
    "controlplane.cli._demo",
)


class UsageError(Exception):
    """A command was given input it cannot use; printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wasmesh", description="WebAssembly service mesh")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    plugin = commands.add_parser("plugin", help="build, test, run, publish and verify plugins")
    plugin_commands = plugin.add_subparsers(dest="plugin_command", metavar="SUBCOMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue  # that area has not been built yet
            raise
        if hasattr(module, "register"):
            module.register(commands)
        if hasattr(module, "register_plugin"):
            module.register_plugin(plugin_commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except UsageError as err:
        print(f"wasmesh: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


__all__ = ["UsageError", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
