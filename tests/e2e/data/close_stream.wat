;; Test plugin (proxy-wasm ABI 0.2.1): resets every request instead of answering it.
;;   proxy_on_request_headers  logs "closing" (info), proxy_close_stream(HTTP_REQUEST), returns Pause
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_close_stream" (func $close_stream (param i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))

  (data (i32.const 100) "closing")             ;; 100, 7

  (func (export "proxy_abi_version_0_2_1"))

  (func (export "malloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
    (local.get $ptr))

  (func (export "proxy_on_context_create") (param $ctx i32) (param $parent i32))

  (func (export "proxy_on_request_headers") (param $ctx i32) (param $headers i32) (param $eos i32)
        (result i32)
    (drop (call $log (i32.const 2) (i32.const 100) (i32.const 7)))
    (drop (call $close_stream (i32.const 0)))
    (i32.const 1))
)
