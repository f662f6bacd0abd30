;; memory_bomb: grows linear memory until the host refuses (ABI 0.2.1).
;;
;; Memory is declared with 1 page and no maximum. proxy_on_request_headers(ctx, n, eos): calls
;; memory.grow(16) (1 MiB) in a loop until it returns -1, then logs ERROR
;; "memory_bomb: grow failed" and executes `unreachable`. A host with a memory limit makes
;; memory.grow fail at that limit (wasm semantics: -1, not a trap), so the plugin then traps;
;; the host must survive, apply its failure policy, and not exceed its limit.
(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "memory_bomb: grow failed")
  (global $heap (mut i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (if (i32.gt_u (i32.add (local.get $ptr) (local.get $size)) (i32.const 65536)) (then (return (i32.const 0))))
    (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
    (local.get $ptr))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (loop $grow
      (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    (drop (call $proxy_log (i32.const 4) (i32.const 16) (i32.const 24)))
    unreachable)
)
