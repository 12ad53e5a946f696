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
    let mut out = vec![Q::from_f32(0.0); q.len()];
    if dims.head_dim == 0 || out.is_empty() {
        return Ok(Q::to_cpu_storage_owned(out));
    }
    let group = dims.num_heads / dims.num_kv_heads;
    let d = dims.head_dim;
    let shared = Shared { k, v, dims };
    let isa = Isa::detect();
    let items = tiles(host, num_tokens, dims.num_kv_heads);
    let out_ptr = OutPtr(out.as_mut_ptr());
    // One task per tile of a sequence's tokens and kv head: the `group` query heads sharing
    // that kv head are adjacent in q and in the output, and each cached K/V block is loaded
    // once for all the tile's rows.
    items
        .par_iter()
        .for_each_init(Scratch::default, |scratch, item| {
            let table =
                &host.block_tables[item.seq * host.max_blocks..(item.seq + 1) * host.max_blocks];
            let tile = Tile {
                table,
                first_len: item.pos0 + 1,
                tokens: item.tokens,
                kv_head: item.kv_head,
                group,
            };
            scratch.q.clear();
            for t in item.tok0..item.tok0 + item.tokens {
                let from = (t * dims.num_heads + item.kv_head * group) * d;
                scratch
                    .q
                    .extend(q[from..from + group * d].iter().map(|x| x.to_f32() * scale));
            }
            match isa {
                Isa::Baseline => attend_tile::<C, false>(scratch, &shared, tile),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2Fma => {
                    // SAFETY: `Isa::detect` returned `Avx2Fma` only after checking at runtime
                    // that this CPU supports AVX2 and FMA, the features the callee enables.
                    unsafe { attend_tile_avx2_fma(scratch, &shared, tile) };
                }
            }
            for (i, t) in (item.tok0..item.tok0 + item.tokens).enumerate() {
                let at = (t * dims.num_heads + item.kv_head * group) * d;
                // SAFETY: `out` holds `num_tokens * num_heads * d` values and outlives the loop;
                // rows `at..at + group * d` (token `t`, the heads of `kv_head`) belong to this
                // item alone: items cover distinct (token, kv head) pairs.
                let out_rows = unsafe { std::slice::from_raw_parts_mut(out_ptr.at(at), group * d) };
                let acc = &scratch.acc[i * group * d..(i + 1) * group * d];
                let inv = &scratch.inv_sums[i * group..(i + 1) * group];
                for ((out_g, acc_g), &inv) in out_rows
                    .chunks_exact_mut(d)
                    .zip(acc.chunks_exact(d))
                    .zip(inv)
                {
                    for (o, &a) in out_g.iter_mut().zip(acc_g) {
                        *o = Q::from_f32(a * inv);
                    }
                }
            }
        });
    Ok(Q::to_cpu_storage_owned(out))
}

/// Consecutive tokens of one sequence attended together by one task (see [`tiles`]).
const TILE_TOKENS: usize = 8;

/// One task's work: `tokens` query tokens from batch row `tok0` on, of sequence `seq`, the
/// first at position `pos0`, for the query heads of `kv_head`.
#[derive(Debug, Clone, Copy)]
struct TileItem {
    seq: usize,
    tok0: usize,
    tokens: usize,
    pos0: usize,
    kv_head: usize,
}

/// Each sequence's query tokens in tiles of up to [`TILE_TOKENS`], times the kv heads (decode
/// steps: one token per sequence, so one task per (token, kv head)). Rows past the last
/// sequence (padding) belong to no tile and stay zero.
fn tiles(host: &HostMeta, num_tokens: usize, num_kv_heads: usize) -> Vec<TileItem> {
    let mut items = Vec::new();
    for (seq, w) in host.cu_seqlens_q.windows(2).enumerate() {
        let (lo, hi) = (w[0] as usize, (w[1] as usize).min(num_tokens));
        let ctx = host.context_lens[seq] as usize;
        let qlen = hi.saturating_sub(lo);
        let mut tok0 = lo;
        while tok0 < hi {
            let tokens = TILE_TOKENS.min(hi - tok0);
            for kv_head in 0..num_kv_heads {
                items.push(TileItem {
                    seq,
                    tok0,
                    tokens,
                    pos0: ctx - qlen + (tok0 - lo),
                    kv_head,
                });
            }
            tok0 += tokens;
        }
    }
    items
}

