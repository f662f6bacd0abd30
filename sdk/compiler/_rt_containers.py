"""Runtime, part 3: list, dict and the ABI's header-pairs encoding (WAT).

Elements are 8-byte slots (see ``_types.slot_kind``); functions that compare elements take
a ``kind``: 0 compares the slot bits, 1 compares str/bytes contents, 2 compares identity.

list: +8 u32 length, +12 u32 capacity, +16 item array (a raw block, slots from +8);
header flag bit0 = items are pointers.

dict (insertion-ordered, like CPython): +8 live count, +12 entries used, +16 entry
capacity, +20 entry array (24-byte entries: key, value, u32 hash, u32 state 1 live /
2 deleted), +24 index (u32 entry+1 per slot, open addressing, at most half full), +28
index mask. Deleting marks the entry; a resize compacts. Header flag bit0 = keys are
str/bytes (else int), bit1 = values are pointers.
"""

from __future__ import annotations

WAT = r"""
(func $rt_list_new (param $cap i32) (param $flags i32) (result i32)
  (local $p i32)
  (local.set $p (call $rt_alloc (i32.const 12)))
  (i32.store8 offset=4 (local.get $p) (i32.const 3))
  (i32.store8 offset=5 (local.get $p) (local.get $flags))
  (i32.store offset=8 (local.get $p) (i32.const 0))
  (i32.store offset=12 (local.get $p) (local.get $cap))
  (i32.store offset=16 (local.get $p)
    (select (call $rt_raw (i32.shl (local.get $cap) (i32.const 3))) (i32.const 0) (local.get $cap)))
  (local.get $p))

(func $rt_list_reserve (param $l i32) (param $need i32)
  (local $cap i32) (local $items i32)
  (local.set $cap (i32.load offset=12 (local.get $l)))
  (if (i32.le_u (local.get $need) (local.get $cap)) (then (return)))
  (local.set $cap (select (i32.shl (local.get $cap) (i32.const 1)) (i32.const 4) (local.get $cap)))
  (if (i32.lt_u (local.get $cap) (local.get $need)) (then (local.set $cap (local.get $need))))
  (local.set $items (call $rt_raw (i32.shl (local.get $cap) (i32.const 3))))
  (if (i32.load offset=16 (local.get $l))
    (then
      (memory.copy (i32.add (local.get $items) (i32.const 8))
                   (i32.add (i32.load offset=16 (local.get $l)) (i32.const 8))
                   (i32.shl (i32.load offset=8 (local.get $l)) (i32.const 3)))))
  (i32.store offset=12 (local.get $l) (local.get $cap))
  (i32.store offset=16 (local.get $l) (local.get $items)))

(func $rt_list_slot (param $l i32) (param $i i32) (result i32)
  (i32.add (i32.add (i32.load offset=16 (local.get $l)) (i32.const 8)) (i32.shl (local.get $i) (i32.const 3))))

(func $rt_list_append (param $l i32) (param $v i64)
  (local $n i32)
  (local.set $n (i32.load offset=8 (local.get $l)))
  (call $rt_list_reserve (local.get $l) (i32.add (local.get $n) (i32.const 1)))
  (i64.store (call $rt_list_slot (local.get $l) (local.get $n)) (local.get $v))
  (i32.store offset=8 (local.get $l) (i32.add (local.get $n) (i32.const 1))))

;; normalised index of $i in a list of length $n, or -1 when out of range
(func $rt_index (param $i i64) (param $n i32) (result i32)
  (if (i64.lt_s (local.get $i) (i64.const 0)) (then (local.set $i (i64.add (local.get $i) (i64.extend_i32_u (local.get $n))))))
  (if (i32.or (i64.lt_s (local.get $i) (i64.const 0)) (i64.ge_s (local.get $i) (i64.extend_i32_u (local.get $n))))
    (then (return (i32.const -1))))
  (i32.wrap_i64 (local.get $i)))

(func $rt_list_get (param $l i32) (param $i i64) (result i64)
  (local $k i32)
  (local.set $k (call $rt_index (local.get $i) (i32.load offset=8 (local.get $l))))
  (if (i32.lt_s (local.get $k) (i32.const 0))
    (then
      (call $rt_raise_msg (global.get $cid.IndexError) {{s:list index out of range}})
      (return (i64.const 0))))
  (i64.load (call $rt_list_slot (local.get $l) (local.get $k))))

(func $rt_list_set (param $l i32) (param $i i64) (param $v i64)
  (local $k i32)
  (local.set $k (call $rt_index (local.get $i) (i32.load offset=8 (local.get $l))))
  (if (i32.lt_s (local.get $k) (i32.const 0))
    (then
      (call $rt_raise_msg (global.get $cid.IndexError) {{s:list assignment index out of range}})
      (return)))
  (i64.store (call $rt_list_slot (local.get $l) (local.get $k)) (local.get $v)))

(func $rt_list_pop (param $l i32) (param $i i64) (result i64)
  (local $k i32) (local $n i32) (local $v i64)
  (local.set $n (i32.load offset=8 (local.get $l)))
  (if (i32.eqz (local.get $n))
    (then
      (call $rt_raise_msg (global.get $cid.IndexError) {{s:pop from empty list}})
      (return (i64.const 0))))
  (local.set $k (call $rt_index (local.get $i) (local.get $n)))
  (if (i32.lt_s (local.get $k) (i32.const 0))
    (then
      (call $rt_raise_msg (global.get $cid.IndexError) {{s:pop index out of range}})
      (return (i64.const 0))))
  (local.set $v (i64.load (call $rt_list_slot (local.get $l) (local.get $k))))
  (memory.copy (call $rt_list_slot (local.get $l) (local.get $k))
               (call $rt_list_slot (local.get $l) (i32.add (local.get $k) (i32.const 1)))
               (i32.shl (i32.sub (i32.sub (local.get $n) (local.get $k)) (i32.const 1)) (i32.const 3)))
  (i32.store offset=8 (local.get $l) (i32.sub (local.get $n) (i32.const 1)))
  (local.get $v))

(func $rt_list_insert (param $l i32) (param $i i64) (param $v i64)
  (local $n i32) (local $k i32)
  (local.set $n (i32.load offset=8 (local.get $l)))
  (if (i64.lt_s (local.get $i) (i64.const 0))
    (then
      (local.set $i (i64.add (local.get $i) (i64.extend_i32_u (local.get $n))))
      (if (i64.lt_s (local.get $i) (i64.const 0)) (then (local.set $i (i64.const 0))))))
  (if (i64.gt_s (local.get $i) (i64.extend_i32_u (local.get $n))) (then (local.set $i (i64.extend_i32_u (local.get $n)))))
  (local.set $k (i32.wrap_i64 (local.get $i)))
  (call $rt_list_reserve (local.get $l) (i32.add (local.get $n) (i32.const 1)))
  (memory.copy (call $rt_list_slot (local.get $l) (i32.add (local.get $k) (i32.const 1)))
               (call $rt_list_slot (local.get $l) (local.get $k))
               (i32.shl (i32.sub (local.get $n) (local.get $k)) (i32.const 3)))
  (i64.store (call $rt_list_slot (local.get $l) (local.get $k)) (local.get $v))
  (i32.store offset=8 (local.get $l) (i32.add (local.get $n) (i32.const 1))))

(func $rt_list_slice (param $l i32) (param $start i64) (param $stop i64) (param $flags i32) (result i32)
  (local $n i64) (local $r i32) (local $k i32)
  (local.set $n (i64.extend_i32_u (i32.load offset=8 (local.get $l))))
  (local.set $start (call $rt_slice_bound (local.get $start) (i32.and (local.get $flags) (i32.const 1))
                                          (i64.const 0) (local.get $n)))
  (local.set $stop (call $rt_slice_bound (local.get $stop) (i32.and (local.get $flags) (i32.const 2))
                                         (local.get $n) (local.get $n)))
  (if (i64.lt_s (local.get $stop) (local.get $start)) (then (local.set $stop (local.get $start))))
  (local.set $k (i32.wrap_i64 (i64.sub (local.get $stop) (local.get $start))))
  (local.set $r (call $rt_list_new (local.get $k) (i32.load8_u offset=5 (local.get $l))))
  (if (local.get $k)
    (then
      (memory.copy (call $rt_list_slot (local.get $r) (i32.const 0))
                   (call $rt_list_slot (local.get $l) (i32.wrap_i64 (local.get $start)))
                   (i32.shl (local.get $k) (i32.const 3)))))
  (i32.store offset=8 (local.get $r) (local.get $k))
  (local.get $r))

(func $rt_list_extend (param $a i32) (param $b i32)
  (local $na i32) (local $nb i32)
  (local.set $na (i32.load offset=8 (local.get $a)))
  (local.set $nb (i32.load offset=8 (local.get $b)))
  (if (i32.eqz (local.get $nb)) (then (return)))
  (call $rt_list_reserve (local.get $a) (i32.add (local.get $na) (local.get $nb)))
  (memory.copy (call $rt_list_slot (local.get $a) (local.get $na))
               (call $rt_list_slot (local.get $b) (i32.const 0))
               (i32.shl (local.get $nb) (i32.const 3)))
  (i32.store offset=8 (local.get $a) (i32.add (local.get $na) (local.get $nb))))

(func $rt_list_concat (param $a i32) (param $b i32) (result i32)
  (local $r i32)
  (local.set $r (call $rt_list_new
    (i32.add (i32.load offset=8 (local.get $a)) (i32.load offset=8 (local.get $b)))
    (i32.load8_u offset=5 (local.get $a))))
  (call $rt_list_extend (local.get $r) (local.get $a))
  (call $rt_list_extend (local.get $r) (local.get $b))
  (local.get $r))

(func $rt_list_repeat (param $l i32) (param $k i64) (result i32)
  (local $r i32)
  (local.set $r (call $rt_list_new (i32.load offset=8 (local.get $l)) (i32.load8_u offset=5 (local.get $l))))
  (block $done
    (loop $next
      (br_if $done (i64.le_s (local.get $k) (i64.const 0)))
      (call $rt_list_extend (local.get $r) (local.get $l))
      (local.set $k (i64.sub (local.get $k) (i64.const 1)))
      (br $next)))
  (local.get $r))

(func $rt_slot_eq (param $x i64) (param $y i64) (param $kind i32) (result i32)
  (if (i32.eq (local.get $kind) (i32.const 1))
    (then (return (call $rt_str_eq (i32.wrap_i64 (local.get $x)) (i32.wrap_i64 (local.get $y))))))
  (i64.eq (local.get $x) (local.get $y)))

(func $rt_list_index (param $l i32) (param $v i64) (param $kind i32) (result i64)
  (local $i i32) (local $n i32)
  (local.set $n (i32.load offset=8 (local.get $l)))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (if (call $rt_slot_eq (i64.load (call $rt_list_slot (local.get $l) (local.get $i))) (local.get $v) (local.get $kind))
        (then (return (i64.extend_i32_u (local.get $i)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (i64.const -1))

(func $rt_list_index_or_raise (param $l i32) (param $v i64) (param $kind i32) (result i64)
  (local $r i64)
  (local.set $r (call $rt_list_index (local.get $l) (local.get $v) (local.get $kind)))
  (if (i64.lt_s (local.get $r) (i64.const 0))
    (then (call $rt_raise_msg (global.get $cid.ValueError) {{s:value is not in list}})))
  (local.get $r))

(func $rt_list_count (param $l i32) (param $v i64) (param $kind i32) (result i64)
  (local $i i32) (local $n i32) (local $c i64)
  (local.set $n (i32.load offset=8 (local.get $l)))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (if (call $rt_slot_eq (i64.load (call $rt_list_slot (local.get $l) (local.get $i))) (local.get $v) (local.get $kind))
        (then (local.set $c (i64.add (local.get $c) (i64.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (local.get $c))

(func $rt_list_remove (param $l i32) (param $v i64) (param $kind i32)
  (local $r i64)
  (local.set $r (call $rt_list_index (local.get $l) (local.get $v) (local.get $kind)))
  (if (i64.lt_s (local.get $r) (i64.const 0))
    (then
      (call $rt_raise_msg (global.get $cid.ValueError) {{s:list.remove(x): x not in list}})
      (return)))
  (drop (call $rt_list_pop (local.get $l) (local.get $r))))

(func $rt_list_eq (param $a i32) (param $b i32) (param $kind i32) (result i32)
  (local $i i32) (local $n i32)
  (local.set $n (i32.load offset=8 (local.get $a)))
  (if (i32.ne (local.get $n) (i32.load offset=8 (local.get $b))) (then (return (i32.const 0))))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (if (i32.eqz (call $rt_slot_eq (i64.load (call $rt_list_slot (local.get $a) (local.get $i)))
                                     (i64.load (call $rt_list_slot (local.get $b) (local.get $i))) (local.get $kind)))
        (then (return (i32.const 0))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (i32.const 1))

(func $rt_list_reverse (param $l i32)
  (local $i i32) (local $j i32) (local $t i64)
  (local.set $j (i32.sub (i32.load offset=8 (local.get $l)) (i32.const 1)))
  (block $done
    (loop $next
      (br_if $done (i32.ge_s (local.get $i) (local.get $j)))
      (local.set $t (i64.load (call $rt_list_slot (local.get $l) (local.get $i))))
      (i64.store (call $rt_list_slot (local.get $l) (local.get $i))
                 (i64.load (call $rt_list_slot (local.get $l) (local.get $j))))
      (i64.store (call $rt_list_slot (local.get $l) (local.get $j)) (local.get $t))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (local.set $j (i32.sub (local.get $j) (i32.const 1)))
      (br $next))))

;; -1/0/1 ordering of two slots: kind 0 signed ints, 1 str/bytes, 3 floats
(func $rt_slot_cmp (param $x i64) (param $y i64) (param $kind i32) (result i32)
  (if (i32.eq (local.get $kind) (i32.const 1))
    (then (return (call $rt_str_cmp (i32.wrap_i64 (local.get $x)) (i32.wrap_i64 (local.get $y))))))
  (if (i32.eq (local.get $kind) (i32.const 3))
    (then
      (if (f64.lt (f64.reinterpret_i64 (local.get $x)) (f64.reinterpret_i64 (local.get $y))) (then (return (i32.const -1))))
      (return (f64.gt (f64.reinterpret_i64 (local.get $x)) (f64.reinterpret_i64 (local.get $y))))))
  (if (i64.lt_s (local.get $x) (local.get $y)) (then (return (i32.const -1))))
  (i64.gt_s (local.get $x) (local.get $y)))

;; stable bottom-up merge sort; $reverse 1 sorts descending (still stable, like CPython)
(func $rt_list_sort (param $l i32) (param $kind i32) (param $reverse i32)
  (local $n i32) (local $width i32) (local $lo i32) (local $mid i32) (local $hi i32)
  (local $i i32) (local $j i32) (local $k i32) (local $src i32) (local $dst i32) (local $t i32)
  (local $x i64) (local $y i64) (local $c i32)
  (local.set $n (i32.load offset=8 (local.get $l)))
  (if (i32.lt_u (local.get $n) (i32.const 2)) (then (return)))
  (local.set $src (i32.add (i32.load offset=16 (local.get $l)) (i32.const 8)))
  (local.set $dst (i32.add (call $rt_raw (i32.shl (local.get $n) (i32.const 3))) (i32.const 8)))
  (local.set $width (i32.const 1))
  (block $sorted
    (loop $pass
      (br_if $sorted (i32.ge_u (local.get $width) (local.get $n)))
      (local.set $lo (i32.const 0))
      (block $merged
        (loop $run
          (br_if $merged (i32.ge_u (local.get $lo) (local.get $n)))
          (local.set $mid (i32.add (local.get $lo) (local.get $width)))
          (if (i32.gt_u (local.get $mid) (local.get $n)) (then (local.set $mid (local.get $n))))
          (local.set $hi (i32.add (local.get $mid) (local.get $width)))
          (if (i32.gt_u (local.get $hi) (local.get $n)) (then (local.set $hi (local.get $n))))
          (local.set $i (local.get $lo))
          (local.set $j (local.get $mid))
          (local.set $k (local.get $lo))
          (block $done
            (loop $next
              (br_if $done (i32.ge_u (local.get $k) (local.get $hi)))
              (block $take_right
                (block $take_left
                  (br_if $take_right (i32.ge_u (local.get $i) (local.get $mid)))
                  (br_if $take_left (i32.ge_u (local.get $j) (local.get $hi)))
                  (local.set $x (i64.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 3)))))
                  (local.set $y (i64.load (i32.add (local.get $src) (i32.shl (local.get $j) (i32.const 3)))))
                  (local.set $c (call $rt_slot_cmp (local.get $y) (local.get $x) (local.get $kind)))
                  (if (local.get $reverse) (then (local.set $c (i32.sub (i32.const 0) (local.get $c)))))
                  (br_if $take_right (i32.lt_s (local.get $c) (i32.const 0))))
                (i64.store (i32.add (local.get $dst) (i32.shl (local.get $k) (i32.const 3)))
                           (i64.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 3)))))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (local.set $k (i32.add (local.get $k) (i32.const 1)))
                (br $next))
              (i64.store (i32.add (local.get $dst) (i32.shl (local.get $k) (i32.const 3)))
                         (i64.load (i32.add (local.get $src) (i32.shl (local.get $j) (i32.const 3)))))
              (local.set $j (i32.add (local.get $j) (i32.const 1)))
              (local.set $k (i32.add (local.get $k) (i32.const 1)))
              (br $next)))
          (local.set $lo (local.get $hi))
          (br $run)))
      (local.set $t (local.get $src))
      (local.set $src (local.get $dst))
      (local.set $dst (local.get $t))
      (local.set $width (i32.shl (local.get $width) (i32.const 1)))
      (br $pass)))
  (if (i32.ne (local.get $src) (i32.add (i32.load offset=16 (local.get $l)) (i32.const 8)))
    (then (memory.copy (local.get $dst) (local.get $src) (i32.shl (local.get $n) (i32.const 3))))))

;; min (want 0) or max (want 1) of a non-empty list
(func $rt_list_extreme (param $l i32) (param $kind i32) (param $want i32) (result i64)
  (local $i i32) (local $n i32) (local $best i64) (local $v i64) (local $c i32)
  (local.set $n (i32.load offset=8 (local.get $l)))
  (if (i32.eqz (local.get $n))
    (then
      (call $rt_raise_msg (global.get $cid.ValueError) {{s:arg is an empty sequence}})
      (return (i64.const 0))))
  (local.set $best (i64.load (call $rt_list_slot (local.get $l) (i32.const 0))))
  (local.set $i (i32.const 1))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $v (i64.load (call $rt_list_slot (local.get $l) (local.get $i))))
      (local.set $c (call $rt_slot_cmp (local.get $v) (local.get $best) (local.get $kind)))
      (if (select (i32.gt_s (local.get $c) (i32.const 0)) (i32.lt_s (local.get $c) (i32.const 0)) (local.get $want))
        (then (local.set $best (local.get $v))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (local.get $best))

(func $rt_dict_new (param $flags i32) (result i32)
  (local $p i32)
  (local.set $p (call $rt_alloc_zeroed (i32.const 24)))
  (i32.store8 offset=4 (local.get $p) (i32.const 4))
  (i32.store8 offset=5 (local.get $p) (local.get $flags))
  (local.get $p))

(func $rt_dict_hash (param $d i32) (param $k i64) (result i32)
  (if (i32.and (i32.load8_u offset=5 (local.get $d)) (i32.const 1))
    (then (return (call $rt_str_hash (i32.wrap_i64 (local.get $k))))))
  (i32.mul (i32.xor (i32.wrap_i64 (local.get $k)) (i32.wrap_i64 (i64.shr_u (local.get $k) (i64.const 32))))
           (i32.const -1640531535)))

(func $rt_dict_entry (param $d i32) (param $e i32) (result i32)
  (i32.add (i32.add (i32.load offset=20 (local.get $d)) (i32.const 8)) (i32.mul (local.get $e) (i32.const 24))))

(func $rt_dict_find (param $d i32) (param $k i64) (result i32)
  (local $h i32) (local $j i32) (local $slot i32) (local $ent i32) (local $mask i32) (local $text i32)
  (if (i32.eqz (i32.load offset=8 (local.get $d))) (then (return (i32.const -1))))
  (local.set $h (call $rt_dict_hash (local.get $d) (local.get $k)))
  (local.set $mask (i32.load offset=28 (local.get $d)))
  (local.set $text (i32.and (i32.load8_u offset=5 (local.get $d)) (i32.const 1)))
  (local.set $j (i32.and (local.get $h) (local.get $mask)))
  (loop $probe
    (local.set $slot (i32.load offset=8 (i32.add (i32.load offset=24 (local.get $d)) (i32.shl (local.get $j) (i32.const 2)))))
    (if (i32.eqz (local.get $slot)) (then (return (i32.const -1))))
    (local.set $ent (call $rt_dict_entry (local.get $d) (i32.sub (local.get $slot) (i32.const 1))))
    (if (i32.and (i32.eq (i32.load offset=20 (local.get $ent)) (i32.const 1))
                 (i32.eq (i32.load offset=16 (local.get $ent)) (local.get $h)))
      (then
        (if (local.get $text)
          (then
            (if (call $rt_str_eq (i32.wrap_i64 (i64.load (local.get $ent))) (i32.wrap_i64 (local.get $k)))
              (then (return (i32.sub (local.get $slot) (i32.const 1))))))
          (else
            (if (i64.eq (i64.load (local.get $ent)) (local.get $k))
              (then (return (i32.sub (local.get $slot) (i32.const 1)))))))))
    (local.set $j (i32.and (i32.add (local.get $j) (i32.const 1)) (local.get $mask)))
    (br $probe))
  (i32.const -1))

(func $rt_dict_index_insert (param $d i32) (param $h i32) (param $e i32)
  (local $j i32) (local $mask i32) (local $slot i32)
  (local.set $mask (i32.load offset=28 (local.get $d)))
  (local.set $j (i32.and (local.get $h) (local.get $mask)))
  (loop $probe
    (local.set $slot (i32.add (i32.add (i32.load offset=24 (local.get $d)) (i32.const 8)) (i32.shl (local.get $j) (i32.const 2))))
    (if (i32.load (local.get $slot))
      (then
        (local.set $j (i32.and (i32.add (local.get $j) (i32.const 1)) (local.get $mask)))
        (br $probe))))
  (i32.store (local.get $slot) (i32.add (local.get $e) (i32.const 1))))

(func $rt_dict_resize (param $d i32)
  (local $cap i32) (local $old i32) (local $used i32) (local $i i32) (local $src i32) (local $dst i32)
  (local $n i32) (local $index i32)
  ;; a power of two at least twice the live count (the index mask depends on it)
  (local.set $cap (i32.const 8))
  (block $sized
    (loop $grow
      (br_if $sized (i32.ge_u (local.get $cap) (i32.shl (i32.load offset=8 (local.get $d)) (i32.const 1))))
      (local.set $cap (i32.shl (local.get $cap) (i32.const 1)))
      (br $grow)))
  (local.set $old (i32.load offset=20 (local.get $d)))
  (local.set $used (i32.load offset=12 (local.get $d)))
  (i32.store offset=20 (local.get $d) (call $rt_raw (i32.mul (local.get $cap) (i32.const 24))))
  (local.set $index (call $rt_alloc_zeroed (i32.shl (local.get $cap) (i32.const 3))))
  (i32.store8 offset=4 (local.get $index) (i32.const 8))
  (i32.store offset=24 (local.get $d) (local.get $index))
  (i32.store offset=28 (local.get $d) (i32.sub (i32.shl (local.get $cap) (i32.const 1)) (i32.const 1)))
  (i32.store offset=16 (local.get $d) (local.get $cap))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $used)))
      (local.set $src (i32.add (i32.add (local.get $old) (i32.const 8)) (i32.mul (local.get $i) (i32.const 24))))
      (if (i32.eq (i32.load offset=20 (local.get $src)) (i32.const 1))
        (then
          (local.set $dst (call $rt_dict_entry (local.get $d) (local.get $n)))
          (memory.copy (local.get $dst) (local.get $src) (i32.const 24))
          (call $rt_dict_index_insert (local.get $d) (i32.load offset=16 (local.get $src)) (local.get $n))
          (local.set $n (i32.add (local.get $n) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (i32.store offset=12 (local.get $d) (local.get $n)))

(func $rt_dict_set (param $d i32) (param $k i64) (param $v i64)
  (local $e i32) (local $ent i32) (local $h i32)
  (local.set $e (call $rt_dict_find (local.get $d) (local.get $k)))
  (if (i32.ge_s (local.get $e) (i32.const 0))
    (then
      (i64.store offset=8 (call $rt_dict_entry (local.get $d) (local.get $e)) (local.get $v))
      (return)))
  (if (i32.eq (i32.load offset=12 (local.get $d)) (i32.load offset=16 (local.get $d)))
    (then (call $rt_dict_resize (local.get $d))))
  (local.set $e (i32.load offset=12 (local.get $d)))
  (local.set $h (call $rt_dict_hash (local.get $d) (local.get $k)))
  (local.set $ent (call $rt_dict_entry (local.get $d) (local.get $e)))
  (i64.store (local.get $ent) (local.get $k))
  (i64.store offset=8 (local.get $ent) (local.get $v))
  (i32.store offset=16 (local.get $ent) (local.get $h))
  (i32.store offset=20 (local.get $ent) (i32.const 1))
  (call $rt_dict_index_insert (local.get $d) (local.get $h) (local.get $e))
  (i32.store offset=12 (local.get $d) (i32.add (local.get $e) (i32.const 1)))
  (i32.store offset=8 (local.get $d) (i32.add (i32.load offset=8 (local.get $d)) (i32.const 1))))

(func $rt_dict_key_error (param $d i32) (param $k i64)
  (call $rt_raise_msg (global.get $cid.KeyError)
    (if (result i32) (i32.and (i32.load8_u offset=5 (local.get $d)) (i32.const 1))
      (then (call $rt_repr (i32.wrap_i64 (local.get $k))))
      (else (call $rt_int_to_str (local.get $k))))))

(func $rt_dict_get (param $d i32) (param $k i64) (result i64)
  (local $e i32)
  (local.set $e (call $rt_dict_find (local.get $d) (local.get $k)))
  (if (i32.lt_s (local.get $e) (i32.const 0))
    (then
      (call $rt_dict_key_error (local.get $d) (local.get $k))
      (return (i64.const 0))))
  (i64.load offset=8 (call $rt_dict_entry (local.get $d) (local.get $e))))

(func $rt_dict_get_or (param $d i32) (param $k i64) (param $default i64) (result i64)
  (local $e i32)
  (local.set $e (call $rt_dict_find (local.get $d) (local.get $k)))
  (if (i32.lt_s (local.get $e) (i32.const 0)) (then (return (local.get $default))))
  (i64.load offset=8 (call $rt_dict_entry (local.get $d) (local.get $e))))

(func $rt_dict_contains (param $d i32) (param $k i64) (result i32)
  (i32.ge_s (call $rt_dict_find (local.get $d) (local.get $k)) (i32.const 0)))

(func $rt_dict_pop_or (param $d i32) (param $k i64) (param $default i64) (param $raise i32) (result i64)
  (local $e i32) (local $ent i32) (local $v i64)
  (local.set $e (call $rt_dict_find (local.get $d) (local.get $k)))
  (if (i32.lt_s (local.get $e) (i32.const 0))
    (then
      (if (local.get $raise) (then (call $rt_dict_key_error (local.get $d) (local.get $k))))
      (return (local.get $default))))
  (local.set $ent (call $rt_dict_entry (local.get $d) (local.get $e)))
  (local.set $v (i64.load offset=8 (local.get $ent)))
  (i32.store offset=20 (local.get $ent) (i32.const 2))
  (i64.store (local.get $ent) (i64.const 0))
  (i64.store offset=8 (local.get $ent) (i64.const 0))
  (i32.store offset=8 (local.get $d) (i32.sub (i32.load offset=8 (local.get $d)) (i32.const 1)))
  (if (i32.eqz (i32.load offset=8 (local.get $d)))
    (then (call $rt_dict_clear (local.get $d))))
  (local.get $v))

(func $rt_dict_pop (param $d i32) (param $k i64) (result i64)
  (call $rt_dict_pop_or (local.get $d) (local.get $k) (i64.const 0) (i32.const 1)))

(func $rt_dict_del (param $d i32) (param $k i64)
  (drop (call $rt_dict_pop_or (local.get $d) (local.get $k) (i64.const 0) (i32.const 1))))

(func $rt_dict_clear (param $d i32)
  (i32.store offset=8 (local.get $d) (i32.const 0))
  (i32.store offset=12 (local.get $d) (i32.const 0))
  (i32.store offset=16 (local.get $d) (i32.const 0))
  (i32.store offset=20 (local.get $d) (i32.const 0))
  (i32.store offset=24 (local.get $d) (i32.const 0))
  (i32.store offset=28 (local.get $d) (i32.const 0)))

(func $rt_dict_setdefault (param $d i32) (param $k i64) (param $v i64) (result i64)
  (local $e i32)
  (local.set $e (call $rt_dict_find (local.get $d) (local.get $k)))
  (if (i32.ge_s (local.get $e) (i32.const 0))
    (then (return (i64.load offset=8 (call $rt_dict_entry (local.get $d) (local.get $e))))))
  (call $rt_dict_set (local.get $d) (local.get $k) (local.get $v))
  (local.get $v))

;; index of the first live entry at or after $i, or -1
(func $rt_dict_next (param $d i32) (param $i i32) (result i32)
  (block $done
    (loop $next
      (br_if $done (i32.ge_s (local.get $i) (i32.load offset=12 (local.get $d))))
      (if (i32.eq (i32.load offset=20 (call $rt_dict_entry (local.get $d) (local.get $i))) (i32.const 1))
        (then (return (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (i32.const -1))

(func $rt_dict_key_at (param $d i32) (param $e i32) (result i64)
  (i64.load (call $rt_dict_entry (local.get $d) (local.get $e))))

(func $rt_dict_value_at (param $d i32) (param $e i32) (result i64)
  (i64.load offset=8 (call $rt_dict_entry (local.get $d) (local.get $e))))

;; $what: 0 keys, 1 values, 2 (key, value) tuples with pointer mask $mask
(func $rt_dict_list (param $d i32) (param $what i32) (param $flags i32) (param $mask i32) (result i32)
  (local $out i32) (local $e i32) (local $t i32)
  (local.set $out (call $rt_list_new (i32.load offset=8 (local.get $d)) (local.get $flags)))
  (local.set $e (i32.const 0))
  (block $done
    (loop $next
      (local.set $e (call $rt_dict_next (local.get $d) (local.get $e)))
      (br_if $done (i32.lt_s (local.get $e) (i32.const 0)))
      (if (i32.eqz (local.get $what))
        (then (call $rt_list_append (local.get $out) (call $rt_dict_key_at (local.get $d) (local.get $e)))))
      (if (i32.eq (local.get $what) (i32.const 1))
        (then (call $rt_list_append (local.get $out) (call $rt_dict_value_at (local.get $d) (local.get $e)))))
      (if (i32.eq (local.get $what) (i32.const 2))
        (then
          (local.set $t (call $rt_tuple_new (i32.const 2) (local.get $mask)))
          (i64.store offset=16 (local.get $t) (call $rt_dict_key_at (local.get $d) (local.get $e)))
          (i64.store offset=24 (local.get $t) (call $rt_dict_value_at (local.get $d) (local.get $e)))
          (call $rt_list_append (local.get $out) (i64.extend_i32_u (local.get $t)))))
      (local.set $e (i32.add (local.get $e) (i32.const 1)))
      (br $next)))
  (local.get $out))

(func $rt_dict_update (param $d i32) (param $other i32)
  (local $e i32)
  (block $done
    (loop $next
      (local.set $e (call $rt_dict_next (local.get $other) (local.get $e)))
      (br_if $done (i32.lt_s (local.get $e) (i32.const 0)))
      (call $rt_dict_set (local.get $d) (call $rt_dict_key_at (local.get $other) (local.get $e))
                         (call $rt_dict_value_at (local.get $other) (local.get $e)))
      (local.set $e (i32.add (local.get $e) (i32.const 1)))
      (br $next))))

(func $rt_dict_copy (param $d i32) (result i32)
  (local $r i32)
  (local.set $r (call $rt_dict_new (i32.load8_u offset=5 (local.get $d))))
  (call $rt_dict_update (local.get $r) (local.get $d))
  (local.get $r))

;; header-map pairs blob -> list[tuple[bytes, bytes]]
(func $rt_pairs_decode (param $b i32) (result i32)
  (local $out i32) (local $n i32) (local $count i32) (local $i i32) (local $sizes i32) (local $data i32)
  (local $kl i32) (local $vl i32) (local $t i32) (local $p i32)
  (local.set $out (call $rt_list_new (i32.const 0) (i32.const 1)))
  (local.set $n (i32.load offset=8 (local.get $b)))
  (local.set $p (i32.add (local.get $b) (i32.const 16)))
  (if (i32.lt_u (local.get $n) (i32.const 4)) (then (return (local.get $out))))
  (local.set $count (i32.load (local.get $p)))
  (if (i32.gt_u (local.get $count) (i32.shr_u (i32.sub (local.get $n) (i32.const 4)) (i32.const 3)))
    (then (return (local.get $out))))
  (local.set $sizes (i32.add (local.get $p) (i32.const 4)))
  (local.set $data (i32.add (local.get $sizes) (i32.shl (local.get $count) (i32.const 3))))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
      (local.set $kl (i32.load (i32.add (local.get $sizes) (i32.shl (local.get $i) (i32.const 3)))))
      (local.set $vl (i32.load offset=4 (i32.add (local.get $sizes) (i32.shl (local.get $i) (i32.const 3)))))
      (br_if $done (i32.gt_u (i32.add (i32.add (i32.sub (local.get $data) (local.get $p)) (local.get $kl)) (i32.add (local.get $vl) (i32.const 2)))
                             (local.get $n)))
      (local.set $t (call $rt_tuple_new (i32.const 2) (i32.const 3)))
      (i64.store offset=16 (local.get $t) (i64.extend_i32_u (call $rt_str_sub (local.get $b)
        (i32.sub (local.get $data) (local.get $p)) (i32.add (i32.sub (local.get $data) (local.get $p)) (local.get $kl)))))
      (local.set $data (i32.add (local.get $data) (i32.add (local.get $kl) (i32.const 1))))
      (i64.store offset=24 (local.get $t) (i64.extend_i32_u (call $rt_str_sub (local.get $b)
        (i32.sub (local.get $data) (local.get $p)) (i32.add (i32.sub (local.get $data) (local.get $p)) (local.get $vl)))))
      (local.set $data (i32.add (local.get $data) (i32.add (local.get $vl) (i32.const 1))))
      (call $rt_list_append (local.get $out) (i64.extend_i32_u (local.get $t)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (local.get $out))

;; list[tuple[bytes, bytes]] -> header-map pairs blob (empty map -> empty bytes)
(func $rt_pairs_encode (param $l i32) (result i32)
  (local $n i32) (local $i i32) (local $size i32) (local $t i32) (local $k i32) (local $v i32)
  (local $r i32) (local $sizes i32) (local $data i32)
  (local.set $n (i32.load offset=8 (local.get $l)))
  (if (i32.eqz (local.get $n)) (then (return (call $rt_str_new (i32.const 0) (i32.const 2)))))
  (local.set $size (i32.add (i32.const 4) (i32.shl (local.get $n) (i32.const 3))))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $t (i32.wrap_i64 (i64.load (call $rt_list_slot (local.get $l) (local.get $i)))))
      (local.set $size (i32.add (local.get $size)
        (i32.add (i32.add (i32.load offset=8 (i32.wrap_i64 (i64.load offset=16 (local.get $t))))
                          (i32.load offset=8 (i32.wrap_i64 (i64.load offset=24 (local.get $t)))))
                 (i32.const 2))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (local.set $r (call $rt_str_new (local.get $size) (i32.const 2)))
  (i32.store offset=16 (local.get $r) (local.get $n))
  (local.set $sizes (i32.add (local.get $r) (i32.const 20)))
  (local.set $data (i32.add (local.get $sizes) (i32.shl (local.get $n) (i32.const 3))))
  (local.set $i (i32.const 0))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $t (i32.wrap_i64 (i64.load (call $rt_list_slot (local.get $l) (local.get $i)))))
      (local.set $k (i32.wrap_i64 (i64.load offset=16 (local.get $t))))
      (local.set $v (i32.wrap_i64 (i64.load offset=24 (local.get $t))))
      (i32.store (local.get $sizes) (i32.load offset=8 (local.get $k)))
      (i32.store offset=4 (local.get $sizes) (i32.load offset=8 (local.get $v)))
      (local.set $sizes (i32.add (local.get $sizes) (i32.const 8)))
      (memory.copy (local.get $data) (i32.add (local.get $k) (i32.const 16)) (i32.load offset=8 (local.get $k)))
      (local.set $data (i32.add (local.get $data) (i32.load offset=8 (local.get $k))))
      (i32.store8 (local.get $data) (i32.const 0))
      (local.set $data (i32.add (local.get $data) (i32.const 1)))
      (memory.copy (local.get $data) (i32.add (local.get $v) (i32.const 16)) (i32.load offset=8 (local.get $v)))
      (local.set $data (i32.add (local.get $data) (i32.load offset=8 (local.get $v))))
      (i32.store8 (local.get $data) (i32.const 0))
      (local.set $data (i32.add (local.get $data) (i32.const 1)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (local.get $r))
"""
