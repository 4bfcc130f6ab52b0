;; Hostile guest: doubles its argument, but traps on the first negative value of a batch.
;; Used to check that a trapped instance is replaced and the next batch runs normally.
;; Implements the ABI's exports (udfs/ABI.md) around one function `f(f64) -> f64`.
(module
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 1024) "{\"abi\":1,\"functions\":[{\"name\":\"f\",\"kind\":\"scalar\",\"args\":[\"f64\"],\"returns\":\"f64\"}]}")
  (func (export "rivulet_abi_version") (result i32) (i32.const 1))
  (func (export "rivulet_describe") (result i64)
    (i64.or (i64.const 1024) (i64.shl (i64.const 83) (i64.const 32))))
  (func $alloc (export "rivulet_alloc") (param $size i32) (param $align i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and
      (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
      (i32.sub (i32.const 0) (local.get $align))))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (block $ok
      (br_if $ok (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
      (drop (memory.grow (i32.add (i32.const 1)
        (i32.div_u (i32.sub (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
                   (i32.const 65536))))))
    (local.get $p))
  ;; Batch header: rows @0; result column @20 (validity, values, offsets, values_len);
  ;; first argument column @36 (validity @36, values @40).
  (func (export "rivulet_scalar_f") (param $b i32) (result i32)
    (local $rows i32) (local $in i32) (local $out i32) (local $i i32) (local $x f64)
    (local.set $rows (i32.load (local.get $b)))
    (local.set $in (i32.load offset=40 (local.get $b)))
    (local.set $out (call $alloc (i32.mul (local.get $rows) (i32.const 8)) (i32.const 8)))
    (block $done
      (loop $row
        (br_if $done (i32.ge_u (local.get $i) (local.get $rows)))
        (local.set $x (f64.load (i32.add (local.get $in) (i32.mul (local.get $i) (i32.const 8)))))
        (if (f64.lt (local.get $x) (f64.const 0)) (then (unreachable)))
        (f64.store (i32.add (local.get $out) (i32.mul (local.get $i) (i32.const 8)))
                   (f64.mul (local.get $x) (f64.const 2)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $row)))
    ;; The argument's validity bitmap is passed through as the result's.
    (i32.store offset=20 (local.get $b) (i32.load offset=36 (local.get $b)))
    (i32.store offset=24 (local.get $b) (local.get $out))
    (i32.store offset=28 (local.get $b) (i32.const 0))
    (i32.store offset=32 (local.get $b) (i32.mul (local.get $rows) (i32.const 8)))
    (i32.const 0)))
