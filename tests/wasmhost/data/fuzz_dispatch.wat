;; Fuzz guest (proxy-wasm ABI 0.2.1): calls any host function with raw values chosen by the test.
;; tests/wasmhost/test_fuzz_hostcalls.py fills in the two marked places from
;; wasmhost._registry.HOST_FUNCTIONS: one import per fuzzed host function, and in $fire one
;; br_table arm per import that loads its arguments from the slots and stores its result.
;;
;; Set by the test before each example, in globals (a fuzzed pointer lets the host write
;; anywhere in memory, so nothing the guest reads after the call lives there):
;;   phase   which callback makes the call (1 request headers, 2 request body,
;;           3 request trailers, 4 response headers, 5 response body, 6 on_log, 7 on_tick)
;;   index   which host function (br_table arm)
;;   result  result of the last call (0 for functions without a result)
;;   fired   number of calls made (the test expects exactly one per example)
;;   heap    allocator bump pointer (the test resets it to 16384)
;; In memory, read only before the call:
;;   264.. argument slots, u32 each; an i64 parameter takes two slots (low word first)
;; 4096..8191 scratch bytes the test fills (pointers into it are "valid" guest pointers)
;; 16384..131071 the allocator's arena; malloc returns 0 when a request does not fit.
(module
  ;;@IMPORTS@
  (memory (export "memory") 2)
  (global $phase (export "phase") (mut i32) (i32.const 0))
  (global $index (export "index") (mut i32) (i32.const 0))
  (global $result (export "result") (mut i32) (i32.const 0))
  (global $fired (export "fired") (mut i32) (i32.const 0))
  (global $heap (export "heap") (mut i32) (i32.const 16384))

  (func (export "proxy_abi_version_0_2_1"))

  (func $malloc (export "malloc") (param $size i32) (result i32)
    (local $ptr i32) (local $end i32)
    (local.set $ptr (global.get $heap))
    (if (i32.gt_u (local.get $size) (i32.sub (i32.const 131072) (local.get $ptr)))
      (then (return (i32.const 0))))
    (local.set $end (i32.and (i32.add (i32.add (local.get $ptr) (local.get $size)) (i32.const 7))
                             (i32.const -8)))
    (global.set $heap (local.get $end))
    (local.get $ptr))

  (func $fire
    ;;@DISPATCH@
    (global.set $fired (i32.add (global.get $fired) (i32.const 1))))

  (func $fire_in (param $phase i32)
    (if (i32.eq (global.get $phase) (local.get $phase))
      (then (call $fire))))

  (func (export "proxy_on_context_create") (param $ctx i32) (param $parent i32))
  (func (export "proxy_on_vm_start") (param $root i32) (param $size i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32) (i32.const 1))

  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (call $fire_in (i32.const 1)) (i32.const 0))
  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (call $fire_in (i32.const 2)) (i32.const 0))
  (func (export "proxy_on_request_trailers") (param $ctx i32) (param $n i32) (result i32)
    (call $fire_in (i32.const 3)) (i32.const 0))
  (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (call $fire_in (i32.const 4)) (i32.const 0))
  (func (export "proxy_on_response_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (call $fire_in (i32.const 5)) (i32.const 0))
  (func (export "proxy_on_log") (param $ctx i32)
    (call $fire_in (i32.const 6)))
  (func (export "proxy_on_tick") (param $root i32)
    (call $fire_in (i32.const 7)))
)
