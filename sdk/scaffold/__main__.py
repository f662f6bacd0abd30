"""CLI: ``python -m sdk.scaffold build-plugins --out build/plugins [--src plugins]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdk.scaffold._project import ScaffoldError, build_plugin_tree
from sdk.toolchains import ToolchainMissing


def main(argv: list[str] | None = None) -> int:
    """Build the ready plugins; exit 1 on a build error, 2 on a missing toolchain."""
    parser = argparse.ArgumentParser(prog="python -m sdk.scaffold", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tree = sub.add_parser("build-plugins", help="build every plugin project under --src into --out/<name>.wasm")
    tree.add_argument("--out", type=Path, required=True, help="output folder")
    tree.add_argument("--src", type=Path, default=Path("plugins"), help="folder of plugin projects")
    args = parser.parse_args(argv)
    try:
        built = build_plugin_tree(args.src, args.out)
    except ToolchainMissing as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ScaffoldError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for plugin in built:
        state = "built" if plugin.rebuilt else "up to date"
        print(f"{plugin.module} {plugin.size} bytes ({state})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
