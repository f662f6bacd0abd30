;; bad_pointers: host functions called with invalid pointers, lengths and enums (ABI 0.2.1).
;;
;; Memory is exactly one 64 KiB page and cannot grow (min 1, max 1), so every address >= 0x10000
;; is out of bounds. Allocator: a bump "malloc" over 0x8000..0x10000 (returns 0 when full),
;; reset at the start of every proxy_on_request_headers (the plugin keeps no returned data).
;; No configuration.
;;
;; proxy_on_request_headers(ctx, n, eos): first writes shared data "bad_pointers_key" = "v"
;; (so the later read finds the key), then makes each call below once, in this order, and logs
;; one INFO line per call, "bad_pointers: <case>=<status as unsigned decimal>", then INFO
;; "bad_pointers: done", then returns Continue. A host passes when it survives (no trap, no
;; crash), logs all lines, and returns the expected statuses:
;;   bad_pointers: log_ptr_oob=<status>   expected 6
;;   bad_pointers: log_len_overflow=<status>   expected 6
;;   bad_pointers: log_ptr_end_of_memory=<status>   expected 6
;;   bad_pointers: log_bad_level=<status>   expected 2
;;   bad_pointers: get_header_key_oob=<status>   expected 6
;;   bad_pointers: get_header_key_len_huge=<status>   expected 6
;;   bad_pointers: get_header_ret_oob=<status>   expected 6
;;   bad_pointers: get_header_bad_map=<status>   expected 2
;;   bad_pointers: add_header_value_oob=<status>   expected 6
;;   bad_pointers: get_pairs_ret_oob=<status>   expected 6
;;   bad_pointers: get_pairs_bad_map=<status>   expected 2
;;   bad_pointers: get_buffer_bad_type=<status>   expected 2
;;   bad_pointers: get_buffer_status_ret_oob=<status>   expected 6 (or 1/2 when the body is not available)
;;   bad_pointers: get_property_path_oob=<status>   expected 6
;;   bad_pointers: get_property_ret_oob=<status>   expected 6
;;   bad_pointers: define_metric_bad_type=<status>   expected 2
;;   bad_pointers: define_metric_ret_oob=<status>   expected 6
;;   bad_pointers: get_time_ret_oob=<status>   expected 6
;;   bad_pointers: continue_stream_bad_type=<status>   expected 2
;;   bad_pointers: close_stream_bad_type=<status>   expected 2
;;   bad_pointers: set_effective_context_unknown=<status>   expected 2
;;   bad_pointers: set_shared_key_oob=<status>   expected 6
;;   bad_pointers: get_shared_ret_oob=<status>   expected 6 (the key was written just before)
;;   bad_pointers: enqueue_unknown_queue=<status>   expected 1
;;   bad_pointers: http_call_malformed_pairs=<status>   expected non-zero (2 expected)
;;   bad_pointers: http_call_token_oob=<status>   expected non-zero (6 or 2)
;;   bad_pointers: send_local_response_body_oob=<status>   expected 6, and no local reply is sent
;; The last case must not produce a local reply: the request continues to the upstream.
;; proxy_on_response_headers: adds response header "x-bad-pointers: survived"; Continue.
(module
  (type $r1 (func (param i32) (result i32)))
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $proxy_get_header_map_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $proxy_add_header_map_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $proxy_get_header_map_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $proxy_get_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_status" (func $proxy_get_buffer_status (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $proxy_get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $proxy_define_metric (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_current_time_nanoseconds" (func $proxy_get_current_time_nanoseconds (type $r1)))
  (import "env" "proxy_continue_stream" (func $proxy_continue_stream (type $r1)))
  (import "env" "proxy_close_stream" (func $proxy_close_stream (type $r1)))
  (import "env" "proxy_set_effective_context" (func $proxy_set_effective_context (type $r1)))
  (import "env" "proxy_set_shared_data" (func $proxy_set_shared_data (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $proxy_get_shared_data (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_enqueue_shared_queue" (func $proxy_enqueue_shared_queue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call" (func $proxy_http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $proxy_send_local_response (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1 1)
  (data (i32.const 256) "bad_pointers: ")
  (data (i32.const 270) ":path")
  (data (i32.const 275) "bp_metric")
  (data (i32.const 284) "bad_pointers_cluster")
  (data (i32.const 304) "bad_pointers_key")
  (data (i32.const 320) "v")
  (data (i32.const 4096) "@B\0f\00\01\00\00\00")
  (data (i32.const 4112) "request\00path")
  (data (i32.const 321) "log_ptr_oob")
  (data (i32.const 332) "log_len_overflow")
  (data (i32.const 348) "log_ptr_end_of_memory")
  (data (i32.const 369) "log_bad_level")
  (data (i32.const 382) "get_header_key_oob")
  (data (i32.const 400) "get_header_key_len_huge")
  (data (i32.const 423) "get_header_ret_oob")
  (data (i32.const 441) "get_header_bad_map")
  (data (i32.const 459) "add_header_value_oob")
  (data (i32.const 479) "get_pairs_ret_oob")
  (data (i32.const 496) "get_pairs_bad_map")
  (data (i32.const 513) "get_buffer_bad_type")
  (data (i32.const 532) "get_buffer_status_ret_oob")
  (data (i32.const 557) "get_property_path_oob")
  (data (i32.const 578) "get_property_ret_oob")
  (data (i32.const 598) "define_metric_bad_type")
  (data (i32.const 620) "define_metric_ret_oob")
  (data (i32.const 641) "get_time_ret_oob")
  (data (i32.const 657) "continue_stream_bad_type")
  (data (i32.const 681) "close_stream_bad_type")
  (data (i32.const 702) "set_effective_context_unknown")
  (data (i32.const 731) "set_shared_key_oob")
  (data (i32.const 749) "get_shared_ret_oob")
  (data (i32.const 767) "enqueue_unknown_queue")
  (data (i32.const 788) "http_call_malformed_pairs")
  (data (i32.const 813) "http_call_token_oob")
  (data (i32.const 832) "send_local_response_body_oob")
  (data (i32.const 860) "bad_pointers: done")
  (data (i32.const 878) "x-bad-pointers")
  (data (i32.const 892) "survived")

  ;; ---- helpers: bump allocator, decimal formatting, "prefix name=value" log lines ----
  (global $heap (mut i32) (i32.const 0x8000))
  (func $malloc (export "malloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (if (i32.gt_u (i32.add (local.get $ptr) (local.get $size)) (i32.const 0x10000))
      (then (return (i32.const 0))))
    (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
    (local.get $ptr))
  ;; writes the decimal form of an unsigned value at $dst, returns its length
  (func $utoa (param $value i32) (param $dst i32) (result i32)
    (local $len i32) (local $tmp i32) (local $i i32)
    (local.set $tmp (local.get $value))
    (loop $count
      (local.set $len (i32.add (local.get $len) (i32.const 1)))
      (local.set $tmp (i32.div_u (local.get $tmp) (i32.const 10)))
      (br_if $count (local.get $tmp)))
    (local.set $i (local.get $len))
    (local.set $tmp (local.get $value))
    (loop $digits
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (i32.add (local.get $dst) (local.get $i))
        (i32.add (i32.const 48) (i32.rem_u (local.get $tmp) (i32.const 10))))
      (local.set $tmp (i32.div_u (local.get $tmp) (i32.const 10)))
      (br_if $digits (local.get $i)))
    (local.get $len))
  ;; logs "<prefix><name>=<value>" at INFO using the scratch area at 0x7000
  (func $log_kv (param $prefix i32) (param $prefix_len i32) (param $name i32) (param $name_len i32) (param $value i32)
    (local $at i32)
    (memory.copy (i32.const 0x7000) (local.get $prefix) (local.get $prefix_len))
    (local.set $at (i32.add (i32.const 0x7000) (local.get $prefix_len)))
    (memory.copy (local.get $at) (local.get $name) (local.get $name_len))
    (local.set $at (i32.add (local.get $at) (local.get $name_len)))
    (i32.store8 (local.get $at) (i32.const 61))
    (local.set $at (i32.add (local.get $at) (i32.const 1)))
    (local.set $at (i32.add (local.get $at) (call $utoa (local.get $value) (local.get $at))))
    (drop (call $proxy_log (i32.const 2) (i32.const 0x7000) (i32.sub (local.get $at) (i32.const 0x7000)))))

  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (global.set $heap (i32.const 0x8000))
    (drop (call $proxy_set_shared_data (i32.const 304) (i32.const 16) (i32.const 320) (i32.const 1) (i32.const 0)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 321) (i32.const 11) (call $proxy_log (i32.const 2) (i32.const 4294967280) (i32.const 100)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 332) (i32.const 16) (call $proxy_log (i32.const 2) (i32.const 4294901760) (i32.const 131072)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 348) (i32.const 21) (call $proxy_log (i32.const 2) (i32.const 65536) (i32.const 1)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 369) (i32.const 13) (call $proxy_log (i32.const 9) (i32.const 320) (i32.const 1)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 382) (i32.const 18) (call $proxy_get_header_map_value (i32.const 0) (i32.const 131072) (i32.const 4) (i32.const 0x6000) (i32.const 0x6004)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 400) (i32.const 23) (call $proxy_get_header_map_value (i32.const 0) (i32.const 270) (i32.const 4294967295) (i32.const 0x6000) (i32.const 0x6004)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 423) (i32.const 18) (call $proxy_get_header_map_value (i32.const 0) (i32.const 270) (i32.const 5) (i32.const 4294967292) (i32.const 4294967288)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 441) (i32.const 18) (call $proxy_get_header_map_value (i32.const 99) (i32.const 270) (i32.const 5) (i32.const 0x6000) (i32.const 0x6004)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 459) (i32.const 20) (call $proxy_add_header_map_value (i32.const 0) (i32.const 270) (i32.const 5) (i32.const 65536) (i32.const 10)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 479) (i32.const 17) (call $proxy_get_header_map_pairs (i32.const 0) (i32.const 65536) (i32.const 65540)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 496) (i32.const 17) (call $proxy_get_header_map_pairs (i32.const 1234) (i32.const 0x6000) (i32.const 0x6004)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 513) (i32.const 19) (call $proxy_get_buffer_bytes (i32.const 42) (i32.const 0) (i32.const 10) (i32.const 0x6000) (i32.const 0x6004)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 532) (i32.const 25) (call $proxy_get_buffer_status (i32.const 0) (i32.const 4294967295) (i32.const 4294967295)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 557) (i32.const 21) (call $proxy_get_property (i32.const 4294967295) (i32.const 2) (i32.const 0x6000) (i32.const 0x6004)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 578) (i32.const 20) (call $proxy_get_property (i32.const 4112) (i32.const 12) (i32.const 4294967280) (i32.const 4294967280)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 598) (i32.const 22) (call $proxy_define_metric (i32.const 7) (i32.const 275) (i32.const 9) (i32.const 0x6000)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 620) (i32.const 21) (call $proxy_define_metric (i32.const 0) (i32.const 275) (i32.const 9) (i32.const 65536)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 641) (i32.const 16) (call $proxy_get_current_time_nanoseconds (i32.const 4294967292)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 657) (i32.const 24) (call $proxy_continue_stream (i32.const 9)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 681) (i32.const 21) (call $proxy_close_stream (i32.const 9)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 702) (i32.const 29) (call $proxy_set_effective_context (i32.const 2147483647)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 731) (i32.const 18) (call $proxy_set_shared_data (i32.const 65536) (i32.const 4) (i32.const 320) (i32.const 1) (i32.const 0)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 749) (i32.const 18) (call $proxy_get_shared_data (i32.const 304) (i32.const 16) (i32.const 65536) (i32.const 65536) (i32.const 65536)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 767) (i32.const 21) (call $proxy_enqueue_shared_queue (i32.const 3735928559) (i32.const 320) (i32.const 1)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 788) (i32.const 25) (call $proxy_http_call (i32.const 284) (i32.const 20) (i32.const 4096) (i32.const 8) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 0x6008)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 813) (i32.const 19) (call $proxy_http_call (i32.const 284) (i32.const 20) (i32.const 4096) (i32.const 8) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 4294967295)))
    (call $log_kv (i32.const 256) (i32.const 14) (i32.const 832) (i32.const 28) (call $proxy_send_local_response (i32.const 500) (i32.const 320) (i32.const 1) (i32.const 65536) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const -1)))
    (drop (call $proxy_log (i32.const 2) (i32.const 860) (i32.const 18)))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (drop (call $proxy_add_header_map_value (i32.const 2) (i32.const 878) (i32.const 14) (i32.const 892) (i32.const 8)))
    (i32.const 0))
)
