//! CPU paged attention: one rayon task per (token, kv head) covering that kv head's GQA
//! group of query heads; two-pass softmax in f32 (scores, max-subtracted exp, weighted V).
//! The caches may hold a narrower type than q (f16/bf16 caches for f32 activations): rows
//! are widened as they are read.
//! The inner loops are plain f32 slice code that auto-vectorises; on x86_64 CPUs with AVX2
//! and FMA (detected at runtime, with F16C) the same code is compiled a second time with those
//! enabled, and the score and value loops and the widening of f16/bf16 cache rows use
//! explicit AVX2 code (`simd`).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result, Shape};
use half::{bf16, f16};
use rayon::prelude::*;

use super::{axpy, contiguous_window, exp_in_range, madd, Elem};
use crate::metadata::{AttnDims, HostMeta, PagedAttnMetadata};

/// Problem sizes shared by every task.
#[derive(Debug, Clone, Copy)]
struct Dims {
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    block_size: usize,
}

pub(crate) fn paged_attention_cpu(
    (q, q_l): (&CpuStorage, &Layout),
    (k, k_l): (&CpuStorage, &Layout),
    (v, v_l): (&CpuStorage, &Layout),
    meta: &PagedAttnMetadata,
    softmax_scale: f32,
) -> Result<(CpuStorage, Shape)> {
    let &[num_tokens, num_heads, head_dim] = q_l.dims() else {
        bail!(
            "paged_attention: q must be 3-D, got shape {:?}",
            q_l.shape()
        );
    };
    let &[num_blocks, block_size, num_kv_heads, cache_head_dim] = k_l.dims() else {
        bail!(
            "paged_attention: k_cache must be 4-D, got shape {:?}",
            k_l.shape()
        );
    };
    if v_l.dims() != k_l.dims() || cache_head_dim != head_dim {
        bail!(
            "paged_attention: inconsistent shapes q {:?}, k_cache {:?}, v_cache {:?}",
            q_l.shape(),
            k_l.shape(),
            v_l.shape()
        );
    }
    if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
        bail!("paged_attention: num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}");
    }
    let host = HostMeta::read_and_validate(
        meta,
        AttnDims {
            num_tokens,
            num_blocks,
            block_size,
        },
    )?;
    let dims = Dims {
        num_heads,
        num_kv_heads,
        head_dim,
        block_size,
    };
    let shape = Shape::from((num_tokens, num_heads, head_dim));
    let args = ((q, q_l), (k, k_l), (v, v_l), &host, dims, softmax_scale);
    // The cache may hold a narrower type than q (`--kv-cache-dtype`): rows are widened to
    // f32 as they are read, whatever the pair.
    let storage = match (q, k) {
        (CpuStorage::F32(_), CpuStorage::F32(_)) => run::<f32, f32>(args)?,
        (CpuStorage::F32(_), CpuStorage::F16(_)) => run::<f32, f16>(args)?,
        (CpuStorage::F32(_), CpuStorage::BF16(_)) => run::<f32, bf16>(args)?,
        (CpuStorage::F16(_), CpuStorage::F16(_)) => run::<f16, f16>(args)?,
        (CpuStorage::F16(_), CpuStorage::F32(_)) => run::<f16, f32>(args)?,
        (CpuStorage::F16(_), CpuStorage::BF16(_)) => run::<f16, bf16>(args)?,
        (CpuStorage::BF16(_), CpuStorage::BF16(_)) => run::<bf16, bf16>(args)?,
        (CpuStorage::BF16(_), CpuStorage::F32(_)) => run::<bf16, f32>(args)?,
        (CpuStorage::BF16(_), CpuStorage::F16(_)) => run::<bf16, f16>(args)?,
        (q, k) => bail!(
            "paged_attention: q dtype {:?} with cache dtype {:?} is not supported (f32, f16, bf16)",
            q.dtype(),
            k.dtype()
        ),
    };
    Ok((storage, shape))
}

