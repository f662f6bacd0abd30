"""Read an Envoy v3 bootstrap (YAML or JSON) into ``envoy.config.bootstrap.v3.Bootstrap``.

Parsing is done by protobuf's ``json_format``; when it fails, the failing field is
located again by walking the input next to the message descriptors, so the error
names an exact path such as ``static_resources.clusters[0].connect_timeout``.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from typing import Any

import yaml

# Importing these modules registers the message types that ``typed_config`` fields may carry.
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2 as _file_log_pb2  # noqa: F401
from envoy.extensions.access_loggers.stream.v3 import stream_pb2 as _stream_log_pb2  # noqa: F401
from envoy.extensions.filters.http.fault.v3 import fault_pb2 as _fault_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2 as _router_pb2  # noqa: F401
from envoy.extensions.filters.http.wasm.v3 import wasm_pb2 as _wasm_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2 as _hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2 as _tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as _hpo_pb2  # noqa: F401
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from ._errors import ConfigError, join_path

Bootstrap = bootstrap_pb2.Bootstrap

_WRAPPER_PACKAGE = "google.protobuf."
_TRAILING_LOCATION = re.compile(r"\.?\s+at\s+\"?[\w.\[\]]+\"?\.*$")


def parse_bootstrap_text(text: str, source: str = "<bootstrap>") -> Any:
    """Parse YAML or JSON text into a ``Bootstrap`` message; raise ``ConfigError`` naming the field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError("", f"{source}: not valid YAML/JSON{where}: {getattr(err, 'problem', err)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("", f"{source}: the bootstrap must be a mapping, got {type(data).__name__}")
    return parse_bootstrap_dict(data)


def parse_bootstrap_dict(data: dict[str, Any]) -> Any:
    """Parse a decoded YAML/JSON mapping into a ``Bootstrap`` message."""
    message = Bootstrap()
    _parse_into(data, message, "")
    return message


def parse_message_dict(data: Any, message: Message, path: str) -> None:
    """Parse ``data`` into ``message`` (any type), raising ``ConfigError`` under ``path``."""
    _parse_into(data, message, path)


def _parse_into(data: Any, message: Message, path: str) -> None:
    _register_types(data)
    try:
        json_format.ParseDict(_jsonable(data), message, ignore_unknown_fields=False)
    except (json_format.ParseError, TypeError, ValueError, AttributeError) as err:
        located = _locate(_jsonable(data), message.DESCRIPTOR, path)
        if located is not None:
            raise located from None
        raise ConfigError(path, _short_reason(str(err))) from None


def _register_types(data: Any) -> None:
    """Import the xds-protos modules of every ``@type`` in ``data`` that is not registered yet.

    So a known-but-unsupported extension parses and is then refused by name ("unsupported filter
    type ..."), instead of failing as an unknown type.
    """
    pool = descriptor_pool.Default()
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            type_url = item.get("@type")
            if isinstance(type_url, str):
                name = type_url.rsplit("/", 1)[-1]
                try:
                    pool.FindMessageTypeByName(name)
                except KeyError:
                    _import_package_of(name)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def register_any_types(message: Message) -> None:
    """Import the xds-protos modules of every ``Any`` nested in ``message`` (decoded from the wire).

    The binary counterpart of ``_register_types``: resources from xDS carry typed configs whose
    modules may not be imported yet; after this, they unpack and unknown ones are refused by name.
    """
    pool = descriptor_pool.Default()
    stack: list[Message] = [message]
    while stack:
        item = stack.pop()
        if item.DESCRIPTOR.full_name == "google.protobuf.Any":
            name = item.type_url.rsplit("/", 1)[-1]
            try:
                desc = pool.FindMessageTypeByName(name)
            except KeyError:
                _import_package_of(name)
                try:
                    desc = pool.FindMessageTypeByName(name)
                except KeyError:
                    continue
            inner = _message_class(desc)()
            if item.Unpack(inner):
                stack.append(inner)
            continue
        for field, value in item.ListFields():
            if field.message_type is None:
                continue
            if field.message_type.GetOptions().map_entry:
                stack.extend(v for v in value.values() if isinstance(v, Message))
            elif field.is_repeated:
                stack.extend(value)
            else:
                stack.append(value)


def _import_package_of(message_name: str) -> None:
    package = message_name.rsplit(".", 1)[0]
    try:
        module = importlib.import_module(package)
    except ImportError:
        return
    for directory in getattr(module, "__path__", []):
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for file_name in names:
            if file_name.endswith("_pb2.py"):
                try:
                    importlib.import_module(f"{package}.{file_name[:-3]}")
                except Exception:  # a broken generated module must not break config loading
                    continue


def _jsonable(data: Any) -> Any:
    """YAML may produce dates or other scalars that JSON parsing refuses; normalise them."""
    if isinstance(data, dict):
        return {str(k): _jsonable(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_jsonable(v) for v in data]
    if data is None or isinstance(data, str | int | float | bool):
        return data
    return str(data)


def _short_reason(text: str) -> str:
    """The innermost reason of a nested json_format error message."""
    reason = text.split("field: ")[-1]
    reason = _TRAILING_LOCATION.sub("", reason.split("\n")[0])
    return reason.rstrip(". ") or text


def _message_class(desc: Descriptor) -> Any:
    return message_factory.GetMessageClass(desc)


def _try_parse(data: Any, desc: Descriptor) -> Exception | None:
    try:
        json_format.ParseDict(data, _message_class(desc)(), ignore_unknown_fields=False)
    except (json_format.ParseError, TypeError, ValueError, AttributeError) as err:
        return err
    return None


def _locate(data: Any, desc: Descriptor, path: str) -> ConfigError | None:
    """Find the deepest field of ``data`` that makes parsing into ``desc`` fail."""
    if desc.full_name == "google.protobuf.Any":
        return _locate_any(data, path)
    if desc.full_name.startswith(_WRAPPER_PACKAGE):
        err = _try_parse(data, desc)
        return ConfigError(path, _short_reason(str(err))) if err is not None else None
    if not isinstance(data, dict):
        return ConfigError(path, f"expected a mapping for {desc.full_name}, got {type(data).__name__}")
    fields: dict[str, FieldDescriptor] = {}
    for field in desc.fields:
        fields[field.name] = field
        fields[field.json_name] = field
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            return ConfigError(join_path(path, key), f"unknown field for {desc.full_name}")
        field_path = join_path(path, field.name)
        if _try_parse({key: value}, desc) is None:
            continue
        located = _locate_field(field, value, field_path)
        if located is not None:
            return located
        err = _try_parse({key: value}, desc)
        return ConfigError(field_path, _short_reason(str(err)))
    oneof_err = _try_parse(data, desc)
    if oneof_err is not None:
        return ConfigError(path, _short_reason(str(oneof_err)))
    return None


def _locate_field(field: FieldDescriptor, value: Any, path: str) -> ConfigError | None:
    if field.message_type is None:
        return None
    is_map = field.message_type.GetOptions().map_entry
    if is_map:
        if not isinstance(value, dict):
            return ConfigError(path, "expected a mapping")
        value_field = field.message_type.fields_by_name["value"]
        for key, item in value.items():
            located = _locate_field(value_field, item, f"{path}[{key!r}]")
            if located is not None:
                return located
        return None
    if field.is_repeated:
        if not isinstance(value, list):
            return ConfigError(path, "expected a list")
        for index, item in enumerate(value):
            located = _locate(item, field.message_type, f"{path}[{index}]")
            if located is not None:
                return located
        return None
    return _locate(value, field.message_type, path)


def _locate_any(data: Any, path: str) -> ConfigError | None:
    if not isinstance(data, dict):
        return ConfigError(path, "expected a mapping with an '@type' key")
    type_url = data.get("@type")
    if not isinstance(type_url, str) or not type_url:
        return ConfigError(join_path(path, "@type"), "missing type URL")
    name = type_url.rsplit("/", 1)[-1]
    try:
        desc = descriptor_pool.Default().FindMessageTypeByName(name)
    except KeyError:
        return ConfigError(join_path(path, "@type"), f"unknown type {type_url}")
    body = {k: v for k, v in data.items() if k != "@type"}
    if desc.full_name.startswith(_WRAPPER_PACKAGE) and "value" in body:
        body = body["value"]
    return _locate(body, desc, path)


def dump_json(message: Message) -> str:
    """Serialise a message as Envoy-style JSON (for /config_dump)."""
    return json.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True), indent=2)
