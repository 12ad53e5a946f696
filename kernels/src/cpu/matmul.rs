//! CPU skinny matmul `y = x W^T` for few rows of `x` (decode steps): `x` `(T, K)`, `W`
//! `(N, K)` as stored in checkpoints, `y` `(T, N)`.
//!
//! With few tokens a projection is bound by streaming `W` from memory once per step, so the
//! kernel walks `W` row by row in storage order (each row is one contiguous run the hardware
//! prefetcher follows) and dots every row with all `T` rows of `x`, which stay in L1/L2. Tasks
//! own disjoint ranges of `W`'s rows (output columns) and run on rayon's pool. Inside a task a
//! register block of four `W` rows by two `x` rows keeps eight accumulators, so each vector
//! of `W` loaded feeds two multiply-adds and each vector of `x` four.
//!
//! Every output element is one 8-lane f32 accumulation over `K` in the same order whatever
//! `T`, the block shape or the thread that computes it, followed by the same horizontal sum and
//! scalar tail: a token's result does not depend on the other tokens of the batch. Weights in
//! bf16 are widened in registers (exact), f16 through a converted copy of the row.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result, Shape};
use half::{bf16, f16};
use rayon::prelude::*;

use super::{contiguous_window, Elem};

/// Below this many multiply-adds a call runs on the calling thread (waking rayon's workers
/// costs microseconds).
const PAR_MIN_MACS: usize = 1 << 16;
/// `W` rows per register block.
const R: usize = 4;
/// `x` rows per register block.
const C: usize = 2;

pub(crate) fn skinny_matmul_cpu(
    (x, x_l): (&CpuStorage, &Layout),
    (w, w_l): (&CpuStorage, &Layout),
) -> Result<(CpuStorage, Shape)> {
    let (t, k) = x_l.shape().dims2()?;
    let (n, k2) = w_l.shape().dims2()?;
    if k != k2 {
        bail!("skinny_matmul: x is ({t}, {k}) but W is ({n}, {k2}); W must be (out, {k})");
    }
    match (x, w) {
        (CpuStorage::F32(x), CpuStorage::F32(w)) => {
            let x = contiguous_window(x, x_l, "skinny_matmul: x")?;
            let w = contiguous_window(w, w_l, "skinny_matmul: W")?;
            let y = run::<f32>(x, w, t, n, k);
            Ok((CpuStorage::F32(y), Shape::from((t, n))))
        }
        (CpuStorage::BF16(x), CpuStorage::BF16(w)) => {
            let x = contiguous_window(x, x_l, "skinny_matmul: x")?;
            let w = contiguous_window(w, w_l, "skinny_matmul: W")?;
            let xf: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
            let y = run::<bf16>(&xf, w, t, n, k);
            let y = y.into_iter().map(bf16::from_f32).collect();
            Ok((CpuStorage::BF16(y), Shape::from((t, n))))
        }
        (CpuStorage::F16(x), CpuStorage::F16(w)) => {
            let x = contiguous_window(x, x_l, "skinny_matmul: x")?;
            let w = contiguous_window(w, w_l, "skinny_matmul: W")?;
            let xf: Vec<f32> = x.iter().map(|&v| Elem::to_f32(v)).collect();
            let y = run::<f16>(&xf, w, t, n, k);
            let y = y.into_iter().map(f16::from_f32).collect();
            Ok((CpuStorage::F16(y), Shape::from((t, n))))
        }
        (x, w) => bail!(
            "skinny_matmul: x ({:?}) and W ({:?}) must both be f32, bf16 or f16",
            x.dtype(),
            w.dtype()
        ),
    }
}

/// Weight element types with a row-block kernel.
trait WeightRow: Elem {
    /// `out[r][c] = <w_r, x_c>` for the `R` rows of `w` (`R * k` elements) and the `C` rows
    /// of `x` (`C * k`; only the first `cols` are used).
    fn block(w: &[Self], x: &[f32], k: usize, cols: usize, fma: bool, out: &mut [[f32; C]; R]);
}