/// The operands of [`run`]: q, k cache and v cache with their layouts, then the metadata.
type RunArgs<'a> = (
    (&'a CpuStorage, &'a Layout),
    (&'a CpuStorage, &'a Layout),
    (&'a CpuStorage, &'a Layout),
    &'a HostMeta,
    Dims,
    f32,
);

/// `Q`: the type of q and of the output; `C`: the type of the caches.
fn run<Q: Elem, C: Elem>(
    ((q, q_l), (k, k_l), (v, v_l), host, dims, scale): RunArgs<'_>,
) -> Result<CpuStorage> {
    let q = contiguous_window(q.as_slice::<Q>()?, q_l, "paged_attention: q")?;
    let k = contiguous_window(k.as_slice::<C>()?, k_l, "paged_attention: k_cache")?;
    let v = contiguous_window(v.as_slice::<C>()?, v_l, "paged_attention: v_cache")?;
    let num_tokens = q_l.dims()[0];
    let positions = host.token_positions(num_tokens);
    let mut out = vec![Q::from_f32(0.0); q.len()];
    if dims.head_dim == 0 || out.is_empty() {
        return Ok(Q::to_cpu_storage_owned(out));
    }
    let group = dims.num_heads / dims.num_kv_heads;
    let d = dims.head_dim;
    let shared = Shared { k, v, dims, scale };
    let isa = Isa::detect();
    // One task per (token, kv head): the `group` query heads sharing that kv head are
    // adjacent in q and in the output, and each cached K/V row is loaded once for all of them.
    out.par_chunks_mut(group * d).enumerate().for_each_init(
        Scratch::default,
        |scratch, (idx, out_rows)| {
            let token = idx / dims.num_kv_heads;
            let kv_head = idx % dims.num_kv_heads;
            let Some((seq, pos)) = positions[token] else {
                return; // padding row: stays zero
            };
            let task = Task {
                table: &host.block_tables[seq * host.max_blocks..(seq + 1) * host.max_blocks],
                len: pos + 1,
                kv_head,
                group,
            };
            let q_rows = &q[idx * group * d..(idx + 1) * group * d];
            match isa {
                Isa::Baseline => {
                    attend_group::<Q, C, false>(scratch, &shared, task, q_rows, out_rows);
                }
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2Fma => {
                    // SAFETY: `Isa::detect` returned `Avx2Fma` only after checking at runtime
                    // that this CPU supports AVX2 and FMA, the features the callee enables.
                    unsafe { attend_group_avx2_fma(scratch, &shared, task, q_rows, out_rows) };
                }
            }
        },
    );
    Ok(Q::to_cpu_storage_owned(out))
}

/// Instruction sets the kernel is compiled for; picked once per call at runtime.
#[derive(Debug, Clone, Copy)]
enum Isa {
    /// Whatever the build target guarantees (SSE2 on x86_64).
    Baseline,
    /// AVX2 + FMA + F16C (x86_64 only): 8-wide vectors, fused multiply-add, f16 widening.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
}

impl Isa {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            return Isa::Avx2Fma;
        }
        Isa::Baseline
    }
}

/// Read-only inputs shared by every task (`T`: the cache type).
struct Shared<'a, T> {
    k: &'a [T],
    v: &'a [T],
    dims: Dims,
    scale: f32,
}

/// Per-thread buffers reused across tasks.
#[derive(Default)]
struct Scratch {
    /// `(group, head_dim)` scaled queries in f32.
    q: Vec<f32>,
    /// `(group, len)` scores, then softmax numerators.
    scores: Vec<f32>,
    /// `(group, head_dim)` output accumulators.
    acc: Vec<f32>,
    /// `(group,)` reciprocal softmax denominators.
    inv_sums: Vec<f32>,
    /// `(head_dim,)` one K or V row converted to f32 (unused for f32 caches).
    row: Vec<f32>,
}

/// What one task attends over: the first `len` positions of a sequence (through `table`),
/// for the `group` query heads that share `kv_head`.
#[derive(Clone, Copy)]
struct Task<'a> {
    table: &'a [u32],
    len: usize,
    kv_head: usize,
    group: usize,
}

