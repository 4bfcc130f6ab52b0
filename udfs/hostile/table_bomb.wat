;; Hostile guest: grows its table by 100,000,000 elements in one instruction (800 MB of host
;; memory): the table element limit refuses it at once.
;; Implements the ABI's exports (udfs/ABI.md) around one function `f(f64) -> f64`.
(module
  (memory (export "memory") 2)
  (table $t 1 funcref)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 1024) "{\"abi\":1,\"functions\":[{\"name\":\"f\",\"kind\":\"scalar\",\"args\":[\"f64\"],\"returns\":\"f64\"}]}")
  (func (export "rivulet_abi_version") (result i32) (i32.const 1))
  (func (export "rivulet_describe") (result i64)
    (i64.or (i64.const 1024) (i64.shl (i64.const 83) (i64.const 32))))
  (func (export "rivulet_alloc") (param $size i32) (param $align i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (local.get $p))
  (func (export "rivulet_scalar_f") (param $b i32) (result i32)
    (drop (table.grow $t (ref.null func) (i32.const 100000000)))
    (unreachable)))
