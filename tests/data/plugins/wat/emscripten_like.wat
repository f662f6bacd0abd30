;; emscripten_like: the import shape of Emscripten-built C++ plugins (ABI 0.2.1).
;;
;; Imports env.emscripten_notify_memory_growth (i32)->(), env.pthread_equal (i32,i32)->i32,
;; wasi_snapshot_preview1.fd_write, wasi_snapshot_preview1.clock_time_get,
;; wasi_snapshot_preview1.proc_exit, and wasi_unstable.fd_write, wasi_unstable.clock_time_get
;; (the same functions under the old module name). Exports memory, "malloc", "_initialize".
;; _initialize: calls emscripten_notify_memory_growth(0) and writes
;;   "emscripten_like: initialized\n" to fd 1 through wasi_snapshot_preview1.fd_write.
;; proxy_on_request_headers(ctx, n, eos): grows memory by one page and calls
;;   emscripten_notify_memory_growth(0); writes "emscripten_like: stderr via wasi_unstable\n"
;;   to fd 2 through wasi_unstable.fd_write; adds request headers
;;   "x-pthread-equal: <pthread_equal(7, 7) as 0/1>", "x-pthread-unequal: <pthread_equal(1, 2)
;;   as 0/1>", "x-clock-snapshot: ok|fail" (wasi_snapshot_preview1.clock_time_get(REALTIME)
;;   returned 0 and a non-zero time) and "x-clock-unstable: ok|fail" (same via wasi_unstable);
;;   Continue. proc_exit is imported but never called.
(module
  (import "env" "emscripten_notify_memory_growth" (func $notify (param i32)))
  (import "env" "pthread_equal" (func $pthread_equal (param i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_unstable" "fd_write" (func $fd_write_old (param i32 i32 i32 i32) (result i32)))
  (import "wasi_unstable" "clock_time_get" (func $clock_old (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "emscripten_like: initialized\n")
  (data (i32.const 128) "emscripten_like: stderr via wasi_unstable\n")
  (data (i32.const 192) "x-pthread-equal")
  (data (i32.const 208) "x-pthread-unequal")
  (data (i32.const 232) "x-clock-snapshot")
  (data (i32.const 256) "x-clock-unstable")
  (data (i32.const 280) "01")
  (data (i32.const 288) "ok")
  (data (i32.const 296) "fail")
  (global $heap (mut i32) (i32.const 4096))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (if (i32.gt_u (i32.add (local.get $ptr) (local.get $size)) (i32.shl (memory.size) (i32.const 16)))
      (then (return (i32.const 0))))
    (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
    (local.get $ptr))
  ;; one iovec at 16: (ptr, len); bytes written at 24
  (func $write (param $fd i32) (param $ptr i32) (param $len i32) (param $old i32)
    (i32.store (i32.const 16) (local.get $ptr))
    (i32.store (i32.const 20) (local.get $len))
    (if (local.get $old)
      (then (drop (call $fd_write_old (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 24))))
      (else (drop (call $fd_write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 24))))))
  (func (export "_initialize")
    (call $notify (i32.const 0))
    (call $write (i32.const 1) (i32.const 64) (i32.const 29) (i32.const 0)))
  (func $clock_ok (param $status i32) (result i32)
    (i32.and (i32.eqz (local.get $status)) (i64.ne (i64.load (i32.const 32)) (i64.const 0))))
  (func $add_ok (param $name i32) (param $len i32) (param $ok i32)
    (if (local.get $ok)
      (then (drop (call $add (i32.const 0) (local.get $name) (local.get $len) (i32.const 288) (i32.const 2))))
      (else (drop (call $add (i32.const 0) (local.get $name) (local.get $len) (i32.const 296) (i32.const 4))))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.ne (memory.grow (i32.const 1)) (i32.const -1)) (then (call $notify (i32.const 0))))
    (call $write (i32.const 2) (i32.const 128) (i32.const 42) (i32.const 1))
    (drop (call $add (i32.const 0) (i32.const 192) (i32.const 15)
      (i32.add (i32.const 280) (i32.ne (call $pthread_equal (i32.const 7) (i32.const 7)) (i32.const 0))) (i32.const 1)))
    (drop (call $add (i32.const 0) (i32.const 208) (i32.const 17)
      (i32.add (i32.const 280) (i32.ne (call $pthread_equal (i32.const 1) (i32.const 2)) (i32.const 0))) (i32.const 1)))
    (i64.store (i32.const 32) (i64.const 0))
    (call $add_ok (i32.const 232) (i32.const 16) (call $clock_ok (call $clock (i32.const 0) (i64.const 1) (i32.const 32))))
    (i64.store (i32.const 32) (i64.const 0))
    (call $add_ok (i32.const 256) (i32.const 16) (call $clock_ok (call $clock_old (i32.const 0) (i64.const 1) (i32.const 32))))
    (i32.const 0))
)