/// Visits the positions `0..len` block by block: `f(t0, n, base)` for the `n` positions
/// from `t0` on, whose rows start at cache offset `base` and follow at the cache's row
/// stride. Indices were validated by `HostMeta::read_and_validate`.
#[inline(always)]
fn for_each_block(task: Task<'_>, dims: Dims, mut f: impl FnMut(usize, usize, usize)) {
    let row_stride = dims.num_kv_heads * dims.head_dim;
    let block_stride = dims.block_size * row_stride;
    let head_off = task.kv_head * dims.head_dim;
    for (b, &block) in task
        .table
        .iter()
        .take(task.len.div_ceil(dims.block_size))
        .enumerate()
    {
        let t0 = b * dims.block_size;
        let n = (task.len - t0).min(dims.block_size);
        f(t0, n, block as usize * block_stride + head_off);
    }
}

/// The `n` rows of `d` elements at `base`, `stride` apart in `cache`, as f32: the cache
/// itself (same stride) for f32, otherwise widened into `buf` (stride `d`).
#[inline(always)]
fn block_rows<'a, T: Elem, const FMA: bool>(
    cache: &'a [T],
    (base, n, d, stride): (usize, usize, usize, usize),
    buf: &'a mut Vec<f32>,
) -> (&'a [f32], usize) {
    let span = &cache[base..base + (n - 1) * stride + d];
    if T::DTYPE == candle_core::DType::F32 {
        // For f32, `row_f32` returns its input and ignores the (empty) buffer.
        return (T::row_f32(span, &mut []), stride);
    }
    buf.resize(n * d, 0.0);
    #[cfg(target_arch = "x86_64")]
    if FMA && matches!(T::DTYPE, candle_core::DType::F16 | candle_core::DType::BF16) {
        // SAFETY: `FMA` is only set on the AVX2 + FMA path, which also checked F16C; f16 and
        // bf16 are two-byte values (`u16` bit patterns), and `span` holds `n` rows of `d`
        // elements `stride` apart.
        unsafe {
            let half = std::slice::from_raw_parts(span.as_ptr().cast::<u16>(), span.len());
            simd::widen_rows(
                half,
                T::DTYPE == candle_core::DType::F16,
                (n, d, stride),
                buf,
            );
        }
        return (buf.as_slice(), d);
    }
    for (j, out) in buf.chunks_exact_mut(d).enumerate() {
        let row = &span[j * stride..j * stride + d];
        // Writes into `out` (a no-op copy-back for types that borrow).
        let widened = T::row_f32(row, out);
        debug_assert_eq!(widened.len(), d);
    }
    (buf.as_slice(), d)
}

/// [`attend_group`] compiled with AVX2 and FMA enabled.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_group_avx2_fma<Q: Elem, C: Elem>(
    scratch: &mut Scratch,
    shared: &Shared<'_, C>,
    task: Task<'_>,
    q_rows: &[Q],
    out_rows: &mut [Q],
) {
    attend_group::<Q, C, true>(scratch, shared, task, q_rows, out_rows);
}