/// `y` `(t, n)` in f32 from `x` `(t, k)` in f32 and `w` `(n, k)`.
fn run<T: WeightRow>(x: &[f32], w: &[T], t: usize, n: usize, k: usize) -> Vec<f32> {
    let fma = fma_available();
    // Computed transposed, `(n, t)`, so each task owns a contiguous range of rows.
    let mut yt = vec![0f32; n * t];
    let task = |(i, chunk): (usize, &mut [f32])| {
        let row0 = i * rows_per_task(n, t, k);
        let rows = chunk.len() / t.max(1);
        rows_kernel(&w[row0 * k..(row0 + rows) * k], x, t, k, fma, chunk);
    };
    if t == 0 || n == 0 {
        return yt;
    }
    let per = rows_per_task(n, t, k);
    if n * t * k < PAR_MIN_MACS || per >= n {
        task((0, &mut yt));
    } else {
        yt.par_chunks_mut(per * t).enumerate().for_each(task);
    }
    if t == 1 {
        return yt;
    }
    let mut y = vec![0f32; t * n];
    for (o, row) in yt.chunks_exact(t).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            y[c * n + o] = v;
        }
    }
    y
}

/// Rows of `W` per rayon task: about four tasks per thread, a multiple of the block height.
fn rows_per_task(n: usize, t: usize, k: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let _ = (t, k);
    let per = n.div_ceil(threads * 4);
    per.div_ceil(R).max(1) * R
}

/// `yt[o * t + c] = <w_o, x_c>` for the rows of `w`.
fn rows_kernel<T: WeightRow>(w: &[T], x: &[f32], t: usize, k: usize, fma: bool, yt: &mut [f32]) {
    let rows = w.len().checked_div(k).unwrap_or(0);
    let mut o = 0;
    let mut out = [[0f32; C]; R];
    let mut pad_w: Vec<T> = Vec::new();
    while o < rows {
        let r = (rows - o).min(R);
        // A last block shorter than R is padded with copies of its first row.
        let wb: &[T] = if r == R {
            &w[o * k..(o + R) * k]
        } else {
            pad_w.clear();
            pad_w.extend_from_slice(&w[o * k..(o + r) * k]);
            for _ in r..R {
                pad_w.extend_from_within(0..k);
            }
            &pad_w
        };
        let mut c = 0;
        while c < t {
            let cols = (t - c).min(C);
            T::block(wb, &x[c * k..(c + cols) * k], k, cols, fma, &mut out);
            for (ri, row) in out.iter().enumerate().take(r) {
                for (ci, &v) in row.iter().enumerate().take(cols) {
                    yt[(o + ri) * t + c + ci] = v;
                }
            }
            c += cols;
        }
        o += r;
    }
}

fn fma_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The portable block: eight lanes per accumulator, summed as the SIMD path sums them.
fn block_portable(w: &[[f32; 8]], w_tail: &[f32], x: &[f32], k: usize, cols: usize) -> [f32; C] {
    let k8 = k / 8 * 8;
    let mut res = [0f32; C];
    for (c, slot) in res.iter_mut().enumerate().take(cols) {
        let xr = &x[c * k..(c + 1) * k];
        let mut acc = [0f32; 8];
        for (i, wv) in w.iter().enumerate() {
            for l in 0..8 {
                acc[l] += wv[l] * xr[i * 8 + l];
            }
        }
        let mut s = hsum8(acc);
        for (j, &wj) in w_tail.iter().enumerate() {
            s += wj * xr[k8 + j];
        }
        *slot = s;
    }
    res
}

/// The horizontal sum of eight lanes, in the order the AVX2 path uses.
#[inline(always)]
fn hsum8(a: [f32; 8]) -> f32 {
    let q = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    let h = [q[0] + q[2], q[1] + q[3]];
    h[0] + h[1]
}

impl WeightRow for f32 {
    fn block(w: &[f32], x: &[f32], k: usize, cols: usize, fma: bool, out: &mut [[f32; C]; R]) {
        #[cfg(target_arch = "x86_64")]
        if fma {
            // SAFETY: `fma` is true only when AVX2 and FMA were detected; the slices hold
            // R * k and cols * k elements.
            unsafe { simd::block_f32(w, x, k, cols, out) };
            return;
        }
        let _ = fma;
        block_generic(w, x, k, cols, out, |v| v);
    }
}

impl WeightRow for bf16 {
    fn block(w: &[bf16], x: &[f32], k: usize, cols: usize, fma: bool, out: &mut [[f32; C]; R]) {
        #[cfg(target_arch = "x86_64")]
        if fma {
            // SAFETY: as for f32.
            unsafe { simd::block_bf16(w, x, k, cols, out) };
            return;
        }
        let _ = fma;
        block_generic(w, x, k, cols, out, Elem::to_f32);
    }
}

