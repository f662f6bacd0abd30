;; go_style_allocator: the TinyGo/Go shape: command model and proxy_on_memory_allocate only.
;;
;; ABI marker proxy_abi_version_0_2_0. Exports "_start" (WASI command entry; sets a global flag)
;; and the allocator "proxy_on_memory_allocate" (bump allocator, no "malloc"); no "_initialize".
;; proxy_on_request_headers(ctx, n, eos): reads request header ":path" with
;;   proxy_get_header_map_value (the host must allocate through proxy_on_memory_allocate), then
;;   adds request header "x-go-style-path: <that value>" (when the read returned OK) and
;;   "x-go-style-started: 1" if _start ran before, "0" otherwise; Continue.
(module
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) ":path")
  (data (i32.const 32) "x-go-style-path")
  (data (i32.const 48) "x-go-style-started")
  (data (i32.const 72) "01")
  (global $heap (mut i32) (i32.const 1024))
  (global $started (mut i32) (i32.const 0))
  (func (export "proxy_abi_version_0_2_0"))
  (func (export "_start") (global.set $started (i32.const 1)))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $ptr i32) (local $end i32)
    (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $ptr) (local.get $size)))
    (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))
      (then
        (if (i32.eq (memory.grow (i32.add (i32.shr_u (local.get $size) (i32.const 16)) (i32.const 1))) (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $ptr))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.eqz (call $get (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 512) (i32.const 516)))
      (then
        (drop (call $add (i32.const 0) (i32.const 32) (i32.const 15) (i32.load (i32.const 512)) (i32.load (i32.const 516))))))
    (drop (call $add (i32.const 0) (i32.const 48) (i32.const 18) (i32.add (i32.const 72) (global.get $started)) (i32.const 1)))
    (i32.const 0))
)
