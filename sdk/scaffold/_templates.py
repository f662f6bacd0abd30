"""The files of a new plugin project, per language.

Each template is text with ``__NAME__`` (the project name) and ``__IDENT__`` (the name as an
identifier) placeholders. All three languages make the same plugin — a request header
``x-greeting`` from configuration, a response header ``x-plugin: <name>`` — so their tests
read alike and a user can compare the SDKs side by side.
"""

from __future__ import annotations

GITIGNORE = "build/\n__pycache__/\n.pytest_cache/\n"

PYTHON_PLUGIN = '''"""__NAME__: a proxy-wasm plugin written with the wasmesh Python SDK.

Configuration (JSON): {"greeting": "hello"}. Adds ``x-greeting: <greeting>`` to requests
and ``x-plugin: __NAME__`` to responses.
"""

from __future__ import annotations

from sdk import proxywasm
from sdk.jsonvalue import JsonError, parse_json
from sdk.types import Action, HttpContext, PluginContext, VMContext


class Http(HttpContext):
    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin

    def on_http_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        proxywasm.add_http_request_header("x-greeting", self.plugin.greeting)
        return Action.CONTINUE

    def on_http_response_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        proxywasm.add_http_response_header("x-plugin", "__NAME__")
        return Action.CONTINUE


class Plugin(PluginContext):
    def __init__(self) -> None:
        self.greeting = "hello"

    def on_plugin_start(self, plugin_configuration_size: int) -> bool:
        data = proxywasm.get_plugin_configuration()
        if data.strip() == b"":
            return True
        try:
            config = parse_json(data)
        except JsonError as err:
            proxywasm.log_error(f"__NAME__: {err}")
            return False
        self.greeting = config.get("greeting").as_str("hello")
        proxywasm.log_info(f"__NAME__: greeting {self.greeting!r}")
        return True

    def new_http_context(self, context_id: int) -> HttpContext:
        return Http(self)


class VM(VMContext):
    def new_plugin_context(self, context_id: int) -> PluginContext:
        return Plugin()


proxywasm.set_vm_context(VM())
'''

PYTHON_TESTS = '''"""Tests for __NAME__: each test runs twice, on plugin.py in CPython and on the built .wasm."""

from pathlib import Path

import pytest

from sdk.testing import Action, PluginLoader, PluginStartError, plugin_fixture

plugin = plugin_fixture(Path(__file__).resolve().parents[1])


def test_requests_get_the_configured_greeting(plugin: PluginLoader) -> None:
    host = plugin(plugin_config='{"greeting": "hi there"}')
    stream = host.initialize_http_context()
    assert host.call_on_request_headers(stream, {":path": "/"}, True) is Action.CONTINUE
    assert host.current_request_headers(stream) == [(":path", "/"), ("x-greeting", "hi there")]
    assert host.logs("info") == ["__NAME__: greeting 'hi there'"]


def test_responses_name_the_plugin(plugin: PluginLoader) -> None:
    host = plugin()
    stream = host.initialize_http_context()
    host.call_on_request_headers(stream, {":path": "/"}, True)
    host.call_on_response_headers(stream, {":status": "200"}, True)
    assert host.current_response_headers(stream) == [(":status", "200"), ("x-plugin", "__NAME__")]


def test_malformed_configuration_is_rejected(plugin: PluginLoader) -> None:
    host = plugin(plugin_config="{", start=False)
    with pytest.raises(PluginStartError):
        host.start_plugin()
    assert host.logs("error") == ["__NAME__: invalid JSON at offset 1: unexpected end"]
'''

