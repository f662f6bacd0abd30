"""Runtime, part 1: allocator, garbage collector, exceptions, boxes and closures (WAT).

Memory management
-----------------
Every heap object is one block whose size is a power of two (16 bytes .. 1 GiB) starting
with an 8-byte header::

    +0 u32  block size | bit0 mark | bit1 free
    +4 u8   tag (TAG_*)      +5 u8 flags      +6 u16 class id (objects)

Free blocks sit on one free list per size class (heads at ``FREE_HEADS``); a block is
never split or merged, so a steady request mix reuses the same blocks forever.

Collection is mark-and-sweep, run only when an exported callback returns to the host and
no other callback is active (``$depth`` = 0). At that moment no guest frame is live, so
the roots are exactly the module globals (which hold the context tables): no stack
scanning, no reference counts, no write barriers. A collection runs when the bytes
allocated since the last one exceed max(``GC_MIN_THRESHOLD``, live bytes), so its cost is
amortised over the allocations that made it necessary and memory stays flat over any
number of requests. Tracing is precise: tags and flags say which slots hold pointers,
per-class pointer masks live in the class table. Marking uses an explicit stack (itself a
heap block the sweep reclaims), so structures of any depth are fine.

Static objects (string constants) live below ``$heap_base`` and are never traced.
"""

from __future__ import annotations

SCRATCH = 16  # 32 bytes of out-parameters for host calls
FREE_HEADS = 64  # 32 x u32 free-list heads, indexed by log2(block size)
CLASS_TABLE = 256  # 16 bytes per class: nfields, pointer mask, vtable base, name
CLASS_ENTRY = 16
GC_MIN_THRESHOLD = 262144

TAG_STR = 1
TAG_BYTES = 2
TAG_LIST = 3
TAG_DICT = 4
TAG_TUPLE = 5
TAG_OBJ = 6
TAG_BOX = 7
TAG_RAW = 8
TAG_CLOSURE = 9

