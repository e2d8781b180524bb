;; A proxy-wasm filter that hands the host bad pointers. It answers every request locally
;; with status 400 + (the status proxy_log returned for an out-of-bounds message) * 10
;; + (the status proxy_get_header_map_value returned for an out-of-bounds return slot):
;; a host that checks pointers answers 6 twice (INVALID_MEMORY_ACCESS), so the client sees 466,
;; and the VM is still alive for the next request.
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $respond (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) ":path")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (local $a i32) (local $b i32)
    ;; message far beyond the 64 KiB memory
    (local.set $a (call $log (i32.const 2) (i32.const 0x7ffffff0) (i32.const 64)))
    ;; return pointers beyond memory
    (local.set $b (call $get (i32.const 0) (i32.const 16) (i32.const 5) (i32.const -8) (i32.const -4)))
    (drop (call $respond
      (i32.add (i32.const 400) (i32.add (i32.mul (local.get $a) (i32.const 10)) (local.get $b)))
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 1))
)