/// Attention of `group` query rows (adjacent heads sharing one kv head) over one sequence:
/// two-pass softmax in f32, a cache block (`block_size` positions) at a time. With AVX2 +
/// FMA, scores take four positions at once (independent accumulators, one reduction for
/// the four) and the weighted sum of values keeps up to 64 columns of a head's output in
/// registers over a block's rows. `FMA` selects fused multiply-adds (only where the CPU has
/// them).
#[inline(always)]
fn attend_group<Q: Elem, C: Elem, const FMA: bool>(
    scratch: &mut Scratch,
    shared: &Shared<'_, C>,
    task: Task<'_>,
    q_rows: &[Q],
    out_rows: &mut [Q],
) {
    let Shared { k, v, dims, scale } = *shared;
    let d = dims.head_dim;
    let row_stride = dims.num_kv_heads * d;
    let (len, group) = (task.len, task.group);
    let Scratch {
        q,
        scores,
        acc,
        inv_sums,
        row,
    } = scratch;

    q.clear();
    q.extend(q_rows.iter().map(|x| x.to_f32() * scale));
    scores.clear();
    scores.resize(group * len, 0.0);

    // Pass 1: scores, each block of K rows widened (if needed) once for the whole group.
    for_each_block(task, dims, |t0, n, base| {
        let (rows, stride) = block_rows::<C, FMA>(k, (base, n, d, row_stride), row);
        for (g, q_g) in q.chunks_exact(d).enumerate() {
            let out = &mut scores[g * len + t0..g * len + t0 + n];
            #[cfg(target_arch = "x86_64")]
            if FMA {
                // SAFETY: `FMA` is only set on the AVX2 + FMA path (`attend_group_avx2_fma`);
                // `rows` holds `n` rows of `d` elements `stride` apart (`block_rows`).
                unsafe { simd::scores_block(q_g, rows, stride, out) };
                continue;
            }
            scores_block::<FMA>(q_g, rows, stride, out);
        }
    });

    // Pass 2: max-subtracted exponentials and their sums, per query head.
    // `max` is finite unless the inputs hold inf/NaN, since len >= 1.
    inv_sums.clear();
    inv_sums.resize(group, 0.0);
    for (srow, inv) in scores.chunks_exact_mut(len).zip(inv_sums.iter_mut()) {
        let max = srow.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum = exp_sub_sum::<FMA>(srow, max);
        *inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
    }

    // Pass 3: weighted sum of values, each block of V rows widened once for the group.
    acc.clear();
    acc.resize(group * d, 0.0);
    for_each_block(task, dims, |t0, n, base| {
        let (rows, stride) = block_rows::<C, FMA>(v, (base, n, d, row_stride), row);
        for (g, acc_g) in acc.chunks_exact_mut(d).enumerate() {
            let w = &scores[g * len + t0..g * len + t0 + n];
            #[cfg(target_arch = "x86_64")]
            if FMA {
                // SAFETY: as for `scores_block` above.
                unsafe { simd::weighted_block(w, rows, stride, acc_g) };
                continue;
            }
            weighted_block::<FMA>(w, rows, stride, acc_g);
        }
    });
    for ((out_g, acc_g), &inv) in out_rows
        .chunks_exact_mut(d)
        .zip(acc.chunks_exact(d))
        .zip(inv_sums.iter())
    {
        for (o, &a) in out_g.iter_mut().zip(acc_g) {
            *o = Q::from_f32(a * inv);
        }
    }
}

/// `out[j] = <q, row j>` for the `out.len()` rows of `q.len()` elements, `stride` apart in
/// `rows` (portable version; x86_64 with AVX2 + FMA takes `simd::scores_block`).
#[inline(always)]
fn scores_block<const FMA: bool>(q: &[f32], rows: &[f32], stride: usize, out: &mut [f32]) {
    let d = q.len();
    for (j, o) in out.iter_mut().enumerate() {
        *o = dot::<FMA>(q, &rows[j * stride..j * stride + d]);
    }
}

/// `acc += sum_j w[j] * row j` for the `w.len()` rows of `acc.len()` elements, `stride`
/// apart in `rows` (portable version; see `simd::weighted_block`).
#[inline(always)]
fn weighted_block<const FMA: bool>(w: &[f32], rows: &[f32], stride: usize, acc: &mut [f32]) {
    let d = acc.len();
    for (j, &wj) in w.iter().enumerate() {
        axpy::<FMA>(wj, &rows[j * stride..j * stride + d], acc);
    }
}

