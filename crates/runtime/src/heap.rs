//! Handing freed host memory back to the operating system.
//!
//! glibc's allocator keeps memory that was freed in its arenas for reuse instead of returning
//! it to the OS. Two moments leave a lot of it behind in a serving process: loading the model
//! (a GGUF file is read and dequantized through temporary buffers about as large as the
//! weights) and a load spike (activations of large prefill steps, allocated from several
//! arenas). Without a trim the resident set stays at its high-water mark for the life of the
//! process. [`release_free_heap`] is called once the model is loaded and each time the engine
//! goes idle after running steps; it costs a few milliseconds and touches no live data.
//!
//! A trim alone does not help the KV cache: glibc serves a large request from free heap chunks
//! before it considers `mmap`, and `calloc` then clears such a chunk byte by byte, so a KV cache
//! allocated after loading lands on the freed load buffers and becomes resident in full even
//! though no block was written. [`AllocatorPhase::Loading`] therefore sends every allocation of
//! 1 MiB or more to fresh `mmap` pages (load buffers go back to the OS when freed, and the KV
//! cache's zero pages stay untouched until a block is written), and
//! [`AllocatorPhase::Serving`] raises the threshold to the top of glibc's own dynamic range, so
//! per-step activations are reused from the heap instead of faulting in fresh pages each step.
//! A `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_` set by the user wins over both.

/// The process's resident set size in bytes (Linux `/proc/self/statm`), `None` elsewhere.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

#[cfg(unix)]
fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

#[cfg(not(unix))]
fn page_size() -> u64 {
    4096
}

/// What the process is doing, for the allocator's thresholds (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocatorPhase {
    /// Reading and converting weights and allocating the KV cache.
    Loading,
    /// Running steps.
    Serving,
}

impl AllocatorPhase {
    /// (mmap threshold, trim threshold) in bytes.
    fn thresholds(self) -> (i32, i32) {
        match self {
            AllocatorPhase::Loading => (1 << 20, 2 << 20),
            // glibc's dynamic threshold stops at 32 MiB on 64-bit targets and keeps the trim
            // threshold at twice the mmap threshold.
            AllocatorPhase::Serving => (32 << 20, 64 << 20),
        }
    }
}

/// Sets glibc's mmap and trim thresholds for `phase` unless the user set them through the
/// environment; `true` when they were set. A no-op on other allocators.
pub fn set_allocator_phase(phase: AllocatorPhase) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
            || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some()
        {
            return false;
        }
        let (mmap, trim) = phase.thresholds();
        // SAFETY: mallopt only changes glibc's tuning parameters (under its own lock).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, mmap) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, trim) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = phase.thresholds();
        false
    }
}

/// Returns the allocator's free memory to the OS where the allocator supports it (glibc);
/// `true` when some memory was released. A no-op elsewhere.
pub fn release_free_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks glibc's own free lists; it is thread-safe and
        // leaves every live allocation in place.
        unsafe { libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Both tests measure the whole process's resident set.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// A large freed allocation stops counting toward the resident set after a release
    /// (checked on glibc only, where the allocator keeps freed memory otherwise).
    #[test]
    fn release_returns_freed_memory() {
        let _serial = SERIAL.lock().unwrap();
        if !cfg!(all(target_os = "linux", target_env = "gnu")) {
            return;
        }
        // Other tests of this binary run in parallel and may allocate meanwhile: the
        // measurement is retried, and one clean attempt passes (without the release every
        // attempt fails).
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (with_blocks, after) = freed_blocks_then_release();
            // 128 MiB were resident; at least most of it must be gone after the release.
            if with_blocks.saturating_sub(after) > 64 << 20 {
                return;
            }
            seen.push((with_blocks, after));
        }
        panic!("resident (with blocks, after release) stayed high: {seen:?}");
    }

    /// Resident bytes with 128 MiB of written 64 KiB blocks, and after freeing them (below
    /// a live allocation) and releasing the heap.
    fn freed_blocks_then_release() -> (u64, u64) {
        // Many medium blocks below glibc's mmap threshold stay in the heap once freed.
        let blocks: Vec<Vec<u8>> = (0..2048)
            .map(|i| vec![(i % 251) as u8 + 1; 64 * 1024])
            .collect();
        // A live allocation above them keeps free() from shrinking the heap on its own.
        let pin = std::hint::black_box(vec![7u8; 4096]);
        let touched: usize = blocks.iter().map(|b| b[0] as usize).sum();
        assert!(touched > 0);
        let with_blocks = resident_bytes().unwrap();
        drop(blocks);
        let before_release = resident_bytes().unwrap();
        release_free_heap();
        let after = resident_bytes().unwrap();
        assert_eq!(pin[4095], 7);
        eprintln!("resident: {with_blocks} with blocks, {before_release} freed, {after} released");
        (with_blocks, after)
    }

    /// In the loading phase a zeroed allocation made after large buffers were freed stays
    /// out of the resident set until it is written (the KV cache's case); with glibc's
    /// default behaviour it reuses the freed, already resident chunks and clears them.
    #[test]
    fn loading_phase_keeps_zeroed_allocations_lazy() {
        let _serial = SERIAL.lock().unwrap();
        if !cfg!(all(target_os = "linux", target_env = "gnu"))
            || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
            || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some()
        {
            return;
        }
        // Retried as above: one attempt without interference from parallel tests suffices
        // (under glibc's default every attempt grows by ~100 MB).
        let mut grown = u64::MAX;
        for _ in 0..3 {
            assert!(set_allocator_phase(AllocatorPhase::Loading));
            grown = grown.min(zeroed_after_freed_buffers());
            assert!(set_allocator_phase(AllocatorPhase::Serving));
            if grown < 16 << 20 {
                break;
            }
        }
        assert!(
            grown < 16 << 20,
            "128 MiB of untouched zeros made {grown} bytes resident"
        );
    }

    /// Resident growth from allocating 128 MiB of zeros (never written) right after 128 MiB
    /// of written 2 MiB buffers were freed below a live allocation and the heap trimmed, as
    /// the server does once loaded.
    fn zeroed_after_freed_buffers() -> u64 {
        // A freed 8 MiB mapping lifts glibc's dynamic mmap threshold, as loading does.
        drop(std::hint::black_box(vec![1u8; 8 << 20]));
        let buffers: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8 + 1; 2 << 20]).collect();
        let pin = std::hint::black_box(vec![7u8; 4096]);
        drop(buffers);
        release_free_heap();
        let before = resident_bytes().unwrap();
        let kv: Vec<Vec<f32>> = (0..8).map(|_| vec![0f32; 4 << 20]).collect();
        let after = resident_bytes().unwrap();
        assert_eq!(std::hint::black_box(&kv)[7][12345], 0.0);
        assert_eq!(pin[0], 7);
        eprintln!("resident: {before} after freeing and trimming, {after} with 128 MiB of zeros");
        after.saturating_sub(before)
    }
}
