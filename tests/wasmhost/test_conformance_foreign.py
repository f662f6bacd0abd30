"""Conformance: ``foreign`` (C) — foreign functions in both directions.

``proxy_call_foreign_function`` reaches the embedder's functions first, then Envoy's
built-ins (``compress`` is zlib, as in Envoy); an unknown name is NOT_FOUND. The host calls
``proxy_on_foreign_function`` on the root with the arguments in buffer 8.
"""

from __future__ import annotations

import zlib

from tests._tools import plugin_path
from tests.wasmhost._conformance import ConformanceHost


def report(result: dict) -> dict[str, str]:
    return {k: v for k, v in result["response"]["headers"] if k.startswith("x-foreign")}


def test_embedder_function_gets_the_arguments_and_returns_bytes() -> None:
    calls: list[bytes] = []

    def echo(args: bytes) -> tuple[int, bytes]:
        calls.append(args)
        return 0, args[::-1]

    with ConformanceHost(plugin_path("foreign"), foreign={"wasmesh_echo": echo}) as host:
        result = host.request()
        assert calls == [b"hello"]
        assert report(result) == {
            "x-foreign-status": "0",
            "x-foreign-result": "hex:" + b"olleh".hex(),
            "x-foreign-missing-status": "1",
        }
        assert result["logs"] == [
            {"level": "info", "message": "foreign: call name=wasmesh_echo status=0 result_len=5"}
        ]


def test_envoys_compress_builtin_is_zlib() -> None:
    with ConformanceHost(plugin_path("foreign"), configuration="compress some bytes to squeeze") as host:
        headers = report(host.request())
        assert headers["x-foreign-status"] == "0"
        compressed = bytes.fromhex(headers["x-foreign-result"].removeprefix("hex:"))
        assert zlib.decompress(compressed) == b"some bytes to squeeze"


def test_unknown_function_is_not_found_without_a_result() -> None:
    with ConformanceHost(plugin_path("foreign")) as host:  # wasmesh_echo is not registered here
        assert report(host.request()) == {
            "x-foreign-status": "1",
            "x-foreign-result": "hex:",
            "x-foreign-missing-status": "1",
        }


def test_host_calls_on_foreign_function_with_its_arguments_in_buffer_8() -> None:
    with ConformanceHost(plugin_path("foreign")) as host:
        host.plugin.on_foreign_function(7, b"\x00\xffargs")
        assert host.environment.take() == [
            {
                "level": "info",
                "message": "foreign: on_foreign_function root=1 id=7 size=6 args=hex:00ff61726773 status=0",
            }
        ]