WAT = r"""
(func $rt_alloc (param $size i32) (result i32)
  (local $total i32) (local $k i32) (local $p i32) (local $bsize i32) (local $need i32)
  (local.set $total (i32.add (local.get $size) (i32.const 8)))
  (if (i32.gt_u (local.get $total) (i32.const 1073741824)) (then (unreachable)))
  (if (i32.le_u (local.get $total) (i32.const 16))
    (then (local.set $k (i32.const 4)))
    (else (local.set $k (i32.sub (i32.const 32) (i32.clz (i32.sub (local.get $total) (i32.const 1)))))))
  (local.set $bsize (i32.shl (i32.const 1) (local.get $k)))
  (local.set $p (i32.load (i32.add (i32.const 64) (i32.shl (local.get $k) (i32.const 2)))))
  (if (local.get $p)
    (then
      (i32.store (i32.add (i32.const 64) (i32.shl (local.get $k) (i32.const 2)))
                 (i32.load offset=8 (local.get $p))))
    (else
      (local.set $p (global.get $heap_top))
      (local.set $need (i32.add (local.get $p) (local.get $bsize)))
      (if (i32.gt_u (local.get $need) (i32.shl (memory.size) (i32.const 16)))
        (then
          (if (i32.lt_s
                (memory.grow
                  (i32.shr_u
                    (i32.add (i32.sub (local.get $need) (i32.shl (memory.size) (i32.const 16)))
                             (i32.const 65535))
                    (i32.const 16)))
                (i32.const 0))
            (then (unreachable)))))
      (global.set $heap_top (local.get $need))))
  (i32.store (local.get $p) (local.get $bsize))
  (i32.store offset=4 (local.get $p) (i32.const 0))
  (global.set $gc_allocated (i32.add (global.get $gc_allocated) (local.get $bsize)))
  (local.get $p))

(func $rt_alloc_zeroed (param $size i32) (result i32)
  (local $p i32)
  (local.set $p (call $rt_alloc (local.get $size)))
  (memory.fill (i32.add (local.get $p) (i32.const 8)) (i32.const 0) (local.get $size))
  (local.get $p))

(func $rt_raw (param $size i32) (result i32)
  (local $p i32)
  (local.set $p (call $rt_alloc (local.get $size)))
  (i32.store8 offset=4 (local.get $p) (i32.const 8))
  (local.get $p))

(func $malloc (param $n i32) (result i32)
  (i32.add (call $rt_str_new (local.get $n) (i32.const 2)) (i32.const 16)))

(func $rt_mark_block (param $p i32)
  (if (i32.and (i32.ge_u (local.get $p) (global.get $heap_base))
               (i32.lt_u (local.get $p) (global.get $heap_top)))
    (then (i32.store (local.get $p) (i32.or (i32.load (local.get $p)) (i32.const 1))))))

(func $rt_mark (param $p i32)
  ;; mark an object and queue it for scanning (an explicit stack: no recursion, any depth)
  (if (i32.lt_u (local.get $p) (global.get $heap_base)) (then (return)))
  (if (i32.ge_u (local.get $p) (global.get $heap_top)) (then (return)))
  (if (i32.and (i32.load (local.get $p)) (i32.const 1)) (then (return)))
  (i32.store (local.get $p) (i32.or (i32.load (local.get $p)) (i32.const 1)))
  (if (i32.ge_u (global.get $mark_sp) (global.get $mark_cap)) (then (call $rt_mark_grow)))
  (i32.store (i32.add (global.get $mark_stack) (i32.shl (global.get $mark_sp) (i32.const 2))) (local.get $p))
  (global.set $mark_sp (i32.add (global.get $mark_sp) (i32.const 1))))

;; the mark stack is an ordinary heap block: unmarked, so the sweep reclaims it
(func $rt_mark_grow
  (local $cap i32) (local $block i32)
  (local.set $cap (select (i32.shl (global.get $mark_cap) (i32.const 1)) (i32.const 1024)
                          (global.get $mark_cap)))
  (local.set $block (i32.add (call $rt_raw (i32.shl (local.get $cap) (i32.const 2))) (i32.const 8)))
  (if (global.get $mark_sp)
    (then (memory.copy (local.get $block) (global.get $mark_stack) (i32.shl (global.get $mark_sp) (i32.const 2)))))
  (global.set $mark_stack (local.get $block))
  (global.set $mark_cap (local.get $cap)))

(func $rt_mark_drain
  (block $done
    (loop $next
      (br_if $done (i32.eqz (global.get $mark_sp)))
      (global.set $mark_sp (i32.sub (global.get $mark_sp) (i32.const 1)))
      (call $rt_scan (i32.load (i32.add (global.get $mark_stack) (i32.shl (global.get $mark_sp) (i32.const 2)))))
      (br $next))))

(func $rt_scan (param $p i32)
  (local $tag i32) (local $i i32) (local $n i32) (local $items i32) (local $mask i32)
  (local $entry i32) (local $flags i32) (local $cls i32)
  (local.set $tag (i32.load8_u offset=4 (local.get $p)))
  (local.set $flags (i32.load8_u offset=5 (local.get $p)))
  ;; list: mark the item array, then the items if they are pointers
  (if (i32.eq (local.get $tag) (i32.const 3))
    (then
      (local.set $items (i32.load offset=16 (local.get $p)))
      (call $rt_mark_block (local.get $items))
      (if (i32.and (local.get $flags) (i32.const 1))
        (then
          (local.set $n (i32.load offset=8 (local.get $p)))
          (block $done
            (loop $next
              (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
              (call $rt_mark (i32.wrap_i64 (i64.load offset=8
                (i32.add (local.get $items) (i32.shl (local.get $i) (i32.const 3))))))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br $next)))))
      (return)))
  ;; dict: entries and index arrays, then live keys/values that are pointers
  (if (i32.eq (local.get $tag) (i32.const 4))
    (then
      (local.set $items (i32.load offset=20 (local.get $p)))
      (call $rt_mark_block (local.get $items))
      (call $rt_mark_block (i32.load offset=24 (local.get $p)))
      (local.set $n (i32.load offset=12 (local.get $p)))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
          (local.set $entry (i32.add (i32.add (local.get $items) (i32.const 8))
                                     (i32.mul (local.get $i) (i32.const 24))))
          (if (i32.eq (i32.load offset=20 (local.get $entry)) (i32.const 1))
            (then
              (if (i32.and (local.get $flags) (i32.const 1))
                (then (call $rt_mark (i32.wrap_i64 (i64.load (local.get $entry))))))
              (if (i32.and (local.get $flags) (i32.const 2))
                (then (call $rt_mark (i32.wrap_i64 (i64.load offset=8 (local.get $entry))))))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next)))
      (return)))
  ;; tuple: slots whose bit is set in the mask
  (if (i32.eq (local.get $tag) (i32.const 5))
    (then
      (local.set $n (i32.load offset=8 (local.get $p)))
      (local.set $mask (i32.load offset=12 (local.get $p)))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
          (if (i32.and (local.get $mask) (i32.shl (i32.const 1) (local.get $i)))
            (then (call $rt_mark (i32.wrap_i64 (i64.load offset=16
              (i32.add (local.get $p) (i32.shl (local.get $i) (i32.const 3))))))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next)))
      (return)))
  ;; object: fields whose bit is set in the class's pointer mask
  (if (i32.eq (local.get $tag) (i32.const 6))
    (then
      (local.set $cls (i32.add (i32.const 256) (i32.shl (i32.load16_u offset=6 (local.get $p)) (i32.const 4))))
      (local.set $n (i32.load (local.get $cls)))
      (local.set $mask (i32.load offset=4 (local.get $cls)))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
          (if (i32.and (local.get $mask) (i32.shl (i32.const 1) (local.get $i)))
            (then (call $rt_mark (i32.wrap_i64 (i64.load offset=8
              (i32.add (local.get $p) (i32.shl (local.get $i) (i32.const 3))))))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next)))
      (return)))
  ;; closure: the bound receiver
  (if (i32.eq (local.get $tag) (i32.const 9))
    (then (call $rt_mark (i32.load offset=12 (local.get $p))))))

(func $rt_sweep
  (local $p i32) (local $hdr i32) (local $size i32) (local $head i32) (local $live i32)
  (memory.fill (i32.const 64) (i32.const 0) (i32.const 128))
  (local.set $p (global.get $heap_base))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $p) (global.get $heap_top)))
      (local.set $hdr (i32.load (local.get $p)))
      (local.set $size (i32.and (local.get $hdr) (i32.const -4)))
      (if (i32.and (local.get $hdr) (i32.const 1))
        (then
          (i32.store (local.get $p) (local.get $size))
          (local.set $live (i32.add (local.get $live) (local.get $size))))
        (else
          (i32.store (local.get $p) (i32.or (local.get $size) (i32.const 2)))
          (local.set $head (i32.add (i32.const 64) (i32.shl (i32.ctz (local.get $size)) (i32.const 2))))
          (i32.store offset=8 (local.get $p) (i32.load (local.get $head)))
          (i32.store (local.get $head) (local.get $p))))
      (local.set $p (i32.add (local.get $p) (local.get $size)))
      (br $next)))
  (global.set $gc_live (local.get $live)))

(func $rt_gc_collect
  (global.set $mark_sp (i32.const 0))
  (global.set $mark_cap (i32.const 0))
  (call $rt_mark_roots)
  (call $rt_mark_drain)
  (call $rt_sweep)
  (global.set $gc_allocated (i32.const 0))
  (global.set $gc_threshold
    (select (global.get $gc_live) (i32.const 262144)
            (i32.gt_u (global.get $gc_live) (i32.const 262144)))))

(func $rt_enter
  (if (i32.eqz (global.get $initialized)) (then (call $rt_initialize)))
  (global.set $depth (i32.add (global.get $depth) (i32.const 1))))

(func $rt_leave
  (if (global.get $exc) (then (call $rt_uncaught)))
  (global.set $depth (i32.sub (global.get $depth) (i32.const 1)))
  (if (i32.eqz (global.get $depth))
    (then
      (if (i32.ge_u (global.get $gc_allocated) (global.get $gc_threshold))
        (then (call $rt_gc_collect))))))

(func $rt_initialize
  (if (global.get $initialized) (then (return)))
  (global.set $initialized (i32.const 1))
  (global.set $depth (i32.add (global.get $depth) (i32.const 1)))
  (call $rt_init_modules)
  (if (global.get $exc) (then (call $rt_uncaught)))
  (global.set $depth (i32.sub (global.get $depth) (i32.const 1))))

(func $rt_uncaught
  (local $e i32) (local $msg i32)
  (local.set $e (global.get $exc))
  (global.set $exc (i32.const 0))
  (local.set $msg
    (call $rt_str_concat
      (call $rt_str_concat {{s:uncaught exception }}
        (i32.load offset=12 (i32.add (i32.const 256) (i32.shl (i32.load16_u offset=6 (local.get $e)) (i32.const 4)))))
      (call $rt_str_concat {{s:: }} (i32.wrap_i64 (i64.load offset=8 (local.get $e))))))
  (drop (call $proxy_log (i32.const 4) (i32.add (local.get $msg) (i32.const 16))
                         (i32.load offset=8 (local.get $msg))))
  (unreachable))

(func $rt_new_object (param $cid i32) (param $nfields i32) (result i32)
  (local $p i32)
  (local.set $p (call $rt_alloc_zeroed (i32.shl (local.get $nfields) (i32.const 3))))
  (i32.store8 offset=4 (local.get $p) (i32.const 6))
  (i32.store16 offset=6 (local.get $p) (local.get $cid))
  (local.get $p))

(func $rt_raise_msg (param $cid i32) (param $msg i32)
  (local $e i32)
  (local.set $e (call $rt_new_object (local.get $cid) (i32.const 1)))
  (i64.store offset=8 (local.get $e) (i64.extend_i32_u (local.get $msg)))
  (global.set $exc (local.get $e)))

(func $rt_raise_none
  (call $rt_raise_msg (global.get $cid.TypeError) {{s:None is not allowed here}}))

(func $rt_isinstance (param $p i32) (param $lo i32) (param $hi i32) (result i32)
  (local $cid i32)
  (if (i32.eqz (local.get $p)) (then (return (i32.const 0))))
  (local.set $cid (i32.load16_u offset=6 (local.get $p)))
  (i32.and (i32.ge_u (local.get $cid) (local.get $lo)) (i32.le_u (local.get $cid) (local.get $hi))))

(func $rt_vtable (param $p i32) (result i32)
  (i32.load offset=8 (i32.add (i32.const 256) (i32.shl (i32.load16_u offset=6 (local.get $p)) (i32.const 4)))))

(func $rt_box (param $v i64) (result i32)
  (local $p i32)
  (local.set $p (call $rt_alloc (i32.const 8)))
  (i32.store8 offset=4 (local.get $p) (i32.const 7))
  (i64.store offset=8 (local.get $p) (local.get $v))
  (local.get $p))

(func $rt_closure_new (param $fidx i32) (param $self i32) (result i32)
  (local $p i32)
  (local.set $p (call $rt_alloc (i32.const 8)))
  (i32.store8 offset=4 (local.get $p) (i32.const 9))
  (i32.store offset=8 (local.get $p) (local.get $fidx))
  (i32.store offset=12 (local.get $p) (local.get $self))
  (local.get $p))

(func $rt_tuple_new (param $n i32) (param $mask i32) (result i32)
  (local $p i32)
  (local.set $p (call $rt_alloc (i32.add (i32.const 8) (i32.shl (local.get $n) (i32.const 3)))))
  (i32.store8 offset=4 (local.get $p) (i32.const 5))
  (i32.store offset=8 (local.get $p) (local.get $n))
  (i32.store offset=12 (local.get $p) (local.get $mask))
  (local.get $p))

(func $rt_i64_floordiv (param $a i64) (param $b i64) (result i64)
  (local $q i64)
  (if (i64.eqz (local.get $b))
    (then
      (call $rt_raise_msg (global.get $cid.ZeroDivisionError) {{s:integer division or modulo by zero}})
      (return (i64.const 0))))
  (if (i32.and (i64.eq (local.get $a) (i64.const 0x8000000000000000)) (i64.eq (local.get $b) (i64.const -1)))
    (then (return (local.get $a))))
  (local.set $q (i64.div_s (local.get $a) (local.get $b)))
  (if (i32.and (i64.ne (i64.rem_s (local.get $a) (local.get $b)) (i64.const 0))
               (i32.xor (i64.lt_s (local.get $a) (i64.const 0)) (i64.lt_s (local.get $b) (i64.const 0))))
    (then (local.set $q (i64.sub (local.get $q) (i64.const 1)))))
  (local.get $q))

(func $rt_i64_mod (param $a i64) (param $b i64) (result i64)
  (local $r i64)
  (if (i64.eqz (local.get $b))
    (then
      (call $rt_raise_msg (global.get $cid.ZeroDivisionError) {{s:integer division or modulo by zero}})
      (return (i64.const 0))))
  (if (i64.eq (local.get $b) (i64.const -1)) (then (return (i64.const 0))))
  (local.set $r (i64.rem_s (local.get $a) (local.get $b)))
  (if (i32.and (i64.ne (local.get $r) (i64.const 0))
               (i32.xor (i64.lt_s (local.get $r) (i64.const 0)) (i64.lt_s (local.get $b) (i64.const 0))))
    (then (local.set $r (i64.add (local.get $r) (local.get $b)))))
  (local.get $r))

(func $rt_i64_pow (param $a i64) (param $b i64) (result i64)
  (local $r i64)
  (if (i64.lt_s (local.get $b) (i64.const 0))
    (then
      (call $rt_raise_msg (global.get $cid.ValueError) {{s:negative exponents need float, which is not supported}})
      (return (i64.const 0))))
  (local.set $r (i64.const 1))
  (block $done
    (loop $next
      (br_if $done (i64.eqz (local.get $b)))
      (if (i64.ne (i64.and (local.get $b) (i64.const 1)) (i64.const 0))
        (then (local.set $r (i64.mul (local.get $r) (local.get $a)))))
      (local.set $a (i64.mul (local.get $a) (local.get $a)))
      (local.set $b (i64.shr_u (local.get $b) (i64.const 1)))
      (br $next)))
  (local.get $r))

(func $rt_i64_shift_check (param $b i64) (result i64)
  (if (i64.lt_s (local.get $b) (i64.const 0))
    (then (call $rt_raise_msg (global.get $cid.ValueError) {{s:negative shift count}})))
  (local.get $b))
"""
