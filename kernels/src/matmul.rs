//! Dense matmuls on the CPU, `y = x W^T` with `W` `(out, in)` as stored in checkpoints: the
//! skinny kernel for decode steps (streams each weight row once, in storage order, on all
//! cores; see `cpu::matmul`) and the tiled GEMM for steps of a few dozen rows (one
//! single-threaded GEMM per tile of `W`'s rows; see `cpu::tiled_gemm`). Candle's threaded
//! matmul is faster for bigger steps.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use crate::cpu::matmul::DenseKernel;

/// Up to this many rows of `x` the skinny kernel is the fastest CPU path; above it the tiled
/// GEMM (measured with SmolLM2-135M's projection shapes and lm_head on 2 AMD EPYC cores,
/// paths alternating: skinny 0.6-0.9x the tiled GEMM's time up to 48 rows, even at 56-64,
/// behind from 80; `benches/results/cpu-smollm2-f32-matmul.txt`). Every row of a step up to
/// this size gets the bits it would get alone.
pub const SKINNY_MATMUL_MAX_ROWS: usize = 48;

/// Up to this many rows of `x` the tiled GEMM ([`tiled_matmul`]) is at least as fast as
/// candle's threaded matmul (same measurement, four tiles per thread: 0.65-0.85x its time at
/// 32-64 rows, 0.9-1.0x at 96-256; bigger steps not measured, so they stay with candle).
pub const TILED_MATMUL_MAX_ROWS: usize = 256;

/// Which CPU path [`cpu_matmul`] takes for `rows` rows of `x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuMatmulPath {
    /// [`skinny_matmul`].
    Skinny,
    /// [`tiled_matmul`].
    Tiled,
    /// Candle's matmul on `W`'s transposed view.
    Candle,
}

impl CpuMatmulPath {
    /// The fastest path for `rows` rows (see [`SKINNY_MATMUL_MAX_ROWS`],
    /// [`TILED_MATMUL_MAX_ROWS`]).
    pub fn for_rows(rows: usize) -> Self {
        if rows <= SKINNY_MATMUL_MAX_ROWS {
            CpuMatmulPath::Skinny
        } else if rows <= TILED_MATMUL_MAX_ROWS {
            CpuMatmulPath::Tiled
        } else {
            CpuMatmulPath::Candle
        }
    }
}

/// `x` `(T, in)` times `W^T` for `W` `(out, in)` on the CPU by the path [`CpuMatmulPath::for_rows`]
/// picks for `T`.
pub fn cpu_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    match CpuMatmulPath::for_rows(x.dims2()?.0) {
        CpuMatmulPath::Skinny => skinny_matmul(x, w),
        CpuMatmulPath::Tiled => tiled_matmul(x, w),
        CpuMatmulPath::Candle => x.matmul(&w.t()?),
    }
}

/// `x` `(T, in)` times `W^T`, `W` `(out, in)`: `(T, out)` in `x`'s dtype. Both f32, bf16 or
/// f16 (same dtype), on the CPU; math in f32. Non-contiguous inputs are copied first.
pub fn skinny_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    dense_matmul(x, w, DenseKernel::Skinny)
}

/// The same product as [`skinny_matmul`] for steps of any size: one single-threaded f32 GEMM
/// per tile of `W`'s rows (four tiles per thread), the tiles spread over the cores. Faster than
/// candle's threaded matmul from a few dozen rows on with small projections such as
/// SmolLM2-135M's (`benches/results/cpu-smollm2-f32-matmul.txt`); bf16 / f16 tiles are
/// widened in cache.
pub fn tiled_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    dense_matmul(x, w, DenseKernel::Tiled)
}

fn dense_matmul(x: &Tensor, w: &Tensor, kernel: DenseKernel) -> Result<Tensor> {
    let what = DenseMatmul(kernel).name();
    let (t, k) = x.dims2()?;
    let (n, k2) = w.dims2()?;
    if k != k2 {
        bail!("{what}: x is ({t}, {k}) but W is ({n}, {k2}); W must be (out, {k})");
    }
    if x.dtype() != w.dtype() {
        bail!(
            "{what}: x is {:?} but W is {:?}; both must have one dtype",
            x.dtype(),
            w.dtype()
        );
    }
    if !x.device().is_cpu() || !w.device().is_cpu() {
        bail!("{what} runs on the CPU only; use Tensor::matmul on other devices");
    }
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    x.apply_op2_no_bwd(&w, &DenseMatmul(kernel))
}

struct DenseMatmul(DenseKernel);

