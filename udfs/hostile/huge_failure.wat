;; Hostile guest: a record transform `t` that marks every record ProcessingFailed with a message of
;; 1 MiB. The host keeps at most 1 KiB of each message, with its whole length.
;; Implements the ABI's exports (udfs/ABI.md, version 2) around one transform.
(module
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 1024) "{\"abi\":2,\"functions\":[{\"name\":\"t\",\"kind\":\"transform\",\"args\":[\"binary\"],\"returns\":\"binary\"}]}")
  (func (export "rivulet_abi_version") (result i32) (i32.const 2))
  (func (export "rivulet_describe") (result i64)
    (i64.or (i64.const 1024) (i64.shl (i64.const 92) (i64.const 32))))
  (func $alloc (export "rivulet_alloc") (param $size i32) (param $align i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and
      (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
      (i32.sub (i32.const 0) (local.get $align))))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (block $ok
      (br_if $ok (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
      (br_if $ok (i32.ge_s (memory.grow (i32.add (i32.const 1)
        (i32.div_u (i32.sub (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
                   (i32.const 65536)))) (i32.const 0)))
      (return (i32.const 0)))
    (local.get $p))
  ;; Transform batch: rows @0; result column @20; result codes column @52 (values @56).
  (func (export "rivulet_transform_t") (param $b i32) (result i32)
    (local $rows i32) (local $codes i32) (local $i i32) (local $vals i32) (local $offs i32)
    (local $len i32)
    (local.set $rows (i32.load (local.get $b)))
    (local.set $codes (i32.load offset=56 (local.get $b)))
    (local.set $len (i32.mul (local.get $rows) (i32.const 1048576)))
    (local.set $vals (call $alloc (local.get $len) (i32.const 1)))
    (memory.fill (local.get $vals) (i32.const 120) (local.get $len))
    (local.set $offs (call $alloc (i32.mul (i32.add (local.get $rows) (i32.const 1)) (i32.const 4)) (i32.const 4)))
    (block $done
      (loop $row
        (i32.store (i32.add (local.get $offs) (i32.mul (local.get $i) (i32.const 4)))
                   (i32.mul (local.get $i) (i32.const 1048576)))
        (br_if $done (i32.ge_u (local.get $i) (local.get $rows)))
        (i32.store8 (i32.add (local.get $codes) (local.get $i)) (i32.const 2))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $row)))
    (i32.store offset=20 (local.get $b) (i32.const 0))
    (i32.store offset=24 (local.get $b) (local.get $vals))
    (i32.store offset=28 (local.get $b) (local.get $offs))
    (i32.store offset=32 (local.get $b) (local.get $len))
    (i32.const 0)))
