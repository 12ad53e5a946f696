//! CPU implementations of the Lantern custom ops, operating directly on `CpuStorage` slices.

pub(crate) mod attention;
pub(crate) mod cache_write;
pub(crate) mod lora;
pub(crate) mod matmul;
pub(crate) mod norm;
pub(crate) mod qmatmul;
pub(crate) mod sampling;
pub(crate) mod tiled_gemm;

use candle_core::{bail, Layout, Result, WithDType};
use half::{bf16, f16, slice::HalfFloatSliceExt};

/// Element types the CPU kernels compute on: stored as `Self`, computed in f32.
pub(crate) trait Elem: WithDType + Copy + Send + Sync {
    fn to_f32(self) -> f32;
    fn from_f32(x: f32) -> Self;
    /// `row` as f32: borrowed as is for f32, otherwise converted into `buf`
    /// (`buf.len() == row.len()`), so hot loops run on plain f32 slices.
    fn row_f32<'a>(row: &'a [Self], buf: &'a mut [f32]) -> &'a [f32];
}

impl Elem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
    #[inline(always)]
    fn row_f32<'a>(row: &'a [Self], _buf: &'a mut [f32]) -> &'a [f32] {
        row
    }
}

impl Elem for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        // Exact widening (NaN payloads are kept as is), branch-free so it vectorises.
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    #[inline(always)]
    fn row_f32<'a>(row: &'a [Self], buf: &'a mut [f32]) -> &'a [f32] {
        for (o, &x) in buf.iter_mut().zip(row) {
            *o = x.to_f32();
        }
        buf
    }
}

impl Elem for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    #[inline(always)]
    fn row_f32<'a>(row: &'a [Self], buf: &'a mut [f32]) -> &'a [f32] {
        // Bulk conversion: uses F16C/NEON when available (detected once per call).
        row.convert_to_f32_slice(buf);
        buf
    }
}

/// The `start..end` window of a contiguous layout, checked against the storage length.
pub(crate) fn contiguous_window<'a, T>(
    data: &'a [T],
    layout: &Layout,
    name: &str,
) -> Result<&'a [T]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!(
            "{name} must be contiguous (got strides {:?})",
            layout.stride()
        );
    };
    match data.get(start..end) {
        Some(s) => Ok(s),
        None => bail!(
            "{name}: layout window {start}..{end} exceeds storage of {} elements",
            data.len()
        ),
    }
}

/// `a * b + c`, fused when `FMA` (callers only pass `true` under `target_feature = "fma"`,
/// where this is one instruction; elsewhere `mul_add` would be a slow libm call).
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `acc[i] += w * v[i]`.
#[inline(always)]
pub(crate) fn axpy<const FMA: bool>(w: f32, v: &[f32], acc: &mut [f32]) {
    for (a, &x) in acc.iter_mut().zip(v) {
        *a = madd::<FMA>(w, x, *a);
    }
}

/// `exp(x)` for `x` in `[-87, 88]` (callers clamp), branch-free so loops over it vectorise.
/// Cody-Waite range reduction `x = n ln2 + r`, `|r| <= ln2 / 2`, and a degree-7 Taylor
/// polynomial for `e^r` (relative error ~5e-9, below f32 resolution).
#[inline(always)]
pub(crate) fn exp_in_range<const FMA: bool>(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let y = x * std::f32::consts::LOG2_E + ROUND;
    let n = y - ROUND;
    let n_int = y.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = madd::<FMA>(p, r, c);
    }
    p * f32::from_bits(((n_int + 127) as u32) << 23)
}

/// `x * sigmoid(x)` through [`exp_in_range`] (`-x` clamped to its range, so `exp(-x)` stays
/// finite; a NaN input stays NaN).
#[inline(always)]
pub(crate) fn silu<const FMA: bool>(x: f32) -> f32 {
    x / (1.0 + exp_in_range::<FMA>((-x).clamp(-87.0, 88.0)))
}