impl CustomOp2 for DenseMatmul {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_l: &Layout,
        w: &CpuStorage,
        w_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        crate::cpu::matmul::dense_matmul_cpu(self.0, (x, x_l), (w, w_l))
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
        type Matmul = fn(&Tensor, &Tensor) -> Result<Tensor>;
        let kernels: [(&str, Matmul); 3] = [
            ("skinny", skinny_matmul),
            ("tiled", tiled_matmul),
            ("by rows", cpu_matmul),
        ];
        for &(t, k, n) in &[
            (1, 8, 4),
            (1, 13, 5),
            (2, 576, 960),
            (3, 577, 7),
            (5, 64, 1031),
            (16, 576, 1536),
            (1, 1536, 576),
            (7, 3, 9),
            (40, 576, 960),
            (100, 64, 3000),
            (13, 1536, 250),
        ] {
            let x = randn(&[t, k], (t * 1000 + k) as u64);
            let w = randn(&[n, k], (n * 7 + k) as u64);
            let want = reference(&x, &w);
            for (name, kernel) in kernels {
                let got: Vec<Vec<f32>> = kernel(&x, &w).unwrap().to_vec2().unwrap();
                assert_eq!(got.len(), t);
                for (i, (gr, wr)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(gr.len(), n);
                    for (j, (&g, &r)) in gr.iter().zip(wr).enumerate() {
                        let tol = 1e-5 * (k as f64).sqrt() + 1e-6;
                        assert!(
                            (g as f64 - r).abs() <= tol,
                            "{name} ({t},{k},{n}) y[{i}][{j}] = {g}, want {r}"
                        );
                    }
                }
            }
        }
    }

    /// The step-size rule: skinny for decode steps, tiled for a few dozen rows, candle above.
    #[test]
    fn paths_by_rows() {
        assert_eq!(CpuMatmulPath::for_rows(1), CpuMatmulPath::Skinny);
        assert_eq!(
            CpuMatmulPath::for_rows(SKINNY_MATMUL_MAX_ROWS),
            CpuMatmulPath::Skinny
        );
        assert_eq!(
            CpuMatmulPath::for_rows(SKINNY_MATMUL_MAX_ROWS + 1),
            CpuMatmulPath::Tiled
        );
        assert_eq!(
            CpuMatmulPath::for_rows(TILED_MATMUL_MAX_ROWS),
            CpuMatmulPath::Tiled
        );
        assert_eq!(
            CpuMatmulPath::for_rows(TILED_MATMUL_MAX_ROWS + 1),
            CpuMatmulPath::Candle
        );
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
            for kernel in [skinny_matmul, tiled_matmul] {
                let got = kernel(&xh, &wh).unwrap();
                assert_eq!(got.dtype(), dt);
                let d = (got.to_dtype(DType::F32).unwrap() - want.to_dtype(DType::F32).unwrap())
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                // The tiled GEMM's f32 products differ from the skinny kernel's in the
                // last bits; after rounding to 8 or 11 mantissa bits at most one unit.
                let ulp = if dt == DType::BF16 { 0.0625 } else { 0.004 };
                assert!(d <= ulp, "{dt:?}: {d}");
            }
        }
    }

    /// A row's result does not depend on the other rows in the batch (batch invariance) with
    /// the skinny kernel; the tiled GEMM's blocking depends on the number of rows, so there
    /// a row may differ in the last bits (as with candle's matmul).
    #[test]
    fn rows_are_independent_of_the_batch() {
        let (k, n) = (576, 960);
        let x = randn(&[40, k], 3);
        let w = randn(&[n, k], 4);
        let rows = |kernel: fn(&Tensor, &Tensor) -> Result<Tensor>, from: usize, len: usize| {
            kernel(&x.narrow(0, from, len).unwrap(), &w)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
        };
        let all = rows(skinny_matmul, 0, 40);
        for (i, want) in all.iter().enumerate() {
            assert!(rows(skinny_matmul, i, 1)[0] == *want, "row {i}");
            let some = rows(skinny_matmul, i - i / 2, i / 2 + 1);
            assert!(some.last() == Some(want), "row {i} of {}", i / 2 + 1);
        }
        let all = rows(tiled_matmul, 0, 40);
        for (i, want) in all.iter().enumerate() {
            let one = rows(tiled_matmul, i, 1);
            for (j, (&a, &b)) in one[0].iter().zip(want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "row {i} col {j}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn rejects_mismatched_shapes_and_dtypes() {
        let x = randn(&[2, 8], 1);
        assert!(skinny_matmul(&x, &randn(&[4, 9], 2)).is_err());
        let w = randn(&[4, 8], 2).to_dtype(DType::BF16).unwrap();
        assert!(skinny_matmul(&x, &w).is_err());
        assert!(tiled_matmul(&x, &w).is_err());
        assert!(tiled_matmul(&x, &randn(&[4, 9], 2)).is_err());
    }
}
