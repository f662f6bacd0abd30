;; Test plugin (proxy-wasm ABI 0.2.1): reads the active span through wasmesh's span properties
;; and tags it.
;;   proxy_on_request_headers  copies wasmesh.span.trace_id and wasmesh.span.span_id into the
;;                             request headers x-plugin-trace-id / x-plugin-span-id (when the
;;                             property exists), sets wasmesh.span.tag.plugin.phase = "request"
;;   proxy_on_log              sets wasmesh.span.tag.plugin.log = "seen"
(module
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_property" (func $set_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_header (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))

  ;; constant strings; each comment gives offset and length
  (data (i32.const 100) "wasmesh\00span\00trace_id")         ;; 100, 21
  (data (i32.const 130) "wasmesh\00span\00span_id")          ;; 130, 20
  (data (i32.const 160) "x-plugin-trace-id")                 ;; 160, 17
  (data (i32.const 180) "x-plugin-span-id")                  ;; 180, 16
  (data (i32.const 200) "wasmesh\00span\00tag\00plugin.phase") ;; 200, 29
  (data (i32.const 240) "request")                           ;; 240, 7
  (data (i32.const 250) "wasmesh\00span\00tag\00plugin.log")   ;; 250, 27
  (data (i32.const 280) "seen")                              ;; 280, 4
  ;; out-params written by the host: 1024 = data pointer, 1028 = size

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
  (func (export "proxy_on_vm_start") (param $root i32) (param $size i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32) (i32.const 1))

  ;; request header $name = property $path, when the property exists (status 0 = OK)
  (func $copy_property (param $path i32) (param $path_len i32) (param $name i32) (param $name_len i32)
    (if (i32.eqz (call $get_property (local.get $path) (local.get $path_len) (i32.const 1024) (i32.const 1028)))
      (then
        (drop (call $add_header (i32.const 0) (local.get $name) (local.get $name_len)
                                (i32.load (i32.const 1024)) (i32.load (i32.const 1028)))))))

  (func (export "proxy_on_request_headers") (param $ctx i32) (param $headers i32) (param $eos i32)
        (result i32)
    (call $copy_property (i32.const 100) (i32.const 21) (i32.const 160) (i32.const 17))
    (call $copy_property (i32.const 130) (i32.const 20) (i32.const 180) (i32.const 16))
    (drop (call $set_property (i32.const 200) (i32.const 29) (i32.const 240) (i32.const 7)))
    (i32.const 0))

  (func (export "proxy_on_log") (param $ctx i32)
    (drop (call $set_property (i32.const 250) (i32.const 27) (i32.const 280) (i32.const 4))))
)