impl WeightRow for f16 {
    fn block(w: &[f16], x: &[f32], k: usize, cols: usize, fma: bool, out: &mut [[f32; C]; R]) {
        let mut buf = vec![0f32; R * k];
        let wf = Elem::row_f32(w, &mut buf);
        <f32 as WeightRow>::block(wf, x, k, cols, fma, out);
    }
}

/// The scalar version of the block (no FMA: products rounded before the add).
fn block_generic<T: Copy>(
    w: &[T],
    x: &[f32],
    k: usize,
    cols: usize,
    out: &mut [[f32; C]; R],
    to_f32: impl Fn(T) -> f32,
) {
    let k8 = k / 8 * 8;
    for (r, out_r) in out.iter_mut().enumerate() {
        let row = &w[r * k..(r + 1) * k];
        let lanes: Vec<[f32; 8]> = row[..k8]
            .chunks_exact(8)
            .map(|c| std::array::from_fn(|l| to_f32(c[l])))
            .collect();
        let tail: Vec<f32> = row[k8..].iter().map(|&v| to_f32(v)).collect();
        *out_r = block_portable(&lanes, &tail, x, k, cols);
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{C, R};
    use half::bf16;
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        // (a0+a4, a1+a5, a2+a6, a3+a7), then pairs, as `hsum8`.
        let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let h = _mm_add_ps(q, _mm_movehl_ps(q, q));
        let s = _mm_add_ss(h, _mm_shuffle_ps::<0b01>(h, h));
        _mm_cvtss_f32(s)
    }

    /// Loads eight weights as f32.
    trait Load8 {
        unsafe fn load8(p: *const Self) -> __m256;
        fn widen(self) -> f32;
    }
    impl Load8 for f32 {
        #[inline(always)]
        unsafe fn load8(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        fn widen(self) -> f32 {
            self
        }
    }
    impl Load8 for bf16 {
        #[inline(always)]
        unsafe fn load8(p: *const bf16) -> __m256 {
            let h = _mm_loadu_si128(p.cast());
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        }
        #[inline(always)]
        fn widen(self) -> f32 {
            f32::from_bits(u32::from(self.to_bits()) << 16)
        }
    }

    #[inline(always)]
    unsafe fn block<T: Load8 + Copy>(
        w: &[T],
        x: &[f32],
        k: usize,
        cols: usize,
        out: &mut [[f32; C]; R],
    ) {
        debug_assert!(w.len() >= R * k && x.len() >= cols * k);
        let k8 = k / 8 * 8;
        let wp = w.as_ptr();
        let xp = x.as_ptr();
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        if cols == C {
            let mut i = 0;
            while i < k8 {
                let x0 = _mm256_loadu_ps(xp.add(i));
                let x1 = _mm256_loadu_ps(xp.add(k + i));
                for (r, a) in acc.iter_mut().enumerate() {
                    let wv = T::load8(wp.add(r * k + i));
                    a[0] = _mm256_fmadd_ps(wv, x0, a[0]);
                    a[1] = _mm256_fmadd_ps(wv, x1, a[1]);
                }
                i += 8;
            }
        } else {
            let mut i = 0;
            while i < k8 {
                let x0 = _mm256_loadu_ps(xp.add(i));
                for (r, a) in acc.iter_mut().enumerate() {
                    let wv = T::load8(wp.add(r * k + i));
                    a[0] = _mm256_fmadd_ps(wv, x0, a[0]);
                }
                i += 8;
            }
        }
        for r in 0..R {
            for c in 0..cols {
                let mut s = hsum(acc[r][c]);
                for j in k8..k {
                    s = (*w.get_unchecked(r * k + j))
                        .widen()
                        .mul_add(*x.get_unchecked(c * k + j), s);
                }
                out[r][c] = s;
            }
        }
    }

    /// # Safety
    /// AVX2 and FMA; `w` holds `R * k` and `x` `cols * k` elements, `cols <= C`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block_f32(
        w: &[f32],
        x: &[f32],
        k: usize,
        cols: usize,
        out: &mut [[f32; C]; R],
    ) {
        block(w, x, k, cols, out)
    }

    /// # Safety
    /// As [`block_f32`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block_bf16(
        w: &[bf16],
        x: &[f32],
        k: usize,
        cols: usize,
        out: &mut [[f32; C]; R],
    ) {
        block(w, x, k, cols, out)
    }
}
