//! The CPU paths for dense f32 projections on SmolLM2-135M's shapes (30 layers: fused qkv,
//! o, fused gate/up, down; the lm_head left out, it only runs for sampled rows), one
//! forward's worth at M rows of activations: Lantern's skinny kernel (decode steps), candle's
//! threaded matmul on the transposed view, and the tiled GEMM (one single-threaded GEMM per
//! 256 KiB tile of W's rows, tiles over the cores).
//!   cargo run --release -p lantern-bench --example f32_matmul_paths -- [M,M,..] [REPS]
//! Results: benches/results/cpu-smollm2-f32-matmul.txt.
use candle_core::{Device, Tensor};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ms: Vec<usize> = match args.first() {
        Some(s) => s.split(',').map(|m| m.parse()).collect::<Result<_, _>>()?,
        None => vec![1, 8, 16, 32, 48, 64, 96, 128, 256],
    };
    let reps: usize = args.get(1).map(|r| r.parse()).transpose()?.unwrap_or(5);
    let dev = Device::Cpu;
    let shapes = [(960usize, 576usize), (576, 576), (3072, 576), (576, 1536)];
    let mut ws: Vec<Tensor> = Vec::new();
    for _ in 0..30 {
        for &(n, k) in &shapes {
            ws.push(Tensor::randn(0f32, 0.02, (n, k), &dev)?);
        }
    }
    let lm_head = Tensor::randn(0f32, 0.02, (49152, 576), &dev)?;
    println!("f32 weights of SmolLM2-135M, one forward without lm_head (120 matmuls), median of {reps} (paths alternating), ms:");
    println!("{:>5} {:>9} {:>9} {:>9}", "M", "skinny", "candle", "tiled");
    for &m in &ms {
        let xs: Vec<Tensor> = [576usize, 1536]
            .iter()
            .map(|&k| Tensor::randn(0f32, 1.0, (m, k), &dev))
            .collect::<candle_core::Result<_>>()?;
        // The paths take turns within each repetition, so a slow phase of the machine
        // weighs on all of them alike.
        let mut times = vec![Vec::new(); 3];
        for _ in 0..reps {
            for (path, times) in times.iter_mut().enumerate() {
                if path == 0 && m > 256 {
                    // The skinny kernel is far behind here and takes seconds.
                    times.push(f64::NAN);
                    continue;
                }
                let t0 = Instant::now();
                for w in &ws {
                    let x = if w.dims()[1] == 576 { &xs[0] } else { &xs[1] };
                    let y = match path {
                        0 => lantern_kernels::skinny_matmul(x, w)?,
                        1 => x.matmul(&w.t()?)?,
                        _ => lantern_kernels::tiled_matmul(x, w)?,
                    };
                    std::hint::black_box(y);
                }
                times.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        let row = medians(times);
        println!("{m:>5} {:>9.1} {:>9.1} {:>9.1}", row[0], row[1], row[2]);
    }
    println!("lm_head (49152 x 576, tied embedding) for M sampled rows, median of {reps} (paths alternating), ms:");
    println!("{:>5} {:>9} {:>9} {:>9}", "M", "skinny", "candle", "tiled");
    for &m in &ms {
        let x = Tensor::randn(0f32, 1.0, (m, 576), &dev)?;
        let mut times = vec![Vec::new(); 3];
        for _ in 0..reps {
            for (path, times) in times.iter_mut().enumerate() {
                let t0 = Instant::now();
                let y = match path {
                    0 => lantern_kernels::skinny_matmul(&x, &lm_head)?,
                    1 => x.matmul(&lm_head.t()?)?,
                    _ => lantern_kernels::tiled_matmul(&x, &lm_head)?,
                };
                std::hint::black_box(y);
                times.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        let row = medians(times);
        println!("{m:>5} {:>9.1} {:>9.1} {:>9.1}", row[0], row[1], row[2]);
    }
    Ok(())
}

/// The median of each path's times.
fn medians(times: Vec<Vec<f64>>) -> Vec<f64> {
    times
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect()
}
