//! The two paths of `lantern_kernels::quantized_matmul` on SmolLM2-135M's matmuls in Q4_1 (30
//! layers: fused qkv, o, fused gate/up, down; plus the tied lm_head), one full forward's
//! worth at M rows of activations: the integer path, the tiled dequantize-and-GEMM path, and
//! dequantizing 8 MiB slices for candle's threaded matmul (the path before the tiles).
//!   cargo run --release -p lantern-bench --example qmatmul_paths -- [M,M,..] [FORMAT]
//! Results: benches/results/cpu-smollm2-gguf-quantized.txt.
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use lantern_kernels::{quantized_matmul_path, QuantizedMatmulPath};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ms: Vec<usize> = match args.first() {
        Some(s) => s.split(',').map(|m| m.parse()).collect::<Result<_, _>>()?,
        None => vec![1, 8, 16, 32, 48, 64, 96, 128, 256],
    };
    let dtype = match args.get(1).map(String::as_str) {
        None | Some("q4_1") => GgmlDType::Q4_1,
        Some("q4_0") => GgmlDType::Q4_0,
        Some("q8_0") => GgmlDType::Q8_0,
        Some(f) => anyhow::bail!("format {f}: q4_0, q4_1 or q8_0"),
    };
    let dev = Device::Cpu;
    let shapes = [(960usize, 576usize), (576, 576), (3072, 576), (576, 1536)];
    let mut ws: Vec<(Vec<u8>, usize, usize)> = Vec::new();
    for _ in 0..30 {
        for &(n, k) in &shapes {
            let w = Tensor::randn(0f32, 0.02, (n, k), &dev)?;
            ws.push((QTensor::quantize(&w, dtype)?.data()?.into_owned(), n, k));
        }
    }
    let lm = Tensor::randn(0f32, 0.02, (49152, 576), &dev)?;
    ws.push((
        QTensor::quantize(&lm, dtype)?.data()?.into_owned(),
        49152,
        576,
    ));
    println!("{dtype:?} weights of SmolLM2-135M, one forward (121 matmuls), median of 5, ms:");
    println!(
        "{:>5} {:>9} {:>9} {:>11}",
        "M", "int8", "gemm", "candle-gemm"
    );
    for &m in &ms {
        let xs: Vec<Tensor> = [576usize, 1536]
            .iter()
            .map(|&k| Tensor::randn(0f32, 1.0, (m, k), &dev))
            .collect::<candle_core::Result<_>>()?;
        let mut row = Vec::new();
        for path in [
            QuantizedMatmulPath::Int8,
            QuantizedMatmulPath::Gemm,
            QuantizedMatmulPath::CandleGemm,
        ] {
            let mut times = Vec::new();
            for _ in 0..5 {
                let t0 = Instant::now();
                for (w, n, k) in &ws {
                    let x = if *k == 576 { &xs[0] } else { &xs[1] };
                    std::hint::black_box(quantized_matmul_path(x, w, dtype, *n, path)?);
                }
                times.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            row.push(times[2]);
        }
        println!("{m:>5} {:>9.1} {:>9.1} {:>11.1}", row[0], row[1], row[2]);
    }
    Ok(())
}