/// The output pointer shared by the tasks, each writing its own rows.
#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T);
// SAFETY: the tasks write disjoint rows of the output (see `run`).
unsafe impl<T> Send for OutPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for OutPtr<T> {}
impl<T> OutPtr<T> {
    fn at(self, offset: usize) -> *mut T {
        self.0.wrapping_add(offset)
    }
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
}

/// Per-thread buffers reused across tasks.
#[derive(Default)]
struct Scratch {
    /// `(rows, head_dim)` scaled queries in f32 (rows: a tile's tokens times its group).
    q: Vec<f32>,
    /// `(rows, len)` scores, then softmax numerators.
    scores: Vec<f32>,
    /// `(rows, head_dim)` output accumulators.
    acc: Vec<f32>,
    /// `(rows,)` reciprocal softmax denominators.
    inv_sums: Vec<f32>,
    /// `(head_dim,)` one K or V row converted to f32 (unused for f32 caches).
    row: Vec<f32>,
}

/// What one task attends over: `tokens` consecutive query tokens of one sequence (through
/// `table`), the first seeing the first `first_len` positions and each next one one more, for
/// the `group` query heads that share `kv_head`.
#[derive(Clone, Copy)]
struct Tile<'a> {
    table: &'a [u32],
    first_len: usize,
    tokens: usize,
    kv_head: usize,
    group: usize,
}

impl Tile<'_> {
    /// Positions the last (longest-seeing) token attends over.
    fn max_len(&self) -> usize {
        self.first_len + self.tokens - 1
    }
}

