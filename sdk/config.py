"""Reading a plugin's JSON configuration at start: the part every plugin would repeat.

A plugin names its top-level fields and writes one ``configure(config)`` method that reads
them and raises ``ConfigError("<field>: <reason>")`` for a wrong value; ``start_with_config``
does the rest — parse, refuse a non-object or an unknown field, log the first error as
``<plugin>: <message>`` and tell the host whether the plugin started::

    FIELDS = ["header", "rules"]

    class Plugin(PluginContext):
        def configure(self, config: JsonValue) -> None:
            ...

        def on_plugin_start(self, plugin_configuration_size: int) -> bool:
            return start_with_config(NAME, FIELDS, self.configure)

Written in the compilable subset, so the same checks run in CPython and compiled.
"""

from __future__ import annotations

from collections.abc import Callable

from sdk import proxywasm
from sdk.jsonvalue import JsonError, JsonValue, parse_json


class ConfigError(Exception):
    """The configuration names a field that is wrong, and why."""


def field_names(names: list[str]) -> str:
    """The accepted fields as an error message lists them ("a or b", "a, b, c")."""
    if len(names) == 2:
        return f"{names[0]} or {names[1]}"
    return ", ".join(names)


def check_fields(config: JsonValue, known: list[str]) -> None:
    """Refuse a configuration that is not a JSON object or has a field outside ``known``."""
    if config.kind != "object":
        raise ConfigError("configuration: expected a JSON object")
    for key in config.keys():
        if key not in known:
            raise ConfigError(f"{key}: unknown field (use {field_names(known)})")


def start_with_config(
    plugin: str, known: list[str], configure: Callable[[JsonValue], None], empty_is_defaults: bool = True
) -> bool:
    """Parse the plugin configuration, check its fields, hand it to ``configure``.

    Returns whether the plugin may start; on a JSON or configuration error, logs
    ``<plugin>: <error>`` at error level first. With ``empty_is_defaults`` an empty (or blank)
    configuration reads as ``{}``; without it, it is invalid JSON like any other.
    """
    data = proxywasm.get_plugin_configuration()
    if empty_is_defaults and data.strip() == b"":
        data = b"{}"
    try:
        config = parse_json(data)
        check_fields(config, known)
        configure(config)
    except (JsonError, ConfigError) as err:
        proxywasm.log_error(f"{plugin}: {err}")
        return False
    return True
