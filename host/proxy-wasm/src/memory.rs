//! Guest memory access. Every pointer and length from the guest is treated as an unsigned
//! 32-bit value and checked with 64-bit arithmetic; a bad one becomes `INVALID_MEMORY_ACCESS`,
//! never a host panic. Values go back to the guest in memory the guest allocates itself.

use rustygate_wasm_runtime::wasmtime::{Caller, Result};

use crate::abi::status;
use crate::state::HostState;

/// A guest-side failure that the host function reports as a status.
pub(crate) type Status = i32;

fn range(ptr: i32, len: usize, mem_len: usize) -> Option<std::ops::Range<usize>> {
    let start = ptr as u32 as usize;
    let end = start.checked_add(len)?;
    (end <= mem_len).then_some(start..end)
}

/// Copies `len` bytes at `ptr` out of guest memory. `(0, 0)` is a valid empty input.
pub(crate) fn read(caller: &Caller<'_, HostState>, ptr: i32, len: i32) -> Result<Vec<u8>, Status> {
    slice(caller, ptr, len).map(<[u8]>::to_vec)
}

/// The `len` bytes at `ptr` in guest memory, in place: for inputs the host only reads while
/// it reads host state, which borrows the caller the same way (a header name to look up, say).
/// Whatever must outlive the next guest call (the allocator, when a value is given back) is
/// copied with [`read`] instead.
pub(crate) fn slice<'a>(
    caller: &'a Caller<'_, HostState>,
    ptr: i32,
    len: i32,
) -> Result<&'a [u8], Status> {
    let len = len as u32 as usize;
    if len == 0 {
        return Ok(&[]);
    }
    let mem = caller.data().memory.ok_or(status::INVALID_MEMORY_ACCESS)?;
    let data = mem.data(caller);
    range(ptr, len, data.len())
        .map(|r| &data[r])
        .ok_or(status::INVALID_MEMORY_ACCESS)
}

/// Writes `bytes` at `ptr`.
pub(crate) fn write(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    bytes: &[u8],
) -> Result<(), Status> {
    let mem = caller.data().memory.ok_or(status::INVALID_MEMORY_ACCESS)?;
    let data = mem.data_mut(caller);
    let r = range(ptr, bytes.len(), data.len()).ok_or(status::INVALID_MEMORY_ACCESS)?;
    data[r].copy_from_slice(bytes);
    Ok(())
}

/// Checks that `len` bytes at `ptr` are writable, without writing.
pub(crate) fn check(caller: &Caller<'_, HostState>, ptr: i32, len: usize) -> Result<(), Status> {
    let mem = caller.data().memory.ok_or(status::INVALID_MEMORY_ACCESS)?;
    range(ptr, len, mem.data_size(caller))
        .map(drop)
        .ok_or(status::INVALID_MEMORY_ACCESS)
}

/// Writes a u32 result.
pub(crate) fn write_u32(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    v: u32,
) -> Result<(), Status> {
    write(caller, ptr, &v.to_le_bytes())
}

/// Returns `bytes` to the guest: allocates exactly `bytes.len()` with the guest's allocator
/// (nothing for an empty value: `0, 0`), copies, and writes pointer and length to the two
/// return slots. The outer `Result` is a trap (the allocator itself trapped); the inner one
/// the status to return.
pub(crate) fn give(
    caller: &mut Caller<'_, HostState>,
    bytes: &[u8],
    ret_ptr: i32,
    ret_len: i32,
) -> Result<Result<(), Status>> {
    if let Err(s) = check(caller, ret_ptr, 4).and_then(|_| check(caller, ret_len, 4)) {
        return Ok(Err(s));
    }
    if bytes.is_empty() {
        return Ok(write_u32(caller, ret_ptr, 0).and_then(|_| write_u32(caller, ret_len, 0)));
    }
    let Some(alloc) = caller.data().alloc.clone() else {
        return Ok(Err(status::INVALID_MEMORY_ACCESS));
    };
    let ptr = alloc.call(&mut *caller, bytes.len() as i32)?;
    if ptr == 0 {
        return Ok(Err(status::INVALID_MEMORY_ACCESS));
    }
    // The allocator may have grown memory: `write` looks the memory up afresh.
    Ok(write(caller, ptr, bytes)
        .and_then(|_| write_u32(caller, ret_ptr, ptr as u32))
        .and_then(|_| write_u32(caller, ret_len, bytes.len() as u32)))
}
