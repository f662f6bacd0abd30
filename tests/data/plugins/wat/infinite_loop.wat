;; infinite_loop: never returns from proxy_on_request_headers (ABI 0.2.1).
;;
;; proxy_on_request_headers(ctx, n, eos): logs WARN "infinite_loop: entering", then spins in an
;; empty loop forever (no host calls inside the loop). A host must interrupt it (fuel or epoch
;; deadline), treat it as a failure of the plugin, and keep serving other traffic.
(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "infinite_loop: entering")
  (global $heap (mut i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (if (i32.gt_u (i32.add (local.get $ptr) (local.get $size)) (i32.const 65536)) (then (return (i32.const 0))))
    (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
    (local.get $ptr))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $proxy_log (i32.const 3) (i32.const 16) (i32.const 23)))
    (loop $forever (br $forever))
    (i32.const 0))
)