/// Visits the positions `0..len` block by block: `f(t0, n, base)` for the `n` positions
/// from `t0` on, whose rows start at cache offset `base` and follow at the cache's row
/// stride. Indices were validated by `HostMeta::read_and_validate`.
#[inline(always)]
fn for_each_block(tile: Tile<'_>, dims: Dims, mut f: impl FnMut(usize, usize, usize)) {
    let row_stride = dims.num_kv_heads * dims.head_dim;
    let block_stride = dims.block_size * row_stride;
    let head_off = tile.kv_head * dims.head_dim;
    let len = tile.max_len();
    for (b, &block) in tile
        .table
        .iter()
        .take(len.div_ceil(dims.block_size))
        .enumerate()
    {
        let t0 = b * dims.block_size;
        let n = (len - t0).min(dims.block_size);
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

/// [`attend_tile`] compiled with AVX2 and FMA enabled.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_tile_avx2_fma<C: Elem>(
    scratch: &mut Scratch,
    shared: &Shared<'_, C>,
    tile: Tile<'_>,
) {
    attend_tile::<C, true>(scratch, shared, tile);
}

/// Attention of a tile's query rows (`scratch.q`: for each token, its `group` adjacent heads
/// sharing one kv head, scaled) over its sequence: two-pass softmax in f32, a cache block
/// (`block_size` positions) at a time, each block of K and V rows widened (if needed) once and
/// then used by every row while it is in L1. Leaves each row's unnormalised output in
/// `scratch.acc` and its reciprocal softmax denominator in `scratch.inv_sums`.
///
/// A token's rows are computed exactly as if it were alone in its tile (the same block
/// extents, the same operations in the same order), so results do not depend on how a
/// prompt is split into steps or tiles. With AVX2 + FMA, scores take four positions at once
/// (independent accumulators, one reduction for the four) and the weighted sum of values
/// keeps up to 64 columns of a head's output in registers over a block's rows. `FMA` selects
/// fused multiply-adds (only where the CPU has them).
#[inline(always)]
fn attend_tile<C: Elem, const FMA: bool>(
    scratch: &mut Scratch,
    shared: &Shared<'_, C>,
    tile: Tile<'_>,
) {
    let Shared { k, v, dims, .. } = *shared;
    let d = dims.head_dim;
    let row_stride = dims.num_kv_heads * d;
    let group = tile.group;
    let len = tile.max_len();
    let rows_n = tile.tokens * group;
    let Scratch {
        q,
        scores,
        acc,
        inv_sums,
        row,
    } = scratch;
    debug_assert_eq!(q.len(), rows_n * d);
    // Row `r` (token `r / group`) sees positions `0..len_of(r)`; its scores live at
    // `scores[r * len..]`.
    let len_of = |r: usize| tile.first_len + r / group;
    scores.clear();
    scores.resize(rows_n * len, 0.0);

    // Rows that see `n_r` of the `n` positions of the block from `t0` (zero: none).
    let seen = |r: usize, t0: usize, n: usize| len_of(r).saturating_sub(t0).min(n);

    // A one-token tile (a decode) whose rows take each block in one go reads every cached
    // row once: it reads them where they are, f16 / bf16 widened in registers as loaded
    // (the same values, so the same bits, as widened into `row` first).
    #[cfg(target_arch = "x86_64")]
    let direct = FMA && tile.tokens == 1 && alike_rows(0, rows_n, |_| true) == rows_n;

    // Pass 1: scores, each block of K rows widened (if needed) once for the whole tile and
    // taken by up to three rows at a time where they see the same positions.
    for_each_block(tile, dims, |t0, n, base| {
        #[cfg(target_arch = "x86_64")]
        if direct {
            let span = &k[base..base + (n - 1) * row_stride + d];
            let out = &mut scores[..rows_n * len];
            let cols = t0..t0 + n;
            // SAFETY (all three): `direct` implies `FMA`, set on the AVX2 + FMA (+ F16C) path
            // only; `span` holds the block's `n` rows `row_stride` apart; with one token every
            // row sees all `n` positions, and each output is `n` long.
            match rows_n {
                3 => unsafe {
                    direct_scores(
                        q_rows::<3>(q, 0, d),
                        span,
                        row_stride,
                        rows_mut::<3>(out, len, cols),
                    )
                },
                2 => unsafe {
                    direct_scores(
                        q_rows::<2>(q, 0, d),
                        span,
                        row_stride,
                        rows_mut::<2>(out, len, cols),
                    )
                },
                _ => unsafe {
                    direct_scores(
                        q_rows::<1>(q, 0, d),
                        span,
                        row_stride,
                        rows_mut::<1>(out, len, cols),
                    )
                },
            }
            return;
        }
        let (rows, stride) = block_rows::<C, FMA>(k, (base, n, d, row_stride), row);
        let mut r = 0;
        while r < rows_n {
            let n_r = seen(r, t0, n);
            if n_r == 0 {
                r += 1;
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            if FMA {
                let q_n = alike_rows(r, rows_n, |i| seen(i, t0, n) == n_r);
                let out = &mut scores[r * len..(r + q_n) * len];
                let cols = t0..t0 + n_r;
                // SAFETY (all three): `FMA` is only set on the AVX2 + FMA path
                // (`attend_tile_avx2_fma`); `rows` holds `n >= n_r` rows of `d` elements
                // `stride` apart (`block_rows`); every output is `n_r` long.
                match q_n {
                    3 => unsafe {
                        simd::scores_rows(
                            q_rows::<3>(q, r, d),
                            rows,
                            stride,
                            rows_mut::<3>(out, len, cols),
                        )
                    },
                    2 => unsafe {
                        simd::scores_rows(
                            q_rows::<2>(q, r, d),
                            rows,
                            stride,
                            rows_mut::<2>(out, len, cols),
                        )
                    },
                    _ => unsafe {
                        simd::scores_rows(
                            q_rows::<1>(q, r, d),
                            rows,
                            stride,
                            rows_mut::<1>(out, len, cols),
                        )
                    },
                }
                r += q_n;
                continue;
            }
            let out = &mut scores[r * len + t0..r * len + t0 + n_r];
            scores_block::<FMA>(&q[r * d..(r + 1) * d], rows, stride, out);
            r += 1;
        }
    });

    // Pass 2: max-subtracted exponentials and their sums, per row.
    // `max` is finite unless the inputs hold inf/NaN, since every row sees >= 1 position.
    inv_sums.clear();
    inv_sums.resize(rows_n, 0.0);
    for (r, inv) in inv_sums.iter_mut().enumerate() {
        let srow = &mut scores[r * len..r * len + len_of(r)];
        let max = row_max(srow);
        let sum = exp_sub_sum::<FMA>(srow, max);
        *inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
    }

    // Pass 3: weighted sum of values, each block of V rows widened once for the tile and
    // taken by up to three rows at a time where they see the same positions.
    acc.clear();
    acc.resize(rows_n * d, 0.0);
    for_each_block(tile, dims, |t0, n, base| {
        #[cfg(target_arch = "x86_64")]
        if direct {
            let span = &v[base..base + (n - 1) * row_stride + d];
            let w = |i: usize| &scores[i * len + t0..i * len + t0 + n];
            let out = &mut acc[..rows_n * d];
            // SAFETY (all three): as for the scores; every accumulator is `d` long and every
            // row of weights `n` long.
            match rows_n {
                3 => unsafe {
                    direct_weighted(
                        std::array::from_fn::<_, 3, _>(w),
                        span,
                        row_stride,
                        rows_mut::<3>(out, d, 0..d),
                    )
                },
                2 => unsafe {
                    direct_weighted(
                        std::array::from_fn::<_, 2, _>(w),
                        span,
                        row_stride,
                        rows_mut::<2>(out, d, 0..d),
                    )
                },
                _ => unsafe {
                    direct_weighted(
                        std::array::from_fn::<_, 1, _>(w),
                        span,
                        row_stride,
                        rows_mut::<1>(out, d, 0..d),
                    )
                },
            }
            return;
        }
        let (rows, stride) = block_rows::<C, FMA>(v, (base, n, d, row_stride), row);
        let mut r = 0;
        while r < rows_n {
            let n_r = seen(r, t0, n);
            if n_r == 0 {
                r += 1;
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            if FMA {
                let q_n = alike_rows(r, rows_n, |i| seen(i, t0, n) == n_r);
                let out = &mut acc[r * d..(r + q_n) * d];
                let w = |i: usize| &scores[(r + i) * len + t0..(r + i) * len + t0 + n_r];
                // SAFETY (all three): as for the scores above; every accumulator is `d` long
                // and every row of weights `n_r` long.
                match q_n {
                    3 => unsafe {
                        simd::weighted_rows(
                            std::array::from_fn::<_, 3, _>(w),
                            rows,
                            stride,
                            rows_mut::<3>(out, d, 0..d),
                        )
                    },
                    2 => unsafe {
                        simd::weighted_rows(
                            std::array::from_fn::<_, 2, _>(w),
                            rows,
                            stride,
                            rows_mut::<2>(out, d, 0..d),
                        )
                    },
                    _ => unsafe {
                        simd::weighted_rows(
                            std::array::from_fn::<_, 1, _>(w),
                            rows,
                            stride,
                            rows_mut::<1>(out, d, 0..d),
                        )
                    },
                }
                r += q_n;
                continue;
            }
            let w0 = &scores[r * len + t0..r * len + t0 + n_r];
            weighted_block::<FMA>(w0, rows, stride, &mut acc[r * d..(r + 1) * d]);
            r += 1;
        }
    });
}

/// `span` (cached rows of type `C`) as the same values typed as `S`.
///
/// # Safety
/// `S` must be the type `C` is (callers match on `C::DTYPE`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn same_type<C: Elem, S>(span: &[C]) -> &[S] {
    debug_assert_eq!(std::mem::size_of::<C>(), std::mem::size_of::<S>());
    std::slice::from_raw_parts(span.as_ptr().cast::<S>(), span.len())
}

/// [`simd::scores_rows`] over cached rows read where they are (any cache type).
///
/// # Safety
/// As [`simd::scores_rows`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn direct_scores<C: Elem, const Q: usize>(
    q: [&[f32]; Q],
    span: &[C],
    stride: usize,
    out: [&mut [f32]; Q],
) {
    match C::DTYPE {
        candle_core::DType::F16 => simd::scores_rows(q, same_type::<C, f16>(span), stride, out),
        candle_core::DType::BF16 => simd::scores_rows(q, same_type::<C, bf16>(span), stride, out),
        _ => simd::scores_rows(q, same_type::<C, f32>(span), stride, out),
    }
}

/// [`simd::weighted_rows`] over cached rows read where they are (any cache type).
///
/// # Safety
/// As [`simd::weighted_rows`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn direct_weighted<C: Elem, const Q: usize>(
    w: [&[f32]; Q],
    span: &[C],
    stride: usize,
    acc: [&mut [f32]; Q],
) {
    match C::DTYPE {
        candle_core::DType::F16 => simd::weighted_rows(w, same_type::<C, f16>(span), stride, acc),
        candle_core::DType::BF16 => simd::weighted_rows(w, same_type::<C, bf16>(span), stride, acc),
        _ => simd::weighted_rows(w, same_type::<C, f32>(span), stride, acc),
    }
}

