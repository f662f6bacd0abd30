"""``wasmesh demo``: the whole mesh on this machine, and the story of what it can do.

Starts the registry, the control plane and the bookinfo services with their sidecars (all on
127.0.0.1, free ports), runs the steps of `controlplane._demo_story` with a pass/fail line
each, shows `proxy-status` and `proxy-config` for one workload, and stops every process it
started on the way out: after the story, on Ctrl-C, on an error, or when `--duration` runs out.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

SHOWN_WORKLOAD = "details-v1"
GATE_TIMEOUT_S = 600.0


class DurationElapsed(Exception):
    """--duration ran out."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="run the mesh and bookinfo locally and walk through its features",
                                   description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.set_defaults(handler=_run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="stop everything after this long, wherever the demo is (with --keep: how long to stay up)")
    parser.add_argument("--keep", action="store_true", help="leave the mesh running after the story (until Ctrl-C)")
    parser.add_argument("--workdir", metavar="DIR", help="where configuration, keys and logs go (default: a temp dir, "
                                                         "removed at the end)")
    parser.add_argument("--state-file", metavar="FILE", help="write the addresses of everything here once it is up")
    parser.add_argument("--step-gate", metavar="DIR", help="after each step write DIR/STEP.json and wait for "
                                                            "DIR/STEP.go (lets a script check each step)")


def _on_alarm(signum: int, frame: object) -> None:
    raise DurationElapsed


def _on_term(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from controlplane._demo_mesh import DemoError, DemoMesh

    console = Console(highlight=False)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="wasmesh-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = DemoMesh(workdir)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)  # also when started with SIGINT ignored (a background job)
    if args.duration:
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, args.duration)
    started = time.monotonic()
    passed = False
    try:
        passed = _story(mesh, args, console, started)
        if args.keep:
            _show_keep(mesh, console)
            while True:
                time.sleep(1)
                mesh.check_alive()
    except DurationElapsed:
        console.print(f"[yellow]--duration {args.duration:g} s elapsed; stopping[/]")
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; stopping[/]")
    except DemoError as err:
        console.print(f"[red]demo failed: {err}[/]")
        passed = False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum in (signal.SIGINT, signal.SIGTERM):  # stopping is bounded; let it finish
            signal.signal(signum, signal.SIG_IGN)
        mesh.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    console.print(f"stopped every process after {time.monotonic() - started:.1f} s")
    return 0 if passed else 1


def _start(mesh: Any) -> None:
    from controlplane._demo_mesh import DemoError
    from controlplane._demo_story import MANIFESTS, page, until

    if not (MANIFESTS / "00-bookinfo.yaml").exists():
        raise DemoError(f"the demo runs from a source checkout: {MANIFESTS} is missing")
    (mesh.workdir / "keys").mkdir(parents=True, exist_ok=True)
    mesh.wasmesh("plugin", "keygen", "--output-prefix", str(mesh.key), "--force")
    mesh.start_registry()
    trust = mesh.workdir / "trust.yaml"
    trust.write_text(f"requireSignature: true\nrules:\n- images: ['{mesh.registry}/plugins/*']\n"
                     f"  keys: [{mesh.key}.pub]\n")
    mesh.start_control_plane(trust)
    mesh.apply(MANIFESTS / "00-bookinfo.yaml")
    mesh.apply(MANIFESTS / "01-all-v1.yaml")
    mesh.start_workloads()

    def answers() -> bool:
        mesh.check_alive()
        return "author" in page(mesh).get("details", {}) and page(mesh)["reviews"].get("version") == "v1"

    until(answers, "bookinfo to answer through the sidecars", 60)


def _story(mesh: Any, args: argparse.Namespace, console: Any, started: float) -> bool:
    from controlplane._demo_story import STEPS, run_step, write_json

    with console.status("starting registry, control plane, 6 bookinfo workloads and their sidecars"):
        _start(mesh)
    console.print(f"[bold]mesh up[/] in {time.monotonic() - started:.1f} s: control plane API {mesh.api}, "
                  f"registry {mesh.registry}, {len(mesh.workloads)} workloads with sidecars; "
                  f"productpage at http://127.0.0.1:{mesh.workload('productpage-v1').inbound_port}/productpage")
    if args.state_file:
        write_json(Path(args.state_file), mesh.urls())
    results = []
    for name, title, step in STEPS:
        with console.status(title):
            result = run_step(mesh, name, step)
        results.append(result)
        mark = "[green]PASS[/]" if result.passed else "[red]FAIL[/]"
        console.print(f"{mark} {title} [dim]({result.seconds:.1f} s)[/]")
        console.print(f"     {result.detail}", markup=False, soft_wrap=True)
        if args.step_gate:
            _gate(Path(args.step_gate), result)
    console.rule(f"wasmesh proxy-status --control-plane {mesh.api}")
    console.print(mesh.wasmesh("proxy-status", "--control-plane", mesh.api), end="", markup=False, soft_wrap=True)
    console.rule(f"wasmesh proxy-config all {SHOWN_WORKLOAD}")
    console.print(mesh.wasmesh("proxy-config", "all", SHOWN_WORKLOAD, "--control-plane", mesh.api),
                  end="", markup=False, soft_wrap=True)
    console.rule()
    good = sum(r.passed for r in results)
    console.print(f"console: http://{mesh.api}/dashboard/")
    console.print(f"[bold]{good}/{len(results)} steps passed[/] in {time.monotonic() - started:.1f} s")
    return good == len(results)


def _gate(folder: Path, result: Any) -> None:
    """Tell a watching script the step is done and wait for it to say go (bounded by --duration)."""
    from controlplane._demo_mesh import DemoError
    from controlplane._demo_story import write_json

    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / f"{result.name}.json", {"name": result.name, "passed": result.passed})
    go = folder / f"{result.name}.go"
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while not go.exists():
        if time.monotonic() > deadline:
            raise DemoError(f"nobody opened {go} within {GATE_TIMEOUT_S:.0f} s")
        time.sleep(0.05)


def _show_keep(mesh: Any, console: Any) -> None:
    pp = mesh.workload("productpage-v1").inbound_port
    details = mesh.workload("details-v1").inbound_port
    console.print(f"""
[bold]The mesh keeps running[/] (Ctrl-C stops it and every process it started). In another shell:
  export WASMESH_CONTROL_PLANE={mesh.api} REGISTRY={mesh.registry}
  curl -s http://127.0.0.1:{pp}/productpage | python3 -m json.tool
  curl -s -H 'end-user: jason' http://127.0.0.1:{pp}/productpage
  curl -si http://127.0.0.1:{details}/details/0 | grep x-demo-plugin
  wasmesh apply -f examples/bookinfo/manifests/02-reviews-50-v3.yaml
  sed "s/127.0.0.1:5000/$REGISTRY/" examples/bookinfo/manifests/06-plugin-v1.yaml | wasmesh apply -f -
  wasmesh get wasmplugin
  wasmesh proxy-status
  wasmesh proxy-config routes productpage-v1
console:  http://{mesh.api}/dashboard/
signing key: {mesh.key}.key   logs: {mesh.logs}   config folder: {mesh.config_dir}
the ports of every workload:""", soft_wrap=True)
    for workload in mesh.workloads:
        out = f", outbound {workload.outbound_port}" if workload.calls_out else ""
        console.print(f"  {workload.name:15} app {workload.app_port}, sidecar inbound {workload.inbound_port}{out}")


def main(argv: list[str] | None = None) -> int:
    """Run as `python -m controlplane.cli._demo` (the same options as `wasmesh demo`)."""
    parser = argparse.ArgumentParser(prog="wasmesh demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return _run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
