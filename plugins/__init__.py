"""Ready-made proxy-wasm plugins, written with the wasmesh Python SDK.

Each plugin is a directory ``plugins/<name>/`` with ``plugin.py`` (the source, in the
compilable subset, plus any files it imports) and a ``README.md`` documenting its JSON
configuration and behaviour. They are built into ``.wasm`` modules by
``wasmesh plugin build`` (``python -m sdk.scaffold build-plugins`` builds them all) and
run in the wasmesh sidecar and in Envoy alike; ``tests/plugins/`` runs every test on the
source in CPython and on the compiled module. This package holds no importable code: the
plugins are data for the build.
"""

__all__: list[str] = []
