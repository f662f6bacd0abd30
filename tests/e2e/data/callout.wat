;; Test plugin (proxy-wasm ABI 0.2.1): asks cluster "authz" before letting a request through.
;;   proxy_on_request_headers    proxy_http_call("authz", GET /check, authority authz, body "ping",
;;                               1000 ms), remembers the stream context, returns Pause
;;   proxy_on_http_call_response logs the callout's response body (info), adds it to the paused
;;                               request as x-authz: <body>, resumes the request
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call"
    (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $set_effective_context (param i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue_stream (param i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (global $stream (mut i32) (i32.const 0))

  (data (i32.const 100) "authz")               ;; 100, 5   (cluster)
  (data (i32.const 110) "ping")                ;; 110, 4   (callout body)
  (data (i32.const 120) "x-authz")             ;; 120, 7
  (data (i32.const 130) "callout failed")      ;; 130, 14
  ;; 200, 70: header pairs {:method: GET, :path: /check, :authority: authz}
  (data (i32.const 200)
    "\03\00\00\00"
    "\07\00\00\00\03\00\00\00" "\05\00\00\00\06\00\00\00" "\0a\00\00\00\05\00\00\00"
    ":method\00GET\00:path\00/check\00:authority\00authz\00")
  ;; out-params written by the host: 1024 = data pointer, 1028 = size, 1032 = call token

  (func (export "proxy_abi_version_0_2_1"))

  (func (export "malloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
    (local.get $ptr))

  (func (export "proxy_on_context_create") (param $ctx i32) (param $parent i32))

  (func (export "proxy_on_request_headers") (param $ctx i32) (param $headers i32) (param $eos i32)
        (result i32)
    (global.set $stream (local.get $ctx))
    (if (call $http_call (i32.const 100) (i32.const 5) (i32.const 200) (i32.const 70)
                         (i32.const 110) (i32.const 4) (i32.const 0) (i32.const 0)
                         (i32.const 1000) (i32.const 1032))
      (then
        (drop (call $log (i32.const 4) (i32.const 130) (i32.const 14)))
        (return (i32.const 0))))
    (i32.const 1))

  (func (export "proxy_on_http_call_response")
        (param $root i32) (param $token i32) (param $headers i32) (param $body i32) (param $trailers i32)
    (drop (call $get_buffer (i32.const 4) (i32.const 0) (local.get $body) (i32.const 1024) (i32.const 1028)))
    (drop (call $log (i32.const 2) (i32.load (i32.const 1024)) (i32.load (i32.const 1028))))
    (drop (call $set_effective_context (global.get $stream)))
    (drop (call $add_header (i32.const 0) (i32.const 120) (i32.const 7)
                            (i32.load (i32.const 1024)) (i32.load (i32.const 1028))))
    (drop (call $continue_stream (i32.const 0))))
)