WASM_TESTS = '''"""Tests for __NAME__, run on the module built from the project's source."""

from pathlib import Path

from sdk.testing import Action, PluginLoader, plugin_fixture

plugin = plugin_fixture(Path(__file__).resolve().parents[1])


def test_requests_get_the_configured_greeting(plugin: PluginLoader) -> None:
    host = plugin(plugin_config="hi there")
    stream = host.initialize_http_context()
    assert host.call_on_request_headers(stream, {":path": "/"}, True) is Action.CONTINUE
    assert ("x-greeting", "hi there") in host.current_request_headers(stream)


def test_without_configuration_the_greeting_is_hello(plugin: PluginLoader) -> None:
    host = plugin()
    stream = host.initialize_http_context()
    host.call_on_request_headers(stream, {":path": "/"}, True)
    assert ("x-greeting", "hello") in host.current_request_headers(stream)


def test_responses_name_the_plugin(plugin: PluginLoader) -> None:
    host = plugin()
    stream = host.initialize_http_context()
    host.call_on_request_headers(stream, {":path": "/"}, True)
    host.call_on_response_headers(stream, {":status": "200"}, True)
    assert ("x-plugin", "__NAME__") in host.current_response_headers(stream)
'''

ASSEMBLYSCRIPT_PLUGIN = '''/*
 * __NAME__: a proxy-wasm plugin in AssemblyScript (@solo-io/proxy-runtime).
 *
 * Configuration: plain text, the greeting (default "hello"). Adds "x-greeting: <greeting>"
 * to requests and "x-plugin: __NAME__" to responses.
 */
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, stream_context,
} from "@solo-io/proxy-runtime";
import { get_buffer_bytes, BufferTypeValues } from "@solo-io/proxy-runtime/runtime";

class PluginRoot extends RootContext {
  greeting: string = "hello";

  createContext(context_id: u32): Context {
    return new PluginStream(context_id, this);
  }

  // proxy-runtime's own onConfigure does not hand over the configuration: read the buffer.
  onConfigure(configuration_size: u32): bool {
    if (configuration_size > 0) {
      const bytes = get_buffer_bytes(BufferTypeValues.PluginConfiguration, 0, configuration_size);
      this.greeting = String.UTF8.decode(bytes);
    }
    return true;
  }
}

class PluginStream extends Context {
  root: PluginRoot;

  constructor(context_id: u32, root: PluginRoot) {
    super(context_id, root);
    this.root = root;
  }

  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.request.add("x-greeting", this.root.greeting);
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.response.add("x-plugin", "__NAME__");
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => { return new PluginRoot(context_id); }, "");
'''

C_HEADER = '''/*
 * proxy_wasm_abi.h: the few proxy-wasm 0.2.1 host functions this plugin calls.
 *
 * Host functions come from module "env" and return a status (0 = OK). Strings travel as
 * (pointer, length), never NUL-terminated; data the host returns was allocated with this
 * module's exported malloc, so the plugin frees it.
 */
#ifndef PROXY_WASM_ABI_H
#define PROXY_WASM_ABI_H

#include <stddef.h>
#include <stdint.h>

#define HOST(name) __attribute__((import_module("env"), import_name(#name)))
#define CALLBACK(name) __attribute__((export_name(#name)))

enum { MAP_REQUEST_HEADERS = 0, MAP_RESPONSE_HEADERS = 2 };
enum { BUFFER_PLUGIN_CONFIGURATION = 7 };
enum { ACTION_CONTINUE = 0, ACTION_PAUSE = 1 };
enum { LOG_INFO = 2, LOG_ERROR = 4 };

HOST(proxy_log) uint32_t proxy_log(uint32_t level, const char *message, size_t size);
HOST(proxy_get_buffer_bytes) uint32_t proxy_get_buffer_bytes(
    uint32_t buffer, size_t start, size_t max_size, char **data, size_t *size);
HOST(proxy_add_header_map_value) uint32_t proxy_add_header_map_value(
    uint32_t map, const char *key, size_t key_size, const char *value, size_t value_size);

#endif
'''

