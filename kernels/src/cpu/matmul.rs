//! CPU skinny matmul `y = x W^T` for up to a few dozen rows of `x` (decode steps, small
//! mixed steps): `x` `(T, K)`, `W` `(N, K)` as stored in checkpoints, `y` `(T, N)`.
//!
//! With few tokens a projection is bound by streaming `W` from memory once per step, so the
//! kernel walks `W` row by row in storage order (each row is one contiguous run the hardware
//! prefetcher follows) and dots every row with all `T` rows of `x`, which stay in L1/L2. Tasks
//! own disjoint ranges of `W`'s rows (output columns), write them straight into `y` and run
//! on rayon's pool. Inside a task a register block of four `W` rows by up to four `x` rows
//! (AVX-512: 16 accumulators of 16 lanes; AVX2 + FMA: triples of `x` rows, 12 accumulators
//! of 8 lanes, which keeps both FMA pipes busy where pairs left them waiting on latency)
//! shares each loaded vector of `W` between the `x` rows and each vector of `x` between four
//! `W` rows. The passes over a block of `W` (one per triple of `x` rows) share out asking for
//! the next block, so memory streams while any of them computes (measured on cold weights,
//! one process, kernels alternating: 3-20% faster at 4-12 rows than the first pass asking for
//! all of it; every pass asking for all of it pushed the block in use out of L1 with long
//! rows).
//! With one `x` row (batch-1 decode) the four `W` rows are read one after the other instead
//! of interleaved, so each thread streams `W` in storage order (same per-lane order, same
//! bits; ~1.3x the streaming rate on an AMD EPYC VM).
//!
//! Every output element is one lane-parallel f32 accumulation over `K` (16 or 8 lanes, fixed
//! per machine) in the same order whatever `T`, the block shape or the thread that computes
//! it, followed by the same horizontal sum and scalar tail: a token's result does not depend
//! on the other tokens of the batch. Weights in bf16 are widened in registers (exact), f16
//! through a converted copy of the rows.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result, Shape};
use half::{bf16, f16};
use rayon::prelude::*;

use super::{contiguous_window, tiled_gemm, Elem};

/// Below this many multiply-adds a call runs on the calling thread (waking rayon's workers
/// costs microseconds).
const PAR_MIN_MACS: usize = 1 << 16;
/// `W` rows per register block.
const R: usize = 4;
/// `x` rows per block call (AVX2: two register blocks of three rows; AVX-512: four + two).
const C: usize = 6;

/// The instruction set the kernel runs with, detected once per call. Every call on one
/// machine takes the same path whatever `T`, so results do not depend on the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    /// Portable code (8-lane f32 accumulators, no FMA).
    Baseline,
    /// AVX2 + FMA: 8-lane vectors, register blocks of 4 W rows x 2 x rows.
    Avx2,
    /// AVX-512F: 16-lane vectors, register blocks of 4 W rows x 4 x rows.
    Avx512,
}

impl Isa {
    /// The best instruction set of this CPU, detected once per process; the environment
    /// variable `LANTERN_SKINNY_ISA=baseline|avx2` picks a lesser one for A/B benchmarks.
    fn detect() -> Self {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            let best = Self::best();
            match std::env::var("LANTERN_SKINNY_ISA").as_deref() {
                Ok("baseline") => Isa::Baseline,
                Ok("avx2") if best != Isa::Baseline => Isa::Avx2,
                _ => best,
            }
        })
    }

    fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Baseline
    }
}

/// Which CPU kernel [`dense_matmul_cpu`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DenseKernel {
    /// Row-streaming kernel for few rows of `x` (this module).
    Skinny,
    /// One single-threaded GEMM per tile of `W`'s rows (`cpu::tiled_gemm`).
    Tiled,
}

impl DenseKernel {
    pub(crate) fn name(self) -> &'static str {
        match self {
            DenseKernel::Skinny => "skinny_matmul",
            DenseKernel::Tiled => "tiled_matmul",
        }
    }

    fn run<T: WeightRow>(self, x: &[f32], w: &[T], t: usize, n: usize, k: usize) -> Vec<f32> {
        match self {
            DenseKernel::Skinny => run::<T>(x, w, t, n, k),
            DenseKernel::Tiled => {
                let src = tiled_gemm::Dense { w, k };
                // f32 rows are read in place; bf16/f16 rows are widened a cache-sized tile
                // at a time.
                let tile = if T::DTYPE == candle_core::DType::F32 {
                    tiled_gemm::dense_tile_rows(n)
                } else {
                    tiled_gemm::tile_rows(k)
                };
                match tiled_gemm::tiled_gemm(x, (t, n, k), tile, &src) {
                    Ok(y) => y,
                    Err(never) => match never {},
                }
            }
        }
    }
}

