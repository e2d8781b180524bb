//! bare-noop: the least a proxy-wasm filter can be. The host calls a module only for the
//! callbacks it exports (as Envoy does), so a request costs this filter two calls, against
//! the seven an SDK-built filter takes (the SDKs export every callback). The filter-overhead
//! benchmark runs it beside `noop` to show which part of a filter's cost is the host's.

/// ABI 0.2.1, declared by the export's name.
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// The host copies values into memory the module hands out; this filter asks for none, but
/// the ABI requires the export.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut block = Vec::<u8>::with_capacity(size.max(1));
    let ptr = block.as_mut_ptr();
    std::mem::forget(block);
    ptr
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_context_id: u32, _parent_context_id: u32) {}

/// 0: Continue.
#[no_mangle]
pub extern "C" fn proxy_on_request_headers(
    _context_id: u32,
    _headers: u32,
    _end_of_stream: u32,
) -> u32 {
    0
}
