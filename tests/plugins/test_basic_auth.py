"""plugins/basic_auth, source and compiled module held to the same expectations."""

from __future__ import annotations

import base64
import hashlib

import pytest

from sdk.testing import Action, PluginLoader, PluginStartError, plugin_fixture
from tests.plugins._paths import config, source

plugin = plugin_fixture(source("basic_auth"))

CONFIG = config({
    "realm": "shop",
    "users": [
        {"username": "ann", "password": "open sesame"},
        {"username": "bob", "password_sha256": hashlib.sha256(b"correct horse").hexdigest().upper()},
        {"username": "eve", "password": ""},
    ],
    "exempt_paths": ["/healthz"],
    "forward_username_header": "X-Authenticated-User",
    "strip_authorization": True,
})
CHALLENGE = ("www-authenticate", 'Basic realm="shop"')


def basic(credentials: bytes) -> str:
    return "Basic " + base64.b64encode(credentials).decode()


def send(host, headers: dict[str, str]):  # noqa: ANN001, ANN201 - a test helper
    stream = host.initialize_http_context()
    action = host.call_on_request_headers(stream, {":path": "/orders", **headers}, True)
    return stream, action, host.local_response(stream)


@pytest.mark.parametrize(("credentials", "user"), [
    (b"ann:open sesame", "ann"),
    (b"bob:correct horse", "bob"),
    (b"eve:", "eve"),
])
def test_valid_credentials_pass_and_name_the_user(plugin: PluginLoader, credentials: bytes, user: str) -> None:
    host = plugin(plugin_config=CONFIG)
    stream, action, reply = send(host, {"authorization": basic(credentials)})
    assert (action, reply) == (Action.CONTINUE, None)
    assert host.current_request_headers(stream) == [(":path", "/orders"), ("x-authenticated-user", user)]


@pytest.mark.parametrize(("authorization", "why"), [
    (None, "missing credentials"),
    ("Bearer abc", "malformed credentials"),
    ("Basic !!!", "malformed credentials"),
    (basic(b"no-colon"), "malformed credentials"),
    (basic(b"\xff\xfe:x"), "malformed credentials"),
    (basic(b"ann:wrong"), "bad credentials for 'ann'"),
    (basic(b"ann:open sesame!"), "bad credentials for 'ann'"),
    (basic(b"bob:correct horsE"), "bad credentials for 'bob'"),
    (basic(b"eve:x"), "bad credentials for 'eve'"),
    (basic(b"mallory:open sesame"), "bad credentials for 'mallory'"),
])
def test_anything_else_gets_401_with_a_challenge(plugin: PluginLoader, authorization: str | None, why: str) -> None:
    host = plugin(plugin_config=CONFIG)
    _, action, reply = send(host, {"authorization": authorization} if authorization else {})
    assert action is Action.PAUSE
    assert reply is not None and (reply.status, reply.headers, reply.body) == (401, [CHALLENGE], b"unauthorized\n")
    assert host.logs("info") == [f"basic_auth: {why}"]


def test_the_scheme_is_case_insensitive(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=CONFIG)
    _, action, _ = send(host, {"authorization": "basic " + base64.b64encode(b"ann:open sesame").decode()})
    assert action is Action.CONTINUE


def test_exempt_paths_need_no_credentials(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=CONFIG)
    stream = host.initialize_http_context()
    assert host.call_on_request_headers(stream, {":path": "/healthz?full=1"}, True) is Action.CONTINUE


def test_the_authorization_header_is_kept_unless_stripping(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=config({"users": [{"username": "ann", "password": "pw"}]}))
    stream, action, _ = send(host, {"authorization": basic(b"ann:pw")})
    assert action is Action.CONTINUE
    assert host.current_request_headers(stream) == [(":path", "/orders"), ("authorization", basic(b"ann:pw"))]
    _, _, reply = send(host, {})
    assert reply is not None and reply.headers == [("www-authenticate", 'Basic realm="wasmesh"')]


@pytest.mark.parametrize(("bad", "message"), [
    ({}, "users: expected a non-empty list of users"),
    ({"users": [{"username": "a"}]}, "users[0]: give exactly one of password and password_sha256"),
    ({"users": [{"username": "a", "password": "x", "password_sha256": "0" * 64}]},
     "users[0]: give exactly one of password and password_sha256"),
    ({"users": [{"username": "a", "password_sha256": "xyz"}]}, "users[0].password_sha256: expected 64 hex digits"),
    ({"users": [{"username": "a:b", "password": "x"}]}, "users[0].username: expected a non-empty name without ':'"),
    ({"users": [{"username": "a", "password": "x"}, {"username": "a", "password": "y"}]},
     "users[1].username: 'a' is listed twice"),
    ({"users": [{"username": "a", "pass": "x"}]}, "users[0].pass: unknown field (use username, password or "
                                                 "password_sha256)"),
    ({"realm": 'a"b', "users": [{"username": "a", "password": "x"}]},
     "realm: expected a non-empty string without quotes or backslashes"),
])
def test_a_bad_configuration_is_rejected_naming_the_field(plugin: PluginLoader, bad: object, message: str) -> None:
    host = plugin(plugin_config=config(bad), start=False)
    with pytest.raises(PluginStartError):
        host.start_plugin()
    assert host.logs("error") == [f"basic_auth: {message}"]


def test_the_sha256_module_matches_hashlib(tmp_path) -> None:  # noqa: ANN001
    """The digest code is the plugin's own (compiled into the module): check it on block edges."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sha256_under_test", source("basic_auth").parent / "sha256.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for size in (0, 1, 55, 56, 63, 64, 65, 119, 120, 1000):
        data = bytes(range(256)) * 4
        assert module.sha256_hex(data[:size]) == hashlib.sha256(data[:size]).hexdigest()