/// AVX2 + FMA versions of [`scores_block`] and [`weighted_block`].
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// [`super::scores_block`]: four rows at a time, their four accumulators reduced
    /// together by a tree of horizontal adds.
    ///
    /// # Safety
    /// AVX2 and FMA; `rows` holds `out.len()` rows of `q.len()` elements `stride` apart.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores_block(q: &[f32], rows: &[f32], stride: usize, out: &mut [f32]) {
        let d = q.len();
        let n = out.len();
        debug_assert!(n == 0 || rows.len() >= (n - 1) * stride + d);
        let d8 = d / 8 * 8;
        let (qp, rp) = (q.as_ptr(), rows.as_ptr());
        let mut j = 0;
        while j + 4 <= n {
            let r = [
                rp.add(j * stride),
                rp.add((j + 1) * stride),
                rp.add((j + 2) * stride),
                rp.add((j + 3) * stride),
            ];
            let mut a = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i < d8 {
                let qv = _mm256_loadu_ps(qp.add(i));
                for (acc, row) in a.iter_mut().zip(&r) {
                    *acc = _mm256_fmadd_ps(qv, _mm256_loadu_ps(row.add(i)), *acc);
                }
                i += 8;
            }
            let h = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
            let s4 = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
            let mut s = [0f32; 4];
            _mm_storeu_ps(s.as_mut_ptr(), s4);
            for (k, sk) in s.iter().enumerate() {
                let mut t = *sk;
                for e in d8..d {
                    t += *qp.add(e) * *r[k].add(e);
                }
                out[j + k] = t;
            }
            j += 4;
        }
        while j < n {
            let row = rp.add(j * stride);
            let mut acc = _mm256_setzero_ps();
            let mut i = 0;
            while i < d8 {
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(i)), _mm256_loadu_ps(row.add(i)), acc);
                i += 8;
            }
            let h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
            let h = _mm_hadd_ps(h, h);
            let mut t = _mm_cvtss_f32(_mm_hadd_ps(h, h));
            for e in d8..d {
                t += *qp.add(e) * *row.add(e);
            }
            out[j] = t;
            j += 1;
        }
    }

    /// Widens `n` rows of `d` f16 (`f16`) or bf16 values, `stride` apart in `src` (bit
    /// patterns), into `dst` (`n * d`, rows packed): F16C's conversion or a 16-bit shift.
    ///
    /// # Safety
    /// AVX2 and F16C; `src` holds `n` rows of `d` elements `stride` apart; `dst` `n * d`.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn widen_rows(
        src: &[u16],
        f16: bool,
        (n, d, stride): (usize, usize, usize),
        dst: &mut [f32],
    ) {
        debug_assert!(dst.len() >= n * d && (n == 0 || src.len() >= (n - 1) * stride + d));
        let d8 = d / 8 * 8;
        for j in 0..n {
            let (s, o) = (src.as_ptr().add(j * stride), dst.as_mut_ptr().add(j * d));
            let mut i = 0;
            while i < d8 {
                let h = _mm_loadu_si128(s.add(i).cast());
                let v = if f16 {
                    _mm256_cvtph_ps(h)
                } else {
                    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
                };
                _mm256_storeu_ps(o.add(i), v);
                i += 8;
            }
            for e in d8..d {
                let bits = *s.add(e);
                *o.add(e) = if f16 {
                    half::f16::from_bits(bits).to_f32()
                } else {
                    f32::from_bits(u32::from(bits) << 16)
                };
            }
        }
    }

    /// [`super::weighted_block`]: up to 64 columns of `acc` (eight vectors) stay in
    /// registers over all the rows.
    ///
    /// # Safety
    /// AVX2 and FMA; `rows` holds `w.len()` rows of `acc.len()` elements `stride` apart.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weighted_block(w: &[f32], rows: &[f32], stride: usize, acc: &mut [f32]) {
        let d = acc.len();
        debug_assert!(w.is_empty() || rows.len() >= (w.len() - 1) * stride + d);
        let (rp, ap) = (rows.as_ptr(), acc.as_mut_ptr());
        let mut c = 0;
        while c + 64 <= d {
            let mut a = [_mm256_setzero_ps(); 8];
            for (k, v) in a.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(ap.add(c + 8 * k));
            }
            for (j, &wj) in w.iter().enumerate() {
                let wv = _mm256_set1_ps(wj);
                let row = rp.add(j * stride + c);
                for (k, v) in a.iter_mut().enumerate() {
                    *v = _mm256_fmadd_ps(wv, _mm256_loadu_ps(row.add(8 * k)), *v);
                }
            }
            for (k, v) in a.iter().enumerate() {
                _mm256_storeu_ps(ap.add(c + 8 * k), *v);
            }
            c += 64;
        }
        while c + 8 <= d {
            let mut v = _mm256_loadu_ps(ap.add(c));
            for (j, &wj) in w.iter().enumerate() {
                v = _mm256_fmadd_ps(
                    _mm256_set1_ps(wj),
                    _mm256_loadu_ps(rp.add(j * stride + c)),
                    v,
                );
            }
            _mm256_storeu_ps(ap.add(c), v);
            c += 8;
        }
        for e in c..d {
            let mut t = *ap.add(e);
            for (j, &wj) in w.iter().enumerate() {
                t = wj.mul_add(*rp.add(j * stride + e), t);
            }
            *ap.add(e) = t;
        }
    }
}

