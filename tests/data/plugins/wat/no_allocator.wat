;; no_allocator: ABI marker 0.2.1 but neither "malloc" nor "proxy_on_memory_allocate".
;;
;; Exports memory, proxy_abi_version_0_2_1 and proxy_on_request_headers (returns Continue).
;; A host must refuse to load it with an error naming the missing allocator.
(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (i32.const 0))
)
