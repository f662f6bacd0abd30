;; Test plugin (proxy-wasm ABI 0.2.1) for isolation, limits and failure policies.
;; proxy_on_request_headers counts its calls in the exported global `calls`, then acts on the
;; first byte of the request header `x-action`:
;;   o (or no header)  adds `x-lim: ok`, returns Continue
;;   l                 loops forever (stopped only by the epoch deadline)
;;   b                 grows memory one page at a time until refused, then traps (memory bomb)
;;   t                 traps (unreachable)
;;   r                 sets shared data `lim-refuse-configure` = "1", then traps
;;   h                 adds a 128 KiB header `x-huge`, then adds `x-add-status: <status digit>`
;; proxy_on_configure returns false while shared data `lim-refuse-configure` is "1".
;; proxy_on_request_body / proxy_on_response_body buffer (StopIterationAndBuffer) until end_of_stream.
(module
  (import "env" "proxy_get_header_map_value" (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 4)
  (global $heap (mut i32) (i32.const 196608))
  (global $calls (export "calls") (mut i32) (i32.const 0))

  (data (i32.const 100) "x-action")              ;; 100, 8
  (data (i32.const 120) "x-lim")                 ;; 120, 5
  (data (i32.const 130) "ok")                    ;; 130, 2
  (data (i32.const 140) "x-add-status")          ;; 140, 12
  (data (i32.const 160) "lim-refuse-configure")  ;; 160, 20
  (data (i32.const 190) "1")                     ;; 190, 1
  (data (i32.const 200) "x-huge")                ;; 200, 6
  ;; out-params written by the host: 1024 = data pointer, 1028 = size, 1032 = cas; 1040 = scratch
  ;; 32768..163840: the 128 KiB value of x-huge (zero bytes are fine for a header value here)

  (func (export "proxy_abi_version_0_2_1"))

  ;; bump allocator; grows memory when needed, never frees
  (func $malloc (export "malloc") (param $size i32) (result i32)
    (local $ptr i32) (local $end i32)
    (local.set $ptr (global.get $heap))
    (local.set $end (i32.and (i32.add (i32.add (local.get $ptr) (local.get $size)) (i32.const 7))
                             (i32.const -8)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq (memory.grow (i32.add (i32.shr_u (local.get $size) (i32.const 16)) (i32.const 1)))
                    (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $ptr))

  (func (export "proxy_on_context_create") (param $ctx i32) (param $parent i32))

  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (if (i32.eqz (call $get_shared (i32.const 160) (i32.const 20) (i32.const 1024) (i32.const 1028)
                                   (i32.const 1032)))
      (then
        (if (i32.and (i32.gt_u (i32.load (i32.const 1028)) (i32.const 0))
                     (i32.eq (i32.load8_u (i32.load (i32.const 1024))) (i32.const 49)))  ;; "1"
          (then (return (i32.const 0))))))
    (i32.const 1))

  (func (export "proxy_on_request_headers") (param $ctx i32) (param $headers i32) (param $eos i32)
        (result i32)
    (local $action i32)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (local.set $action (i32.const 111))  ;; "o"
    (if (i32.eqz (call $get_header (i32.const 0) (i32.const 100) (i32.const 8) (i32.const 1024) (i32.const 1028)))
      (then
        (if (i32.gt_u (i32.load (i32.const 1028)) (i32.const 0))
          (then (local.set $action (i32.load8_u (i32.load (i32.const 1024))))))))
    (if (i32.eq (local.get $action) (i32.const 108))  ;; "l"
      (then (loop $forever (br $forever))))
    (if (i32.eq (local.get $action) (i32.const 98))   ;; "b"
      (then
        (loop $grow
          (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
        unreachable))
    (if (i32.eq (local.get $action) (i32.const 116))  ;; "t"
      (then unreachable))
    (if (i32.eq (local.get $action) (i32.const 114))  ;; "r"
      (then
        (drop (call $set_shared (i32.const 160) (i32.const 20) (i32.const 190) (i32.const 1) (i32.const 0)))
        unreachable))
    (if (i32.eq (local.get $action) (i32.const 104))  ;; "h"
      (then
        (i32.store8 (i32.const 1040)
          (i32.add (i32.const 48)
            (call $add_header (i32.const 0) (i32.const 200) (i32.const 6) (i32.const 32768) (i32.const 131072))))
        (drop (call $add_header (i32.const 0) (i32.const 140) (i32.const 12) (i32.const 1040) (i32.const 1)))
        (return (i32.const 0))))
    (drop (call $add_header (i32.const 0) (i32.const 120) (i32.const 5) (i32.const 130) (i32.const 2)))
    (i32.const 0))

  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (i32.eqz (local.get $eos)))

  (func (export "proxy_on_response_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (i32.eqz (local.get $eos)))
)
