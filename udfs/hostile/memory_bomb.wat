;; Hostile guest: grows its memory, writing every new page (so the host really backs it), until
;; the cap refuses: the memory limit stops it.
;; Implements the ABI's exports (udfs/ABI.md) around one function `f(f64) -> f64`.
(module
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 1024) "{\"abi\":1,\"functions\":[{\"name\":\"f\",\"kind\":\"scalar\",\"args\":[\"f64\"],\"returns\":\"f64\"}]}")
  (func (export "rivulet_abi_version") (result i32) (i32.const 1))
  (func (export "rivulet_describe") (result i64)
    (i64.or (i64.const 1024) (i64.shl (i64.const 83) (i64.const 32))))
  ;; A bump allocator that grows memory as needed.
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
  (func (export "rivulet_scalar_f") (param $b i32) (result i32)
    (local $old i32)
    (loop $more
      (local.set $old (memory.grow (i32.const 16)))
      (memory.fill (i32.mul (local.get $old) (i32.const 65536)) (i32.const 1) (i32.const 1048576))
      (br $more))
    (i32.const 0)))