/// `y = x W^T` for `x` `(T, K)` and `W` `(N, K)` of one dtype (f32, bf16 or f16; math in
/// f32, result in that dtype) with `kernel`.
pub(crate) fn dense_matmul_cpu(
    kernel: DenseKernel,
    (x, x_l): (&CpuStorage, &Layout),
    (w, w_l): (&CpuStorage, &Layout),
) -> Result<(CpuStorage, Shape)> {
    let what = kernel.name();
    let (t, k) = x_l.shape().dims2()?;
    let (n, k2) = w_l.shape().dims2()?;
    if k != k2 {
        bail!("{what}: x is ({t}, {k}) but W is ({n}, {k2}); W must be (out, {k})");
    }
    let x_what = format!("{what}: x");
    let w_what = format!("{what}: W");
    match (x, w) {
        (CpuStorage::F32(x), CpuStorage::F32(w)) => {
            let x = contiguous_window(x, x_l, &x_what)?;
            let w = contiguous_window(w, w_l, &w_what)?;
            let y = kernel.run::<f32>(x, w, t, n, k);
            Ok((CpuStorage::F32(y), Shape::from((t, n))))
        }
        (CpuStorage::BF16(x), CpuStorage::BF16(w)) => {
            let x = contiguous_window(x, x_l, &x_what)?;
            let w = contiguous_window(w, w_l, &w_what)?;
            let xf: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
            let y = kernel.run::<bf16>(&xf, w, t, n, k);
            let y = y.into_iter().map(bf16::from_f32).collect();
            Ok((CpuStorage::BF16(y), Shape::from((t, n))))
        }
        (CpuStorage::F16(x), CpuStorage::F16(w)) => {
            let x = contiguous_window(x, x_l, &x_what)?;
            let w = contiguous_window(w, w_l, &w_what)?;
            let xf: Vec<f32> = x.iter().map(|&v| Elem::to_f32(v)).collect();
            let y = kernel.run::<f16>(&xf, w, t, n, k);
            let y = y.into_iter().map(f16::from_f32).collect();
            Ok((CpuStorage::F16(y), Shape::from((t, n))))
        }
        (x, w) => bail!(
            "{what}: x ({:?}) and W ({:?}) must both be f32, bf16 or f16",
            x.dtype(),
            w.dtype()
        ),
    }
}

/// Weight element types with a row-block kernel.
trait WeightRow: Elem {
    /// `out[r][c] = <w_r, x_c>` for the `R` rows of `w` (`R * k` elements) and the
    /// `at.cols` rows of `x` (`at.cols * k`).
    fn block(w: &[Self], x: &[f32], at: Pass, isa: Isa, out: &mut Out);
}

/// Where one block call sits: rows of `k` values; `x` rows `row0..row0 + cols` of the
/// `rows` that pass over this block of `W` (the AVX2 path spreads asking for the next
/// block of `W` over the passes).
#[derive(Debug, Clone, Copy)]
struct Pass {
    k: usize,
    cols: usize,
    row0: usize,
    rows: usize,
}

/// One block call's results: `out[r][c] = <w_r, x_c>`.
type Out = [[f32; C]; R];

/// `y` `(t, n)` in f32 from `x` `(t, k)` in f32 and `w` `(n, k)`.
fn run<T: WeightRow>(x: &[f32], w: &[T], t: usize, n: usize, k: usize) -> Vec<f32> {
    run_isa(x, w, t, n, k, Isa::detect())
}

fn run_isa<T: WeightRow>(x: &[f32], w: &[T], t: usize, n: usize, k: usize, isa: Isa) -> Vec<f32> {
    let mut y = vec![0f32; t * n];
    if t == 0 || n == 0 {
        return y;
    }
    let per = rows_per_task(n, t, k);
    let out = YPtr(y.as_mut_ptr());
    let task = |i: usize| {
        let row0 = i * per;
        let rows = per.min(n - row0);
        // SAFETY: task `i` writes only columns `row0..row0 + rows` of `y` (`t` rows of `n`),
        // which no other task writes, and `y` outlives the loop.
        unsafe {
            rows_kernel(
                &w[row0 * k..(row0 + rows) * k],
                x,
                (t, n, k),
                row0,
                isa,
                out,
            )
        };
    };
    let tasks = n.div_ceil(per);
    if n * t * k < PAR_MIN_MACS || tasks == 1 {
        (0..tasks).for_each(task);
    } else {
        (0..tasks).into_par_iter().for_each(task);
    }
    y
}