/// How many rows from `r` on (at most [`MAX_ROWS_TOGETHER`], at most up to `rows_n`) a block
/// can take together: `r` and the following ones for which `alike` holds.
#[inline(always)]
fn alike_rows(r: usize, rows_n: usize, alike: impl Fn(usize) -> bool) -> usize {
    let max = MAX_ROWS_TOGETHER.load(std::sync::atomic::Ordering::Relaxed);
    let mut q_n = 1;
    while q_n < max && r + q_n < rows_n && alike(r + q_n) {
        q_n += 1;
    }
    q_n
}

/// Query rows a block is taken by at once (3: a GQA group of three, e.g. SmolLM2's, in one
/// go; 2 for A/B benchmarks).
static MAX_ROWS_TOGETHER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(3);

/// Sets how many query rows a cached block is taken by at once (1-3; benchmarks only).
#[doc(hidden)]
pub fn set_attention_rows_together(rows: usize) {
    MAX_ROWS_TOGETHER.store(rows.clamp(1, 3), std::sync::atomic::Ordering::Relaxed);
}

/// Rows `r..r + Q` of `q` (rows of `d`).
#[inline(always)]
fn q_rows<const Q: usize>(q: &[f32], r: usize, d: usize) -> [&[f32]; Q] {
    std::array::from_fn(|i| &q[(r + i) * d..(r + i + 1) * d])
}

