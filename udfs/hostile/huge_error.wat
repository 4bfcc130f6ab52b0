;; Hostile guest: fails every call with an error message as long as 32 MiB of its memory. The
;; host keeps at most 1 KiB of it, however many rows the failure is reported for.
;; Implements the ABI's exports (udfs/ABI.md) around one function `f(f64) -> f64`.
(module
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 1024) "{\"abi\":1,\"functions\":[{\"name\":\"f\",\"kind\":\"scalar\",\"args\":[\"f64\"],\"returns\":\"f64\"}]}")
  (func (export "rivulet_abi_version") (result i32) (i32.const 1))
  (func (export "rivulet_describe") (result i64)
    (i64.or (i64.const 1024) (i64.shl (i64.const 83) (i64.const 32))))
  (func (export "rivulet_alloc") (param $size i32) (param $align i32) (result i32)
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
  ;; Batch header: status @8, err_ptr @12, err_len @16.
  (func (export "rivulet_scalar_f") (param $b i32) (result i32)
    (if (i32.lt_u (memory.size) (i32.const 512))
      (then (drop (memory.grow (i32.sub (i32.const 512) (memory.size))))))
    (memory.fill (i32.const 65536) (i32.const 120) (i32.const 33423360))
    (i32.store offset=8 (local.get $b) (i32.const 1))
    (i32.store offset=12 (local.get $b) (i32.const 65536))
    (i32.store offset=16 (local.get $b) (i32.const 33423360))
    (i32.const 1)))