/// `y`'s buffer, shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
struct YPtr(*mut f32);
// SAFETY: the tasks of `run_isa` write disjoint columns of `y`.
unsafe impl Send for YPtr {}
// SAFETY: as above.
unsafe impl Sync for YPtr {}

/// Rows of `W` per rayon task: about four tasks per thread, a multiple of the block height.
fn rows_per_task(n: usize, t: usize, k: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let _ = (t, k);
    let per = n.div_ceil(threads * 4);
    per.div_ceil(R).max(1) * R
}

/// `y[c * n + col0 + o] = <w_o, x_c>` for the rows `o` of `w`.
///
/// # Safety
/// `y` points to `t * n` elements and `col0 + w.len() / k <= n`.
unsafe fn rows_kernel<T: WeightRow>(
    w: &[T],
    x: &[f32],
    (t, n, k): (usize, usize, usize),
    col0: usize,
    isa: Isa,
    y: YPtr,
) {
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
            let at = Pass {
                k,
                cols,
                row0: c,
                rows: t,
            };
            T::block(wb, &x[c * k..(c + cols) * k], at, isa, &mut out);
            for (ri, row) in out.iter().enumerate().take(r) {
                for (ci, &v) in row.iter().enumerate().take(cols) {
                    *y.0.add((c + ci) * n + col0 + o + ri) = v;
                }
            }
            c += cols;
        }
        o += r;
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
    fn block(w: &[f32], x: &[f32], at: Pass, isa: Isa, out: &mut Out) {
        // SAFETY: `isa` was detected on this CPU; the slices hold R * k and cols * k elements.
        #[cfg(target_arch = "x86_64")]
        match isa {
            Isa::Avx512 => return unsafe { simd::block512_f32(w, x, at.k, at.cols, out) },
            Isa::Avx2 => return unsafe { simd::block256_f32(w, x, at, out) },
            Isa::Baseline => {}
        }
        let _ = isa;
        block_generic(w, x, at.k, at.cols, out, |v| v);
    }
}

impl WeightRow for bf16 {
    fn block(w: &[bf16], x: &[f32], at: Pass, isa: Isa, out: &mut Out) {
        // SAFETY: as for f32.
        #[cfg(target_arch = "x86_64")]
        match isa {
            Isa::Avx512 => return unsafe { simd::block512_bf16(w, x, at.k, at.cols, out) },
            Isa::Avx2 => return unsafe { simd::block256_bf16(w, x, at, out) },
            Isa::Baseline => {}
        }
        let _ = isa;
        block_generic(w, x, at.k, at.cols, out, Elem::to_f32);
    }
}

