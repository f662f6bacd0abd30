"""CPython mode of sdk.testing: a plugin's source driven through the real host, agreeing with its .wasm."""

from __future__ import annotations

import textwrap
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sdk.testing import (
    MODES,
    Action,
    FailurePolicy,
    HostEmulator,
    PluginLoader,
    assert_modes_agree,
    plugin_fixture,
)
from wasmhost import DEFAULT_LIMITS

COMPILER_PLUGINS = Path(__file__).parent / "compiler" / "plugins"

configured = plugin_fixture(COMPILER_PLUGINS / "configured_header.py", name="configured")

HEADER = """
from sdk import proxywasm
from sdk.types import Action, HttpContext, PluginContext, VMContext

"""
FOOTER = """

class Plugin(PluginContext):
    def new_http_context(self, context_id: int) -> HttpContext:
        return Http()


class VM(VMContext):
    def new_plugin_context(self, context_id: int) -> PluginContext:
        return Plugin()


proxywasm.set_vm_context(VM())
"""


def write_plugin(tmp_path: Path, body: str, name: str = "plugin.py") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + textwrap.dedent(body) + FOOTER)
    return path


# -- the fixture: one test, both modes ---------------------------------------------------------------


def test_the_fixture_runs_each_test_in_both_modes(configured: PluginLoader, request: pytest.FixtureRequest) -> None:
    host = configured(plugin_config='{"header": "x-seen"}')
    assert host.mode == configured.mode == request.node.callspec.params["configured"]
    assert (host.python is not None) == (host.mode == "python")
    stream = host.initialize_http_context()
    assert host.call_on_request_headers(stream, {":path": "/a", "x-q": "1"}, True) is Action.CONTINUE
    assert host.current_request_headers(stream) == [(":path", "/a"), ("x-q", "1"), ("x-seen", "2")]
    denied = host.initialize_http_context()
    assert host.call_on_request_headers(denied, {":path": "/deny"}, True) is Action.PAUSE
    reply = host.local_response(denied)
    assert reply is not None and (reply.status, reply.headers, reply.body) == (403, [("x-why", "denied")], b"no\n")
    assert host.logs("info") == ["configured header x-seen", "request /a"]


# -- agreement on a plugin that uses most host calls ---------------------------------------------------

