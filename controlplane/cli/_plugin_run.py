"""``wasmesh plugin run``: test any proxy-wasm module without a proxy.

Starts the plugin in the real host (``wasmhost``), sends one request through its request
callbacks and, unless the plugin answered itself, the scripted upstream response through
its response callbacks. Callouts are answered from ``--callout``; ``--json`` prints one
object (``upstream_request``, ``response``, ``callouts``, ``logs``, ``metrics``, ``trap``),
otherwise a readable transcript. Input that cannot be used — a missing or invalid
module, a malformed flag, a plugin that refuses to start — is one line on stderr and
exit status 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controlplane.cli import UsageError

if TYPE_CHECKING:
    from wasmhost import RunRequest, RunResult

_LOG_LEVELS = ("trace", "debug", "info", "warn", "error", "critical")
_POLICIES = ("FAIL_CLOSED", "FAIL_OPEN", "FAIL_RELOAD")


def register_plugin(plugin_subparsers: Any) -> None:
    """Add ``run`` under ``wasmesh plugin``."""
    parser = plugin_subparsers.add_parser(
        "run",
        help="run one request through a .wasm plugin, without a proxy",
        description="Start a proxy-wasm plugin, send one request (and the upstream's response) "
        "through it, and show what went upstream, what the client got, callouts, logs, metrics "
        "and any trap.",
    )
    parser.add_argument("module", metavar="MODULE.wasm", help="the proxy-wasm module to run")
    plugin = parser.add_argument_group("plugin")
    plugin.add_argument("--root-id", default="", metavar="ID", help="root context id (default: empty)")
    config = plugin.add_mutually_exclusive_group()
    config.add_argument("--config", metavar="TEXT", help="plugin configuration, verbatim")
    config.add_argument("--config-file", metavar="F", help="read the plugin configuration from file F")
    plugin.add_argument("--vm-config", default="", metavar="TEXT", help="VM configuration, verbatim")
    policy = plugin.add_mutually_exclusive_group()
    policy.add_argument(
        "--fail-open", action="store_true",
        help="Envoy's fail_open: true (FAIL_OPEN that also passes the stream that met the failure)",
    )
    policy.add_argument(
        "--failure-policy", type=str.upper, choices=_POLICIES, metavar="POLICY",
        help="what a stream gets once the plugin's VM has failed: FAIL_CLOSED (503, default), FAIL_OPEN "
        "(skip the plugin), FAIL_RELOAD",
    )
    plugin.add_argument(
        "--log-level", type=str.lower, choices=_LOG_LEVELS, default="trace", metavar="LEVEL",
        help="the proxy's log level the plugin sees; lower logs are dropped (default: trace)",
    )
    plugin.add_argument(
        "--property", action="append", default=[], metavar="PATH=VALUE",
        help="serve a property, e.g. source.address=10.0.0.1:5000 or node.metadata.NAMESPACE=default",
    )
    request = parser.add_argument_group("request")
    request.add_argument("--method", default="GET", metavar="M", help="default: GET")
    request.add_argument("--path", default="/", metavar="P", help="path and query (default: /)")
    request.add_argument("--authority", default="example.com", metavar="A", help="default: example.com")
    request.add_argument(
        "-H", "--header", action="append", default=[], metavar="'name: value'", help="request header (repeatable)"
    )
    request.add_argument("--body", default="", metavar="TEXT", help="request body")
    upstream = parser.add_argument_group("upstream")
    upstream.add_argument("--response-status", type=int, default=200, metavar="N", help="default: 200")
    upstream.add_argument(
        "--response-header", action="append", default=[], metavar="'name: value'", help="repeatable"
    )
    upstream.add_argument("--response-body", default="", metavar="TEXT")
    upstream.add_argument(
        "--callout", action="append", default=[], metavar="CLUSTER=STATUS[:BODY]",
        help="answer every callout to CLUSTER with STATUS and BODY; other clusters do not exist",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a transcript")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from wasmhost import PluginRunError, run_request

    request = build_request(args)
    try:
        result = run_request(request)
    except PluginRunError as err:
        raise UsageError(f"{args.module}: {_one_line(str(err))}") from None
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        print_transcript(args.module, request, result)
    return 0


def build_request(args: argparse.Namespace) -> RunRequest:
    """Turn parsed flags into a RunRequest; every malformed value is a UsageError naming it."""
    from wasmhost import CalloutAnswer, FailurePolicy, LogLevel, RunRequest

    module = _read_file(args.module, "module")
    if args.config_file is not None:
        configuration = _read_file(args.config_file, "--config-file")
    else:
        configuration = (args.config or "").encode()
    if args.fail_open:
        policy = FailurePolicy.FAIL_OPEN
    else:
        policy = FailurePolicy(args.failure_policy or "FAIL_CLOSED")
    authority = args.authority
    headers: list[tuple[str, str]] = []
    for raw in args.header:
        name, value = _header(raw, "-H")
        if name == "host":
            authority = value  # HTTP/1.1 carries :authority as host
        else:
            headers.append((name, value))
    if not 100 <= args.response_status <= 999:
        raise UsageError(f"--response-status {args.response_status}: expected an HTTP status 100-999")
    return RunRequest(
        module=module,
        name=Path(args.module).stem,
        root_id=args.root_id,
        configuration=configuration,
        vm_configuration=args.vm_config.encode(),
        failure_policy=policy,
        fail_open=args.fail_open,
        log_level=LogLevel[args.log_level.upper()],
        method=args.method,
        path=args.path,
        authority=authority,
        headers=tuple(headers),
        body=args.body.encode(),
        response_status=args.response_status,
        response_headers=tuple(_header(raw, "--response-header") for raw in args.response_header),
        response_body=args.response_body.encode(),
        callouts={cluster: CalloutAnswer(status, body) for cluster, status, body in _callouts(args.callout)},
        properties=_properties(args.property),
    )


def _read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file ({what})") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a file ({what})") from None
    except OSError as err:
        raise UsageError(f"{path}: cannot read ({what}): {err.strerror}") from None


def _header(raw: str, flag: str) -> tuple[str, str]:
    """``'name: value'``; a pseudo-header keeps its leading colon (``':path: /x'``)."""
    start = 1 if raw.startswith(":") else 0
    colon = raw.find(":", start)
    name = raw[:colon].strip().lower() if colon > 0 else ""
    if not name or any(c.isspace() for c in name) or name == ":":
        raise UsageError(f"{flag} {raw!r}: expected 'name: value'")
    return name, raw[colon + 1 :].strip()


def _callouts(values: list[str]) -> list[tuple[str, int, bytes]]:
    out: list[tuple[str, int, bytes]] = []
    seen: set[str] = set()
    for raw in values:
        cluster, eq, answer = raw.partition("=")
        status_text, _, body = answer.partition(":")
        if not eq or not cluster or not status_text.isdigit() or not 100 <= int(status_text) <= 999:
            raise UsageError(f"--callout {raw!r}: expected CLUSTER=STATUS[:BODY] with STATUS 100-999")
        if cluster in seen:
            raise UsageError(f"--callout {raw!r}: cluster {cluster!r} is given twice")
        seen.add(cluster)
        out.append((cluster, int(status_text), body.encode()))
    return out


def _properties(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in values:
        path, eq, value = raw.partition("=")
        if not eq or not path:
            raise UsageError(f"--property {raw!r}: expected PATH=VALUE")
        if path in out:
            raise UsageError(f"--property {raw!r}: {path} is given twice")
        out[path] = value
    return out


def _one_line(message: str) -> str:
    return " ".join(message.split())


__all__ = ["build_request", "register_plugin"]


# -- transcript ------------------------------------------------------------------------------------
_LEVEL_STYLES = {
    "trace": "dim",
    "debug": "cyan",
    "info": "green",
    "warn": "yellow",
    "error": "red",
    "critical": "bold red",
}


def print_transcript(module_path: str, request: RunRequest, result: RunResult, console: Any = None) -> None:
    """The run as a person reads it: request in, upstream, response out, then the side effects.

    Header lines the plugin added or changed are marked ``+``, ones it removed ``-``.
    """
    from rich.console import Console
    from rich.text import Text

    out = console or Console(highlight=False, soft_wrap=True)
    out.rule(Text(f"plugin {module_path}", style="bold"))
    out.print(
        Text(
            f"ABI {result.abi} · root id {request.root_id or '(empty)'} · {request.failure_policy.value}"
            f" · log level {request.log_level.name.lower()}",
            style="dim",
        )
    )
    out.rule("request in")
    out.print(Text(f"{request.method} {request.path}", style="bold"), Text(f"(authority {request.authority})"))
    _print_headers(out, list(request.headers))
    _print_body(out, request.body)

    out.rule("went upstream")
    upstream = result.upstream_request
    if upstream is None:
        out.print(Text("nothing: the request never reached the upstream", style="yellow"))
    else:
        before = result.request_in.headers if result.request_in is not None else upstream.headers
        _print_headers(out, upstream.headers, before)
        _print_body(out, upstream.body)

    out.rule("response out")
    response = result.response
    if response is None:
        out.print(Text("none: the stream was reset, the client gets no response", style="red"))
    else:
        if response.details:
            origin, before = f"local reply, details {response.details}", []
        else:
            origin = "from the upstream"
            before = [(k, v) for k, v in (result.upstream_response.headers if result.upstream_response else [])
                      if not k.startswith(":")]
        out.print(Text(str(response.status), style="bold"), Text(f"({origin})"))
        _print_headers(out, response.headers, before)
        _print_body(out, response.body)

    if result.callouts:
        out.rule(f"callouts ({len(result.callouts)})")
        for callout in result.callouts:
            line = Text("→ ", style="dim")
            line.append(callout.cluster, style="bold")
            line.append(f" ({callout.kind})", style="dim")
            out.print(line)
            _print_headers(out, callout.headers)
            _print_body(out, callout.body)
    out.rule(f"logs ({len(result.logs)})")
    for record in result.logs:
        line = Text(f"{record.level_name:<8} ", style=_LEVEL_STYLES.get(record.level_name, ""))
        line.append(_printable(record.message))
        out.print(line)
    if result.metrics:
        out.rule("metrics")
        for name, value in sorted(result.metrics.items()):
            out.print(Text(f"  {name} = {value}"))
    if result.ticks:
        out.print(Text(f"{result.ticks} tick(s) fired while the stream waited", style="dim"))
    out.rule("trap")
    out.print(Text("none", style="green") if result.trap is None else Text(result.trap, style="bold red"))


def _print_headers(
    out: Any, headers: list[tuple[str, str]], before: list[tuple[str, str]] | None = None
) -> None:
    """One line per header; with ``before``, mark what the plugin added (+) or removed (-)."""
    from rich.text import Text

    remaining = list(before) if before is not None else None
    for name, value in headers:
        mark, style = "  ", ""
        if remaining is not None:
            if (name, value) in remaining:
                remaining.remove((name, value))
            else:
                mark, style = "+ ", "green"
        line = Text(mark, style=style)
        line.append(_printable(name), style="bold " + style)
        line.append(f": {_printable(value)}", style=style)
        out.print(line)
    for name, value in remaining or []:
        out.print(Text(f"- {_printable(name)}: {_printable(value)}", style="red"))


def _print_body(out: Any, body: bytes) -> None:
    from rich.text import Text

    if body:
        out.print(Text("  body: ", style="dim") + Text(_printable(body.decode("utf-8", "replace"))))
    else:
        out.print(Text("  (no body)", style="dim"))


def _printable(text: str) -> str:
    """Control characters (a plugin may log binary) as escapes, so the terminal stays sane."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
