//! Skinny matmul for decode steps on the CPU: `y = x W^T` with `W` `(out, in)` as stored in
//! checkpoints and few rows in `x`. Streams each weight row once, in storage order, on all
//! cores (see `cpu::matmul`); candle's general matmul is faster from a few dozen rows on.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// Up to this many rows of `x` the skinny kernel beats candle's CPU matmul (measured with
/// SmolLM2-135M's projection shapes on 2 cores: 1.6x at 1 row, even at 32, candle ahead at
/// 64; `benches/results/cpu-skinny-matmul.txt`).
pub const SKINNY_MATMUL_MAX_ROWS: usize = 32;

/// `x` `(T, in)` times `W^T`, `W` `(out, in)`: `(T, out)` in `x`'s dtype. Both f32, bf16 or
/// f16 (same dtype), on the CPU; math in f32. Non-contiguous inputs are copied first.
pub fn skinny_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (t, k) = x.dims2()?;
    let (n, k2) = w.dims2()?;
    if k != k2 {
        bail!("skinny_matmul: x is ({t}, {k}) but W is ({n}, {k2}); W must be (out, {k})");
    }
    if x.dtype() != w.dtype() {
        bail!(
            "skinny_matmul: x is {:?} but W is {:?}; both must have one dtype",
            x.dtype(),
            w.dtype()
        );
    }
    if !x.device().is_cpu() || !w.device().is_cpu() {
        bail!("skinny_matmul runs on the CPU only; use Tensor::matmul on other devices");
    }
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    x.apply_op2_no_bwd(&w, &SkinnyMatmul)
}

struct SkinnyMatmul;

impl CustomOp2 for SkinnyMatmul {
    fn name(&self) -> &'static str {
        "skinny_matmul"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_l: &Layout,
        w: &CpuStorage,
        w_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        crate::cpu::matmul::skinny_matmul_cpu((x, x_l), (w, w_l))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        // Deterministic values in [-1, 1).
        let n: usize = shape.iter().product();
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Exact-ish reference: f64 accumulation of the same products.
    fn reference(x: &Tensor, w: &Tensor) -> Vec<Vec<f64>> {
        let x: Vec<Vec<f32>> = x.to_dtype(DType::F32).unwrap().to_vec2().unwrap();
        let w: Vec<Vec<f32>> = w.to_dtype(DType::F32).unwrap().to_vec2().unwrap();
        x.iter()
            .map(|xr| {
                w.iter()
                    .map(|wr| xr.iter().zip(wr).map(|(&a, &b)| a as f64 * b as f64).sum())
                    .collect()
            })
            .collect()
    }

    /// Every shape edge (row blocks of 4 with a remainder, x-row pairs with an odd one out,
    /// K with a tail below 8, parallel and single-thread sizes) matches an f64 reference.
    #[test]
    fn matches_reference_on_all_edges() {
        for &(t, k, n) in &[
            (1, 8, 4),
            (1, 13, 5),
            (2, 576, 960),
            (3, 577, 7),
            (5, 64, 1031),
            (16, 576, 1536),
            (1, 1536, 576),
            (7, 3, 9),
        ] {
            let x = randn(&[t, k], (t * 1000 + k) as u64);
            let w = randn(&[n, k], (n * 7 + k) as u64);
            let want = reference(&x, &w);
            let got: Vec<Vec<f32>> = skinny_matmul(&x, &w).unwrap().to_vec2().unwrap();
            for (i, (gr, wr)) in got.iter().zip(&want).enumerate() {
                assert_eq!(gr.len(), n);
                for (j, (&g, &r)) in gr.iter().zip(wr).enumerate() {
                    let tol = 1e-5 * (k as f64).sqrt() + 1e-6;
                    assert!(
                        (g as f64 - r).abs() <= tol,
                        "({t},{k},{n}) y[{i}][{j}] = {g}, want {r}"
                    );
                }
            }
        }
    }

    /// bf16 and f16 weights give the f32 kernel's result on the widened values, rounded once.
    #[test]
    fn half_dtypes_match_widened_f32() {
        let (t, k, n) = (3, 200, 37);
        let x = randn(&[t, k], 1);
        let w = randn(&[n, k], 2);
        for dt in [DType::BF16, DType::F16] {
            let (xh, wh) = (x.to_dtype(dt).unwrap(), w.to_dtype(dt).unwrap());
            let want = skinny_matmul(
                &xh.to_dtype(DType::F32).unwrap(),
                &wh.to_dtype(DType::F32).unwrap(),
            )
            .unwrap()
            .to_dtype(dt)
            .unwrap();
            let got = skinny_matmul(&xh, &wh).unwrap();
            assert_eq!(got.dtype(), dt);
            let d = (got.to_dtype(DType::F32).unwrap() - want.to_dtype(DType::F32).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(d, 0.0, "{dt:?}");
        }
    }

    /// A row's result does not depend on the other rows in the batch (batch invariance).
    #[test]
    fn rows_are_independent_of_the_batch() {
        let (k, n) = (576, 960);
        let x = randn(&[9, k], 3);
        let w = randn(&[n, k], 4);
        let all: Vec<Vec<f32>> = skinny_matmul(&x, &w).unwrap().to_vec2().unwrap();
        for (i, want) in all.iter().enumerate() {
            let one: Vec<Vec<f32>> = skinny_matmul(&x.narrow(0, i, 1).unwrap(), &w)
                .unwrap()
                .to_vec2()
                .unwrap();
            assert_eq!(&one[0], want, "row {i}");
        }
    }

    #[test]
    fn rejects_mismatched_shapes_and_dtypes() {
        let x = randn(&[2, 8], 1);
        assert!(skinny_matmul(&x, &randn(&[4, 9], 2)).is_err());
        let w = randn(&[4, 8], 2).to_dtype(DType::BF16).unwrap();
        assert!(skinny_matmul(&x, &w).is_err());
    }
}
