"""The plugin SDK: write proxy-wasm plugins in Python, test them, compile them.

Authoring (mirrors proxy-wasm-go-sdk): ``sdk.types`` (the contexts a plugin implements and
``Action``), ``sdk.proxywasm`` (host calls), ``sdk.errors`` (one exception per status code),
``sdk.jsonvalue`` (typed JSON for configuration), ``sdk.config`` (the configuration read at
start: fields checked, errors logged). ``sdk.entrypoint`` routes the host's
``proxy_on_*`` callbacks to the contexts. These modules are written in the compilable subset
and run both in CPython (over a host binding, see ``sdk.proxywasm.set_host``) and compiled by
``sdk.compiler`` into a standalone proxy-wasm module. ``sdk.testing`` runs any module without a
proxy; ``sdk.toolchains`` builds C, AssemblyScript and WAT plugins.

Submodules are imported by name (``from sdk import proxywasm``); this package imports none
of them itself, so importing a plugin never pulls in the compiler or the host.
"""

__all__: list[str] = []
