;; A valid module that is not a proxy-wasm filter: it declares no ABI version.
(module
  (memory (export "memory") 1)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
)
