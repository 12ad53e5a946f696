#![allow(clippy::unwrap_used)]
use candle_core::{DType, Device, Tensor};
use lantern_kernels::{lora_add, LoraBatch, LoraWeights};
#[test]
#[ignore]
fn prof() {
    for dtype in [DType::F32, DType::BF16] {
    for rank in [16usize, 64] {
    for t in [4usize, 8, 16, 32, 512] {
    let (dim, s) = (576, 8);
    let d = Device::Cpu;
    let a = (Tensor::randn(0f32, 0.04, (s, rank, dim), &d).unwrap()).to_dtype(dtype).unwrap();
    let b = (Tensor::randn(0f32, 0.2, (s, dim, rank), &d).unwrap()).to_dtype(dtype).unwrap();
    let w = LoraWeights::new(a, b, Tensor::ones(s, DType::F32, &d).unwrap()).unwrap();
    let batch = LoraBatch::from_host(&[Some(3)], &[t], &d).unwrap();
    let x = Tensor::randn(0f32, 1.0, (t, dim), &d).unwrap().to_dtype(dtype).unwrap();
    let y = Tensor::randn(0f32, 1.0, (t, dim), &d).unwrap().to_dtype(dtype).unwrap();
    let n = 4000;
    let best = (0..5).map(|_| { let st = std::time::Instant::now();
    for _ in 0..n { lora_add(&y, &x, &w, &batch).unwrap(); } st.elapsed() / n as u32 }).min().unwrap();
    println!("{dtype:?} r{rank} seg {t}: {best:?}");
    }}}
}
