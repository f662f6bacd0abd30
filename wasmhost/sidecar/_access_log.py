"""Access-log sinks: stdout, stderr or a file, written in batches (Envoy flushes every second).

An ``AccessLog`` may carry a ``filter``; the sidecar implements Envoy's CEL extension filter
(``envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter``), which is what the
control plane emits for a ``Telemetry`` ``accessLogging[].filter.expression``. The expression
is compiled when the configuration loads (``wasmhost.telemetry`` CEL subset: comparisons,
``response.code``, ``request.headers['x']``, ``&&``, ``||``, ``!``), and a refused one names
the field; at log time an expression that is not true (or fails) drops the line, as in Envoy.
Envoy's other native filter types (status code, duration, runtime ...) are refused by name.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any

from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2  # noqa: F401  (registers the type)

from ..telemetry import Expression, ExpressionError, compile_expression
from ._attributes import StreamAttributes
from ._config_support import unpack_any
from ._errors import ConfigError
from ._plan import AccessLogPlan

CEL_FILTER_TYPE = "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"


def access_log_filter(log: Any, path: str) -> Expression | None:
    """The compiled ``filter`` of one ``AccessLog`` (None: log every stream)."""
    if not log.HasField("filter"):
        return None
    which = log.filter.WhichOneof("filter_specifier")
    if which != "extension_filter":
        raise ConfigError(f"{path}.filter.{which}", "only the CEL extension filter "
                                                    f"({CEL_FILTER_TYPE}) is supported by the wasmesh sidecar")
    extension = log.filter.extension_filter
    where = f"{path}.filter.extension_filter.typed_config"
    if not extension.HasField("typed_config"):
        raise ConfigError(where, "a filter typed_config is required")
    config = unpack_any(extension.typed_config, where)
    if config.DESCRIPTOR.full_name != CEL_FILTER_TYPE:
        raise ConfigError(where, f"access-log filter {config.DESCRIPTOR.full_name} is not supported "
                                 f"(use {CEL_FILTER_TYPE})")
    try:
        return compile_expression(config.expression)
    except ExpressionError as err:
        raise ConfigError(f"{where}.expression", str(err)) from None


class AccessLogWriter:
    """Buffers formatted lines per target and writes them on ``flush()``."""

    def __init__(self) -> None:
        self._buffers: dict[str, list[str]] = {}
        self._files: dict[str, IO[str]] = {}

    def log(self, plans: tuple[AccessLogPlan, ...], stream: Any) -> None:
        request = stream.dec.headers
        response = stream.enc.headers
        trailers = stream.enc.trailers
        attributes: StreamAttributes | None = None
        for plan in plans:
            if plan.filter is not None:
                if attributes is None:
                    attributes = StreamAttributes(stream.info, request, response, trailers, None)
                if not plan.filter.truth(attributes):
                    continue
            line = plan.formatter.format(stream.info, request, response, trailers)
            buffer = self._buffers.get(plan.target)
            if buffer is None:
                buffer = self._buffers[plan.target] = []
            buffer.append(line)

    def flush(self) -> None:
        for target, lines in self._buffers.items():
            if not lines:
                continue
            text = "".join(lines)
            lines.clear()
            try:
                self._handle(target).write(text)
                self._handle(target).flush()
            except OSError as err:
                print(f"access log {target}: {err}", file=sys.stderr)

    def _handle(self, target: str) -> IO[str]:
        if target == "stdout":
            return sys.stdout
        if target == "stderr":
            return sys.stderr
        handle = self._files.get(target)
        if handle is None:
            directory = os.path.dirname(target)
            if directory:
                os.makedirs(directory, exist_ok=True)
            handle = self._files[target] = open(target, "a", encoding="utf-8")  # noqa: SIM115
        return handle

    def close(self) -> None:
        self.flush()
        for handle in self._files.values():
            handle.close()
        self._files.clear()


def _declare_supported() -> None:
    """Tell the config checker which access-log filter fields this module gives Envoy's meaning to."""
    from ._config_support import SUPPORTED

    access_log = "envoy.config.accesslog.v3.AccessLog"
    SUPPORTED[access_log] = SUPPORTED[access_log] | {"filter"}
    SUPPORTED.update({
        "envoy.config.accesslog.v3.AccessLogFilter": frozenset({"extension_filter"}),
        "envoy.config.accesslog.v3.ExtensionFilter": frozenset({"name", "typed_config"}),
        CEL_FILTER_TYPE: frozenset({"expression"}),
    })


_declare_supported()