TOUR = """
from sdk import proxywasm
from sdk.errors import CasMismatchError, EmptyError, NotFoundError
from sdk.types import Action, HttpContext, PluginContext, VMContext


class Http(HttpContext):
    def __init__(self, plugin: "Plugin", context_id: int) -> None:
        self.plugin = plugin
        self.context_id = context_id
        self.path = ""

    def on_http_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        self.path = proxywasm.get_http_request_header(":path")
        try:
            proxywasm.get_http_request_header("x-missing")
        except NotFoundError as err:
            proxywasm.log_debug(f"missing header: status {err.status}")
        names = [k for k, _ in proxywasm.get_http_request_headers()]
        proxywasm.log_info(f"{num_headers} headers, eos={end_of_stream}: {names}")
        proxywasm.add_http_request_header("x-added", self.plugin.greeting)
        proxywasm.replace_http_request_header("user-agent", "tour")
        proxywasm.remove_http_request_header("x-remove-me")
        self.plugin.requests.increment(1)
        source = proxywasm.get_property(["source", "address"])
        proxywasm.log_info(f"from {source}")
        if self.path == "/deny":
            proxywasm.send_http_response(403, [("x-why", "denied")], b"forbidden")
            return Action.PAUSE
        if self.path == "/call":
            proxywasm.dispatch_http_call(
                "auth", [(":method", "GET"), (":path", "/check"), (":authority", "auth")], b"q", [], 500, self.on_auth
            )
            return Action.PAUSE
        if self.path == "/rewrite":
            everything = proxywasm.get_http_request_headers()
            everything.append(("x-rewritten", str(len(everything))))
            proxywasm.replace_http_request_headers(everything)
        return Action.CONTINUE

    def on_auth(self, num_headers: int, body_size: int, num_trailers: int) -> None:
        headers = proxywasm.get_http_call_response_headers()
        body = proxywasm.get_http_call_response_body(0, body_size)
        proxywasm.log_info(f"auth answered {num_headers} {body_size} {headers} {body}")
        proxywasm.add_http_request_header("x-auth", body.decode())
        proxywasm.resume_http_request()

    def on_http_request_body(self, body_size: int, end_of_stream: bool) -> Action:
        if not end_of_stream:
            return Action.PAUSE
        body = proxywasm.get_http_request_body(0, body_size)
        proxywasm.replace_http_request_body(body.upper())
        proxywasm.append_http_request_body(b"!")
        proxywasm.prepend_http_request_body(b">")
        return Action.CONTINUE

    def on_http_request_trailers(self, num_trailers: int) -> Action:
        proxywasm.add_http_request_trailer("x-trailer", str(num_trailers))
        return Action.CONTINUE

    def on_http_response_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        status = proxywasm.get_http_response_header(":status")
        proxywasm.add_http_response_header("x-served-by", f"ctx-{self.context_id}-{status}")
        self.plugin.latency.record(42)
        return Action.CONTINUE

    def on_http_response_body(self, body_size: int, end_of_stream: bool) -> Action:
        body = proxywasm.get_http_response_body(0, body_size)
        proxywasm.replace_http_response_body(body.replace(b"secret", b"******"))
        return Action.CONTINUE

    def on_http_stream_done(self) -> None:
        proxywasm.log_info(f"done {self.context_id} {self.path}")


class Plugin(PluginContext):
    def __init__(self) -> None:
        self.greeting = "hello"
        self.queue_id = 0
        self.requests = proxywasm.define_counter_metric("tour_requests")
        self.active = proxywasm.define_gauge_metric("tour_active")
        self.latency = proxywasm.define_histogram_metric("tour_latency")

    def on_plugin_start(self, plugin_configuration_size: int) -> bool:
        self.greeting = proxywasm.get_plugin_configuration().decode().strip()
        proxywasm.set_tick_period_milliseconds(1000)
        self.queue_id = proxywasm.register_shared_queue("events")
        proxywasm.set_shared_data("counter", b"1", 0)
        stored, cas = proxywasm.get_shared_data("counter")
        proxywasm.set_shared_data("counter", stored + b"1", cas)
        try:
            proxywasm.set_shared_data("counter", b"stale", cas)
        except CasMismatchError:
            proxywasm.log_warn("cas mismatch as expected")
        proxywasm.log_info(f"plugin {proxywasm.get_property(['plugin_name'])}")
        proxywasm.log_info(f"foreign {proxywasm.call_foreign_function('reverse', b'abc')}")
        self.active.add(3)
        self.active.add(-1)
        proxywasm.log_info(f"gauge {self.active.value()} counter {self.requests.value()}")
        return True

    def new_http_context(self, context_id: int) -> HttpContext:
        return Http(self, context_id)

    def on_tick(self) -> None:
        proxywasm.enqueue_shared_queue(self.queue_id, b"tick")
        try:
            while True:
                item = proxywasm.dequeue_shared_queue(self.queue_id)
                proxywasm.log_info(f"dequeued {item}")
        except EmptyError:
            proxywasm.log_trace("queue drained")

    def on_queue_ready(self, queue_id: int) -> None:
        proxywasm.log_info(f"queue {queue_id} ready")


class VM(VMContext):
    def on_vm_start(self, vm_configuration_size: int) -> bool:
        proxywasm.log_info(f"vm config {proxywasm.get_vm_configuration()} ({vm_configuration_size} bytes)")
        return True

    def new_plugin_context(self, context_id: int) -> PluginContext:
        return Plugin()


proxywasm.set_vm_context(VM())
"""


