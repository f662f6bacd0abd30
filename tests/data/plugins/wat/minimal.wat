;; minimal: the smallest valid proxy-wasm module (ABI 0.2.1).
;;
;; Exports only memory, the marker proxy_abi_version_0_2_1 and a bump allocator "malloc"
;; (never frees; returns 0 when the heap would pass the current memory size and memory.grow
;; fails). No imports, no callbacks: a host must load it, create root and stream contexts
;; without calling any proxy_on_* export, and treat every stream callback as Continue.
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param $size i32) (result i32)
    (local $ptr i32) (local $end i32)
    (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $ptr) (local.get $size)))
    (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))
      (then
        (if (i32.eq
              (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end) (i32.shl (memory.size) (i32.const 16))) (i32.const 16)) (i32.const 1)))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $ptr))
)
