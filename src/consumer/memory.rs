//! Giving the allocator's free pages back to the OS after a burst of
//! large allocations (snapshot records).

/// Hands the allocator's free pages back to the OS. The allocator keeps
/// what the Kafka clients' fetch queues and the snapshot records freed, so
/// without this the process's RSS stays at its peak, made of holes, long
/// after the peak is over.
///
/// With jemalloc, only the pages unused for its decay time (10 s): a
/// purge of every free page after each snapshot round gave back the very
/// pages the next round, 10 s later, took again, and RSS swung by the
/// size of a round's records.
/// jemalloc without a background thread decays only when asked or on
/// allocation activity; this asks.
#[cfg(feature = "jemalloc")]
pub(crate) fn release_free_memory() {
    // "arena.<MALLCTL_ARENAS_ALL>.decay": every arena's unused pages past
    // their decay time.
    const DECAY_ALL: &[u8] = b"arena.4096.decay\0";
    // SAFETY: a NUL-terminated name, and the decay command reads and
    // writes no value (null pointers, zero length).
    let status = unsafe {
        tikv_jemalloc_sys::mallctl(
            DECAY_ALL.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if status != 0 {
        tracing::debug!(
            status,
            "jemalloc decay refused; free pages stay with the allocator"
        );
    }
}

/// As above, with glibc's allocator.
#[cfg(all(not(feature = "jemalloc"), target_os = "linux", target_env = "gnu"))]
pub(crate) fn release_free_memory() {
    // SAFETY: malloc_trim only walks and trims the allocator's own arenas;
    // it takes their locks and has no preconditions on the caller.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(all(
    not(feature = "jemalloc"),
    not(all(target_os = "linux", target_env = "gnu"))
))]
pub(crate) fn release_free_memory() {}
