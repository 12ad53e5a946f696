#![allow(clippy::unwrap_used)]
use candle_core::{DType, Device, Tensor};
use lantern_kernels::{lora_add, LoraBatch, LoraWeights};
#[test]
#[ignore]
fn prof() {
    let dtype = match std::env::var("DT").as_deref() { Ok("bf16") => DType::BF16, _ => DType::F32 };
    let t: usize = std::env::var("TOK").ok().and_then(|s| s.parse().ok()).unwrap_or(16);
    let one = std::env::var("ONE").is_ok();
    let (dim, rank, s) = (576, 16, 8);
    let d = Device::Cpu;
    let a = (Tensor::randn(0f32, 0.04, (s, rank, dim), &d).unwrap()).to_dtype(dtype).unwrap();
    let b = (Tensor::randn(0f32, 0.2, (s, dim, rank), &d).unwrap()).to_dtype(dtype).unwrap();
    let w = LoraWeights::new(a, b, Tensor::ones(s, DType::F32, &d).unwrap()).unwrap();
    let slots: Vec<Option<u32>> = (0..t).map(|i| Some(if one {3} else {(i % 8) as u32})).collect();
    let lens = vec![1; t];
    let batch = LoraBatch::from_host(&slots, &lens, &d).unwrap();
    let x = Tensor::randn(0f32, 1.0, (t, dim), &d).unwrap().to_dtype(dtype).unwrap();
    let y = Tensor::randn(0f32, 1.0, (t, dim), &d).unwrap().to_dtype(dtype).unwrap();
    let n = 20000 * 16 / t;
    let st = std::time::Instant::now();
    for _ in 0..n { lora_add(&y, &x, &w, &batch).unwrap(); }
    println!("{:?} per call", st.elapsed() / n as u32);
}