def hostcalls_scenario(host: HostEmulator) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    plain = host.initialize_http_context()
    seen["plain"] = host.call_on_request_headers(
        plain, [(":path", "/"), ("user-agent", "curl"), ("x-remove-me", "1")], False
    )
    seen["body"] = [host.call_on_request_body(plain, b"ab", False), host.call_on_request_body(plain, b"c", True)]
    seen["request"] = (host.current_request_headers(plain), host.current_request_body(plain))
    host.call_on_response_headers(plain, {":status": "200"}, False)
    host.call_on_response_body(plain, b"a secret", True)
    seen["response"] = (host.current_response_headers(plain), host.current_response_body(plain))
    host.complete_http_context(plain)

    with_trailers = host.initialize_http_context()
    host.call_on_request_headers(with_trailers, {":path": "/t"}, False)
    host.call_on_request_trailers(with_trailers, {"x-t": "1"})
    seen["trailers"] = host.current_request_trailers(with_trailers)

    denied = host.initialize_http_context()
    seen["denied"] = (host.call_on_request_headers(denied, {":path": "/deny"}, True), host.local_response(denied))

    called = host.initialize_http_context()
    seen["call"] = host.call_on_request_headers(called, {":path": "/call"}, True)
    [callout] = host.pending_callouts()
    seen["callout"] = (callout.cluster, callout.headers, callout.body, callout.timeout_ms)
    host.answer_callout(callout.token, 200, {"x-a": "1"}, b"granted")
    seen["after_call"] = (host.is_paused(called), host.current_request_headers(called))

    rewritten = host.initialize_http_context()
    host.call_on_request_headers(rewritten, {":path": "/rewrite", "a": "1"}, True)
    seen["rewrite"] = host.current_request_headers(rewritten)

    seen["ticks"] = host.advance_time(2500)
    seen["shared"] = host.shared_data("counter")
    return seen


def test_both_modes_agree_on_every_host_call(tmp_path: Path) -> None:
    source = tmp_path / "tour.py"
    source.write_text(TOUR)
    seen = assert_modes_agree(
        source,
        hostcalls_scenario,
        name="tour",
        plugin_config="hi",
        vm_config="vm!",
        properties={"source.address": "10.1.2.3:4567"},
        foreign_functions={"reverse": lambda data: data[::-1]},
    )
    # spot checks that the scenario did reach the plugin (agreement alone could be vacuous)
    assert ("x-added", "hi") in seen["request"][0]
    assert seen["request"][1] == b">ABC!"
    assert seen["response"][1] == b"a ******"
    assert seen["trailers"] == [("x-t", "1"), ("x-trailer", "1")]
    assert seen["denied"][1].status == 403
    assert ("x-auth", "granted") in seen["after_call"][1]
    assert seen["ticks"] == 2
    assert seen["shared"] == b"11"


def test_disagreement_is_reported(tmp_path: Path) -> None:
    """Something only CPython can do (read the real clock) makes the modes differ, and the helper says so."""
    source = write_plugin(tmp_path, """
        class Http(HttpContext):
            def on_http_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
                proxywasm.log_info("hello")
                return Action.CONTINUE
    """)

    def scenario(host: HostEmulator) -> str:
        host.call_on_request_headers(host.initialize_http_context(), {}, True)
        return host.mode

    with pytest.raises(AssertionError, match="the modes disagree on result"):
        assert_modes_agree(source, scenario)


# -- CPython mode specifics ----------------------------------------------------------------------------


