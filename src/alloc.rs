//! perch's global allocator: mimalloc, tuned for small boards, counting
//! the bytes perch holds so that `/metrics` can tell the heap perch uses
//! from what the allocator keeps around it (docs/performance.md).

// With the `system-allocator` feature the counting allocator is not the
// global one, and only its accessors are used.
#![cfg_attr(feature = "system-allocator", allow(dead_code))]

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};

/// Positions in mimalloc 3's `mi_option_t` (include/mimalloc.h) that
/// libmimalloc-sys does not name.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc as a small board needs it: arenas committed as they are used,
/// and freed memory returned after 100 ms rather than a second. With
/// transparent huge pages off (the `no_thp` feature) this about halved
/// perch's resident memory under 10 000 live series (`perch bench
/// footprint`, docs/performance.md). Returning memory at once (0 ms) cost
/// a third of MQTT throughput (`perch bench mqtt`); 100 ms costs nothing
/// measurable.
pub fn tune() {
    // SAFETY: plain setters of mimalloc's global options.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 100);
    }
}

/// mimalloc, counting the bytes allocated and not yet freed.
pub struct CountingMiMalloc;

/// Bytes allocated and not freed, all threads, but for what threads hold
/// back in [`Pending`].
static ALLOCATED: AtomicI64 = AtomicI64::new(0);

/// A thread's count not yet added to [`ALLOCATED`]: one shared counter
/// touched by every allocation would cost the collector's threads a
/// contended cache line each time. Added when it passes [`FLUSH_AT`] either
/// way, and when the thread ends.
struct Pending(Cell<i64>);

const FLUSH_AT: i64 = 16 << 10;

impl Drop for Pending {
    fn drop(&mut self) {
        ALLOCATED.fetch_add(self.0.replace(0), Ordering::Relaxed);
    }
}

thread_local! {
    static PENDING: Pending = const { Pending(Cell::new(0)) };
}

fn account(delta: i64) {
    let added = PENDING.try_with(|p| {
        let v = p.0.get() + delta;
        if v.abs() >= FLUSH_AT {
            p.0.set(0);
            ALLOCATED.fetch_add(v, Ordering::Relaxed);
        } else {
            p.0.set(v);
        }
    });
    // The thread is ending and its pending count already went.
    if added.is_err() {
        ALLOCATED.fetch_add(delta, Ordering::Relaxed);
    }
}

/// Heap bytes allocated and not freed (give or take 16 KiB per thread).
pub fn allocated_bytes() -> u64 {
    ALLOCATED.load(Ordering::Relaxed).max(0) as u64
}

/// [`allocated_bytes`] when the counting allocator is the global one
/// (not with the `system-allocator` feature, for heap profilers).
pub fn counted_heap() -> Option<fn() -> u64> {
    (!cfg!(feature = "system-allocator")).then_some(allocated_bytes as fn() -> u64)
}

// SAFETY: every call is passed to mimalloc unchanged; the counting only
// reads the layouts.
unsafe impl GlobalAlloc for CountingMiMalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = mimalloc::MiMalloc.alloc(layout);
        if !p.is_null() {
            account(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = mimalloc::MiMalloc.alloc_zeroed(layout);
        if !p.is_null() {
            account(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        mimalloc::MiMalloc.dealloc(ptr, layout);
        account(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = mimalloc::MiMalloc.realloc(ptr, layout, new_size);
        if !p.is_null() {
            account(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The positions name the options meant: their defaults are
    /// mimalloc 3's for these two (options.c).
    #[test]
    fn allocator_options_are_the_ones_meant() {
        // SAFETY: plain getters of mimalloc's global options.
        let (eager, delay) = unsafe {
            (
                libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT),
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
            )
        };
        assert_eq!((eager, delay), (2, 1000));
    }

    /// The test binary runs on this allocator too, and other tests
    /// allocate at the same time: a large block, never touched (so it
    /// costs no memory), stands out of their noise. What a thread keeps
    /// after it ends still counts.
    #[test]
    #[cfg(not(feature = "system-allocator"))]
    fn counts_what_is_held() {
        const BIG: i64 = 256 << 20;
        const NOISE: i64 = 32 << 20;
        let before = allocated_bytes() as i64;
        let held = std::thread::spawn(|| vec![0u8; BIG as usize])
            .join()
            .unwrap();
        let with = allocated_bytes() as i64 - before;
        assert!((with - BIG).abs() < NOISE, "held {with}");
        drop(held);
        let after = allocated_bytes() as i64 - before;
        assert!(after.abs() < NOISE, "after {after}");
    }
}
