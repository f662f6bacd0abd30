"""basic_auth: HTTP Basic authentication (RFC 7617) against a configured user list.

Configuration (JSON)::

    {
      "realm": "shop",
      "users": [
        {"username": "ann", "password": "open sesame"},
        {"username": "bob", "password_sha256": "<hex SHA-256 of the password>"}
      ],
      "exempt_paths": ["/healthz"],
      "forward_username_header": "x-authenticated-user",
      "strip_authorization": true
    }

A request without valid credentials is answered ``401`` with
``www-authenticate: Basic realm="<realm>"``. Passwords may be stored as SHA-256 hex
digests; comparisons take the same time whatever the first differing byte.
"""

from __future__ import annotations

from sha256 import sha256_hex

from sdk import proxywasm
from sdk.config import ConfigError, start_with_config
from sdk.encoding import b64decode
from sdk.errors import NotFoundError
from sdk.jsonvalue import JsonValue
from sdk.types import Action, HttpContext, PluginContext, VMContext

NAME = "basic_auth"
FIELDS = ["realm", "users", "exempt_paths", "forward_username_header", "strip_authorization"]


class User:
    """A configured user: a plain password or the hex SHA-256 of one."""

    def __init__(self, username: str, password: str, digest: str) -> None:
        self.username = username
        self.password = password
        self.digest = digest

    def accepts(self, password: str) -> bool:
        if self.digest != "":
            return same(sha256_hex(password.encode()), self.digest)
        return same(password, self.password)


def same(a: str, b: str) -> bool:
    """Equality that looks at every byte (no early exit on the first difference)."""
    left = a.encode()
    right = b.encode()
    if len(right) == 0:
        return len(left) == 0
    diff = len(left) ^ len(right)
    for i in range(0, len(left), 1):
        diff = diff | (left[i] ^ right[i % len(right)])
    return diff == 0


def parse_credentials(header: str) -> tuple[str, str] | None:
    """(username, password) from ``Basic <base64(user:password)>``; None when malformed."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = b64decode(encoded.strip()).decode()
    except ValueError:
        return None
    username, colon, password = decoded.partition(":")
    if colon == "":
        return None
    return (username, password)


def read_user(index: int, item: JsonValue) -> User:
    where = f"users[{index}]"
    if item.kind != "object":
        raise ConfigError(f"{where}: expected an object with username and password (or password_sha256)")
    for key in item.keys():
        if key not in ["username", "password", "password_sha256"]:
            raise ConfigError(f"{where}.{key}: unknown field (use username, password or password_sha256)")
    username = item.get("username").as_str()
    if username == "" or ":" in username:
        raise ConfigError(f"{where}.username: expected a non-empty name without ':'")
    has_password = item.has("password")
    has_digest = item.has("password_sha256")
    if has_password == has_digest:
        raise ConfigError(f"{where}: give exactly one of password and password_sha256")
    if has_password:
        if item.get("password").kind != "string":
            raise ConfigError(f"{where}.password: expected a string")
        return User(username, item.get("password").as_str(), "")
    digest = item.get("password_sha256").as_str().lower()
    if len(digest) != 64 or len([c for c in digest if c in "0123456789abcdef"]) != 64:
        raise ConfigError(f"{where}.password_sha256: expected 64 hex digits")
    return User(username, "", digest)


class Http(HttpContext):
    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin

    def reject(self, why: str) -> Action:
        proxywasm.log_info(f"{NAME}: {why}")
        challenge = f'Basic realm="{self.plugin.realm}"'
        proxywasm.send_http_response(401, [("www-authenticate", challenge)], b"unauthorized\n")
        return Action.PAUSE

    def on_http_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        plugin = self.plugin
        try:
            path = proxywasm.get_http_request_header(":path").partition("?")[0]
        except NotFoundError:
            path = ""
        for prefix in plugin.exempt_paths:
            if path.startswith(prefix):
                return Action.CONTINUE
        try:
            header = proxywasm.get_http_request_header("authorization")
        except NotFoundError:
            return self.reject("missing credentials")
        credentials = parse_credentials(header)
        if credentials is None:
            return self.reject("malformed credentials")
        username = credentials[0]
        password = credentials[1]
        user = plugin.users.get(username)
        if user is None or not user.accepts(password):
            return self.reject(f"bad credentials for {username!r}")
        if plugin.forward_header != "":
            proxywasm.replace_http_request_header(plugin.forward_header, username)
        if plugin.strip_authorization:
            proxywasm.remove_http_request_header("authorization")
        return Action.CONTINUE


class Plugin(PluginContext):
    def __init__(self) -> None:
        self.realm = "wasmesh"
        self.users: dict[str, User] = {}
        self.exempt_paths: list[str] = []
        self.forward_header = ""
        self.strip_authorization = False

    def configure(self, config: JsonValue) -> None:
        realm = config.get("realm")
        if not realm.is_null():
            self.realm = realm.as_str()
            if realm.kind != "string" or self.realm == "" or '"' in self.realm or "\\" in self.realm:
                raise ConfigError("realm: expected a non-empty string without quotes or backslashes")
        users = config.get("users")
        if users.kind != "array" or users.size() == 0:
            raise ConfigError("users: expected a non-empty list of users")
        for index, item in enumerate(users.as_list()):
            user = read_user(index, item)
            if user.username in self.users:
                raise ConfigError(f"users[{index}].username: {user.username!r} is listed twice")
            self.users[user.username] = user
        exempt = config.get("exempt_paths")
        if not exempt.is_null():
            if exempt.kind != "array" or len(exempt.as_str_list()) != exempt.size():
                raise ConfigError("exempt_paths: expected a list of path prefixes")
            self.exempt_paths = exempt.as_str_list()
        forward = config.get("forward_username_header")
        if not forward.is_null():
            self.forward_header = forward.as_str().lower()
            if forward.kind != "string" or self.forward_header == "" or self.forward_header.startswith(":"):
                raise ConfigError("forward_username_header: expected a header name")
        self.strip_authorization = config.get("strip_authorization").as_bool(False)

    def on_plugin_start(self, plugin_configuration_size: int) -> bool:
        return start_with_config(NAME, FIELDS, self.configure, empty_is_defaults=False)

    def new_http_context(self, context_id: int) -> HttpContext:
        return Http(self)


class VM(VMContext):
    def new_plugin_context(self, context_id: int) -> PluginContext:
        return Plugin()


proxywasm.set_vm_context(VM())
