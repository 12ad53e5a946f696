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
    /// `row` as a mutable f32 slice when `Self` is f32 (hot loops then write in place).
    fn as_f32_mut(row: &mut [Self]) -> Option<&mut [f32]> {
        let _ = row;
        None
    }
    /// `dst[i] = from_f32(src[i])` (`dst.len() == src.len()`), in bulk where the type has a
    /// faster way than one value at a time (the same bits either way).
    #[inline(always)]
    fn from_f32_slice(src: &[f32], dst: &mut [Self]) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = Self::from_f32(x);
        }
    }
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
    #[inline(always)]
    fn as_f32_mut(row: &mut [Self]) -> Option<&mut [f32]> {
        Some(row)
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
    #[inline(always)]
    fn from_f32_slice(src: &[f32], dst: &mut [Self]) {
        // F16C's round-to-nearest-even conversion eight values at a time where available
        // (detected once per call), the same bits as `f16::from_f32` one by one.
        dst.convert_from_f32_slice(src);
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

/// `ln 2` split in two for [`exp_in_range`]'s range reduction (the high part exact in f32).
const EXP_LN2_HI: f32 = 0.693_145_75;
const EXP_LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5 * 2^23: adding it rounds to an integer.
const EXP_ROUND: f32 = 12_582_912.0;
/// The Taylor coefficients of `e^r` below `r^7 / 7!`, highest first (Horner's order).
const EXP_POLY_TOP: f32 = 1.0 / 5040.0;
const EXP_POLY: [f32; 7] = [
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

/// `exp(x)` for `x` in `[-87, 88]` (callers clamp), branch-free so loops over it vectorise.
/// Cody-Waite range reduction `x = n ln2 + r`, `|r| <= ln2 / 2`, and a degree-7 Taylor
/// polynomial for `e^r` (relative error ~5e-9, below f32 resolution).
#[inline(always)]
pub(crate) fn exp_in_range<const FMA: bool>(x: f32) -> f32 {
    let y = x * std::f32::consts::LOG2_E + EXP_ROUND;
    let n = y - EXP_ROUND;
    let n_int = y.to_bits() as i32 - EXP_ROUND.to_bits() as i32;
    let r = x - n * EXP_LN2_HI - n * EXP_LN2_LO;
    let mut p = EXP_POLY_TOP;
    for c in EXP_POLY {
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

/// AVX2 + FMA forms of the element-wise helpers above, lane for lane the same operations
/// (so the same bits) as the scalar code with `FMA = true`: the compiler does not vectorise
/// the polynomial exponential on its own.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    /// Whether this CPU runs the functions below (AVX2 and FMA), checked once.
    pub(crate) fn available() -> bool {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        })
    }

    /// [`super::exp_in_range`] on eight lanes (inputs already clamped to its range).
    ///
    /// # Safety
    /// AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn exp8(x: __m256) -> __m256 {
        use super::{EXP_LN2_HI, EXP_LN2_LO, EXP_POLY, EXP_POLY_TOP, EXP_ROUND};
        let round = _mm256_set1_ps(EXP_ROUND);
        let y = _mm256_add_ps(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
            round,
        );
        let n = _mm256_sub_ps(y, round);
        let n_int = _mm256_sub_epi32(
            _mm256_castps_si256(y),
            _mm256_set1_epi32(EXP_ROUND.to_bits() as i32),
        );
        let r = _mm256_sub_ps(
            _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(EXP_LN2_HI))),
            _mm256_mul_ps(n, _mm256_set1_ps(EXP_LN2_LO)),
        );
        let mut p = _mm256_set1_ps(EXP_POLY_TOP);
        for c in EXP_POLY {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let scale = _mm256_slli_epi32::<23>(_mm256_add_epi32(n_int, _mm256_set1_epi32(127)));
        _mm256_mul_ps(p, _mm256_castsi256_ps(scale))
    }

    /// `x.clamp(lo, hi)` on eight lanes, NaN kept (as `f32::clamp`).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn clamp8(x: __m256, lo: f32, hi: f32) -> __m256 {
        // max/min return their second operand when either is NaN.
        _mm256_min_ps(_mm256_set1_ps(hi), _mm256_max_ps(_mm256_set1_ps(lo), x))
    }

    /// `o[i] = silu(g[i]) * u[i]` ([`super::silu`] with FMA).
    ///
    /// # Safety
    /// AVX2 and FMA; `g`, `u` at least `o.len()` long.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn silu_mul(g: &[f32], u: &[f32], o: &mut [f32]) {
        let n = o.len();
        debug_assert!(g.len() >= n && u.len() >= n);
        let n8 = n / 8 * 8;
        let one = _mm256_set1_ps(1.0);
        let mut i = 0;
        while i < n8 {
            let x = _mm256_loadu_ps(g.as_ptr().add(i));
            let neg = _mm256_sub_ps(_mm256_setzero_ps(), x);
            let e = exp8(clamp8(neg, -87.0, 88.0));
            let s = _mm256_div_ps(x, _mm256_add_ps(one, e));
            let y = _mm256_mul_ps(s, _mm256_loadu_ps(u.as_ptr().add(i)));
            _mm256_storeu_ps(o.as_mut_ptr().add(i), y);
            i += 8;
        }
        for j in n8..n {
            o[j] = super::silu::<true>(g[j]) * u[j];
        }
    }

    /// Eight lane sums of `v[i] * v[i]` (lane `l` takes `i % 8 == l` of the whole chunks of
    /// eight; the tail is left to the caller).
    ///
    /// # Safety
    /// AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn sum_squares_lanes(v: &[f32]) -> [f32; 8] {
        let mut acc = _mm256_setzero_ps();
        for c in v.chunks_exact(8) {
            let x = _mm256_loadu_ps(c.as_ptr());
            acc = _mm256_add_ps(acc, _mm256_mul_ps(x, x));
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        lanes
    }

    /// `o[i] = v[i] * inv * w[i]`.
    ///
    /// # Safety
    /// AVX2 and FMA; `v`, `w` at least `o.len()` long.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn scale_mul(v: &[f32], inv: f32, w: &[f32], o: &mut [f32]) {
        let n = o.len();
        debug_assert!(v.len() >= n && w.len() >= n);
        let n8 = n / 8 * 8;
        let invv = _mm256_set1_ps(inv);
        let mut i = 0;
        while i < n8 {
            let x = _mm256_mul_ps(_mm256_loadu_ps(v.as_ptr().add(i)), invv);
            let y = _mm256_mul_ps(x, _mm256_loadu_ps(w.as_ptr().add(i)));
            _mm256_storeu_ps(o.as_mut_ptr().add(i), y);
            i += 8;
        }
        for j in n8..n {
            o[j] = v[j] * inv * w[j];
        }
    }

    /// `s[i] = a[i] + b[i]`.
    ///
    /// # Safety
    /// AVX2 and FMA; `a`, `b` at least `s.len()` long.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn add(a: &[f32], b: &[f32], s: &mut [f32]) {
        let n = s.len();
        debug_assert!(a.len() >= n && b.len() >= n);
        let n8 = n / 8 * 8;
        let mut i = 0;
        while i < n8 {
            let y = _mm256_add_ps(
                _mm256_loadu_ps(a.as_ptr().add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
            );
            _mm256_storeu_ps(s.as_mut_ptr().add(i), y);
            i += 8;
        }
        for j in n8..n {
            s[j] = a[j] + b[j];
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
#[allow(clippy::unwrap_used)]
mod avx2_tests {
    use super::*;

    fn inputs() -> Vec<f32> {
        let mut v: Vec<f32> = (0..997).map(|i| (i as f32 - 498.0) * 0.173).collect();
        v.extend([
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            100.0,
            -100.0,
            1e-30,
            -88.5,
            87.9,
            f32::MIN_POSITIVE,
        ]);
        v
    }

    /// The AVX2 forms give the scalar (FMA) code's bits, tails included.
    #[test]
    fn simd_forms_match_the_scalar_code() {
        if !avx2::available() {
            return;
        }
        let g = inputs();
        let u: Vec<f32> = g.iter().map(|x| 0.5 - x * 0.01).collect();
        let mut got = vec![0f32; g.len()];
        // SAFETY: AVX2 and FMA are available (checked above); equal lengths.
        unsafe { avx2::silu_mul(&g, &u, &mut got) };
        for (i, ((&x, &y), &o)) in g.iter().zip(&u).zip(&got).enumerate() {
            let want = silu::<true>(x) * y;
            assert!(
                want.to_bits() == o.to_bits() || (want.is_nan() && o.is_nan()),
                "silu_mul[{i}] of {x}: {o} vs {want}"
            );
        }
        let finite: Vec<f32> = g.iter().copied().filter(|x| x.is_finite()).collect();
        // SAFETY: as above.
        let lanes = unsafe { avx2::sum_squares_lanes(&finite) };
        let mut want = [0f32; 8];
        for c in finite.chunks_exact(8) {
            for (l, &v) in want.iter_mut().zip(c) {
                *l += v * v;
            }
        }
        assert_eq!(lanes, want);
        let mut scaled = vec![0f32; finite.len()];
        // SAFETY: as above.
        unsafe { avx2::scale_mul(&finite, 0.37, &u[..finite.len()], &mut scaled) };
        for ((&v, &w), &o) in finite.iter().zip(&u).zip(&scaled) {
            assert_eq!(o.to_bits(), (v * 0.37 * w).to_bits());
        }
    }
}
