;; A minimal proxy-wasm module: the ABI marker, an allocator and memory.
;; Built with wasmtime's WAT compiler by the tests; its content does not matter to the
;; registry, only that it is a real WebAssembly binary.
(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $size)))
    (local.get $ptr))
  (func (export "proxy_on_context_create") (param i32 i32))
)
