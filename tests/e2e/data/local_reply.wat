;; Test plugin (proxy-wasm ABI 0.2.1): answers every request itself.
;;   proxy_on_request_headers  sends a local 403 with body "denied by plugin" and header
;;                             x-denied: yes, logs "denying" (info), returns Pause
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $send_local_response (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))

  (data (i32.const 100) "denying")             ;; 100, 7
  (data (i32.const 110) "plugin_denied")       ;; 110, 13  (response code details)
  (data (i32.const 130) "denied by plugin")    ;; 130, 16  (body)
  ;; 160, 25: header pairs {x-denied: yes} = count, (key len, value len), "x-denied\0yes\0"
  (data (i32.const 160) "\01\00\00\00\08\00\00\00\03\00\00\00x-denied\00yes\00")

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
    (drop (call $send_local_response (i32.const 403) (i32.const 110) (i32.const 13)
                                     (i32.const 130) (i32.const 16) (i32.const 160) (i32.const 25)
                                     (i32.const -1)))
    (i32.const 1))
)
