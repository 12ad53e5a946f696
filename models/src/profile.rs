//! Per-op wall-time accounting of the forward pass, off unless `LANTERN_PROFILE_OPS=1`.
//!
//! Each op of [`crate::CausalLm::forward`] runs inside [`op`], which, when profiling is on,
//! adds its wall time (on the calling thread, so a parallel kernel counts as its whole span)
//! to a per-label total. [`take`] returns and clears the totals. Off, [`op`] is a call and
//! one relaxed atomic load. Meant for `benches/examples/decode_profile.rs` and for finding
//! where a step's time goes on machines where `perf` gets no samples.
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// 0: not read yet, 1: off, 2: on.
static STATE: AtomicU8 = AtomicU8::new(0);
static TOTALS: Mutex<Vec<OpTotal>> = Mutex::new(Vec::new());

/// The accumulated time of one op label.
#[derive(Debug, Clone, PartialEq)]
pub struct OpTotal {
    pub label: &'static str,
    pub calls: u64,
    pub seconds: f64,
}

/// Whether op profiling is on (`LANTERN_PROFILE_OPS=1`, read once, or [`set_enabled`]).
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let on = matches!(
                std::env::var("LANTERN_PROFILE_OPS").as_deref(),
                Ok("1") | Ok("true") | Ok("on")
            );
            STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
    }
}

/// Turns op profiling on or off for the process (overrides the environment).
pub fn set_enabled(on: bool) {
    STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Runs `f`, adding its wall time to `label`'s total when profiling is on.
#[inline]
pub fn op<T>(label: &'static str, f: impl FnOnce() -> T) -> T {
    if !enabled() {
        return f();
    }
    let t = Instant::now();
    let out = f();
    let dt = t.elapsed().as_secs_f64();
    if let Ok(mut totals) = TOTALS.lock() {
        match totals.iter_mut().find(|o| o.label == label) {
            Some(o) => {
                o.calls += 1;
                o.seconds += dt;
            }
            None => totals.push(OpTotal {
                label,
                calls: 1,
                seconds: dt,
            }),
        }
    }
    out
}

/// The totals so far, in first-seen order; clears them.
pub fn take() -> Vec<OpTotal> {
    match TOTALS.lock() {
        Ok(mut t) => std::mem::take(&mut *t),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn totals_accumulate_per_label_and_clear() {
        // Other tests of this binary may run forwards meanwhile: look only at our labels.
        let find = |t: &[OpTotal], l: &str| t.iter().find(|o| o.label == l).cloned();
        set_enabled(true);
        let x = op("test_a", || 2 + 2);
        op("test_b", || {
            std::thread::sleep(std::time::Duration::from_millis(2))
        });
        op("test_a", || ());
        assert_eq!(x, 4);
        let t = take();
        assert_eq!(find(&t, "test_a").map(|o| o.calls), Some(2));
        let b = find(&t, "test_b").expect("test_b recorded");
        assert_eq!(b.calls, 1);
        assert!(b.seconds >= 0.002);
        assert_eq!(find(&take(), "test_a"), None);
        set_enabled(false);
        op("test_c", || ());
        assert_eq!(find(&take(), "test_c"), None);
    }
}
