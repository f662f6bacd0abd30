"""sdk.config: the configuration read at start, both ways (CPython source and compiled module)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdk.config import field_names
from sdk.testing import PluginLoader, PluginStartError, plugin_fixture

plugin = plugin_fixture(Path(__file__).parent / "compiler" / "plugins" / "config_fields.py")


def greeting_sent(loader: PluginLoader, config: str, vm_config: str = "") -> str:
    host = loader(plugin_config=config, vm_config=vm_config)
    stream = host.initialize_http_context()
    host.call_on_request_headers(stream, {":path": "/"}, True)
    return dict(host.current_request_headers(stream))["x-greeting"]


def refusal(loader: PluginLoader, config: str, vm_config: str = "") -> list[str]:
    host = loader(plugin_config=config, vm_config=vm_config, start=False)
    with pytest.raises(PluginStartError):
        host.start_plugin()
    return host.logs("error")


def test_a_valid_configuration_reaches_configure(plugin: PluginLoader) -> None:
    assert greeting_sent(plugin, '{"greeting": "hi", "repeat": 2}') == "hihi"


@pytest.mark.parametrize("empty", ["", "  \n"])
def test_an_empty_configuration_means_defaults_unless_refused(plugin: PluginLoader, empty: str) -> None:
    assert greeting_sent(plugin, empty) == "hello"
    assert refusal(plugin, empty, vm_config="strict") == [
        f"config_fields: invalid JSON at offset {len(empty)}: unexpected end"
    ]


@pytest.mark.parametrize(("config", "message"), [
    ("[1]", "configuration: expected a JSON object"),
    ('"greeting"', "configuration: expected a JSON object"),
    ('{"greeting": "hi", "repeats": 2}', "repeats: unknown field (use greeting or repeat)"),
    ('{"greeting": 1}', "greeting: expected a string"),
    ('{"repeat": 4}', "repeat: expected an integer from 1 to 3"),
    ('{"greeting": ', "invalid JSON at offset 13: unexpected end"),
])
def test_a_bad_configuration_is_logged_once_and_refused(plugin: PluginLoader, config: str, message: str) -> None:
    assert refusal(plugin, config) == [f"config_fields: {message}"]


def test_field_names_read_as_a_list() -> None:
    assert field_names(["a"]) == "a"
    assert field_names(["a", "b"]) == "a or b"
    assert field_names(["a", "b", "c"]) == "a, b, c"
