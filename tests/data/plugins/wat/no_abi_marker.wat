;; no_abi_marker: a module without any proxy_abi_version_* export.
;;
;; Otherwise complete: memory, a bump "malloc", proxy_on_request_headers returning Continue.
;; A host must refuse to load it with an error naming the missing ABI version marker.
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func (export "malloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
    (local.get $ptr))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (i32.const 0))
)
