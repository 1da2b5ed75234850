//! The allocator's retention. mimalloc keeps the pages a thread freed until that thread
//! allocates again past a delay; the start-up parse of the embedded price table (373 models, a
//! 45 KB TOML document) frees about 1 MiB that the thread that opened the ledger would then hold
//! for the daemon's life: a third of its idle heap (BENCHMARKS.md, "Footprint").

/// Gives this thread's freed memory back to the system now instead of at its next allocations.
/// One pass over the thread's heap: call it after start-up work, never on a hot path.
#[allow(unsafe_code)]
pub fn release_freed() {
    // SAFETY: mi_collect takes no pointer and may be called on any thread at any time; under
    // another global allocator (the tests) it finds an empty mimalloc heap and does nothing.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
