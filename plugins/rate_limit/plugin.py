"""rate_limit: a local token bucket kept in shared data, refilled on the tick, answering 429.

Configuration (JSON)::

    {
      "max_tokens": 100,
      "tokens_per_fill": 10,
      "fill_interval_ms": 1000,
      "key_header": "x-user",
      "max_keys": 1000,
      "domain": "default"
    }

Every request takes one token from its bucket (one bucket, or one per value of
``key_header``); an empty bucket answers ``429`` with ``retry-after`` (seconds until the
next fill). Buckets live in shared data, so every worker (and every plugin instance with
the same vm_id) draws from the same tokens; updates use compare-and-swap and retry when
another worker got there first. The tick adds ``tokens_per_fill`` per elapsed interval,
counted from the bucket's own last fill, so several workers ticking refill it once.
"""

from __future__ import annotations

from sdk import proxywasm
from sdk.config import ConfigError, start_with_config
from sdk.errors import CasMismatchError, NotFoundError
from sdk.jsonvalue import JsonValue
from sdk.types import Action, HttpContext, PluginContext, VMContext

NAME = "rate_limit"
FIELDS = ["max_tokens", "tokens_per_fill", "fill_interval_ms", "key_header", "max_keys", "domain", "status", "body"]
CAS_ATTEMPTS = 16
OVERFLOW = "*"  # the shared bucket of keys beyond max_keys


class Bucket:
    """Tokens left and when the bucket was last filled (host clock, ns), with its CAS token."""

    def __init__(self, tokens: int, last_fill_ns: int, cas: int) -> None:
        self.tokens = tokens
        self.last_fill_ns = last_fill_ns
        self.cas = cas

    def encode(self) -> bytes:
        return f"{self.tokens} {self.last_fill_ns}".encode()


def decode_bucket(data: bytes, cas: int, now: int, interval_ns: int) -> Bucket:
    """The stored bucket; one nobody can read (written by something else) counts as empty
    and due for a fill."""
    tokens, _, last = data.decode("utf-8", "replace").partition(" ")
    try:
        return Bucket(int(tokens), int(last), cas)
    except ValueError:
        return Bucket(0, now - interval_ns, cas)


def split_index(data: bytes) -> list[str]:
    """The index holds one bucket name per line, each line ended by a newline."""
    lines = data.decode("utf-8", "replace").split("\n")
    return lines[: len(lines) - 1]


class Http(HttpContext):
    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin

    def on_http_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        plugin = self.plugin
        name = ""
        if plugin.key_header != "":
            try:
                name = proxywasm.get_http_request_header(plugin.key_header)
            except NotFoundError:
                name = ""
        wait_ns = plugin.take(name)
        if wait_ns < 0:
            return Action.CONTINUE
        seconds = (wait_ns + 999_999_999) // 1_000_000_000
        if seconds < 1:
            seconds = 1
        proxywasm.log_debug(f"{NAME}: bucket {name!r} is empty")
        proxywasm.send_http_response(plugin.status, [("retry-after", str(seconds))], plugin.body.encode())
        return Action.PAUSE


