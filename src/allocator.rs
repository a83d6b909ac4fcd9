//! The process's allocator: jemalloc, freeing page-aligned small objects by the unsized path.
//!
//! jemalloc here is built with heap profiling (for `GET /debug/pprof/heap`). In such a build
//! its sized free (`sdallocx`, what `GlobalAlloc::dealloc` calls) cannot tell a sampled object
//! from an ordinary one that happens to start a page, since sampled objects are page-aligned;
//! it sends every page-aligned object of a small size class down its slow path, whether
//! profiling is active or not. Its thread cache hands the last freed object out first, so a
//! request that allocates and frees an object of one size keeps getting the same page-aligned
//! one: three such frees per fast call took 180 instructions each instead of about 20. The
//! unsized free (`free`) looks the object up in jemalloc's extent map instead, which does tell
//! a sampled object apart, and stays on the fast path. No crate offers this, and it is
//! one branch in front of `tikv_jemallocator`'s own methods.

use std::alloc::{GlobalAlloc, Layout};

use tikv_jemallocator::Jemalloc;

/// Objects up to this size come from jemalloc's slabs (its `SC_LOOKUP_MAXCLASS`); larger ones
/// take the slow path whichever free is called.
const SMALL_MAX: usize = 4096;

/// The alignment jemalloc gives every object of at least this size without being asked
/// (`tikv_jemallocator` passes no alignment flag then).
const PLAIN_ALIGN: usize = 16;

/// Page-aligned objects of a small size class: where jemalloc's sized free misses its fast path.
const PAGE: usize = 4096;

/// [`Jemalloc`], whose `dealloc` frees page-aligned small objects with jemalloc's unsized free.
pub struct Allocator;

// SAFETY: every method forwards to `Jemalloc`, except `dealloc` of an object that `Jemalloc`
// allocated with no alignment flag, which jemalloc's own `free` releases exactly as its sized
// free would (any object jemalloc allocated may be given to `free`).
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { Jemalloc.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { Jemalloc.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if unsized_free(ptr as usize, layout) {
            // SAFETY: `ptr` came from `Jemalloc` (the caller's contract) and was allocated
            // without an alignment flag; jemalloc's `free` takes any object it allocated.
            unsafe { tikv_jemalloc_sys::free(ptr.cast()) }
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { Jemalloc.dealloc(ptr, layout) }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { Jemalloc.realloc(ptr, layout, new_size) }
    }
}

/// Whether the object at `addr` is one jemalloc's sized free would send down its slow path
/// although its unsized free would not: page-aligned, of a small size class, and allocated
/// without an alignment flag.
#[inline]
fn unsized_free(addr: usize, layout: Layout) -> bool {
    addr.is_multiple_of(PAGE)
        && layout.size() <= SMALL_MAX
        && layout.align() <= PLAIN_ALIGN
        && layout.align() <= layout.size()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_page_aligned_small_plain_objects_take_the_unsized_free() {
        let plain = |size| Layout::from_size_align(size, 8).unwrap();
        assert!(unsized_free(PAGE, plain(16)));
        assert!(unsized_free(7 * PAGE, plain(SMALL_MAX)));
        assert!(!unsized_free(PAGE + 16, plain(16)), "not page-aligned");
        assert!(
            !unsized_free(PAGE / 2, plain(16)),
            "half a page is not a page"
        );
        assert!(!unsized_free(PAGE, plain(SMALL_MAX + 1)), "large");
        let aligned = Layout::from_size_align(64, 64).unwrap();
        assert!(
            !unsized_free(PAGE, aligned),
            "allocated with an alignment flag"
        );
        let tiny = Layout::from_size_align(4, 8).unwrap();
        assert!(
            !unsized_free(PAGE, tiny),
            "alignment above the size needs a flag"
        );
    }

    /// Every size and alignment, through both frees, including the page-aligned objects
    /// this allocator frees differently: each object keeps its contents until freed, and
    /// jemalloc (which aborts on a free it cannot place) takes every one back.
    #[test]
    fn allocates_and_frees_every_kind_of_object() {
        let sizes = (1..=64).chain([100, 128, 432, 1000, 4095, 4096, 4097, 8192, 100_000]);
        let mut page_aligned_small = 0;
        for size in sizes {
            for align in [1, 8, 16, 64, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // Enough of each that the slabs' page-aligned first objects are among them.
                let mut held = Vec::new();
                for i in 0..300u32 {
                    // SAFETY: `layout` has a non-zero size.
                    let ptr = unsafe { Allocator.alloc(layout) };
                    assert!(!ptr.is_null());
                    assert_eq!(ptr as usize % align, 0);
                    // SAFETY: `ptr` is valid for `size` bytes.
                    unsafe { ptr.write_bytes(i as u8, size) };
                    page_aligned_small += usize::from(unsized_free(ptr as usize, layout));
                    held.push((ptr, i as u8));
                }
                for (ptr, byte) in held {
                    // SAFETY: allocated above with `layout`, written in full, freed once.
                    unsafe {
                        assert_eq!(*ptr.add(size - 1), byte);
                        Allocator.dealloc(ptr, layout);
                    }
                }
            }
        }
        assert!(page_aligned_small > 0, "no object took the unsized free");
    }

    #[test]
    fn reallocates_across_size_classes() {
        let layout = Layout::from_size_align(24, 8).unwrap();
        // SAFETY: non-zero size; each pointer is the current one, used within its size.
        unsafe {
            let mut ptr = Allocator.alloc_zeroed(layout);
            assert_eq!(*ptr.add(23), 0);
            ptr.write_bytes(7, 24);
            let mut size = 24;
            for new_size in [4096, 5000, 64, 200_000, 16] {
                ptr = Allocator.realloc(ptr, Layout::from_size_align(size, 8).unwrap(), new_size);
                assert!(!ptr.is_null());
                assert_eq!(*ptr, 7, "contents kept across a move to {new_size} bytes");
                size = new_size;
            }
            Allocator.dealloc(ptr, Layout::from_size_align(size, 8).unwrap());
        }
    }
}
