//! Host calls made directly, where the SDK's wrapper hides what a test needs to see.

use proxy_wasm::types::Status;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> Status;
}

/// How the host answers a property read: `ok <length>` or the status's name. The Rust SDK
/// turns both "found, empty" and "not found" into `None`; Go and C++ filters can tell them
/// apart, so the host must answer as Envoy does.
pub(crate) fn property_status(path: &str) -> String {
    let serialized: Vec<u8> = path.replace('.', "\0").into_bytes();
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer it allocated through this module's
    // `proxy_on_memory_allocate` (or null) and its length, which are taken back below.
    let status =
        unsafe { proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut size) };
    if !data.is_null() {
        // SAFETY: as above: an allocation of `size` bytes from this module's allocator.
        drop(unsafe { Vec::from_raw_parts(data, size, size) });
    }
    match status {
        Status::Ok => format!("ok {size}"),
        Status::NotFound => "not_found".into(),
        other => format!("status {}", other as u32),
    }
}
