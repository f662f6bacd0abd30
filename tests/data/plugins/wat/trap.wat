;; trap: traps inside proxy_on_request_headers (ABI 0.2.1).
;;
;; proxy_on_request_headers(ctx, n, eos): logs WARN "trap: about to execute unreachable", then
;; executes `unreachable` (a wasm trap). Nothing else is exported except memory, the marker and a
;; bump "malloc". A host must turn the trap into its failure policy (fail-closed: local reply
;; 503 / fail-open: Continue) and must not crash; the VM is considered failed afterwards.
(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "trap: about to execute unreachable")
  (global $heap (mut i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (if (i32.gt_u (i32.add (local.get $ptr) (local.get $size)) (i32.const 65536)) (then (return (i32.const 0))))
    (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
    (local.get $ptr))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $proxy_log (i32.const 3) (i32.const 16) (i32.const 34)))
    unreachable)
)
