;; Hostile guest: declares 20 memories besides its exported one, to multiply the memory cap.
;; Multi-memory is switched off, so it is refused when it is loaded.
(module
  (memory (export "memory") 2)
  (memory 1) (memory 1) (memory 1) (memory 1) (memory 1) (memory 1) (memory 1) (memory 1)
  (memory 1) (memory 1) (memory 1) (memory 1) (memory 1) (memory 1) (memory 1) (memory 1)
  (memory 1) (memory 1) (memory 1) (memory 1)
  (func (export "rivulet_abi_version") (result i32) (i32.const 1)))