class Plugin(PluginContext):
    def __init__(self) -> None:
        self.max_tokens = 100
        self.tokens_per_fill = 100
        self.fill_interval_ms = 1000
        self.key_header = ""
        self.max_keys = 1000
        self.domain = "default"
        self.status = 429
        self.body = "rate limited\n"
        self.started_ns = 0

    # -- shared data ---------------------------------------------------------------------
    def key(self, name: str) -> str:
        return f"{NAME}:{self.domain}:bucket:{name}"

    def index_key(self) -> str:
        return f"{NAME}:{self.domain}:buckets"

    def interval_ns(self) -> int:
        return self.fill_interval_ms * 1_000_000

    def bucket_names(self) -> list[str]:
        try:
            data, _ = proxywasm.get_shared_data(self.index_key())
        except NotFoundError:
            return []
        return split_index(data)

    def register(self, name: str) -> str:
        """Add ``name`` to the index of buckets the tick refills; the overflow bucket when full."""
        for _ in range(CAS_ATTEMPTS):
            names: list[str] = []
            cas = 0
            try:
                data, cas = proxywasm.get_shared_data(self.index_key())
                names = split_index(data)
            except NotFoundError:
                cas = 0
            if name in names:
                return name
            if len(names) >= self.max_keys and name != OVERFLOW:
                name = OVERFLOW
                if name in names:
                    return name
            names.append(name)
            try:
                proxywasm.set_shared_data(self.index_key(), "".join([n + "\n" for n in names]).encode(), cas)
                return name
            except CasMismatchError:
                continue
        return name

    def take(self, name: str) -> int:
        """Take a token from bucket ``name``: -1 when granted, else ns until the next fill."""
        if "\n" in name:
            name = name.replace("\n", " ")
        for _ in range(CAS_ATTEMPTS):
            now = proxywasm.get_current_time_nanoseconds()
            try:
                data, cas = proxywasm.get_shared_data(self.key(name))
            except NotFoundError:
                registered = self.register(name)
                if registered != name:
                    name = registered
                    continue
                elapsed = now - self.started_ns
                last = self.started_ns + (elapsed // self.interval_ns()) * self.interval_ns()
                fresh = Bucket(self.max_tokens - 1, last, 0)
                proxywasm.set_shared_data(self.key(name), fresh.encode(), 0)
                return -1
            bucket = decode_bucket(data, cas, now, self.interval_ns())
            if bucket.tokens <= 0:
                return max(0, bucket.last_fill_ns + self.interval_ns() - now)  # 0: the tick is late
            bucket.tokens -= 1
            try:
                proxywasm.set_shared_data(self.key(name), bucket.encode(), bucket.cas)
                return -1
            except CasMismatchError:
                continue
        proxywasm.log_warn(f"{NAME}: bucket {name!r} is too contended; letting the request through")
        return -1

    def refill(self, name: str, now: int) -> None:
        for _ in range(CAS_ATTEMPTS):
            try:
                data, cas = proxywasm.get_shared_data(self.key(name))
            except NotFoundError:
                return
            bucket = decode_bucket(data, cas, now, self.interval_ns())
            fills = (now - bucket.last_fill_ns) // self.interval_ns()
            if fills <= 0:
                return
            bucket.tokens = min(self.max_tokens, bucket.tokens + fills * self.tokens_per_fill)
            bucket.last_fill_ns += fills * self.interval_ns()
            try:
                proxywasm.set_shared_data(self.key(name), bucket.encode(), bucket.cas)
                return
            except CasMismatchError:
                continue

    # -- callbacks -------------------------------------------------------------------------
    def on_tick(self) -> None:
        now = proxywasm.get_current_time_nanoseconds()
        for name in self.bucket_names():
            self.refill(name, now)

    def configure(self, config: JsonValue) -> None:
        self.max_tokens = positive(config, "max_tokens", 100)
        self.tokens_per_fill = positive(config, "tokens_per_fill", self.max_tokens)
        self.fill_interval_ms = positive(config, "fill_interval_ms", 1000)
        self.max_keys = positive(config, "max_keys", 1000)
        self.status = positive(config, "status", 429)
        if not 400 <= self.status <= 599:
            raise ConfigError("status: expected an HTTP error status (400-599)")
        header = config.get("key_header")
        if not header.is_null():
            self.key_header = header.as_str().lower()
            if header.kind != "string" or self.key_header == "" or " " in self.key_header:
                raise ConfigError("key_header: expected a header name")
        domain = config.get("domain")
        if not domain.is_null():
            self.domain = domain.as_str()
            if domain.kind != "string" or self.domain == "" or ":" in self.domain:
                raise ConfigError("domain: expected a non-empty name without ':'")
        body = config.get("body")
        if not body.is_null():
            if body.kind != "string":
                raise ConfigError("body: expected a string")
            self.body = body.as_str()

    def on_plugin_start(self, plugin_configuration_size: int) -> bool:
        if not start_with_config(NAME, FIELDS, self.configure):
            return False
        self.started_ns = proxywasm.get_current_time_nanoseconds()
        proxywasm.set_tick_period_milliseconds(self.fill_interval_ms)
        return True

    def new_http_context(self, context_id: int) -> HttpContext:
        return Http(self)


def positive(config: JsonValue, field: str, default: int) -> int:
    value = config.get(field)
    if value.is_null():
        return default
    number = value.as_int(0)
    if number <= 0:
        raise ConfigError(f"{field}: expected a positive integer")
    return number


class VM(VMContext):
    def new_plugin_context(self, context_id: int) -> PluginContext:
        return Plugin()


proxywasm.set_vm_context(VM())
