"""CLI: ``python -m sdk.toolchains build-tree --out build/plugins``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from sdk.toolchains._errors import ToolchainError, ToolchainMissing
from sdk.toolchains._tree import build_tree


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, build, and map failures to exit codes (1 build error, 2 missing tool)."""
    parser = argparse.ArgumentParser(prog="python -m sdk.toolchains", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tree = sub.add_parser("build-tree", help="build every plugin under --src into --out")
    tree.add_argument("--out", type=Path, required=True, help="output folder for <name>.wasm")
    tree.add_argument("--src", type=Path, default=Path("tests/data/plugins"), help="plugin source tree")
    tree.add_argument("--npm-workdir", type=Path, default=Path("build/npm"), help="where npm installs asc")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    try:
        results = build_tree(args.out, args.src, args.npm_workdir, console=console)
    except ToolchainMissing as exc:
        console.print(f"error: {exc}", style="red", markup=False, highlight=False)
        return 2
    except ToolchainError as exc:
        console.print(f"error: {exc}", style="red", markup=False, highlight=False)
        return 1
    rebuilt = sum(1 for r in results if r.rebuilt)
    console.print(
        f"{len(results)} plugins in {args.out} ({rebuilt} rebuilt, {len(results) - rebuilt} up to date)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
