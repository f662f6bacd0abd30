"""A plugin that uses most host calls; driven identically in CPython and compiled."""

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
        headers = proxywasm.get_http_request_headers()
        proxywasm.log_info(f"{num_headers} headers, eos={end_of_stream}: {[k for k, _ in headers]}")
        proxywasm.add_http_request_header("x-added", self.plugin.greeting)
        proxywasm.replace_http_request_header("user-agent", "compiled")
        proxywasm.remove_http_request_header("x-remove-me")
        self.plugin.requests.increment(1)
        if self.path == "/deny":
            proxywasm.send_http_response(403, [("content-type", "text/plain"), ("x-why", "denied")], b"forbidden\n")
            return Action.PAUSE
        if self.path == "/call":
            proxywasm.dispatch_http_call(
                "auth", [(":method", "GET"), (":path", "/check"), (":authority", "auth")], b"", [], 500, self.on_auth
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

    def on_http_response_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        status = proxywasm.get_http_response_header(":status")
        proxywasm.add_http_response_header("x-served-by", f"ctx-{self.context_id}-{status}")
        self.plugin.latency.record(42)
        return Action.CONTINUE

    def on_http_response_body(self, body_size: int, end_of_stream: bool) -> Action:
        body = proxywasm.get_http_response_body(0, body_size)
        proxywasm.replace_http_response_body(body.replace(b"secret", b"******"))
        return Action.CONTINUE

    def on_http_request_trailers(self, num_trailers: int) -> Action:
        proxywasm.add_http_request_trailer("x-trailer", str(num_trailers))
        return Action.CONTINUE

    def on_http_stream_done(self) -> None:
        proxywasm.log_info(f"done {self.context_id} {self.path}")


class Plugin(PluginContext):
    def __init__(self) -> None:
        self.greeting = "hello"
        self.queue_id = 0
        self.requests = proxywasm.define_counter_metric("requests")
        self.active = proxywasm.define_gauge_metric("active")
        self.latency = proxywasm.define_histogram_metric("latency")

    def on_plugin_start(self, plugin_configuration_size: int) -> bool:
        config = proxywasm.get_plugin_configuration()
        for line in config.decode().split("\n"):
            if "=" in line:
                key, _, value = line.partition("=")
                if key.strip() == "greeting":
                    self.greeting = value.strip()
        proxywasm.set_tick_period_milliseconds(1000)
        self.queue_id = proxywasm.register_shared_queue("events")
        proxywasm.set_shared_data("counter", b"1", 0)
        stored, cas = proxywasm.get_shared_data("counter")
        proxywasm.set_shared_data("counter", stored + b"1", cas)
        try:
            proxywasm.set_shared_data("counter", b"stale", cas)
        except CasMismatchError:
            proxywasm.log_warn("cas mismatch as expected")
        try:
            proxywasm.get_property(["plugin_name"])
        except NotFoundError:
            proxywasm.log_info("no plugin_name property")
        proxywasm.set_property(["wasm", "state"], b"started")
        proxywasm.log_info(f"property {proxywasm.get_property(['wasm', 'state'])}")
        proxywasm.log_info(f"foreign {proxywasm.call_foreign_function('reverse', b'abc')}")
        proxywasm.log_info(f"time {proxywasm.get_current_time_nanoseconds() // 1000000000}")
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