C_PLUGIN = '''/*
 * __NAME__: a proxy-wasm plugin in C (clang --target=wasm32-wasi, a WASI reactor).
 *
 * Configuration: plain text, the greeting (default "hello"). Adds "x-greeting: <greeting>"
 * to requests and "x-plugin: __NAME__" to responses.
 */
#include <stdlib.h>
#include <string.h>

#include "proxy_wasm_abi.h"

CALLBACK(proxy_abi_version_0_2_1) void proxy_abi_version_0_2_1(void) {}

static char *greeting = NULL;
static size_t greeting_size = 0;

static void add_header(uint32_t map, const char *key, const char *value, size_t value_size) {
  proxy_add_header_map_value(map, key, strlen(key), value, value_size);
}

CALLBACK(proxy_on_context_create) void proxy_on_context_create(uint32_t context, uint32_t parent) {}

CALLBACK(proxy_on_configure) uint32_t proxy_on_configure(uint32_t root, uint32_t configuration_size) {
  free(greeting);
  greeting = NULL;
  greeting_size = 0;
  if (configuration_size > 0) {
    if (proxy_get_buffer_bytes(BUFFER_PLUGIN_CONFIGURATION, 0, configuration_size, &greeting, &greeting_size) != 0) {
      const char *message = "__NAME__: cannot read the configuration";
      proxy_log(LOG_ERROR, message, strlen(message));
      return 0;
    }
  }
  return 1;
}

CALLBACK(proxy_on_request_headers) uint32_t proxy_on_request_headers(uint32_t context, uint32_t headers, uint32_t end) {
  if (greeting_size > 0) {
    add_header(MAP_REQUEST_HEADERS, "x-greeting", greeting, greeting_size);
  } else {
    add_header(MAP_REQUEST_HEADERS, "x-greeting", "hello", 5);
  }
  return ACTION_CONTINUE;
}

CALLBACK(proxy_on_response_headers) uint32_t proxy_on_response_headers(uint32_t context, uint32_t headers, uint32_t end) {
  add_header(MAP_RESPONSE_HEADERS, "x-plugin", "__NAME__", strlen("__NAME__"));
  return ACTION_CONTINUE;
}
'''

README = '''# __NAME__

A proxy-wasm plugin (__LANGUAGE__), created with `wasmesh plugin init`.

It adds `x-greeting: <greeting>` to every request and `x-plugin: __NAME__` to every
response. Configuration: __CONFIG__ (default greeting: `hello`).

## Work on it

```sh
wasmesh plugin test .                # build, then run tests/ against the plugin__MODES__
wasmesh plugin build __SOURCE__ -o build/plugin.wasm
wasmesh plugin run build/plugin.wasm --config '__EXAMPLE__' -H 'x-demo: 1'
```

Tests use `sdk.testing`: `plugin_fixture(<project>)` gives each test a loader that starts
the plugin in the wasmesh host emulator, so a test drives requests and responses one
event at a time and inspects headers, bodies, logs and metrics.__EXTRA__

## Deploy

Push the module to an OCI registry and select it with an Istio-compatible `WasmPlugin`:

```yaml
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: __NAME__}
spec:
  url: oci://registry.local:5000/plugins/__NAME__:0.1.0
  pluginConfig: __PLUGIN_CONFIG__
```
'''

PYTHON_EXTRA = '''

The plugin is ordinary typed Python in the subset `sdk/compiler/SUBSET.md` describes;
`wasmesh plugin build` compiles it to a standalone `.wasm` (no CPython inside). Every
test runs twice — on `plugin.py` in CPython (real tracebacks, no build) and on the
compiled module — and both must pass. `wasmesh plugin test . --mode python` runs only the
CPython pass, for the quickest loop.'''

ASSEMBLYSCRIPT_EXTRA = '''

The build uses the pinned `assemblyscript` and `@solo-io/proxy-runtime` npm packages,
installed on first use into `build/npm` (or `$WASMESH_NPM_WORKDIR`); it needs `node` and
`npm`.'''

C_EXTRA = '''

The build runs `clang --target=wasm32-wasi -mexec-model=reactor` (Debian: `clang lld
wasi-libc libclang-rt-14-dev-wasm32`); `proxy_wasm_abi.h` declares the host functions
the plugin imports.'''