impl WeightRow for f16 {
    fn block(w: &[f16], x: &[f32], at: Pass, isa: Isa, out: &mut Out) {
        let mut buf = vec![0f32; R * at.k];
        let wf = Elem::row_f32(w, &mut buf);
        <f32 as WeightRow>::block(wf, x, at, isa, out);
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
    use super::{Pass, C, R};
    use half::bf16;
    use std::arch::x86_64::*;

    /// The horizontal sum of eight lanes, in `hsum8`'s order.
    #[inline(always)]
    unsafe fn hsum256(v: __m256) -> f32 {
        let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let h = _mm_add_ps(q, _mm_movehl_ps(q, q));
        let s = _mm_add_ss(h, _mm_shuffle_ps::<0b01>(h, h));
        _mm_cvtss_f32(s)
    }

    /// Sixteen lanes: the two halves added, then as [`hsum256`].
    #[inline(always)]
    unsafe fn hsum512(v: __m512) -> f32 {
        let lo = _mm512_castps512_ps256(v);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        hsum256(_mm256_add_ps(lo, hi))
    }

    /// Weight element types loaded as f32 vectors.
    trait Load {
        unsafe fn load8(p: *const Self) -> __m256;
        unsafe fn load16(p: *const Self) -> __m512;
        fn widen(self) -> f32;
    }
    impl Load for f32 {
        #[inline(always)]
        unsafe fn load8(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn load16(p: *const f32) -> __m512 {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        fn widen(self) -> f32 {
            self
        }
    }
    impl Load for bf16 {
        #[inline(always)]
        unsafe fn load8(p: *const bf16) -> __m256 {
            let h = _mm_loadu_si128(p.cast());
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        }
        #[inline(always)]
        unsafe fn load16(p: *const bf16) -> __m512 {
            let h = _mm256_loadu_si256(p.cast());
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
        #[inline(always)]
        fn widen(self) -> f32 {
            f32::from_bits(u32::from(self.to_bits()) << 16)
        }
    }

    /// The scalar tail of one dot product (elements `from..k`), fused multiply-adds.
    #[inline(always)]
    unsafe fn tail<T: Load + Copy>(w: &[T], x: &[f32], from: usize, k: usize, mut s: f32) -> f32 {
        for j in from..k {
            s = (*w.get_unchecked(j))
                .widen()
                .mul_add(*x.get_unchecked(j), s);
        }
        s
    }

    /// AVX2: `NC` (<= 3) rows of `x` starting at column `c0` of `out`, pass `pass` of
    /// `passes` over this block of `W`.
    #[inline(always)]
    unsafe fn inner256<T: Load + Copy, const NC: usize>(
        w: &[T],
        x: &[f32],
        k: usize,
        (c0, pass, passes): (usize, usize, usize),
        out: &mut [[f32; C]; R],
    ) {
        let k8 = k / 8 * 8;
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        if NC == 1 {
            // As in `inner512`: W rows one after the other, same per-lane order.
            for r in 0..R {
                let mut a = _mm256_setzero_ps();
                let mut i = 0;
                while i < k8 {
                    a = _mm256_fmadd_ps(T::load8(wp.add(r * k + i)), _mm256_loadu_ps(xp.add(i)), a);
                    i += 8;
                }
                out[r][c0] = tail(&w[r * k..(r + 1) * k], &x[..k], k8, k, hsum256(a));
            }
            return;
        }
        let mut acc = [[_mm256_setzero_ps(); NC]; R];
        // The passes over this block (triples of x rows) compute on W in L1 while nothing
        // streams from memory, so together they ask for the next block of W (the `R` rows
        // after these, where the task's next block or the next task's rows start): pass `p`
        // of `P` the lines of every `P`th step from step `p` on, a line or two at a time, so
        // memory keeps busy through all of them. Only an address hint: prefetching past the
        // end of W cannot fault.
        let next = wp
            .cast::<u8>()
            .wrapping_add(R * k * std::mem::size_of::<T>());
        let per_step = R * 8 * std::mem::size_of::<T>();
        let mut countdown = pass;
        let mut i = 0;
        while i < k8 {
            if countdown == 0 {
                let ahead = next.wrapping_add(i / 8 * per_step);
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast::<i8>());
                if per_step > 64 {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64).cast::<i8>());
                }
                countdown = passes;
            }
            countdown -= 1;
            let mut xv = [_mm256_setzero_ps(); NC];
            for (c, v) in xv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(xp.add(c * k + i));
            }
            for (r, a) in acc.iter_mut().enumerate() {
                let wv = T::load8(wp.add(r * k + i));
                for c in 0..NC {
                    a[c] = _mm256_fmadd_ps(wv, xv[c], a[c]);
                }
            }
            i += 8;
        }
        for r in 0..R {
            for c in 0..NC {
                let s = hsum256(acc[r][c]);
                out[r][c0 + c] = tail(&w[r * k..(r + 1) * k], &x[c * k..(c + 1) * k], k8, k, s);
            }
        }
    }

