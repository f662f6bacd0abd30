"""Run one plugin source both ways (CPython and compiled) and collect what each did."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wasmtime

from sdk.compiler import compile_file
from tests.sdk.compiler._stubhost import PythonRunner, StubHost, WasmRunner

PROGRAMS = Path(__file__).parent / "programs"

# Appended to each corpus program: a plugin whose start runs main().
MAIN_PLUGIN = '''

from sdk import proxywasm as _corpus_proxywasm
from sdk.types import PluginContext as _CorpusPlugin
from sdk.types import VMContext as _CorpusVM


class _CorpusMain(_CorpusPlugin):
    def on_plugin_start(self, plugin_configuration_size: int) -> bool:
        main()
        return True


class _CorpusMainVM(_CorpusVM):
    def new_plugin_context(self, context_id: int) -> _CorpusPlugin:
        return _CorpusMain()


_corpus_proxywasm.set_vm_context(_CorpusMainVM())
'''

Scenario = Callable[[Any], list[Any]]


@dataclass
class Outcome:
    results: list[Any]
    state: dict[str, Any]
    error: str | None


def start_plugin(runner: Any) -> list[Any]:
    """The host's start sequence: root context 1, VM start, configure."""
    runner.call("proxy_on_context_create", 1, 0)
    return [runner.call("proxy_on_vm_start", 1, 0), runner.call("proxy_on_configure", 1, len(runner.host.buffers[7]))]


def run_python(path: Path, scenario: Scenario, host: StubHost) -> Outcome:
    runner = PythonRunner(path, host)
    try:
        results = scenario(runner)
        error = None
    except Exception as err:  # the plugin raised: compare with the module's trap
        results, error = [], type(err).__name__
    finally:
        runner.close()
    return Outcome(results, host.snapshot(), error)


def run_wasm(wasm: bytes, scenario: Scenario, host: StubHost) -> Outcome:
    runner = WasmRunner(wasm, host)
    try:
        results = scenario(runner)
        error = None
    except wasmtime.Trap:
        results, error = [], _uncaught_name(host)
    return Outcome(results, host.snapshot(), error)


def _uncaught_name(host: StubHost) -> str:
    for _level, message in reversed(host.logs):
        if message.startswith("uncaught exception "):
            return message[len("uncaught exception ") :].split(":")[0]
    return "trap"


def differential(
    path: Path,
    scenario: Scenario = start_plugin,
    host_factory: Callable[[], StubHost] = StubHost,
) -> tuple[Outcome, Outcome]:
    """Run ``path`` in CPython and compiled; both outcomes (compare them)."""
    python = run_python(path, scenario, host_factory())
    wasm_host = host_factory()
    wasm = run_wasm(compile_file(path), scenario, wasm_host)
    if wasm.error is not None and python.error is not None:
        # the module also logged the uncaught exception before trapping
        wasm.state["logs"] = [entry for entry in wasm.state["logs"] if not entry[1].startswith("uncaught exception ")]
    return python, wasm


def corpus_source(name: str) -> str:
    return (PROGRAMS / name).read_text(encoding="utf-8") + MAIN_PLUGIN
