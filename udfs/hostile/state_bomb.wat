;; Hostile guest: an aggregate `f(f64) -> f64` whose every update returns a state of 1 MiB for
;; each group. The host keeps states per group in window state and in checkpoints, so it refuses
;; any state over `max_state_bytes` (default 64 KiB): the batch fails, and no state is stored.
;; Implements the ABI's exports (udfs/ABI.md, version 2) around one aggregate.
(module
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 4096))
  ;; The states' bytes: one area of 16 MiB (up to 16 groups a call), allocated by the first call.
  (global $area (mut i32) (i32.const 0))
  (data (i32.const 1024) "{\"abi\":2,\"functions\":[{\"name\":\"f\",\"kind\":\"aggregate\",\"args\":[\"f64\"],\"returns\":\"f64\"}]}")
  (func (export "rivulet_abi_version") (result i32) (i32.const 2))
  (func (export "rivulet_describe") (result i64)
    (i64.or (i64.const 1024) (i64.shl (i64.const 86) (i64.const 32))))
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
  ;; Aggregate header: groups G @36. The result `out` @20 is binary, G rows: each 1 MiB of
  ;; zeros, offsets 0, 1 MiB, 2 MiB, ...
  (func $states (param $b i32) (result i32)
    (local $g i32) (local $offs i32) (local $i i32)
    (local.set $g (i32.load offset=36 (local.get $b)))
    (local.set $offs (call $alloc (i32.mul (i32.add (local.get $g) (i32.const 1)) (i32.const 4)) (i32.const 4)))
    (block $done
      (loop $row
        (br_if $done (i32.gt_u (local.get $i) (local.get $g)))
        (i32.store (i32.add (local.get $offs) (i32.mul (local.get $i) (i32.const 4)))
                   (i32.mul (local.get $i) (i32.const 1048576)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $row)))
    (i32.store offset=20 (local.get $b) (i32.const 0))
    (if (i32.eqz (global.get $area))
      (then (global.set $area (call $alloc (i32.const 16777216) (i32.const 1)))))
    (i32.store offset=24 (local.get $b) (global.get $area))
    (i32.store offset=28 (local.get $b) (local.get $offs))
    (i32.store offset=32 (local.get $b) (i32.mul (local.get $g) (i32.const 1048576)))
    (i32.const 0))
  (func (export "rivulet_agg_update_f") (param $b i32) (result i32) (call $states (local.get $b)))
  (func (export "rivulet_agg_merge_f") (param $b i32) (result i32) (call $states (local.get $b)))
  ;; The groups' results: G nulls (a zero validity bitmap, zero values).
  (func (export "rivulet_agg_evaluate_f") (param $b i32) (result i32)
    (local $g i32)
    (local.set $g (i32.load offset=36 (local.get $b)))
    (i32.store offset=20 (local.get $b)
      (call $alloc (i32.add (i32.div_u (local.get $g) (i32.const 8)) (i32.const 1)) (i32.const 1)))
    (i32.store offset=24 (local.get $b) (call $alloc (i32.mul (local.get $g) (i32.const 8)) (i32.const 8)))
    (i32.store offset=28 (local.get $b) (i32.const 0))
    (i32.store offset=32 (local.get $b) (i32.mul (local.get $g) (i32.const 8)))
    (i32.const 0)))