/// The columns `cols` of each of the first `Q` rows of `len` values in `buf`, as disjoint
/// mutable slices.
#[inline(always)]
fn rows_mut<const Q: usize>(
    buf: &mut [f32],
    len: usize,
    cols: std::ops::Range<usize>,
) -> [&mut [f32]; Q] {
    let mut rest = buf;
    std::array::from_fn(|_| {
        let (row, tail) = std::mem::take(&mut rest).split_at_mut(len);
        rest = tail;
        &mut row[cols.clone()]
    })
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
    use half::{bf16, f16};
    use std::arch::x86_64::*;

    /// An element type the cached rows are read in: f32 as is, f16 / bf16 widened in
    /// registers as they are loaded (exactly, so a row gives the same f32 values either way).
    pub(super) trait Src: Copy {
        /// Eight values from `p` as f32.
        ///
        /// # Safety
        /// AVX2 and F16C; `p` points at eight readable values.
        unsafe fn load8(p: *const Self) -> __m256;
        /// One value as f32.
        fn get(self) -> f32;
    }

    impl Src for f32 {
        #[inline(always)]
        unsafe fn load8(p: *const Self) -> __m256 {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        fn get(self) -> f32 {
            self
        }
    }

    impl Src for f16 {
        #[inline(always)]
        unsafe fn load8(p: *const Self) -> __m256 {
            _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
        }
        #[inline(always)]
        fn get(self) -> f32 {
            self.to_f32()
        }
    }

    impl Src for bf16 {
        #[inline(always)]
        unsafe fn load8(p: *const Self) -> __m256 {
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
                _mm_loadu_si128(p.cast()),
            )))
        }
        #[inline(always)]
        fn get(self) -> f32 {
            f32::from_bits(u32::from(self.to_bits()) << 16)
        }
    }

    /// The four scores of one query row's accumulators over four K rows: a tree of
    /// horizontal adds (the reduction every score of a whole group of four takes).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn reduce4(a: [__m256; 4]) -> [f32; 4] {
        let h = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
        let s4 = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
        let mut s = [0f32; 4];
        _mm_storeu_ps(s.as_mut_ptr(), s4);
        s
    }

    /// One score outside a whole group of four: eight lanes, then a horizontal sum, then
    /// the `d % 8` tail.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn score1<S: Src>(qp: *const f32, row: *const S, d: usize) -> f32 {
        let d8 = d / 8 * 8;
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i < d8 {
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(i)), S::load8(row.add(i)), acc);
            i += 8;
        }
        let h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
        let h = _mm_hadd_ps(h, h);
        let mut t = _mm_cvtss_f32(_mm_hadd_ps(h, h));
        for e in d8..d {
            t += *qp.add(e) * (*row.add(e)).get();
        }
        t
    }

    /// [`super::scores_block`] for `Q` query rows (one to three) against the same `n` K rows:
    /// four K rows at a time, each loaded once for the `Q` rows, each score reduced by
    /// [`reduce4`] (or [`score1`] for the last `n % 4`), so every score has the same bits
    /// whatever `Q` is.
    ///
    /// # Safety
    /// AVX2, FMA and F16C; `rows` holds `n` rows of `d` elements `stride` apart, where `n` is the
    /// length of every `out[r]` and `d` of every `q[r]`.
    // Indices over the small register arrays read more plainly than zipped iterators.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn scores_rows<const Q: usize, S: Src>(
        q: [&[f32]; Q],
        rows: &[S],
        stride: usize,
        out: [&mut [f32]; Q],
    ) {
        let d = q[0].len();
        let n = out[0].len();
        debug_assert!(q.iter().all(|x| x.len() == d) && out.iter().all(|o| o.len() == n));
        debug_assert!(n == 0 || rows.len() >= (n - 1) * stride + d);
        let d8 = d / 8 * 8;
        let rp = rows.as_ptr();
        let qp: [*const f32; Q] = std::array::from_fn(|r| q[r].as_ptr());
        let op: [*mut f32; Q] = {
            let mut out = out;
            std::array::from_fn(|r| out[r].as_mut_ptr())
        };
        let mut j = 0;
        while j + 4 <= n {
            let kr = [
                rp.add(j * stride),
                rp.add((j + 1) * stride),
                rp.add((j + 2) * stride),
                rp.add((j + 3) * stride),
            ];
            let mut a = [[_mm256_setzero_ps(); 4]; Q];
            let mut i = 0;
            while i < d8 {
                let qv: [__m256; Q] = std::array::from_fn(|r| _mm256_loadu_ps(qp[r].add(i)));
                for (c, row) in kr.iter().enumerate() {
                    let kv = S::load8(row.add(i));
                    for r in 0..Q {
                        a[r][c] = _mm256_fmadd_ps(qv[r], kv, a[r][c]);
                    }
                }
                i += 8;
            }
            for r in 0..Q {
                let s = reduce4(a[r]);
                for (c, sc) in s.iter().enumerate() {
                    let mut t = *sc;
                    for e in d8..d {
                        t += *qp[r].add(e) * (*kr[c].add(e)).get();
                    }
                    *op[r].add(j + c) = t;
                }
            }
            j += 4;
        }
        while j < n {
            for r in 0..Q {
                *op[r].add(j) = score1(qp[r], rp.add(j * stride), d);
            }
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

    /// [`super::weighted_block`] for `Q` rows of weights (one to three) over the same V rows:
    /// `acc[r] += sum_j w[r][j] * row j`, 64 columns (one row) or 32 (more) of every `acc[r]` in
    /// registers over all the rows, each V vector loaded once for the `Q` rows. Every
    /// element is the same chain of fused multiply-adds in `j` order whatever `Q` is.
    ///
    /// # Safety
    /// AVX2, FMA and F16C; `rows` holds `n` rows of `d` elements `stride` apart, where `n` is the
    /// length of every `w[r]` and `d` of every `acc[r]`.
    // Indices over the small register arrays read more plainly than zipped iterators.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn weighted_rows<const Q: usize, S: Src>(
        w: [&[f32]; Q],
        rows: &[S],
        stride: usize,
        acc: [&mut [f32]; Q],
    ) {
        let d = acc[0].len();
        let n = w[0].len();
        debug_assert!(w.iter().all(|x| x.len() == n) && acc.iter().all(|a| a.len() == d));
        debug_assert!(n == 0 || rows.len() >= (n - 1) * stride + d);
        let rp = rows.as_ptr();
        let ap: [*mut f32; Q] = {
            let mut acc = acc;
            std::array::from_fn(|r| acc[r].as_mut_ptr())
        };
        // Columns per register block: eight vectors for one row, four per row for more (up
        // to twelve accumulators).
        const MAX_VECS: usize = 8;
        let per_row = if Q == 1 { MAX_VECS } else { 4 };
        let width = per_row * 8;
        let mut c = 0;
        while c + width <= d {
            let mut a = [[_mm256_setzero_ps(); MAX_VECS]; Q];
            for r in 0..Q {
                for k in 0..per_row {
                    a[r][k] = _mm256_loadu_ps(ap[r].add(c + 8 * k));
                }
            }
            for j in 0..n {
                let wv: [__m256; Q] = std::array::from_fn(|r| _mm256_set1_ps(w[r][j]));
                let row = rp.add(j * stride + c);
                for k in 0..per_row {
                    let v = S::load8(row.add(8 * k));
                    for r in 0..Q {
                        a[r][k] = _mm256_fmadd_ps(wv[r], v, a[r][k]);
                    }
                }
            }
            for r in 0..Q {
                for k in 0..per_row {
                    _mm256_storeu_ps(ap[r].add(c + 8 * k), a[r][k]);
                }
            }
            c += width;
        }
        while c + 8 <= d {
            for r in 0..Q {
                let mut v = _mm256_loadu_ps(ap[r].add(c));
                for (j, &wj) in w[r].iter().enumerate() {
                    v = _mm256_fmadd_ps(_mm256_set1_ps(wj), S::load8(rp.add(j * stride + c)), v);
                }
                _mm256_storeu_ps(ap[r].add(c), v);
            }
            c += 8;
        }
        for e in c..d {
            for r in 0..Q {
                let mut t = *ap[r].add(e);
                for (j, &wj) in w[r].iter().enumerate() {
                    t = wj.mul_add((*rp.add(j * stride + e)).get(), t);
                }
                *ap[r].add(e) = t;
            }
        }
    }
}

/// The largest value of `row` (NaNs ignored, as `f32::max` does), eight lanes at a time so
/// the loop vectorises.
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = l.max(v);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    lanes.iter().copied().fold(tail, f32::max)
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
