;; Not a proxy-wasm plugin: it has an allocator and callbacks but no proxy_abi_version_* export,
;; so a host must refuse to load it.
(module
  (memory (export "memory") 1)
  (func (export "malloc") (param $size i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param $ctx i32) (param $parent i32))
)
