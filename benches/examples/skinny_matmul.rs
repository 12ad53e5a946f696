//! Decode-shaped matmuls of SmolLM2-135M (30 layers: fused qkv, o, fused gate/up, down; plus
//! the tied lm_head), one full step's worth at M rows: candle's matmul on a pre-transposed
//! `(in, out)` weight and on the checkpoint's `(out, in)` weight (a transposed view), against
//! `lantern_kernels::skinny_matmul`, in f32 and bf16.
//!   cargo run --release -p lantern-bench --example skinny_matmul
//! Results: benches/results/cpu-skinny-matmul.txt.
use candle_core::{DType, Device, Tensor};
use std::time::Instant;
fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let shapes = [(960usize, 576usize), (576, 576), (3072, 576), (576, 1536)];
    let mut ws = Vec::new();
    for _ in 0..30 {
        for &(n, k) in &shapes {
            ws.push(Tensor::randn(0f32, 0.02, (n, k), &dev)?);
        }
    }
    ws.push(Tensor::randn(0f32, 0.02, (49152, 576), &dev)?);
    let bytes: usize = ws.iter().map(|w| w.elem_count() * 4).sum();
    let wts: Vec<Tensor> = ws
        .iter()
        .map(|w| w.t().and_then(|t| t.contiguous()))
        .collect::<candle_core::Result<_>>()?;
    let wbf: Vec<Tensor> = ws
        .iter()
        .map(|w| w.to_dtype(DType::BF16))
        .collect::<candle_core::Result<_>>()?;
    let wtbf: Vec<Tensor> = wbf
        .iter()
        .map(|w| w.t().and_then(|t| t.contiguous()))
        .collect::<candle_core::Result<_>>()?;
    println!(
        "weights {:.0} MB f32; times per full step (all 121 matmuls), best of 3 runs of 5",
        bytes as f64 / 1e6
    );
    for &m in &[1usize, 2, 4, 8, 16, 32, 64, 256] {
        let x576 = Tensor::randn(0f32, 1.0, (m, 576), &dev)?;
        let x1536 = Tensor::randn(0f32, 1.0, (m, 1536), &dev)?;
        let xb576 = x576.to_dtype(DType::BF16)?;
        let xb1536 = x1536.to_dtype(DType::BF16)?;
        let time = |f: &dyn Fn(usize) -> candle_core::Result<Tensor>| -> candle_core::Result<f64> {
            for i in 0..ws.len() {
                f(i)?;
            }
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                for _ in 0..5 {
                    for i in 0..ws.len() {
                        f(i)?;
                    }
                }
                best = best.min(t.elapsed().as_secs_f64() * 1000.0 / 5.0);
            }
            Ok(best)
        };
        let pick = |i: usize, a: &Tensor, b: &Tensor| {
            if ws[i].dims()[1] == 576 {
                a.clone()
            } else {
                b.clone()
            }
        };
        let c32 = time(&|i| pick(i, &x576, &x1536).matmul(&wts[i]))?;
        let cv32 = time(&|i| pick(i, &x576, &x1536).matmul(&ws[i].t()?))?;
        let s32 = time(&|i| lantern_kernels::skinny_matmul(&pick(i, &x576, &x1536), &ws[i]))?;
        let cbf = time(&|i| pick(i, &xb576, &xb1536).matmul(&wtbf[i]))?;
        let sbf = time(&|i| lantern_kernels::skinny_matmul(&pick(i, &xb576, &xb1536), &wbf[i]))?;
        println!("M={m:3}  f32: candle {c32:7.1} ms  candle on W^T view {cv32:7.1} ms  skinny {s32:7.1} ms ({:5.1} GB/s)   bf16: candle {cbf:7.1} ms  skinny {sbf:7.1} ms ({:5.1} GB/s)",
            bytes as f64 / s32 / 1e6, bytes as f64 / 2.0 / sbf / 1e6);
    }
    Ok(())
}
