;; Test plugin (proxy-wasm ABI 0.2.1): logs its configuration, counts requests, tags the request
;; going upstream and the response going downstream.
;;   proxy_on_vm_start         logs the VM configuration (debug), if any
;;   proxy_on_configure        logs the plugin configuration (info), defines counter requests_total
;;   proxy_on_request_headers  logs "request path: <:path>" (info), adds x-wasm-request: seen,
;;                             increments requests_total
;;   proxy_on_response_headers adds x-wasm: hello, logs "response headers" (warn)
;;   proxy_on_log              logs "stream done" (trace), after the response has been sent
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define_metric (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $increment_metric (param i32 i64) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (global $requests_total (mut i32) (i32.const 0))

  ;; constant strings; each comment gives offset and length
  (data (i32.const 100) "requests_total")      ;; 100, 14
  (data (i32.const 120) ":path")               ;; 120, 5
  (data (i32.const 130) "x-wasm-request")      ;; 130, 14
  (data (i32.const 150) "seen")                ;; 150, 4
  (data (i32.const 160) "x-wasm")              ;; 160, 6
  (data (i32.const 170) "hello")               ;; 170, 5
  (data (i32.const 180) "response headers")    ;; 180, 16
  (data (i32.const 200) "request path: ")      ;; 200, 14
  (data (i32.const 220) "stream done")         ;; 220, 11
  ;; out-params written by the host: 1024 = data pointer, 1028 = size, 1032 = metric id

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

  (func (export "proxy_on_vm_start") (param $root i32) (param $size i32) (result i32)
    (if (i32.gt_u (local.get $size) (i32.const 0))
      (then
        (drop (call $get_buffer (i32.const 6) (i32.const 0) (local.get $size)
                                (i32.const 1024) (i32.const 1028)))
        (drop (call $log (i32.const 1) (i32.load (i32.const 1024)) (i32.load (i32.const 1028))))))
    (i32.const 1))

  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (if (i32.gt_u (local.get $size) (i32.const 0))
      (then
        (drop (call $get_buffer (i32.const 7) (i32.const 0) (local.get $size)
                                (i32.const 1024) (i32.const 1028)))
        (drop (call $log (i32.const 2) (i32.load (i32.const 1024)) (i32.load (i32.const 1028))))))
    (drop (call $define_metric (i32.const 0) (i32.const 100) (i32.const 14) (i32.const 1032)))
    (global.set $requests_total (i32.load (i32.const 1032)))
    (i32.const 1))

  (func (export "proxy_on_request_headers") (param $ctx i32) (param $headers i32) (param $eos i32)
        (result i32)
    (local $msg i32) (local $path_len i32)
    ;; message = "request path: " + value of :path
    (drop (call $get_header (i32.const 0) (i32.const 120) (i32.const 5) (i32.const 1024) (i32.const 1028)))
    (local.set $path_len (i32.load (i32.const 1028)))
    (local.set $msg (call $malloc (i32.add (local.get $path_len) (i32.const 14))))
    (memory.copy (local.get $msg) (i32.const 200) (i32.const 14))
    (memory.copy (i32.add (local.get $msg) (i32.const 14)) (i32.load (i32.const 1024)) (local.get $path_len))
    (drop (call $log (i32.const 2) (local.get $msg) (i32.add (local.get $path_len) (i32.const 14))))
    (drop (call $add_header (i32.const 0) (i32.const 130) (i32.const 14) (i32.const 150) (i32.const 4)))
    (drop (call $increment_metric (global.get $requests_total) (i64.const 1)))
    (i32.const 0))

  (func (export "proxy_on_response_headers") (param $ctx i32) (param $headers i32) (param $eos i32)
        (result i32)
    (drop (call $add_header (i32.const 2) (i32.const 160) (i32.const 6) (i32.const 170) (i32.const 5)))
    (drop (call $log (i32.const 3) (i32.const 180) (i32.const 16)))
    (i32.const 0))

  (func (export "proxy_on_log") (param $ctx i32)
    (drop (call $log (i32.const 0) (i32.const 220) (i32.const 11))))
)
