//! Timing smoke test (ignored by default). Run with
//! `cargo test --release -p lantern-kernels --test perf -- --ignored --nocapture`.
#![allow(clippy::unwrap_used)]
mod common;
use candle_core::DType;
use common::{rng, scenario, seq};
use lantern_kernels::paged_attention;
use std::time::Instant;
fn best(f: impl Fn()) -> std::time::Duration {
    (0..7)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}
/// Best-of-7 per-layer times for a SmolLM-135M-like shape (9 heads, 3 kv heads, head_dim 64).
#[test]
#[ignore = "timing only; run explicitly in release mode"]
fn perf() {
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let mut r = rng(1);
        let seqs: Vec<_> = (0..16).map(|i| seq(250 + 10 * i, 1)).collect();
        let sc = scenario(&mut r, &seqs, 16, 9, 3, 64, dtype);
        for together in [2, 3, 2, 3] {
            lantern_kernels::set_attention_rows_together(together);
            let d = best(|| {
                paged_attention(&sc.q, &sc.k_cache, &sc.v_cache, &sc.meta, 0.125).unwrap();
            });
            println!("{dtype:?} decode b16 ctx~325 per layer, rows together {together}: {d:?}");
        }
        let sc = scenario(&mut r, &[seq(0, 512)], 16, 9, 3, 64, dtype);
        for together in [2, 3, 2, 3] {
            lantern_kernels::set_attention_rows_together(together);
            let d = best(|| {
                paged_attention(&sc.q, &sc.k_cache, &sc.v_cache, &sc.meta, 0.125).unwrap();
            });
            println!("{dtype:?} prefill 512 per layer, rows together {together}: {d:?}");
        }
    }
}