def test_an_exception_traps_like_the_module_and_keeps_its_traceback(tmp_path: Path, capsys: Any) -> None:
    source = write_plugin(tmp_path, """
        class Http(HttpContext):
            def on_http_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
                value = proxywasm.get_http_request_header("x-needed")
                proxywasm.log_info(value)
                return Action.CONTINUE
    """)
    outcomes = []
    for mode in MODES:
        loader = PluginLoader(source, mode)
        try:
            host = loader()
            stream = host.initialize_http_context()
            action = host.call_on_request_headers(stream, {}, True)
            reply = host.local_response(stream)
            outcomes.append((action, reply.status if reply else None, host.logs(), host.trap is not None))
            if mode == "python":
                [error] = host.python_errors
                assert host.trap is not None
                assert host.trap.endswith("(Python: NotFoundError: proxy_get_header_map_value: NOT_FOUND)")
                frames = traceback.extract_tb(error.__traceback__)
                assert any(f.filename == str(source) and f.line and "x-needed" in f.line for f in frames)
        finally:
            loader.close()
    assert outcomes[0] == outcomes[1]
    assert outcomes[0] == (
        Action.PAUSE,
        503,
        ["uncaught exception NotFoundError: proxy_get_header_map_value: NOT_FOUND"],
        True,
    )
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_a_broken_source_fails_at_load_with_a_python_error(tmp_path: Path) -> None:
    broken = tmp_path / "plugin.py"
    broken.write_text("from sdk import proxywasm\n\ndef oops(:\n")
    with pytest.raises(SyntaxError):
        HostEmulator.load(broken)


def test_host_calls_at_import_time_name_the_missing_host(tmp_path: Path) -> None:
    source = tmp_path / "plugin.py"
    source.write_text("from sdk import proxywasm\nproxywasm.log_info('too early')\n")
    with pytest.raises(RuntimeError, match="no proxy-wasm host is bound"):
        HostEmulator.load_python(source)


COUNTER = """
    requests = 0


    class Http(HttpContext):
        def on_http_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
            global requests
            requests += 1
            proxywasm.add_http_request_header("x-count", str(requests))
            if proxywasm.get_http_request_header(":path") == "/crash":
                raise ValueError("crash requested")
            return Action.CONTINUE
"""


def test_emulators_in_cpython_mode_keep_their_own_state(tmp_path: Path) -> None:
    source = write_plugin(tmp_path, COUNTER)
    with HostEmulator.load(source) as first, HostEmulator.load(source) as second:
        first.start_plugin()
        second.start_plugin()
        counts = []
        for host in (first, first, second, first, second):
            stream = host.initialize_http_context()
            host.call_on_request_headers(stream, {":path": "/"}, True)
            counts.append(dict(host.current_request_headers(stream))["x-count"])
        assert counts == ["1", "2", "1", "3", "2"]


@pytest.mark.parametrize("mode", MODES)
def test_a_rebuilt_vm_starts_from_fresh_module_state(tmp_path: Path, mode: str) -> None:
    loader = PluginLoader(write_plugin(tmp_path, COUNTER), mode)
    try:
        no_backoff = replace(DEFAULT_LIMITS, reload_backoff_initial_s=0.0, reload_backoff_max_s=0.0)
        host = loader(failure_policy=FailurePolicy.FAIL_RELOAD, limits=no_backoff)
        paths = ["/", "/", "/crash", "/", "/"]
        seen = []
        for path in paths:
            stream = host.initialize_http_context()
            host.call_on_request_headers(stream, {":path": path}, True)
            reply = host.local_response(stream)
            seen.append(reply.status if reply else dict(host.current_request_headers(stream))["x-count"])
        assert seen == ["1", "2", 503, "1", "2"]
    finally:
        loader.close()


def test_a_slow_callback_is_not_cut_off_in_cpython_mode(tmp_path: Path) -> None:
    """A breakpoint or a slow first import must not trip the 100 ms deadline real plugins get."""
    source = tmp_path / "plugin.py"
    source.write_text(HEADER + textwrap.dedent("""
        import time


        class Http(HttpContext):
            def on_http_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
                time.sleep(0.3)
                return Action.CONTINUE
    """) + FOOTER)
    with HostEmulator.load(source) as host:
        host.start_plugin()
        stream = host.initialize_http_context()
        assert host.call_on_request_headers(stream, {}, True) is Action.CONTINUE
        assert host.trap is None
