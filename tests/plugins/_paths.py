"""Where the ready plugins live, for the tests that run them both ways."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


def source(name: str) -> Path:
    """``plugins/<name>/plugin.py``."""
    return PLUGINS / name / "plugin.py"


def config(value: Any) -> str:
    """A plugin configuration as the JSON text a WasmPlugin's pluginConfig becomes."""
    return json.dumps(value)