/// `row[i] = exp(row[i] - max)` in place; returns the sum. Lane-wise so it vectorises.
#[inline(always)]
fn exp_sub_sum<const FMA: bool>(row: &mut [f32], max: f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = row.chunks_exact_mut(8);
    for c in &mut chunks {
        for (s, l) in c.iter_mut().zip(lanes.iter_mut()) {
            *s = exp_nonpos::<FMA>(*s - max);
            *l += *s;
        }
    }
    let mut tail = 0.0f32;
    for s in chunks.into_remainder() {
        *s = exp_nonpos::<FMA>(*s - max);
        tail += *s;
    }
    lanes.iter().sum::<f32>() + tail
}

/// `exp(x)` for `x <= 0` (softmax after max-subtraction), branch-free so loops over it
/// vectorise. Cody-Waite range reduction `x = n ln2 + r`, `|r| <= ln2 / 2`, and a degree-7
/// Taylor polynomial for `e^r` (relative error ~5e-9, below f32 resolution). Inputs below
/// -87 (including -inf) are clamped to -87, i.e. give ~1.6e-38 instead of 0; NaN maps there too.
#[inline(always)]
fn exp_nonpos<const FMA: bool>(x: f32) -> f32 {
    exp_in_range::<FMA>(x.clamp(-87.0, 0.0))
}

/// `sum(q[i] * k[i])` with 8 independent accumulators so the loop vectorises.
#[inline(always)]
fn dot<const FMA: bool>(q: &[f32], k: &[f32]) -> f32 {
    let qc = q.chunks_exact(8);
    let kc = k.chunks_exact(8);
    let tail: f32 = qc
        .remainder()
        .iter()
        .zip(kc.remainder())
        .map(|(&a, &b)| a * b)
        .sum();
    let mut acc = [0.0f32; 8];
    for (qa, ka) in qc.zip(kc) {
        for ((s, &a), &b) in acc.iter_mut().zip(qa).zip(ka) {
            *s = madd::<FMA>(a, b, *s);
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::exp_nonpos;

    /// Worst relative error of `exp_nonpos::<FMA>` against f64 `exp` on `[-174, 0]`
    /// (inputs below -87 are clamped, so they are compared against `exp(-87)`).
    fn worst_rel_err<const FMA: bool>() -> f64 {
        (0..=200_000)
            .map(|i| {
                let x = -(i as f32) * 8.7e-4;
                let want = f64::from(x.max(-87.0)).exp();
                ((f64::from(exp_nonpos::<FMA>(x)) - want) / want).abs()
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn exp_nonpos_matches_std_exp() {
        // (The FMA variant runs through software `mul_add` here; same math.)
        for worst in [worst_rel_err::<false>(), worst_rel_err::<true>()] {
            assert!(worst < 3e-7, "worst relative error {worst}");
        }
        assert_eq!(exp_nonpos::<false>(0.0), 1.0);
        assert!(exp_nonpos::<false>(f32::NEG_INFINITY) < 1e-37);
    }
}