    /// AVX-512: `NC` (<= 4) rows of `x`.
    #[inline(always)]
    unsafe fn inner512<T: Load + Copy, const NC: usize>(
        w: &[T],
        x: &[f32],
        k: usize,
        c0: usize,
        out: &mut [[f32; C]; R],
    ) {
        let k16 = k / 16 * 16;
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        if NC == 1 {
            // One x row: the W rows one after the other, so each thread streams W in
            // storage order; same per-lane order as the interleaved loop below.
            for r in 0..R {
                let mut a = _mm512_setzero_ps();
                let mut i = 0;
                while i < k16 {
                    a = _mm512_fmadd_ps(
                        T::load16(wp.add(r * k + i)),
                        _mm512_loadu_ps(xp.add(i)),
                        a,
                    );
                    i += 16;
                }
                out[r][c0] = tail(&w[r * k..(r + 1) * k], &x[..k], k16, k, hsum512(a));
            }
            return;
        }
        let mut acc = [[_mm512_setzero_ps(); NC]; R];
        let mut i = 0;
        while i < k16 {
            let mut xv = [_mm512_setzero_ps(); NC];
            for (c, v) in xv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(xp.add(c * k + i));
            }
            for (r, a) in acc.iter_mut().enumerate() {
                let wv = T::load16(wp.add(r * k + i));
                for c in 0..NC {
                    a[c] = _mm512_fmadd_ps(wv, xv[c], a[c]);
                }
            }
            i += 16;
        }
        for r in 0..R {
            for c in 0..NC {
                let s = hsum512(acc[r][c]);
                out[r][c0 + c] = tail(&w[r * k..(r + 1) * k], &x[c * k..(c + 1) * k], k16, k, s);
            }
        }
    }

    #[inline(always)]
    unsafe fn block256<T: Load + Copy>(w: &[T], x: &[f32], at: Pass, out: &mut [[f32; C]; R]) {
        let Pass {
            k,
            cols,
            row0,
            rows,
        } = at;
        debug_assert!(w.len() >= R * k && x.len() >= cols * k && cols <= C);
        // Passes of two or three rows prefetch (a last single row takes the batch-1 loop).
        let passes = (rows / 3 + usize::from(rows % 3 == 2)).max(1);
        let mut c0 = 0;
        while c0 < cols {
            let xs = &x[c0 * k..];
            let pf = (c0, (row0 + c0) / 3, passes);
            if cols - c0 >= 3 {
                inner256::<T, 3>(w, xs, k, pf, out);
                c0 += 3;
            } else if cols - c0 == 2 {
                inner256::<T, 2>(w, xs, k, pf, out);
                c0 += 2;
            } else {
                inner256::<T, 1>(w, xs, k, pf, out);
                c0 += 1;
            }
        }
    }

    #[inline(always)]
    unsafe fn block512<T: Load + Copy>(
        w: &[T],
        x: &[f32],
        k: usize,
        cols: usize,
        out: &mut [[f32; C]; R],
    ) {
        debug_assert!(w.len() >= R * k && x.len() >= cols * k && cols <= C);
        let mut c0 = 0;
        while c0 < cols {
            let xs = &x[c0 * k..];
            let nc = (cols - c0).min(4);
            match nc {
                4 => inner512::<T, 4>(w, xs, k, c0, out),
                3 => inner512::<T, 3>(w, xs, k, c0, out),
                2 => inner512::<T, 2>(w, xs, k, c0, out),
                _ => inner512::<T, 1>(w, xs, k, c0, out),
            }
            c0 += nc;
        }
    }

    /// # Safety
    /// AVX2 and FMA; `w` holds `R * at.k` and `x` `at.cols * at.k` elements, `at.cols <= C`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block256_f32(w: &[f32], x: &[f32], at: Pass, out: &mut [[f32; C]; R]) {
        block256(w, x, at, out)
    }

    /// # Safety
    /// As [`block256_f32`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block256_bf16(w: &[bf16], x: &[f32], at: Pass, out: &mut [[f32; C]; R]) {
        block256(w, x, at, out)
    }

    /// # Safety
    /// AVX-512F, AVX2 and FMA; slices as for [`block256_f32`].
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn block512_f32(
        w: &[f32],
        x: &[f32],
        k: usize,
        cols: usize,
        out: &mut [[f32; C]; R],
    ) {
        block512(w, x, k, cols, out)
    }

    /// # Safety
    /// As [`block512_f32`].
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn block512_bf16(
        w: &[bf16],
        x: &[f32],
        k: usize,
        cols: usize,
        out: &mut [[f32; C]; R],
    ) {
        block512(w, x, k, cols, out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Baseline];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                v.push(Isa::Avx2);
                if std::arch::is_x86_feature_detected!("avx512f") {
                    v.push(Isa::Avx512);
                }
            }
        }
        v
    }

    fn vals(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32
                    / (1 << 24) as f32
                    - 0.5
            })
            .collect()
    }

    /// Every instruction set this CPU has matches an f64 reference on ragged shapes, and
    /// gives each row the same bits alone as in a batch.
    #[test]
    fn every_isa_matches_the_reference_and_is_batch_invariant() {
        for isa in isas() {
            for &(t, k, n) in &[
                (1, 8, 4),
                (5, 37, 9),
                (4, 576, 13),
                (7, 1536, 6),
                (3, 20, 1),
                // Several block calls per W block (6 x rows each), passes 0..=6.
                (13, 576, 9),
                (20, 64, 5),
            ] {
                let x = vals(t * k, 1);
                let w = vals(n * k, 2);
                let y = run_isa(&x, &w, t, n, k, isa);
                for r in 0..t {
                    for o in 0..n {
                        let want: f64 = (0..k)
                            .map(|j| x[r * k + j] as f64 * w[o * k + j] as f64)
                            .sum();
                        let got = y[r * n + o];
                        assert!(
                            (got as f64 - want).abs() < 1e-4,
                            "{isa:?} ({t},{k},{n}) [{r}][{o}] {got} vs {want}"
                        );
                    }
                    let alone = run_isa(&x[r * k..(r + 1) * k], &w, 1, n, k, isa);
                    assert_eq!(alone[..], y[r * n..(r + 1) * n], "{isa:?} row {r}");
                }
            }
        }
    }
}
