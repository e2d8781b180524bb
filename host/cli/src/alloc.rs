//! The global allocator: mimalloc, asked the way C's `malloc` is asked whenever that gives the
//! alignment a layout needs.
//!
//! mimalloc's per-thread heaps suit thread-per-core workers: allocation and free of a request's
//! buffers stay on the worker's own heap, and it measured faster than glibc malloc on the load
//! benchmark (docs/benchmarks.md). The `mimalloc` crate's own allocator passes every request
//! through `mi_malloc_aligned`, whose fast path only covers blocks up to 1 KiB that happen to be
//! aligned already; anything larger (boxed request futures, header tables) takes its
//! over-allocation path, ≈ 150 instructions more per allocation and four to six allocations per
//! request (callgrind, docs/benchmarks.md). `mi_malloc` returns memory aligned to 16 bytes for
//! any size of at least 16, as a C `malloc` must; the standard library's `System` allocator
//! relies on the same rule.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc,
    mi_zalloc_aligned,
};

/// `alignof(max_align_t)` on the 64-bit targets RustyGate builds for.
const MALLOC_ALIGN: usize = 16;

/// Whether plain `malloc` semantics already give `align` for a block of `size` bytes.
fn malloc_aligns(align: usize, size: usize) -> bool {
    align <= MALLOC_ALIGN && align <= size
}

/// A block for `layout` from mimalloc's `plain` (malloc-like) or `aligned` entry point.
///
/// # Safety
/// Both must be mimalloc allocation functions (plain FFI, no preconditions beyond the sizes).
#[allow(unsafe_code)]
#[inline(always)]
unsafe fn allocate(
    layout: Layout,
    plain: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    // SAFETY: the caller passes mimalloc's functions; the alignment is a power of two.
    unsafe {
        if malloc_aligns(layout.align(), layout.size()) {
            plain(layout.size()).cast()
        } else {
            aligned(layout.size(), layout.align()).cast()
        }
    }
}

/// mimalloc as the process allocator (see the module docs).
pub struct MiMalloc;

// SAFETY: every function forwards to mimalloc, which returns blocks of at least the requested
// size, aligned as asked (by the `_aligned` variants, or by malloc's 16-byte guarantee when
// `malloc_aligns` holds), and frees/reallocates only blocks it returned.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain FFI calls with a size and a power-of-two alignment.
        unsafe { allocate(layout, mi_malloc, mi_malloc_aligned) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe { allocate(layout, mi_zalloc, mi_zalloc_aligned) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc's contract); mimalloc frees
        // aligned and unaligned blocks alike.
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (GlobalAlloc's contract).
        unsafe {
            if malloc_aligns(layout.align(), new_size) {
                mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size and alignment a Rust program asks for comes back aligned as asked, through
    /// both paths, and survives growing and shrinking.
    #[test]
    #[allow(unsafe_code)]
    fn blocks_are_aligned_as_asked() {
        let a = MiMalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [
                1,
                7,
                8,
                15,
                16,
                24,
                48,
                100,
                1000,
                1024,
                1500,
                4096,
                70_000,
                1 << 21,
            ] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes, valid layouts, each block freed once with its layout.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xa5, size);
                    let grown = a.realloc(p, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "grown {size} align {align}");
                    assert_eq!(*grown.add(size - 1), 0xa5);
                    let grown_layout = Layout::from_size_align(size * 3, align).unwrap();
                    let shrunk = a.realloc(grown, grown_layout, size);
                    assert_eq!(shrunk as usize % align, 0, "shrunk {size} align {align}");
                    assert_eq!(*shrunk, 0xa5);
                    a.dealloc(shrunk, layout);
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed {size} align {align}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|b| *b == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
