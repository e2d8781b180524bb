//! The filters' allocator: small blocks from per-size free lists, the rest from the system's.
//!
//! A filter allocates a few dozen small blocks per request and frees them before the request
//! ends: every header value the host hands over is a block the host asks the guest's allocator
//! for, and the SDK frees it once read, and the filters' own strings come and go as quickly.
//! wasi-libc's allocator (dlmalloc) splits, coalesces and bins each of them; here a block of up
//! to [`MAX_SMALL`] bytes is popped from, and pushed back onto, the free list of its size class,
//! and only an empty list goes to the system allocator, for a slab it cuts into blocks. Freed
//! blocks stay on their list for the next request (a module's memory never shrinks anyway).
//!
//! A module without wasm threads runs one callback at a time on one thread, which is what
//! makes the unsynchronised lists sound.
//!
//! A block is filed by the size it is given back with. A host writes at most as many bytes
//! as it asked the guest to allocate, so a block the SDK frees by the length it received can
//! only land on a list of its own class or a smaller one, where it is large enough.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr;
use std::alloc::System;

/// Size classes are multiples of [`GRAIN`] up to this.
const MAX_SMALL: usize = 1024;
/// The classes' step, and the alignment every block has.
const GRAIN: usize = 16;
const CLASSES: usize = MAX_SMALL / GRAIN;
/// A slab holds at least this many bytes of blocks (and at least [`MIN_BLOCKS`] blocks).
const SLAB_BYTES: usize = 2048;
const MIN_BLOCKS: usize = 4;

pub struct FilterAlloc {
    /// Head of each class's free list; a free block's first word points to the next one.
    free: UnsafeCell<[*mut u8; CLASSES]>,
}

// SAFETY: built for wasm32 without the atomics feature, where a module is one thread, and
// natively for the tests below, which use each instance from one thread.
unsafe impl Sync for FilterAlloc {}

impl FilterAlloc {
    pub const fn new() -> Self {
        Self {
            free: UnsafeCell::new([ptr::null_mut(); CLASSES]),
        }
    }

    /// The class of a layout this allocator serves itself, if it does.
    #[inline]
    fn class(layout: Layout) -> Option<usize> {
        if layout.size() <= MAX_SMALL && layout.align() <= GRAIN {
            Some(layout.size().max(1).div_ceil(GRAIN) - 1)
        } else {
            None
        }
    }

    /// Cuts a new slab for `class` into blocks, threads all but the first onto its free list
    /// and returns the first; null if the system is out of memory.
    #[cold]
    unsafe fn refill(&self, class: usize) -> *mut u8 {
        let size = (class + 1) * GRAIN;
        let count = (SLAB_BYTES / size).max(MIN_BLOCKS);
        let Ok(layout) = Layout::from_size_align(size * count, GRAIN) else {
            return ptr::null_mut();
        };
        // SAFETY: the layout is non-zero in size.
        let slab = unsafe { System.alloc(layout) };
        if slab.is_null() {
            return slab;
        }
        // SAFETY: single-threaded (see the impl of Sync); the blocks lie within the slab.
        unsafe {
            let head = &mut (*self.free.get())[class];
            for i in (1..count).rev() {
                let block = slab.add(i * size);
                block.cast::<*mut u8>().write(*head);
                *head = block;
            }
        }
        slab
    }
}

impl Default for FilterAlloc {
    fn default() -> Self {
        Self::new()
    }
}

unsafe impl GlobalAlloc for FilterAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = Self::class(layout) else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.alloc(layout) };
        };
        // SAFETY: single-threaded; a listed block is free and at least the class's size.
        unsafe {
            let head = &mut (*self.free.get())[class];
            let block = *head;
            if block.is_null() {
                return self.refill(class);
            }
            *head = block.cast::<*mut u8>().read();
            block
        }
    }

    #[inline]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(class) = Self::class(layout) else {
            // SAFETY: a block of this layout came from the system allocator.
            return unsafe { System.dealloc(block, layout) };
        };
        // SAFETY: single-threaded; the block is the caller's to give back, and as large as
        // a pointer (every class is at least GRAIN bytes).
        unsafe {
            let head = &mut (*self.free.get())[class];
            block.cast::<*mut u8>().write(*head);
            *head = block;
        }
    }

    #[inline]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `new_size` is non-zero and rounds to a valid layout (the caller's contract).
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (Self::class(layout), Self::class(new)) {
            // The block already has room (its class rounds its size up).
            (Some(a), Some(b)) if a == b => block,
            // SAFETY: both are the system's: it may grow the block in place.
            (None, None) => unsafe { System.realloc(block, layout, new_size) },
            _ => {
                // SAFETY: a new block, the old one's bytes copied, the old one given back.
                unsafe {
                    let moved = self.alloc(new);
                    if !moved.is_null() {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                    moved
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 1).unwrap()
    }

    #[test]
    fn live_blocks_are_aligned_distinct_and_as_large_as_asked() {
        let a = FilterAlloc::new();
        let sizes: Vec<usize> = (1..=MAX_SMALL).step_by(7).chain([2000, 70_000]).collect();
        let blocks: Vec<(*mut u8, usize)> = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| unsafe {
                let p = a.alloc(layout(size));
                assert!(!p.is_null());
                if size <= MAX_SMALL {
                    assert_eq!(p as usize % GRAIN, 0, "size {size}");
                }
                ptr::write_bytes(p, i as u8, size);
                (p, size)
            })
            .collect();
        // Every block still holds its own pattern: none was handed out twice or overlaps.
        for (i, &(p, size)) in blocks.iter().enumerate() {
            let bytes = unsafe { std::slice::from_raw_parts(p, size) };
            assert!(
                bytes.iter().all(|&b| b == i as u8),
                "block of {size} bytes was overwritten"
            );
        }
        for (p, size) in blocks {
            unsafe { a.dealloc(p, layout(size)) };
        }
    }

    #[test]
    fn a_freed_block_serves_the_next_request_of_its_class() {
        let a = FilterAlloc::new();
        unsafe {
            let first = a.alloc(layout(40));
            a.dealloc(first, layout(40));
            // 33 to 48 bytes share a class.
            assert_eq!(a.alloc(layout(33)), first);
            let other = a.alloc(layout(48));
            assert_ne!(other, first);
            a.dealloc(other, layout(48));
            a.dealloc(first, layout(33));
        }
    }

    #[test]
    fn realloc_keeps_the_bytes_within_a_class_and_across_classes_and_sizes() {
        let a = FilterAlloc::new();
        unsafe {
            let p = a.alloc(layout(20));
            ptr::copy_nonoverlapping(b"0123456789abcdefghij".as_ptr(), p, 20);
            // Same class (17 to 32 bytes): the block itself.
            assert_eq!(a.realloc(p, layout(20), 30), p);
            let mut size = 30;
            let mut p = p;
            for next in [200, MAX_SMALL + 1, 5000, 100, 20] {
                p = a.realloc(p, layout(size), next);
                assert!(!p.is_null());
                let kept = std::slice::from_raw_parts(p, 20);
                assert_eq!(kept, b"0123456789abcdefghij", "after a realloc to {next}");
                size = next;
            }
            a.dealloc(p, layout(size));
        }
    }

    #[test]
    fn over_aligned_layouts_go_to_the_system_allocator() {
        let a = FilterAlloc::new();
        let wide = Layout::from_size_align(64, 64).unwrap();
        unsafe {
            let p = a.alloc(wide);
            assert_eq!(p as usize % 64, 0);
            a.dealloc(p, wide);
        }
    }
}
