"""Runtime, part 4: smaller helpers (None checks, shifts, floats, formatting) (WAT)."""

from __future__ import annotations

WAT = r"""
(func $rt_raise (param $e i32)
  (if (i32.eqz (global.get $exc)) (then (global.set $exc (local.get $e)))))

(func $rt_check_field (param $p i32) (param $message i32) (result i32)
  (if (i32.eqz (local.get $p)) (then (call $rt_raise_msg (global.get $cid.AttributeError) (local.get $message))))
  (local.get $p))

(func $rt_check_some (param $p i32) (result i32)
  (if (i32.eqz (local.get $p)) (then (call $rt_raise_none)))
  (local.get $p))

(func $rt_box_eq (param $a i32) (param $b i32) (result i32)
  (if (i32.or (i32.eqz (local.get $a)) (i32.eqz (local.get $b)))
    (then (return (i32.eq (local.get $a) (local.get $b)))))
  (i64.eq (i64.load offset=8 (local.get $a)) (i64.load offset=8 (local.get $b))))

(func $rt_i64_shl (param $a i64) (param $b i64) (result i64)
  (if (i64.lt_s (local.get $b) (i64.const 0))
    (then
      (call $rt_raise_msg (global.get $cid.ValueError) {{s:negative shift count}})
      (return (i64.const 0))))
  (if (i64.ge_u (local.get $b) (i64.const 64)) (then (return (i64.const 0))))
  (i64.shl (local.get $a) (local.get $b)))

(func $rt_i64_shr (param $a i64) (param $b i64) (result i64)
  (if (i64.lt_s (local.get $b) (i64.const 0))
    (then
      (call $rt_raise_msg (global.get $cid.ValueError) {{s:negative shift count}})
      (return (i64.const 0))))
  (if (i64.ge_u (local.get $b) (i64.const 64)) (then (local.set $b (i64.const 63))))
  (i64.shr_s (local.get $a) (local.get $b)))

(func $rt_f64_div (param $a f64) (param $b f64) (result f64)
  (if (f64.eq (local.get $b) (f64.const 0))
    (then
      (call $rt_raise_msg (global.get $cid.ZeroDivisionError) {{s:float division by zero}})
      (return (f64.const 0))))
  (f64.div (local.get $a) (local.get $b)))

(func $rt_f64_mod (param $a f64) (param $b f64) (result f64)
  (local $r f64)
  (if (f64.eq (local.get $b) (f64.const 0))
    (then
      (call $rt_raise_msg (global.get $cid.ZeroDivisionError) {{s:float modulo}})
      (return (f64.const 0))))
  (local.set $r (f64.sub (local.get $a) (f64.mul (f64.trunc (f64.div (local.get $a) (local.get $b))) (local.get $b))))
  (if (i32.and (f64.ne (local.get $r) (f64.const 0))
               (i32.xor (f64.lt (local.get $r) (f64.const 0)) (f64.lt (local.get $b) (f64.const 0))))
    (then (local.set $r (f64.add (local.get $r) (local.get $b)))))
  (local.get $r))

(func $rt_f64_to_int (param $x f64) (result i64)
  (if (f64.ne (local.get $x) (local.get $x))
    (then
      (call $rt_raise_msg (global.get $cid.ValueError) {{s:cannot convert float NaN to integer}})
      (return (i64.const 0))))
  (if (f64.ge (f64.abs (local.get $x)) (f64.const 9.223372036854775807e18))
    (then
      (call $rt_raise_msg (global.get $cid.OverflowError) {{s:float does not fit in a 64-bit int}})
      (return (i64.const 0))))
  (i64.trunc_f64_s (local.get $x)))

;; fixed-point text with $prec decimals (rounding the scaled binary value half to even)
(func $rt_f64_fixed (param $x f64) (param $prec i32) (result i32)
  (local $sb i32) (local $scale f64) (local $v f64) (local $int i64) (local $frac i64) (local $i i32)
  (local $digits i32) (local $p i64)
  (if (f64.ne (local.get $x) (local.get $x)) (then (return {{s:nan}})))
  (if (f64.eq (local.get $x) (f64.const inf)) (then (return {{s:inf}})))
  (if (f64.eq (local.get $x) (f64.const -inf)) (then (return {{s:-inf}})))
  (local.set $sb (call $rt_sb_new (i32.const 32) (i32.const 1)))
  (if (i32.or (f64.lt (local.get $x) (f64.const 0))
              (i32.and (f64.eq (local.get $x) (f64.const 0))
                       (i64.lt_s (i64.reinterpret_f64 (local.get $x)) (i64.const 0))))
    (then
      (local.set $sb (call $rt_sb_add_byte (local.get $sb) (i32.const 45)))
      (local.set $x (f64.neg (local.get $x)))))
  (local.set $scale (f64.const 1))
  (local.set $p (i64.const 1))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $prec)))
      (local.set $scale (f64.mul (local.get $scale) (f64.const 10)))
      (local.set $p (i64.mul (local.get $p) (i64.const 10)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (local.set $v (f64.nearest (f64.mul (local.get $x) (local.get $scale))))
  (if (f64.ge (local.get $v) (f64.const 9.2e18))
    (then (return (call $rt_str_concat (local.get $sb) {{s:(too large)}}))))
  (local.set $int (i64.div_u (i64.trunc_f64_u (local.get $v)) (local.get $p)))
  (local.set $frac (i64.rem_u (i64.trunc_f64_u (local.get $v)) (local.get $p)))
  (local.set $sb (call $rt_sb_add (local.get $sb) (call $rt_int_to_str (local.get $int))))
  (if (local.get $prec)
    (then
      (local.set $sb (call $rt_sb_add_byte (local.get $sb) (i32.const 46)))
      (local.set $digits (call $rt_int_to_str (i64.add (local.get $frac) (local.get $p))))
      (local.set $sb (call $rt_sb_add_bytes (local.get $sb) (i32.add (local.get $digits) (i32.const 17)) (local.get $prec)))))
  (local.get $sb))

(func $rt_str_ord (param $s i32) (result i64)
  (local $n i32) (local $b i32) (local $len i32) (local $cp i32) (local $i i32)
  (local.set $n (i32.load offset=8 (local.get $s)))
  (if (i32.eqz (local.get $n))
    (then
      (call $rt_raise_msg (global.get $cid.TypeError) {{s:ord() expected a character}})
      (return (i64.const -1))))
  (local.set $b (i32.load8_u offset=16 (local.get $s)))
  (local.set $len (select (i32.const 1)
    (select (i32.const 2) (select (i32.const 3) (i32.const 4) (i32.lt_u (local.get $b) (i32.const 240)))
            (i32.lt_u (local.get $b) (i32.const 224)))
    (i32.lt_u (local.get $b) (i32.const 128))))
  (if (i32.or (i32.eq (i32.load8_u offset=4 (local.get $s)) (i32.const 2)) (i32.ne (local.get $len) (local.get $n)))
    (then
      (if (i32.ne (local.get $n) (i32.const 1))
        (then
          (call $rt_raise_msg (global.get $cid.TypeError) {{s:ord() expected a character}})
          (return (i64.const -1))))
      (return (i64.extend_i32_u (local.get $b)))))
  (if (i32.eq (local.get $len) (i32.const 1)) (then (return (i64.extend_i32_u (local.get $b)))))
  (local.set $cp (i32.and (local.get $b) (i32.shr_u (i32.const 127) (local.get $len))))
  (local.set $i (i32.const 1))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
      (local.set $cp (i32.or (i32.shl (local.get $cp) (i32.const 6))
                             (i32.and (i32.load8_u offset=16 (i32.add (local.get $s) (local.get $i))) (i32.const 63))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (i64.extend_i32_u (local.get $cp)))

(func $rt_str_chr (param $v i64) (result i32)
  (local $cp i32) (local $s i32)
  (if (i32.or (i64.lt_s (local.get $v) (i64.const 0)) (i64.gt_s (local.get $v) (i64.const 1114111)))
    (then
      (call $rt_raise_msg (global.get $cid.ValueError) {{s:chr() arg not in range(0x110000)}})
      (return {{s:}})))
  (local.set $cp (i32.wrap_i64 (local.get $v)))
  (if (i32.lt_u (local.get $cp) (i32.const 128))
    (then
      (local.set $s (call $rt_str_new (i32.const 1) (i32.const 1)))
      (i32.store8 offset=16 (local.get $s) (local.get $cp))
      (i32.store8 offset=5 (local.get $s) (i32.const 1))
      (return (local.get $s))))
  (if (i32.lt_u (local.get $cp) (i32.const 2048))
    (then
      (local.set $s (call $rt_str_new (i32.const 2) (i32.const 1)))
      (i32.store8 offset=16 (local.get $s) (i32.or (i32.const 192) (i32.shr_u (local.get $cp) (i32.const 6))))
      (i32.store8 offset=17 (local.get $s) (i32.or (i32.const 128) (i32.and (local.get $cp) (i32.const 63))))
      (i32.store8 offset=5 (local.get $s) (i32.const 3))
      (return (local.get $s))))
  (if (i32.lt_u (local.get $cp) (i32.const 65536))
    (then
      (local.set $s (call $rt_str_new (i32.const 3) (i32.const 1)))
      (i32.store8 offset=16 (local.get $s) (i32.or (i32.const 224) (i32.shr_u (local.get $cp) (i32.const 12))))
      (i32.store8 offset=17 (local.get $s) (i32.or (i32.const 128) (i32.and (i32.shr_u (local.get $cp) (i32.const 6)) (i32.const 63))))
      (i32.store8 offset=18 (local.get $s) (i32.or (i32.const 128) (i32.and (local.get $cp) (i32.const 63))))
      (i32.store8 offset=5 (local.get $s) (i32.const 3))
      (return (local.get $s))))
  (local.set $s (call $rt_str_new (i32.const 4) (i32.const 1)))
  (i32.store8 offset=16 (local.get $s) (i32.or (i32.const 240) (i32.shr_u (local.get $cp) (i32.const 18))))
  (i32.store8 offset=17 (local.get $s) (i32.or (i32.const 128) (i32.and (i32.shr_u (local.get $cp) (i32.const 12)) (i32.const 63))))
  (i32.store8 offset=18 (local.get $s) (i32.or (i32.const 128) (i32.and (i32.shr_u (local.get $cp) (i32.const 6)) (i32.const 63))))
  (i32.store8 offset=19 (local.get $s) (i32.or (i32.const 128) (i32.and (local.get $cp) (i32.const 63))))
  (i32.store8 offset=5 (local.get $s) (i32.const 3))
  (local.get $s))

;; byte offset of the code point after the one at $i
(func $rt_utf8_next (param $s i32) (param $i i32) (result i32)
  (local $n i32)
  (local.set $n (i32.load offset=8 (local.get $s)))
  (local.set $i (i32.add (local.get $i) (i32.const 1)))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (br_if $done (i32.ne (i32.and (i32.load8_u offset=16 (i32.add (local.get $s) (local.get $i))) (i32.const 192))
                           (i32.const 128)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (local.get $i))

(func $rt_str_char_at (param $s i32) (param $i i32) (result i32)
  (call $rt_str_sub (local.get $s) (local.get $i) (call $rt_utf8_next (local.get $s) (local.get $i))))

(func $rt_str_index_check (param $i i64) (result i64)
  (if (i64.lt_s (local.get $i) (i64.const 0))
    (then (call $rt_raise_msg (global.get $cid.ValueError) {{s:substring not found}})))
  (local.get $i))

(func $rt_str_removeprefix (param $s i32) (param $p i32) (result i32)
  (if (call $rt_str_startswith (local.get $s) (local.get $p))
    (then (return (call $rt_str_sub (local.get $s) (i32.load offset=8 (local.get $p)) (i32.load offset=8 (local.get $s))))))
  (local.get $s))

(func $rt_str_removesuffix (param $s i32) (param $p i32) (result i32)
  (if (i32.and (call $rt_str_endswith (local.get $s) (local.get $p)) (i32.ne (i32.load offset=8 (local.get $p)) (i32.const 0)))
    (then (return (call $rt_str_sub (local.get $s) (i32.const 0)
                    (i32.sub (i32.load offset=8 (local.get $s)) (i32.load offset=8 (local.get $p)))))))
  (local.get $s))

;; (head, sep, tail) around the first ($last 0) or last ($last 1) $sep
(func $rt_str_partition (param $s i32) (param $sep i32) (param $last i32) (result i32)
  (local $t i32) (local $i i32) (local $empty i32) (local $n i32)
  (if (i32.eqz (i32.load offset=8 (local.get $sep)))
    (then
      (call $rt_raise_msg (global.get $cid.ValueError) {{s:empty separator}})
      (return (i32.const 0))))
  (local.set $n (i32.load offset=8 (local.get $s)))
  (local.set $empty (call $rt_str_sub (local.get $s) (i32.const 0) (i32.const 0)))
  (local.set $t (call $rt_tuple_new (i32.const 3) (i32.const 7)))
  (local.set $i (select (call $rt_str_rsearch (local.get $s) (local.get $sep))
                        (call $rt_str_search (local.get $s) (local.get $sep) (i32.const 0)) (local.get $last)))
  (if (i32.lt_s (local.get $i) (i32.const 0))
    (then
      (if (local.get $last)
        (then
          (i64.store offset=16 (local.get $t) (i64.extend_i32_u (local.get $empty)))
          (i64.store offset=24 (local.get $t) (i64.extend_i32_u (local.get $empty)))
          (i64.store offset=32 (local.get $t) (i64.extend_i32_u (local.get $s))))
        (else
          (i64.store offset=16 (local.get $t) (i64.extend_i32_u (local.get $s)))
          (i64.store offset=24 (local.get $t) (i64.extend_i32_u (local.get $empty)))
          (i64.store offset=32 (local.get $t) (i64.extend_i32_u (local.get $empty)))))
      (return (local.get $t))))
  (i64.store offset=16 (local.get $t) (i64.extend_i32_u (call $rt_str_sub (local.get $s) (i32.const 0) (local.get $i))))
  (i64.store offset=24 (local.get $t) (i64.extend_i32_u (local.get $sep)))
  (i64.store offset=32 (local.get $t) (i64.extend_i32_u (call $rt_str_sub (local.get $s)
    (i32.add (local.get $i) (i32.load offset=8 (local.get $sep))) (local.get $n))))
  (local.get $t))

;; repr of a list: $kind 0 ints, 1 str/bytes, 4 bools
(func $rt_list_repr (param $l i32) (param $kind i32) (result i32)
  (local $sb i32) (local $i i32) (local $n i32) (local $v i64)
  (local.set $n (i32.load offset=8 (local.get $l)))
  (local.set $sb (call $rt_sb_new (i32.const 16) (i32.const 1)))
  (local.set $sb (call $rt_sb_add_byte (local.get $sb) (i32.const 91)))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (if (local.get $i) (then (local.set $sb (call $rt_sb_add (local.get $sb) {{s:, }}))))
      (local.set $v (i64.load (call $rt_list_slot (local.get $l) (local.get $i))))
      (local.set $sb (call $rt_sb_add (local.get $sb)
        (if (result i32) (i32.eq (local.get $kind) (i32.const 1))
          (then (call $rt_repr (i32.wrap_i64 (local.get $v))))
          (else
            (if (result i32) (i32.eq (local.get $kind) (i32.const 4))
              (then (select {{s:True}} {{s:False}} (i64.ne (local.get $v) (i64.const 0))))
              (else (call $rt_int_to_str (local.get $v))))))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (call $rt_sb_add_byte (local.get $sb) (i32.const 93)))

(func $rt_int_to_base (param $v i64) (param $base i32) (param $upper i32) (result i32)
  (local $mag i64) (local $i i32) (local $neg i32) (local $r i32) (local $d i32)
  (if (i32.eq (local.get $base) (i32.const 10)) (then (return (call $rt_int_to_str (local.get $v)))))
  (local.set $neg (i64.lt_s (local.get $v) (i64.const 0)))
  (local.set $mag (select (i64.sub (i64.const 0) (local.get $v)) (local.get $v) (local.get $neg)))
  ;; digits are written backwards from the end of a 72-byte scratch string
  (local.set $r (call $rt_str_new (i32.const 72) (i32.const 1)))
  (local.set $i (i32.add (local.get $r) (i32.const 88)))
  (loop $next
    (local.set $i (i32.sub (local.get $i) (i32.const 1)))
    (local.set $d (i32.wrap_i64 (i64.rem_u (local.get $mag) (i64.extend_i32_u (local.get $base)))))
    (i32.store8 (local.get $i)
      (select (call $rt_hex_digit (local.get $d)) (i32.sub (call $rt_hex_digit (local.get $d)) (i32.const 32))
              (i32.or (i32.eqz (local.get $upper)) (i32.lt_u (local.get $d) (i32.const 10)))))
    (local.set $mag (i64.div_u (local.get $mag) (i64.extend_i32_u (local.get $base))))
    (br_if $next (i64.ne (local.get $mag) (i64.const 0))))
  (if (local.get $neg)
    (then
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (local.get $i) (i32.const 45))))
  (call $rt_str_sub (local.get $r) (i32.sub (local.get $i) (i32.add (local.get $r) (i32.const 16))) (i32.const 72)))

;; pad $s to $width code points with $fill; $align is one of < > ^ = (= puts a sign first)
(func $rt_str_pad (param $s i32) (param $width i64) (param $fill i32) (param $align i32) (result i32)
  (local $len i64) (local $pad i64) (local $left i64) (local $right i64) (local $sb i32) (local $start i32)
  (local.set $len (call $rt_str_len (local.get $s)))
  (if (i64.ge_s (local.get $len) (local.get $width)) (then (return (local.get $s))))
  (local.set $pad (i64.sub (local.get $width) (local.get $len)))
  (local.set $sb (call $rt_sb_new (i32.add (i32.load offset=8 (local.get $s)) (i32.wrap_i64 (local.get $pad))) (i32.const 1)))
  (if (i32.eq (local.get $align) (i32.const 60)) (then (local.set $right (local.get $pad))))
  (if (i32.eq (local.get $align) (i32.const 62)) (then (local.set $left (local.get $pad))))
  (if (i32.eq (local.get $align) (i32.const 94))
    (then
      (local.set $left (i64.shr_u (local.get $pad) (i64.const 1)))
      (local.set $right (i64.sub (local.get $pad) (local.get $left)))))
  (if (i32.eq (local.get $align) (i32.const 61))
    (then
      (local.set $left (local.get $pad))
      (if (i32.and (i32.ne (i32.load offset=8 (local.get $s)) (i32.const 0))
                   (i32.or (i32.eq (i32.load8_u offset=16 (local.get $s)) (i32.const 45))
                           (i32.eq (i32.load8_u offset=16 (local.get $s)) (i32.const 43))))
        (then
          (local.set $sb (call $rt_sb_add_byte (local.get $sb) (i32.load8_u offset=16 (local.get $s))))
          (local.set $start (i32.const 1))))))
  (block $done
    (loop $next
      (br_if $done (i64.le_s (local.get $left) (i64.const 0)))
      (local.set $sb (call $rt_sb_add_byte (local.get $sb) (local.get $fill)))
      (local.set $left (i64.sub (local.get $left) (i64.const 1)))
      (br $next)))
  (local.set $sb (call $rt_sb_add_bytes (local.get $sb) (i32.add (i32.add (local.get $s) (i32.const 16)) (local.get $start))
                                        (i32.sub (i32.load offset=8 (local.get $s)) (local.get $start))))
  (block $done
    (loop $next
      (br_if $done (i64.le_s (local.get $right) (i64.const 0)))
      (local.set $sb (call $rt_sb_add_byte (local.get $sb) (local.get $fill)))
      (local.set $right (i64.sub (local.get $right) (i64.const 1)))
      (br $next)))
  (local.get $sb))

(func $rt_bytes_from_list (param $l i32) (result i32)
  (local $n i32) (local $i i32) (local $r i32) (local $v i64)
  (local.set $n (i32.load offset=8 (local.get $l)))
  (local.set $r (call $rt_str_new (local.get $n) (i32.const 2)))
  (block $done
    (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $v (i64.load (call $rt_list_slot (local.get $l) (local.get $i))))
      (if (i64.gt_u (local.get $v) (i64.const 255))
        (then
          (call $rt_raise_msg (global.get $cid.ValueError) {{s:bytes must be in range(0, 256)}})
          (return (local.get $r))))
      (i32.store8 offset=16 (i32.add (local.get $r) (local.get $i)) (i32.wrap_i64 (local.get $v)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
  (local.get $r))

(func $rt_bytes_zeros (param $n i64) (result i32)
  (local $r i32)
  (if (i64.lt_s (local.get $n) (i64.const 0))
    (then
      (call $rt_raise_msg (global.get $cid.ValueError) {{s:negative count}})
      (return (call $rt_str_new (i32.const 0) (i32.const 2)))))
  (local.set $r (call $rt_str_new (i32.wrap_i64 (local.get $n)) (i32.const 2)))
  (memory.fill (i32.add (local.get $r) (i32.const 16)) (i32.const 0) (i32.wrap_i64 (local.get $n)))
  (local.get $r))
"""
