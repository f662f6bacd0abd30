"""Runtime, part 2: str and bytes (WAT).

Layout: header (tag 1 = str, 2 = bytes), +8 u32 byte length, +12 u32 cached hash (0 =
not computed), +16 the bytes. A str holds UTF-8; indexes, lengths and slices count code
points like CPython. Header flag bit0 says "ASCII-ness known", bit1 "contains non-ASCII";
for pure-ASCII text (nearly all headers) every code-point operation is a byte operation.
bytes objects are treated as ASCII so the same functions serve both.

Case mapping, ``isdigit``-style tests and whitespace stripping/splitting follow ASCII
rules; non-ASCII characters are left alone (CPython would also map non-ASCII letters).
"""

from __future__ import annotations

WAT = r"""
(func $rt_str_new (param $len i32) (param $tag i32) (result i32)
  (local $p i32)
  (local.set $p (call $rt_alloc (i32.add (local.get $len) (i32.const 8))))
  (i32.store8 offset=4 (local.get $p) (local.get $tag))
  (i32.store offset=8 (local.get $p) (local.get $len))
  (i32.store offset=12 (local.get $p) (i32.const 0))
  (local.get $p))

(func $rt_str_from_data (param $ptr i32) (param $len i32) (result i32)
  (local $obj i32)
  (if (i32.eqz (local.get $ptr)) (then (return (call $rt_str_new (i32.const 0) (i32.const 2)))))
  (local.set $obj (i32.sub (local.get $ptr) (i32.const 16)))
  (if (i32.or (i32.lt_u (local.get $obj) (global.get $heap_base))
              (i32.ge_u (local.get $ptr) (global.get $heap_top)))
    (then (unreachable)))
  (if (i32.or (i32.ne (i32.load8_u offset=4 (local.get $obj)) (i32.const 2))
              (i32.gt_u (local.get $len) (i32.load offset=8 (local.get $obj))))
    (then (unreachable)))
  (i32.store offset=8 (local.get $obj) (local.get $len))
  (local.get $obj))

(func $rt_str_sub (param $s i32) (param $b i32) (param $e i32) (result i32)
  (local $r i32)
  (local.set $r (call $rt_str_new (i32.sub (local.get $e) (local.get $b)) (i32.load8_u offset=4 (local.get $s))))
  (memory.copy (i32.add (local.get $r) (i32.const 16))
               (i32.add (i32.add (local.get $s) (i32.const 16)) (local.get $b))
               (i32.sub (local.get $e) (local.get $b)))
  (if (i32.eq (i32.load8_u offset=5 (local.get $s)) (i32.const 1))
    (then (i32.store8 offset=5 (local.get $r) (i32.const 1))))
  (local.get $r))

(func $rt_str_retag (param $s i32) (param $tag i32) (result i32)
  (local $r i32)
  (local.set $r (call $rt_str_sub (local.get $s) (i32.const 0) (i32.load offset=8 (local.get $s))))
  (i32.store8 offset=4 (local.get $r) (local.get $tag))
  (i32.store8 offset=5 (local.get $r) (i32.const 0))
  (local.get $r))

(func $rt_str_concat (param $a i32) (param $b i32) (result i32)
  (local $la i32) (local $lb i32) (local $r i32) (local $fa i32) (local $fb i32)
  (local.set $la (i32.load offset=8 (local.get $a)))
  (local.set $lb (i32.load offset=8 (local.get $b)))
  (if (i32.eqz (local.get $lb)) (then (return (local.get $a))))
  (if (i32.and (i32.eqz (local.get $la))
               (i32.eq (i32.load8_u offset=4 (local.get $a)) (i32.load8_u offset=4 (local.get $b))))
    (then (return (local.get $b))))
  (local.set $r (call $rt_str_new (i32.add (local.get $la) (local.get $lb)) (i32.load8_u offset=4 (local.get $a))))
  (memory.copy (i32.add (local.get $r) (i32.const 16)) (i32.add (local.get $a) (i32.const 16)) (local.get $la))
  (memory.copy (i32.add (i32.add (local.get $r) (i32.const 16)) (local.get $la))
               (i32.add (local.get $b) (i32.const 16)) (local.get $lb))
  (local.set $fa (i32.load8_u offset=5 (local.get $a)))
  (local.set $fb (i32.load8_u offset=5 (local.get $b)))
  (if (i32.and (i32.and (local.get $fa) (local.get $fb)) (i32.const 1))
    (then (i32.store8 offset=5 (local.get $r)
            (i32.or (i32.const 1) (i32.and (i32.or (local.get $fa) (local.get $fb)) (i32.const 2))))))
  (local.get $r))

(func $rt_memeq (param $p i32) (param $q i32) (param $n i32) (result i32)
  (block $bytes
    (loop $words
      (br_if $bytes (i32.lt_u (local.get $n) (i32.const 8)))
      (if (i64.ne (i64.load (local.get $p)) (i64.load (local.get $q))) (then (return (i32.const 0))))
      (local.set $p (i32.add (local.get $p) (i32.const 8)))
      (local.set $q (i32.add (local.get $q) (i32.const 8)))
      (local.set $n (i32.sub (local.get $n) (i32.const 8)))
      (br $words)))
  (block $done
    (loop $next
      (br_if $done (i32.eqz (local.get $n)))
      (if (i32.ne (i32.load8_u (local.get $p)) (i32.load8_u (local.get $q))) (then (return (i32.const 0))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (local.set $q (i32.add (local.get $q) (i32.const 1)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $next)))
  (i32.const 1))

(func $rt_str_eq (param $a i32) (param $b i32) (result i32)
  (if (i32.eq (local.get $a) (local.get $b)) (then (return (i32.const 1))))
  (if (i32.or (i32.eqz (local.get $a)) (i32.eqz (local.get $b))) (then (return (i32.const 0))))
  (if (i32.ne (i32.load offset=8 (local.get $a)) (i32.load offset=8 (local.get $b))) (then (return (i32.const 0))))
  (call $rt_memeq (i32.add (local.get $a) (i32.const 16)) (i32.add (local.get $b) (i32.const 16))
                  (i32.load offset=8 (local.get $a))))

(func $rt_str_cmp (param $a i32) (param $b i32) (result i32)
  (local $la i32) (local $lb i32) (local $n i32) (local $i i32) (local $x i32) (local $y i32)
  (local.set $la (i32.load offset=8 (local.get $a)))
  (local.set $lb (i32.load offset=8 (local.get $b)))
  (local.set $n (select (local.get $la) (local.get $lb) (i32.lt_u (local.get $la) (local.get $lb))))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $x (i32.load8_u offset=16 (i32.add (local.get $a) (local.get $i))))
      (local.set $y (i32.load8_u offset=16 (i32.add (local.get $b) (local.get $i))))
      (if (i32.lt_u (local.get $x) (local.get $y)) (then (return (i32.const -1))))
      (if (i32.gt_u (local.get $x) (local.get $y)) (then (return (i32.const 1))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (if (i32.lt_u (local.get $la) (local.get $lb)) (then (return (i32.const -1))))
  (i32.gt_u (local.get $la) (local.get $lb)))

(func $rt_str_hash (param $s i32) (result i32)
  (local $h i32) (local $i i32) (local $n i32)
  (local.set $h (i32.load offset=12 (local.get $s)))
  (if (local.get $h) (then (return (local.get $h))))
  (local.set $h (i32.const -2128831035))
  (local.set $n (i32.load offset=8 (local.get $s)))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $h (i32.mul (i32.xor (local.get $h) (i32.load8_u offset=16 (i32.add (local.get $s) (local.get $i))))
                             (i32.const 16777619)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (if (i32.eqz (local.get $h)) (then (local.set $h (i32.const 1))))
  (i32.store offset=12 (local.get $s) (local.get $h))
  (local.get $h))

(func $rt_str_is_ascii (param $s i32) (result i32)
  (local $f i32) (local $i i32) (local $n i32)
  (if (i32.eq (i32.load8_u offset=4 (local.get $s)) (i32.const 2)) (then (return (i32.const 1))))
  (local.set $f (i32.load8_u offset=5 (local.get $s)))
  (if (i32.and (local.get $f) (i32.const 1))
    (then (return (i32.eqz (i32.and (local.get $f) (i32.const 2))))))
  (local.set $n (i32.load offset=8 (local.get $s)))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (if (i32.ge_u (i32.load8_u offset=16 (i32.add (local.get $s) (local.get $i))) (i32.const 128))
        (then
          (i32.store8 offset=5 (local.get $s) (i32.const 3))
          (return (i32.const 0))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (i32.store8 offset=5 (local.get $s) (i32.const 1))
  (i32.const 1))

;; number of code points in the first $b bytes
(func $rt_str_cps (param $s i32) (param $b i32) (result i32)
  (local $i i32) (local $c i32)
  (if (call $rt_str_is_ascii (local.get $s)) (then (return (local.get $b))))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $b)))
      (if (i32.ne (i32.and (i32.load8_u offset=16 (i32.add (local.get $s) (local.get $i))) (i32.const 192))
                  (i32.const 128))
        (then (local.set $c (i32.add (local.get $c) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (local.get $c))

(func $rt_str_len (param $s i32) (result i64)
  (i64.extend_i32_u (call $rt_str_cps (local.get $s) (i32.load offset=8 (local.get $s)))))

;; byte offset of code point $cp (0 <= cp <= length)
(func $rt_str_offset (param $s i32) (param $cp i32) (result i32)
  (local $i i32) (local $n i32)
  (if (call $rt_str_is_ascii (local.get $s)) (then (return (local.get $cp))))
  (local.set $n (i32.load offset=8 (local.get $s)))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (if (i32.ne (i32.and (i32.load8_u offset=16 (i32.add (local.get $s) (local.get $i))) (i32.const 192))
                  (i32.const 128))
        (then
          (if (i32.eqz (local.get $cp)) (then (return (local.get $i))))
          (local.set $cp (i32.sub (local.get $cp) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (local.get $n))

;; Python slice bound normalisation: $v (if present) against length $n
(func $rt_slice_bound (param $v i64) (param $present i32) (param $default i64) (param $n i64) (result i64)
  (if (i32.eqz (local.get $present)) (then (return (local.get $default))))
  (if (i64.lt_s (local.get $v) (i64.const 0))
    (then
      (local.set $v (i64.add (local.get $v) (local.get $n)))
      (if (i64.lt_s (local.get $v) (i64.const 0)) (then (local.set $v (i64.const 0))))))
  (if (i64.gt_s (local.get $v) (local.get $n)) (then (local.set $v (local.get $n))))
  (local.get $v))

(func $rt_str_slice (param $s i32) (param $start i64) (param $stop i64) (param $flags i32) (result i32)
  (local $n i64)
  (local.set $n (call $rt_str_len (local.get $s)))
  (local.set $start (call $rt_slice_bound (local.get $start) (i32.and (local.get $flags) (i32.const 1))
                                          (i64.const 0) (local.get $n)))
  (local.set $stop (call $rt_slice_bound (local.get $stop) (i32.and (local.get $flags) (i32.const 2))
                                         (local.get $n) (local.get $n)))
  (if (i64.lt_s (local.get $stop) (local.get $start)) (then (local.set $stop (local.get $start))))
  (if (i32.and (i64.eqz (local.get $start)) (i64.eq (local.get $stop) (local.get $n)))
    (then (return (local.get $s))))
  (call $rt_str_sub (local.get $s)
    (call $rt_str_offset (local.get $s) (i32.wrap_i64 (local.get $start)))
    (call $rt_str_offset (local.get $s) (i32.wrap_i64 (local.get $stop)))))

(func $rt_str_getitem (param $s i32) (param $i i64) (result i32)
  (local $n i64) (local $b i32)
  (local.set $n (call $rt_str_len (local.get $s)))
  (if (i64.lt_s (local.get $i) (i64.const 0)) (then (local.set $i (i64.add (local.get $i) (local.get $n)))))
  (if (i32.or (i64.lt_s (local.get $i) (i64.const 0)) (i64.ge_s (local.get $i) (local.get $n)))
    (then
      (call $rt_raise_msg (global.get $cid.IndexError) {{s:string index out of range}})
      (return (i32.const 0))))
  (local.set $b (call $rt_str_offset (local.get $s) (i32.wrap_i64 (local.get $i))))
  (call $rt_str_sub (local.get $s) (local.get $b)
    (call $rt_str_offset (local.get $s) (i32.add (i32.wrap_i64 (local.get $i)) (i32.const 1)))))

(func $rt_bytes_getitem (param $s i32) (param $i i64) (result i64)
  (local $n i64)
  (local.set $n (i64.extend_i32_u (i32.load offset=8 (local.get $s))))
  (if (i64.lt_s (local.get $i) (i64.const 0)) (then (local.set $i (i64.add (local.get $i) (local.get $n)))))
  (if (i32.or (i64.lt_s (local.get $i) (i64.const 0)) (i64.ge_s (local.get $i) (local.get $n)))
    (then
      (call $rt_raise_msg (global.get $cid.IndexError) {{s:index out of range}})
      (return (i64.const 0))))
  (i64.load8_u offset=16 (i32.add (local.get $s) (i32.wrap_i64 (local.get $i)))))

;; first byte index >= $from where $sub occurs, or -1
(func $rt_str_search (param $s i32) (param $sub i32) (param $from i32) (result i32)
  (local $n i32) (local $m i32) (local $last i32) (local $first i32)
  (local.set $n (i32.load offset=8 (local.get $s)))
  (local.set $m (i32.load offset=8 (local.get $sub)))
  (if (i32.gt_u (local.get $m) (local.get $n)) (then (return (i32.const -1))))
  (local.set $last (i32.sub (local.get $n) (local.get $m)))
  (if (i32.eqz (local.get $m))
    (then (return (select (local.get $from) (i32.const -1) (i32.le_u (local.get $from) (local.get $n))))))
  (local.set $first (i32.load8_u offset=16 (local.get $sub)))
  (block $done
    (loop $next
      (br_if $done (i32.gt_s (local.get $from) (local.get $last)))
      (if (i32.eq (i32.load8_u offset=16 (i32.add (local.get $s) (local.get $from))) (local.get $first))
        (then
          (if (call $rt_memeq (i32.add (i32.add (local.get $s) (i32.const 16)) (local.get $from))
                              (i32.add (local.get $sub) (i32.const 16)) (local.get $m))
            (then (return (local.get $from))))))
      (local.set $from (i32.add (local.get $from) (i32.const 1)))
      (br $next)))
  (i32.const -1))

(func $rt_str_rsearch (param $s i32) (param $sub i32) (result i32)
  (local $n i32) (local $m i32) (local $i i32)
  (local.set $n (i32.load offset=8 (local.get $s)))
  (local.set $m (i32.load offset=8 (local.get $sub)))
  (if (i32.gt_u (local.get $m) (local.get $n)) (then (return (i32.const -1))))
  (local.set $i (i32.sub (local.get $n) (local.get $m)))
  (block $done
    (loop $next
      (br_if $done (i32.lt_s (local.get $i) (i32.const 0)))
      (if (call $rt_memeq (i32.add (i32.add (local.get $s) (i32.const 16)) (local.get $i))
                          (i32.add (local.get $sub) (i32.const 16)) (local.get $m))
        (then (return (local.get $i))))
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (br $next)))
  (i32.const -1))

(func $rt_str_find (param $s i32) (param $sub i32) (param $start i64) (result i64)
  (local $n i64) (local $b i32)
  (local.set $n (call $rt_str_len (local.get $s)))
  (if (i64.lt_s (local.get $start) (i64.const 0))
    (then
      (local.set $start (i64.add (local.get $start) (local.get $n)))
      (if (i64.lt_s (local.get $start) (i64.const 0)) (then (local.set $start (i64.const 0))))))
  (if (i64.gt_s (local.get $start) (local.get $n)) (then (return (i64.const -1))))
  (local.set $b (call $rt_str_search (local.get $s) (local.get $sub)
                  (call $rt_str_offset (local.get $s) (i32.wrap_i64 (local.get $start)))))
  (if (i32.lt_s (local.get $b) (i32.const 0)) (then (return (i64.const -1))))
  (i64.extend_i32_u (call $rt_str_cps (local.get $s) (local.get $b))))

(func $rt_str_rfind (param $s i32) (param $sub i32) (result i64)
  (local $b i32)
  (local.set $b (call $rt_str_rsearch (local.get $s) (local.get $sub)))
  (if (i32.lt_s (local.get $b) (i32.const 0)) (then (return (i64.const -1))))
  (i64.extend_i32_u (call $rt_str_cps (local.get $s) (local.get $b))))

(func $rt_str_index (param $s i32) (param $sub i32) (result i64)
  (local $r i64)
  (local.set $r (call $rt_str_find (local.get $s) (local.get $sub) (i64.const 0)))
  (if (i64.lt_s (local.get $r) (i64.const 0))
    (then (call $rt_raise_msg (global.get $cid.ValueError) {{s:substring not found}})))
  (local.get $r))

(func $rt_str_contains (param $s i32) (param $sub i32) (result i32)
  (i32.ge_s (call $rt_str_search (local.get $s) (local.get $sub) (i32.const 0)) (i32.const 0)))

(func $rt_str_startswith (param $s i32) (param $p i32) (result i32)
  (if (i32.gt_u (i32.load offset=8 (local.get $p)) (i32.load offset=8 (local.get $s))) (then (return (i32.const 0))))
  (call $rt_memeq (i32.add (local.get $s) (i32.const 16)) (i32.add (local.get $p) (i32.const 16))
                  (i32.load offset=8 (local.get $p))))

(func $rt_str_endswith (param $s i32) (param $p i32) (result i32)
  (local $d i32)
  (if (i32.gt_u (i32.load offset=8 (local.get $p)) (i32.load offset=8 (local.get $s))) (then (return (i32.const 0))))
  (local.set $d (i32.sub (i32.load offset=8 (local.get $s)) (i32.load offset=8 (local.get $p))))
  (call $rt_memeq (i32.add (i32.add (local.get $s) (i32.const 16)) (local.get $d))
                  (i32.add (local.get $p) (i32.const 16)) (i32.load offset=8 (local.get $p))))

(func $rt_str_count (param $s i32) (param $sub i32) (result i64)
  (local $c i64) (local $i i32) (local $m i32)
  (local.set $m (i32.load offset=8 (local.get $sub)))
  (if (i32.eqz (local.get $m)) (then (return (i64.add (call $rt_str_len (local.get $s)) (i64.const 1)))))
  (block $done
    (loop $next
      (local.set $i (call $rt_str_search (local.get $s) (local.get $sub) (local.get $i)))
      (br_if $done (i32.lt_s (local.get $i) (i32.const 0)))
      (local.set $c (i64.add (local.get $c) (i64.const 1)))
      (local.set $i (i32.add (local.get $i) (local.get $m)))
      (br $next)))
  (local.get $c))

;; string builder: a str/bytes object with spare capacity; returns the (maybe moved) builder
(func $rt_sb_new (param $cap i32) (param $tag i32) (result i32)
  (local $p i32)
  (local.set $p (call $rt_str_new (local.get $cap) (local.get $tag)))
  (i32.store offset=8 (local.get $p) (i32.const 0))
  (local.get $p))

(func $rt_sb_add_bytes (param $sb i32) (param $src i32) (param $n i32) (result i32)
  (local $len i32) (local $cap i32) (local $new i32)
  (local.set $len (i32.load offset=8 (local.get $sb)))
  (local.set $cap (i32.sub (i32.and (i32.load (local.get $sb)) (i32.const -4)) (i32.const 16)))
  (if (i32.gt_u (i32.add (local.get $len) (local.get $n)) (local.get $cap))
    (then
      (local.set $new (call $rt_sb_new (i32.add (i32.shl (local.get $cap) (i32.const 1)) (local.get $n))
                                       (i32.load8_u offset=4 (local.get $sb))))
      (memory.copy (i32.add (local.get $new) (i32.const 16)) (i32.add (local.get $sb) (i32.const 16)) (local.get $len))
      (local.set $sb (local.get $new))))
  (memory.copy (i32.add (i32.add (local.get $sb) (i32.const 16)) (local.get $len)) (local.get $src) (local.get $n))
  (i32.store offset=8 (local.get $sb) (i32.add (local.get $len) (local.get $n)))
  (local.get $sb))

(func $rt_sb_add (param $sb i32) (param $s i32) (result i32)
  (call $rt_sb_add_bytes (local.get $sb) (i32.add (local.get $s) (i32.const 16)) (i32.load offset=8 (local.get $s))))

(func $rt_sb_add_byte (param $sb i32) (param $b i32) (result i32)
  (i32.store8 (i32.const 40) (local.get $b))
  (call $rt_sb_add_bytes (local.get $sb) (i32.const 40) (i32.const 1)))

(func $rt_str_replace (param $s i32) (param $old i32) (param $new i32) (result i32)
  (local $sb i32) (local $i i32) (local $j i32) (local $m i32) (local $n i32) (local $e i32)
  (local.set $m (i32.load offset=8 (local.get $old)))
  (local.set $n (i32.load offset=8 (local.get $s)))
  (local.set $sb (call $rt_sb_new (local.get $n) (i32.load8_u offset=4 (local.get $s))))
  (if (i32.eqz (local.get $m))
    (then
      ;; insert $new before every code point and at the end
      (block $done
        (loop $next
          (local.set $sb (call $rt_sb_add (local.get $sb) (local.get $new)))
          (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
          (local.set $e (i32.add (local.get $i) (i32.const 1)))
          (if (i32.eqz (call $rt_str_is_ascii (local.get $s)))
            (then
              (block $cp
                (loop $cont
                  (br_if $cp (i32.ge_u (local.get $e) (local.get $n)))
                  (br_if $cp (i32.ne (i32.and (i32.load8_u offset=16 (i32.add (local.get $s) (local.get $e))) (i32.const 192))
                                     (i32.const 128)))
                  (local.set $e (i32.add (local.get $e) (i32.const 1)))
                  (br $cont)))))
          (local.set $sb (call $rt_sb_add_bytes (local.get $sb) (i32.add (i32.add (local.get $s) (i32.const 16)) (local.get $i))
                                                (i32.sub (local.get $e) (local.get $i))))
          (local.set $i (local.get $e))
          (br $next)))
      (return (local.get $sb))))
  (block $done
    (loop $next
      (local.set $j (call $rt_str_search (local.get $s) (local.get $old) (local.get $i)))
      (br_if $done (i32.lt_s (local.get $j) (i32.const 0)))
      (local.set $sb (call $rt_sb_add_bytes (local.get $sb) (i32.add (i32.add (local.get $s) (i32.const 16)) (local.get $i))
                                            (i32.sub (local.get $j) (local.get $i))))
      (local.set $sb (call $rt_sb_add (local.get $sb) (local.get $new)))
      (local.set $i (i32.add (local.get $j) (local.get $m)))
      (br $next)))
  (call $rt_sb_add_bytes (local.get $sb) (i32.add (i32.add (local.get $s) (i32.const 16)) (local.get $i))
                         (i32.sub (local.get $n) (local.get $i))))

(func $rt_str_case (param $s i32) (param $upper i32) (result i32)
  (local $r i32) (local $i i32) (local $n i32) (local $c i32)
  (local.set $n (i32.load offset=8 (local.get $s)))
  (local.set $r (call $rt_str_sub (local.get $s) (i32.const 0) (local.get $n)))
  (i32.store8 offset=5 (local.get $r) (i32.load8_u offset=5 (local.get $s)))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $c (i32.load8_u offset=16 (i32.add (local.get $r) (local.get $i))))
      (if (local.get $upper)
        (then (if (i32.and (i32.ge_u (local.get $c) (i32.const 97)) (i32.le_u (local.get $c) (i32.const 122)))
          (then (i32.store8 offset=16 (i32.add (local.get $r) (local.get $i)) (i32.sub (local.get $c) (i32.const 32))))))
        (else (if (i32.and (i32.ge_u (local.get $c) (i32.const 65)) (i32.le_u (local.get $c) (i32.const 90)))
          (then (i32.store8 offset=16 (i32.add (local.get $r) (local.get $i)) (i32.add (local.get $c) (i32.const 32)))))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (local.get $r))

(func $rt_is_space (param $c i32) (param $tag i32) (result i32)
  (if (i32.eq (local.get $c) (i32.const 32)) (then (return (i32.const 1))))
  (if (i32.and (i32.ge_u (local.get $c) (i32.const 9)) (i32.le_u (local.get $c) (i32.const 13)))
    (then (return (i32.const 1))))
  (i32.and (i32.eq (local.get $tag) (i32.const 1))
           (i32.and (i32.ge_u (local.get $c) (i32.const 28)) (i32.le_u (local.get $c) (i32.const 31)))))

(func $rt_strip_member (param $c i32) (param $chars i32) (param $tag i32) (result i32)
  (local $i i32) (local $n i32)
  (if (i32.eqz (local.get $chars)) (then (return (call $rt_is_space (local.get $c) (local.get $tag)))))
  (local.set $n (i32.load offset=8 (local.get $chars)))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (if (i32.eq (i32.load8_u offset=16 (i32.add (local.get $chars) (local.get $i))) (local.get $c))
        (then (return (i32.const 1))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (i32.const 0))

;; $which: 1 = left, 2 = right, 3 = both; $chars 0 = whitespace
(func $rt_str_strip (param $s i32) (param $chars i32) (param $which i32) (result i32)
  (local $b i32) (local $e i32) (local $tag i32)
  (local.set $tag (i32.load8_u offset=4 (local.get $s)))
  (local.set $e (i32.load offset=8 (local.get $s)))
  (if (i32.and (local.get $which) (i32.const 1))
    (then
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $b) (local.get $e)))
          (br_if $done (i32.eqz (call $rt_strip_member
            (i32.load8_u offset=16 (i32.add (local.get $s) (local.get $b))) (local.get $chars) (local.get $tag))))
          (local.set $b (i32.add (local.get $b) (i32.const 1)))
          (br $next)))))
  (if (i32.and (local.get $which) (i32.const 2))
    (then
      (block $done
        (loop $next
          (br_if $done (i32.le_u (local.get $e) (local.get $b)))
          (br_if $done (i32.eqz (call $rt_strip_member
            (i32.load8_u offset=15 (i32.add (local.get $s) (local.get $e))) (local.get $chars) (local.get $tag))))
          (local.set $e (i32.sub (local.get $e) (i32.const 1)))
          (br $next)))))
  (if (i32.and (i32.eqz (local.get $b)) (i32.eq (local.get $e) (i32.load offset=8 (local.get $s))))
    (then (return (local.get $s))))
  (call $rt_str_sub (local.get $s) (local.get $b) (local.get $e)))

;; split on $sep (0 = runs of whitespace) at most $max times (-1 = no limit)
(func $rt_str_split (param $s i32) (param $sep i32) (param $max i64) (result i32)
  (local $out i32) (local $i i32) (local $j i32) (local $n i32) (local $m i32) (local $tag i32)
  (local.set $out (call $rt_list_new (i32.const 4) (i32.const 1)))
  (local.set $n (i32.load offset=8 (local.get $s)))
  (local.set $tag (i32.load8_u offset=4 (local.get $s)))
  (if (local.get $sep)
    (then
      (local.set $m (i32.load offset=8 (local.get $sep)))
      (if (i32.eqz (local.get $m))
        (then
          (call $rt_raise_msg (global.get $cid.ValueError) {{s:empty separator}})
          (return (local.get $out))))
      (block $done
        (loop $next
          (br_if $done (i64.eqz (local.get $max)))
          (local.set $j (call $rt_str_search (local.get $s) (local.get $sep) (local.get $i)))
          (br_if $done (i32.lt_s (local.get $j) (i32.const 0)))
          (call $rt_list_append (local.get $out)
            (i64.extend_i32_u (call $rt_str_sub (local.get $s) (local.get $i) (local.get $j))))
          (local.set $i (i32.add (local.get $j) (local.get $m)))
          (local.set $max (i64.sub (local.get $max) (i64.const 1)))
          (br $next)))
      (call $rt_list_append (local.get $out)
        (i64.extend_i32_u (call $rt_str_sub (local.get $s) (local.get $i) (local.get $n))))
      (return (local.get $out))))
  (block $done
    (loop $next
      ;; skip whitespace
      (block $skipped
        (loop $skip
          (br_if $skipped (i32.ge_u (local.get $i) (local.get $n)))
          (br_if $skipped (i32.eqz (call $rt_is_space
            (i32.load8_u offset=16 (i32.add (local.get $s) (local.get $i))) (local.get $tag))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $skip)))
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (if (i64.eqz (local.get $max))
        (then
          (local.set $j (local.get $n))
          (block $trimmed
            (loop $trim
              (br_if $trimmed (i32.eqz (call $rt_is_space
                (i32.load8_u offset=15 (i32.add (local.get $s) (local.get $j))) (local.get $tag))))
              (local.set $j (i32.sub (local.get $j) (i32.const 1)))
              (br $trim)))
          (call $rt_list_append (local.get $out)
            (i64.extend_i32_u (call $rt_str_sub (local.get $s) (local.get $i) (local.get $j))))
          (br $done)))
      (local.set $j (local.get $i))
      (block $word
        (loop $scan
          (br_if $word (i32.ge_u (local.get $j) (local.get $n)))
          (br_if $word (call $rt_is_space
            (i32.load8_u offset=16 (i32.add (local.get $s) (local.get $j))) (local.get $tag)))
          (local.set $j (i32.add (local.get $j) (i32.const 1)))
          (br $scan)))
      (call $rt_list_append (local.get $out)
        (i64.extend_i32_u (call $rt_str_sub (local.get $s) (local.get $i) (local.get $j))))
      (local.set $i (local.get $j))
      (local.set $max (i64.sub (local.get $max) (i64.const 1)))
      (br $next)))
  (local.get $out))

(func $rt_str_join (param $sep i32) (param $list i32) (result i32)
  (local $sb i32) (local $i i32) (local $n i32) (local $items i32)
  (local.set $n (i32.load offset=8 (local.get $list)))
  (local.set $items (i32.load offset=16 (local.get $list)))
  (local.set $sb (call $rt_sb_new (i32.const 16) (i32.load8_u offset=4 (local.get $sep))))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (if (local.get $i) (then (local.set $sb (call $rt_sb_add (local.get $sb) (local.get $sep)))))
      (local.set $sb (call $rt_sb_add (local.get $sb)
        (i32.wrap_i64 (i64.load offset=8 (i32.add (local.get $items) (i32.shl (local.get $i) (i32.const 3)))))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (local.get $sb))

(func $rt_str_repeat (param $s i32) (param $k i64) (result i32)
  (local $sb i32)
  (local.set $sb (call $rt_sb_new (i32.const 16) (i32.load8_u offset=4 (local.get $s))))
  (block $done
    (loop $next
      (br_if $done (i64.le_s (local.get $k) (i64.const 0)))
      (local.set $sb (call $rt_sb_add (local.get $sb) (local.get $s)))
      (local.set $k (i64.sub (local.get $k) (i64.const 1)))
      (br $next)))
  (local.get $sb))

;; $class: 0 digit, 1 alpha, 2 alnum, 3 space, 4 lower, 5 upper
(func $rt_str_is (param $s i32) (param $class i32) (result i32)
  (local $i i32) (local $n i32) (local $c i32) (local $ok i32) (local $cased i32)
  (local.set $n (i32.load offset=8 (local.get $s)))
  (if (i32.eqz (local.get $n)) (then (return (i32.const 0))))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $c (i32.load8_u offset=16 (i32.add (local.get $s) (local.get $i))))
      (local.set $ok (i32.const 0))
      (if (i32.and (i32.ge_u (local.get $c) (i32.const 48)) (i32.le_u (local.get $c) (i32.const 57)))
        (then (local.set $ok (i32.or (i32.eqz (local.get $class)) (i32.eq (local.get $class) (i32.const 2))))))
      (if (i32.and (i32.ge_u (local.get $c) (i32.const 97)) (i32.le_u (local.get $c) (i32.const 122)))
        (then
          (local.set $cased (i32.const 1))
          (local.set $ok (i32.or (i32.eq (local.get $class) (i32.const 1))
                          (i32.or (i32.eq (local.get $class) (i32.const 2)) (i32.eq (local.get $class) (i32.const 4)))))
          (if (i32.eq (local.get $class) (i32.const 5)) (then (return (i32.const 0))))))
      (if (i32.and (i32.ge_u (local.get $c) (i32.const 65)) (i32.le_u (local.get $c) (i32.const 90)))
        (then
          (local.set $cased (i32.const 1))
          (local.set $ok (i32.or (i32.eq (local.get $class) (i32.const 1))
                          (i32.or (i32.eq (local.get $class) (i32.const 2)) (i32.eq (local.get $class) (i32.const 5)))))
          (if (i32.eq (local.get $class) (i32.const 4)) (then (return (i32.const 0))))))
      (if (i32.eq (local.get $class) (i32.const 3))
        (then (local.set $ok (call $rt_is_space (local.get $c) (i32.const 1)))))
      (if (i32.ge_u (local.get $class) (i32.const 4)) (then (local.set $ok (i32.const 1))))
      (if (i32.eqz (local.get $ok)) (then (return (i32.const 0))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (if (i32.ge_u (local.get $class) (i32.const 4)) (then (return (local.get $cased))))
  (i32.const 1))

(func $rt_int_to_str (param $v i64) (result i32)
  (local $mag i64) (local $i i32) (local $neg i32) (local $r i32)
  ;; digits are written backwards into scratch bytes 16..40
  (local.set $neg (i64.lt_s (local.get $v) (i64.const 0)))
  (local.set $mag (select (i64.sub (i64.const 0) (local.get $v)) (local.get $v) (local.get $neg)))
  (local.set $i (i32.const 40))
  (loop $next
    (local.set $i (i32.sub (local.get $i) (i32.const 1)))
    (i32.store8 (local.get $i) (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $mag) (i64.const 10)))))
    (local.set $mag (i64.div_u (local.get $mag) (i64.const 10)))
    (br_if $next (i64.ne (local.get $mag) (i64.const 0))))
  (if (local.get $neg)
    (then
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (local.get $i) (i32.const 45))))
  (local.set $r (call $rt_str_new (i32.sub (i32.const 40) (local.get $i)) (i32.const 1)))
  (memory.copy (i32.add (local.get $r) (i32.const 16)) (local.get $i) (i32.sub (i32.const 40) (local.get $i)))
  (i32.store8 offset=5 (local.get $r) (i32.const 1))
  (local.get $r))

(func $rt_str_to_int (param $s i32) (result i64)
  (local $t i32) (local $i i32) (local $n i32) (local $neg i32) (local $v i64) (local $c i32)
  (local $digits i32) (local $under i32)
  (local.set $t (call $rt_str_strip (local.get $s) (i32.const 0) (i32.const 3)))
  (local.set $n (i32.load offset=8 (local.get $t)))
  (if (local.get $n)
    (then
      (local.set $c (i32.load8_u offset=16 (local.get $t)))
      (if (i32.or (i32.eq (local.get $c) (i32.const 43)) (i32.eq (local.get $c) (i32.const 45)))
        (then
          (local.set $neg (i32.eq (local.get $c) (i32.const 45)))
          (local.set $i (i32.const 1))))))
  (block $bad
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $c (i32.load8_u offset=16 (i32.add (local.get $t) (local.get $i))))
        (if (i32.eq (local.get $c) (i32.const 95))
          (then
            (br_if $bad (i32.or (i32.eqz (local.get $digits)) (local.get $under)))
            (local.set $under (i32.const 1)))
          (else
            (br_if $bad (i32.or (i32.lt_u (local.get $c) (i32.const 48)) (i32.gt_u (local.get $c) (i32.const 57))))
            (local.set $under (i32.const 0))
            (local.set $digits (i32.add (local.get $digits) (i32.const 1)))
            (local.set $v (i64.add (i64.mul (local.get $v) (i64.const 10))
                                   (i64.extend_i32_u (i32.sub (local.get $c) (i32.const 48)))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (br_if $bad (i32.or (i32.eqz (local.get $digits)) (local.get $under)))
    (return (select (i64.sub (i64.const 0) (local.get $v)) (local.get $v) (local.get $neg))))
  (call $rt_raise_msg (global.get $cid.ValueError)
    (call $rt_str_concat {{s:invalid literal for int() with base 10: }} (call $rt_repr (local.get $s))))
  (i64.const 0))

(func $rt_hex_digit (param $v i32) (result i32)
  (i32.add (local.get $v) (select (i32.const 48) (i32.const 87) (i32.lt_u (local.get $v) (i32.const 10)))))

(func $rt_sb_add_hex_escape (param $sb i32) (param $c i32) (result i32)
  (local.set $sb (call $rt_sb_add_byte (local.get $sb) (i32.const 92)))
  (local.set $sb (call $rt_sb_add_byte (local.get $sb) (i32.const 120)))
  (local.set $sb (call $rt_sb_add_byte (local.get $sb) (call $rt_hex_digit (i32.shr_u (local.get $c) (i32.const 4)))))
  (call $rt_sb_add_byte (local.get $sb) (call $rt_hex_digit (i32.and (local.get $c) (i32.const 15)))))

;; repr() of a str or bytes, with CPython's choice of quotes and escapes
(func $rt_repr (param $s i32) (result i32)
  (local $sb i32) (local $i i32) (local $n i32) (local $c i32) (local $q i32) (local $bytes i32)
  (local $c2 i32)
  (local.set $bytes (i32.eq (i32.load8_u offset=4 (local.get $s)) (i32.const 2)))
  (local.set $n (i32.load offset=8 (local.get $s)))
  (local.set $q (i32.const 39))
  (if (i32.and (call $rt_str_contains (local.get $s) {{s:'}})
               (i32.eqz (call $rt_str_contains (local.get $s) {{s:"}})))
    (then (local.set $q (i32.const 34))))
  (local.set $sb (call $rt_sb_new (i32.add (local.get $n) (i32.const 3)) (i32.const 1)))
  (if (local.get $bytes) (then (local.set $sb (call $rt_sb_add_byte (local.get $sb) (i32.const 98)))))
  (local.set $sb (call $rt_sb_add_byte (local.get $sb) (local.get $q)))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $c (i32.load8_u offset=16 (i32.add (local.get $s) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (block $emitted
        (if (i32.or (i32.eq (local.get $c) (local.get $q)) (i32.eq (local.get $c) (i32.const 92)))
          (then
            (local.set $sb (call $rt_sb_add_byte (local.get $sb) (i32.const 92)))
            (local.set $sb (call $rt_sb_add_byte (local.get $sb) (local.get $c)))
            (br $emitted)))
        (if (i32.eq (local.get $c) (i32.const 9))
          (then (local.set $sb (call $rt_sb_add_bytes (local.get $sb) (i32.add {{s:\\t}} (i32.const 16)) (i32.const 2)))
                (br $emitted)))
        (if (i32.eq (local.get $c) (i32.const 10))
          (then (local.set $sb (call $rt_sb_add_bytes (local.get $sb) (i32.add {{s:\\n}} (i32.const 16)) (i32.const 2)))
                (br $emitted)))
        (if (i32.eq (local.get $c) (i32.const 13))
          (then (local.set $sb (call $rt_sb_add_bytes (local.get $sb) (i32.add {{s:\\r}} (i32.const 16)) (i32.const 2)))
                (br $emitted)))
        (if (i32.or (i32.lt_u (local.get $c) (i32.const 32)) (i32.eq (local.get $c) (i32.const 127)))
          (then (local.set $sb (call $rt_sb_add_hex_escape (local.get $sb) (local.get $c)))
                (br $emitted)))
        (if (i32.lt_u (local.get $c) (i32.const 128))
          (then (local.set $sb (call $rt_sb_add_byte (local.get $sb) (local.get $c)))
                (br $emitted)))
        (if (local.get $bytes)
          (then (local.set $sb (call $rt_sb_add_hex_escape (local.get $sb) (local.get $c)))
                (br $emitted)))
        ;; non-ASCII in a str: U+0080..U+00A0 and U+00AD are not printable
        (if (i32.eq (local.get $c) (i32.const 194))
          (then
            (local.set $c2 (i32.load8_u offset=16 (i32.add (local.get $s) (local.get $i))))
            (if (i32.or (i32.le_u (local.get $c2) (i32.const 160)) (i32.eq (local.get $c2) (i32.const 173)))
              (then
                (local.set $sb (call $rt_sb_add_hex_escape (local.get $sb) (local.get $c2)))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br $emitted)))))
        (local.set $sb (call $rt_sb_add_byte (local.get $sb) (local.get $c))))
      (br $next)))
  (call $rt_sb_add_byte (local.get $sb) (local.get $q)))

(func $rt_str_encode (param $s i32) (result i32)
  (call $rt_str_retag (local.get $s) (i32.const 2)))

;; length of the UTF-8 sequence at $i (1..4), or -(kind*4 + consumed) for an invalid one;
;; kind 1 = invalid start byte, 2 = invalid continuation byte, 3 = unexpected end of data
(func $rt_utf8_seq (param $p i32) (param $i i32) (param $n i32) (result i32)
  (local $b i32) (local $need i32) (local $lo i32) (local $hi i32) (local $k i32) (local $c i32)
  (local.set $b (i32.load8_u (i32.add (local.get $p) (local.get $i))))
  (if (i32.lt_u (local.get $b) (i32.const 128)) (then (return (i32.const 1))))
  (local.set $lo (i32.const 128))
  (local.set $hi (i32.const 191))
  (block $classified
    (if (i32.and (i32.ge_u (local.get $b) (i32.const 194)) (i32.le_u (local.get $b) (i32.const 223)))
      (then (local.set $need (i32.const 1)) (br $classified)))
    (if (i32.eq (local.get $b) (i32.const 224))
      (then (local.set $need (i32.const 2)) (local.set $lo (i32.const 160)) (br $classified)))
    (if (i32.eq (local.get $b) (i32.const 237))
      (then (local.set $need (i32.const 2)) (local.set $hi (i32.const 159)) (br $classified)))
    (if (i32.and (i32.ge_u (local.get $b) (i32.const 225)) (i32.le_u (local.get $b) (i32.const 239)))
      (then (local.set $need (i32.const 2)) (br $classified)))
    (if (i32.eq (local.get $b) (i32.const 240))
      (then (local.set $need (i32.const 3)) (local.set $lo (i32.const 144)) (br $classified)))
    (if (i32.eq (local.get $b) (i32.const 244))
      (then (local.set $need (i32.const 3)) (local.set $hi (i32.const 143)) (br $classified)))
    (if (i32.and (i32.ge_u (local.get $b) (i32.const 241)) (i32.le_u (local.get $b) (i32.const 243)))
      (then (local.set $need (i32.const 3)) (br $classified)))
    (return (i32.const -5)))
  (local.set $k (i32.const 1))
  (block $done
    (loop $next
      (br_if $done (i32.gt_u (local.get $k) (local.get $need)))
      (if (i32.ge_u (i32.add (local.get $i) (local.get $k)) (local.get $n))
        (then (return (i32.sub (i32.const -12) (local.get $k)))))
      (local.set $c (i32.load8_u (i32.add (i32.add (local.get $p) (local.get $i)) (local.get $k))))
      (if (i32.or (i32.lt_u (local.get $c) (local.get $lo)) (i32.gt_u (local.get $c) (local.get $hi)))
        (then (return (i32.sub (i32.const -8) (local.get $k)))))
      (local.set $lo (i32.const 128))
      (local.set $hi (i32.const 191))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br $next)))
  (i32.add (local.get $need) (i32.const 1)))

(func $rt_utf8_error (param $b i32) (param $i i32) (param $r i32) (result i32)
  (local $sb i32) (local $kind i32) (local $used i32)
  (local.set $kind (i32.shr_u (i32.sub (i32.const 0) (local.get $r)) (i32.const 2)))
  (local.set $used (i32.and (i32.sub (i32.const 0) (local.get $r)) (i32.const 3)))
  (local.set $sb (call $rt_sb_new (i32.const 80) (i32.const 1)))
  (if (i32.eq (local.get $used) (i32.const 1))
    (then
      (local.set $sb (call $rt_sb_add (local.get $sb) {{s:'utf-8' codec can't decode byte 0x}}))
      (local.set $sb (call $rt_sb_add_byte (local.get $sb) (call $rt_hex_digit
        (i32.shr_u (i32.load8_u offset=16 (i32.add (local.get $b) (local.get $i))) (i32.const 4)))))
      (local.set $sb (call $rt_sb_add_byte (local.get $sb) (call $rt_hex_digit
        (i32.and (i32.load8_u offset=16 (i32.add (local.get $b) (local.get $i))) (i32.const 15)))))
      (local.set $sb (call $rt_sb_add (local.get $sb) {{s: in position }}))
      (local.set $sb (call $rt_sb_add (local.get $sb) (call $rt_int_to_str (i64.extend_i32_u (local.get $i))))))
    (else
      (local.set $sb (call $rt_sb_add (local.get $sb) {{s:'utf-8' codec can't decode bytes in position }}))
      (local.set $sb (call $rt_sb_add (local.get $sb) (call $rt_int_to_str (i64.extend_i32_u (local.get $i)))))
      (local.set $sb (call $rt_sb_add (local.get $sb) {{s:-}}))
      (local.set $sb (call $rt_sb_add (local.get $sb) (call $rt_int_to_str
        (i64.extend_i32_u (i32.sub (i32.add (local.get $i) (local.get $used)) (i32.const 1))))))))
  (call $rt_sb_add (local.get $sb)
    (select {{s:: invalid start byte}}
      (select {{s:: invalid continuation byte}} {{s:: unexpected end of data}} (i32.eq (local.get $kind) (i32.const 2)))
      (i32.eq (local.get $kind) (i32.const 1)))))

;; bytes -> str; $replace 0 raises UnicodeDecodeError, 1 substitutes U+FFFD like CPython
(func $rt_utf8_decode (param $b i32) (param $replace i32) (result i32)
  (local $i i32) (local $n i32) (local $r i32) (local $ascii i32) (local $sb i32) (local $used i32)
  (local $p i32)
  (local.set $n (i32.load offset=8 (local.get $b)))
  (local.set $p (i32.add (local.get $b) (i32.const 16)))
  (local.set $ascii (i32.const 1))
  (block $invalid
    (block $valid
      (loop $next
        (br_if $valid (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $r (call $rt_utf8_seq (local.get $p) (local.get $i) (local.get $n)))
        (br_if $invalid (i32.le_s (local.get $r) (i32.const 0)))
        (if (i32.gt_u (local.get $r) (i32.const 1)) (then (local.set $ascii (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (local.get $r)))
        (br $next)))
    (local.set $r (call $rt_str_retag (local.get $b) (i32.const 1)))
    (i32.store8 offset=5 (local.get $r) (select (i32.const 1) (i32.const 3) (local.get $ascii)))
    (return (local.get $r)))
  (if (i32.eqz (local.get $replace))
    (then
      (call $rt_raise_msg (global.get $cid.UnicodeDecodeError)
        (call $rt_utf8_error (local.get $b) (local.get $i) (local.get $r)))
      (return (call $rt_str_new (i32.const 0) (i32.const 1)))))
  (local.set $sb (call $rt_sb_new (i32.add (local.get $n) (i32.const 8)) (i32.const 1)))
  (local.set $sb (call $rt_sb_add_bytes (local.get $sb) (local.get $p) (local.get $i)))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $r (call $rt_utf8_seq (local.get $p) (local.get $i) (local.get $n)))
      (if (i32.gt_s (local.get $r) (i32.const 0))
        (then
          (local.set $sb (call $rt_sb_add_bytes (local.get $sb) (i32.add (local.get $p) (local.get $i)) (local.get $r)))
          (local.set $i (i32.add (local.get $i) (local.get $r))))
        (else
          (local.set $sb (call $rt_sb_add_bytes (local.get $sb) (i32.add {{s:\uFFFD}} (i32.const 16)) (i32.const 3)))
          (local.set $i (i32.add (local.get $i) (i32.and (i32.sub (i32.const 0) (local.get $r)) (i32.const 3))))))
      (br $next)))
  (i32.store8 offset=5 (local.get $sb) (i32.const 3))
  (local.get $sb))

;; split at \n, \r, \r\n, \v, \f, \x1c-\x1e (the ASCII line boundaries str.splitlines knows)
(func $rt_str_splitlines (param $s i32) (result i32)
  (local $out i32) (local $i i32) (local $start i32) (local $n i32) (local $c i32) (local $str i32)
  (local.set $out (call $rt_list_new (i32.const 4) (i32.const 1)))
  (local.set $n (i32.load offset=8 (local.get $s)))
  (local.set $str (i32.eq (i32.load8_u offset=4 (local.get $s)) (i32.const 1)))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $c (i32.load8_u offset=16 (i32.add (local.get $s) (local.get $i))))
      (if (i32.or (i32.or (i32.eq (local.get $c) (i32.const 10)) (i32.eq (local.get $c) (i32.const 13)))
                  (i32.and (local.get $str)
                    (i32.or (i32.or (i32.eq (local.get $c) (i32.const 11)) (i32.eq (local.get $c) (i32.const 12)))
                            (i32.and (i32.ge_u (local.get $c) (i32.const 28)) (i32.le_u (local.get $c) (i32.const 30))))))
        (then
          (call $rt_list_append (local.get $out)
            (i64.extend_i32_u (call $rt_str_sub (local.get $s) (local.get $start) (local.get $i))))
          (if (i32.and (i32.eq (local.get $c) (i32.const 13))
                       (i32.and (i32.lt_u (i32.add (local.get $i) (i32.const 1)) (local.get $n))
                                (i32.eq (i32.load8_u offset=17 (i32.add (local.get $s) (local.get $i))) (i32.const 10))))
            (then (local.set $i (i32.add (local.get $i) (i32.const 1)))))
          (local.set $start (i32.add (local.get $i) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (if (i32.lt_u (local.get $start) (local.get $n))
    (then (call $rt_list_append (local.get $out)
            (i64.extend_i32_u (call $rt_str_sub (local.get $s) (local.get $start) (local.get $n))))))
  (local.get $out))
"""
