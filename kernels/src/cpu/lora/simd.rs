//! The two innermost loops of the CPU LoRA tasks ([`dot`] / [`dot4`] for the shrink,
//! [`expand_chunk`] for the expand), with explicit AVX2 + FMA versions: the intrinsics keep
//! the same multiply-adds in the same order as the portable code, so both are bit-identical.

use super::EXPAND_CHUNK;
use crate::cpu::{axpy, madd};

/// Final reduction of [`dot`]'s 8 lanes plus its tail, shared so every dot rounds the same.
#[inline(always)]
fn reduce(acc: &[f32; 8], tail: f32) -> f32 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `sum(x[i] * y[i])` over the elements past the last full chunk of 8.
#[inline(always)]
fn tail_dot(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len()) / 8 * 8;
    x[n..].iter().zip(&y[n..]).map(|(&p, &q)| p * q).sum()
}

/// `sum(x[i] * y[i])` (equal lengths) with 8 lane accumulators so the loop vectorises:
/// lane `l` accumulates the products `i = l, l + 8, ...` with [`madd`] in order, then the
/// lanes and the tail are combined by [`reduce`]. Symmetric in `x` and `y`.
#[inline(always)]
pub(super) fn dot<const FMA: bool>(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x8, y8) in x.chunks_exact(8).zip(y.chunks_exact(8)) {
        for ((s, &p), &q) in acc.iter_mut().zip(x8).zip(y8) {
            *s = madd::<FMA>(p, q, *s);
        }
    }
    reduce(&acc, tail_dot(x, y))
}

/// `[dot(xs[0], s), .., dot(xs[3], s)]`, bit-identical to four [`dot`] calls, but with
/// AVX2 + FMA the four run interleaved (four independent accumulator chains sharing the
/// loads of `s`).
///
/// # Safety
/// When `FMA` is true the CPU must support AVX2 and FMA.
#[inline(always)]
pub(super) unsafe fn dot4<const FMA: bool>(s: &[f32], xs: [&[f32]; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: the caller guarantees AVX2 and FMA when `FMA` is true.
        return unsafe { dot4_avx2_fma(s, xs) };
    }
    xs.map(|x| dot::<FMA>(x, s))
}

/// [`dot4`] with explicit AVX2 + FMA intrinsics (LLVM vectorises four interleaved
/// [`dot`]s across the wrong axis). Lane `l` of accumulator `j` is `dot`'s lane `l` for
/// `xs[j]`: the same fused multiply-adds in the same order, then the same [`reduce`].
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dot4_avx2_fma(s: &[f32], xs: [&[f32]; 4]) -> [f32; 4] {
    use std::arch::x86_64::{
        _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };
    let n = s.len();
    if xs.iter().any(|x| x.len() != n) {
        // Not reached (callers pass equal lengths); keeps the raw loads below in bounds.
        return xs.map(|x| dot::<true>(x, s));
    }
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n` and every operand has length `n`, so each 8-float unaligned
        // load stays inside its slice.
        unsafe {
            let sv = _mm256_loadu_ps(s.as_ptr().add(i));
            for (a, x) in acc.iter_mut().zip(&xs) {
                *a = _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr().add(i)), sv, *a);
            }
        }
        i += 8;
    }
    let mut out = [0.0f32; 4];
    for ((o, a), x) in out.iter_mut().zip(acc).zip(&xs) {
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds exactly 8 f32s.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), a) };
        *o = reduce(&lanes, tail_dot(x, s));
    }
    out
}

/// `chunk += sum_k h[k] * bt[k * stride..][..EXPAND_CHUNK]`, `k` in order, each step an
/// [`axpy`] (so bit-identical to `h.len()` `axpy` calls); with AVX2 + FMA the chunk stays in
/// four registers throughout. `bt` starts at the chunk's first column.
///
/// # Safety
/// When `FMA` is true the CPU must support AVX2 and FMA.
#[inline(always)]
pub(super) unsafe fn expand_chunk<const FMA: bool>(
    h: &[f32],
    bt: &[f32],
    stride: usize,
    chunk: &mut [f32; EXPAND_CHUNK],
) {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: the caller guarantees AVX2 and FMA when `FMA` is true.
        return unsafe { expand_chunk_avx2_fma(h, bt, stride, chunk) };
    }
    for (k, &hk) in h.iter().enumerate() {
        axpy::<FMA>(hk, &bt[k * stride..k * stride + EXPAND_CHUNK], chunk);
    }
}

/// [`expand_chunk`] with explicit AVX2 + FMA intrinsics: lane `l` of register `v` computes
/// `fma(h[k], bt[k][8 v + l], acc)` for `k` in order, exactly as [`axpy`] does.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn expand_chunk_avx2_fma(
    h: &[f32],
    bt: &[f32],
    stride: usize,
    chunk: &mut [f32; EXPAND_CHUNK],
) {
    use std::arch::x86_64::{_mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_storeu_ps};
    let rows = h.len();
    if rows > 0 && bt.len() < (rows - 1) * stride + EXPAND_CHUNK {
        // Not reached (callers pass whole `Bt` rows); keeps the raw loads below in bounds.
        return;
    }
    let p = chunk.as_mut_ptr();
    // SAFETY: `chunk` holds 32 f32s: offsets 0, 8, 16 and 24 each start 8 in bounds.
    let mut acc = unsafe {
        [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ]
    };
    for (k, &hk) in h.iter().enumerate() {
        let hv = _mm256_set1_ps(hk);
        let row = bt[k * stride..].as_ptr();
        for (v, a) in acc.iter_mut().enumerate() {
            // SAFETY: `bt` holds at least `k * stride + 32` floats (checked above), so the
            // 8 floats at `k * stride + 8 v` (v < 4) are in bounds.
            *a = _mm256_fmadd_ps(hv, unsafe { _mm256_loadu_ps(row.add(8 * v)) }, *a);
        }
    }
    for (v, a) in acc.into_iter().enumerate() {
        // SAFETY: as for the loads from `chunk` above.
        unsafe { _mm256_storeu_ps(p.add(8 * v), a) };
    }
}
