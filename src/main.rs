//! The `keygate` binary: parses the command line and hands over to the library.
//! `keygate serve` runs the gateway; every other command is a client of the admin socket.

#![deny(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::process::ExitCode;

/// mimalloc: thread-local free lists suit a proxy that allocates and frees small buffers on
/// every request, on whichever worker thread runs it.
#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

/// mimalloc, asked for an alignment only when a block of the size asked for may lack it.
///
/// The `mimalloc` crate passes every allocation to `mi_malloc_aligned`, and mimalloc 3 takes
/// its plain path there only for power-of-two sizes up to 1 KiB: any other block over 1 KiB
/// (hyper's 8 KiB read and header buffers among them) was over-allocated by its alignment, its
/// page marked as holding interior pointers, and its free made slower
/// (purpleprotocol/mimalloc_rust#170).
/// Every mimalloc block is aligned to 16 bytes or, for sizes under 16, to the size's own
/// multiple of 8, so a size that is a multiple of an alignment of at most 16 needs nothing
/// more than `mi_malloc`. Measured with `bench/cpu.sh` (callgrind, release builds without
/// PGO): 59.3-59.7k -> 58.4-58.7k instructions per proxied request.
struct Allocator;

/// The largest alignment every mimalloc block of a size that is its multiple already has
/// (`MI_MAX_ALIGN_SIZE`).
const PLAIN_ALIGN: usize = 16;

fn plain(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && size.is_multiple_of(align)
}

// SAFETY: each method passes its block to mimalloc, which owns it from allocation to free; the
// plain functions are used only where `plain` holds, where mimalloc's blocks have the layout's
// alignment (see `Allocator`), and `mi_free` frees blocks from either kind of call.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout.size(), layout.align()) {
            // SAFETY: as for the impl.
            unsafe { libmimalloc_sys::mi_malloc(layout.size()).cast() }
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout.size(), layout.align()) {
            // SAFETY: as for the impl.
            unsafe { libmimalloc_sys::mi_zalloc(layout.size()).cast() }
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on (mimalloc frees either kind of block).
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(new_size, layout.align()) {
            // SAFETY: `ptr` is a live mimalloc block (the caller's contract); as for the impl.
            unsafe { libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast() }
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}

fn main() -> ExitCode {
    keygate::cli::main()
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    /// Every layout, plain or not, comes back aligned, zeroed when asked, and keeps its bytes
    /// across reallocs that cross from one kind of call to the other, both ways.
    #[test]
    fn blocks_have_their_alignment() {
        let sizes = [1, 7, 8, 24, 48, 100, 1000, 1500, 4096, 5000, 70_000];
        for align in [1, 2, 8, 16, 32, 64, 128, 4096] {
            for size in sizes {
                let layout = Layout::from_size_align(size, align).expect("valid layout");
                let mut kept = Vec::new();
                for zeroed in [false, true] {
                    // SAFETY: the layout has a non-zero size; each block is freed below.
                    let p = unsafe {
                        if zeroed {
                            ALLOCATOR.alloc_zeroed(layout)
                        } else {
                            ALLOCATOR.alloc(layout)
                        }
                    };
                    assert!(!p.is_null(), "{size}/{align}");
                    assert_eq!(p as usize % align, 0, "{size}/{align} zeroed={zeroed}");
                    // SAFETY: `p` holds `size` bytes.
                    let bytes = unsafe { std::slice::from_raw_parts_mut(p, size) };
                    if zeroed {
                        assert!(bytes.iter().all(|&b| b == 0), "{size}/{align} not zeroed");
                    }
                    bytes.fill(0xa5);
                    kept.push(p);
                }
                for p in kept {
                    // First to a size no alignment over 1 divides (from a plain block to the
                    // aligned call, for alignments 2-16), then to a multiple of the alignment
                    // (from an aligned block, maybe over-allocated, to the plain call).
                    let mut live = (p, layout);
                    for new_size in [size * 3 + 1, (size * 7).next_multiple_of(align)] {
                        let (p, layout) = live;
                        // SAFETY: `p` is live with `layout`; `new_size` is non-zero.
                        let q = unsafe { ALLOCATOR.realloc(p, layout, new_size) };
                        assert!(!q.is_null());
                        assert_eq!(q as usize % align, 0, "{size}->{new_size}/{align}");
                        // SAFETY: the first `size` bytes were copied over.
                        let bytes = unsafe { std::slice::from_raw_parts(q, size) };
                        assert!(
                            bytes.iter().all(|&b| b == 0xa5),
                            "{size}->{new_size}/{align} lost bytes"
                        );
                        live = (q, Layout::from_size_align(new_size, align).expect("valid"));
                    }
                    let (q, layout) = live;
                    // SAFETY: `q` is live with `layout`.
                    unsafe { ALLOCATOR.dealloc(q, layout) };
                }
            }
        }
    }
}
