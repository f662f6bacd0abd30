"""Differential corpus: every program runs in CPython and compiled; the logs must match."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sdk.compiler._harness import PROGRAMS, corpus_source, differential

CORPUS = sorted(p.name for p in PROGRAMS.glob("*.py"))


@pytest.mark.parametrize("name", CORPUS)
def test_program_behaves_the_same_compiled(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_text(corpus_source(name), encoding="utf-8")
    python, wasm = differential(path)
    assert python.error is None, f"the program itself failed in CPython: {python.error}"
    assert len(python.state["logs"]) > 3, "a corpus program must log what it computed"
    assert wasm.error is None
    for expected, actual in zip(python.state["logs"], wasm.state["logs"], strict=False):
        assert actual == expected
    assert wasm.state["logs"] == python.state["logs"]
    assert wasm.results == python.results == [1, 1]
