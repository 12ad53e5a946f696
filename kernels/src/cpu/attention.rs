//! CPU paged attention: one rayon task per (token, kv head) covering that kv head's GQA
//! group of query heads; two-pass softmax in f32 (scores, max-subtracted exp, weighted V).
//! The inner loops are plain f32 slice code that auto-vectorises; on x86_64 CPUs with AVX2
//! and FMA (detected at runtime) the same code is compiled a second time with those enabled.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result, Shape};
use half::{bf16, f16};
use rayon::prelude::*;

use super::{axpy, contiguous_window, madd, Elem};
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
    let storage = match q {
        CpuStorage::F32(_) => run::<f32>((q, q_l), (k, k_l), (v, v_l), &host, dims, softmax_scale)?,
        CpuStorage::F16(_) => run::<f16>((q, q_l), (k, k_l), (v, v_l), &host, dims, softmax_scale)?,
        CpuStorage::BF16(_) => {
            run::<bf16>((q, q_l), (k, k_l), (v, v_l), &host, dims, softmax_scale)?
        }
        other => bail!(
            "paged_attention: q dtype {:?} is not supported (f32, f16, bf16)",
            other.dtype()
        ),
    };
    Ok((storage, shape))
}

fn run<T: Elem>(
    (q, q_l): (&CpuStorage, &Layout),
    (k, k_l): (&CpuStorage, &Layout),
    (v, v_l): (&CpuStorage, &Layout),
    host: &HostMeta,
    dims: Dims,
    scale: f32,
) -> Result<CpuStorage> {
    let q = contiguous_window(q.as_slice::<T>()?, q_l, "paged_attention: q")?;
    let k = contiguous_window(k.as_slice::<T>()?, k_l, "paged_attention: k_cache")?;
    let v = contiguous_window(v.as_slice::<T>()?, v_l, "paged_attention: v_cache")?;
    let num_tokens = q_l.dims()[0];
    let positions = host.token_positions(num_tokens);
    let mut out = vec![T::from_f32(0.0); q.len()];
    if dims.head_dim == 0 || out.is_empty() {
        return Ok(T::to_cpu_storage_owned(out));
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
                    attend_group::<T, false>(scratch, &shared, task, q_rows, out_rows);
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
    Ok(T::to_cpu_storage_owned(out))
}

/// Instruction sets the kernel is compiled for; picked once per call at runtime.
#[derive(Debug, Clone, Copy)]
enum Isa {
    /// Whatever the build target guarantees (SSE2 on x86_64).
    Baseline,
    /// AVX2 + FMA (x86_64 only): 8-wide vectors and fused multiply-add.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
}

impl Isa {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Isa::Avx2Fma;
        }
        Isa::Baseline
    }
}

/// Read-only inputs shared by every task.
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

/// Visits the cache offsets of positions `0..len` in order (block by block).
/// Indices were validated by `HostMeta::read_and_validate`.
#[inline(always)]
fn for_each_position(task: Task<'_>, dims: Dims, mut f: impl FnMut(usize, usize)) {
    let row_stride = dims.num_kv_heads * dims.head_dim;
    let block_stride = dims.block_size * row_stride;
    let head_off = task.kv_head * dims.head_dim;
    let mut t = 0;
    for (b, &block) in task
        .table
        .iter()
        .take(task.len.div_ceil(dims.block_size))
        .enumerate()
    {
        let in_block = (task.len - b * dims.block_size).min(dims.block_size);
        let base = block as usize * block_stride + head_off;
        for o in 0..in_block {
            f(t, base + o * row_stride);
            t += 1;
        }
    }
}

/// [`attend_group`] compiled with AVX2 and FMA enabled.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_group_avx2_fma<T: Elem>(
    scratch: &mut Scratch,
    shared: &Shared<'_, T>,
    task: Task<'_>,
    q_rows: &[T],
    out_rows: &mut [T],
) {
    attend_group::<T, true>(scratch, shared, task, q_rows, out_rows);
}

/// Attention of `group` query rows (adjacent heads sharing one kv head) over one sequence:
/// two-pass softmax in f32. `FMA` selects fused multiply-adds (only where the CPU has them).
#[inline(always)]
fn attend_group<T: Elem, const FMA: bool>(
    scratch: &mut Scratch,
    shared: &Shared<'_, T>,
    task: Task<'_>,
    q_rows: &[T],
    out_rows: &mut [T],
) {
    let Shared { k, v, dims, scale } = *shared;
    let d = dims.head_dim;
    let (len, group) = (task.len, task.group);
    let Scratch {
        q,
        scores,
        acc,
        inv_sums,
        row,
    } = scratch;
    row.resize(d, 0.0);

    q.clear();
    q.extend(q_rows.iter().map(|x| x.to_f32() * scale));
    scores.clear();
    scores.resize(group * len, 0.0);

    // Pass 1: scores, each K row read once for the whole group.
    for_each_position(task, dims, |t, off| {
        let k_row = T::row_f32(&k[off..off + d], row);
        for (g, q_g) in q.chunks_exact(d).enumerate() {
            scores[g * len + t] = dot::<FMA>(q_g, k_row);
        }
    });

    // Pass 2: max-subtracted exponentials and their sums, per query head.
    // `max` is finite unless the inputs hold inf/NaN, since len >= 1.
    inv_sums.clear();
    inv_sums.resize(group, 0.0);
    for (row, inv) in scores.chunks_exact_mut(len).zip(inv_sums.iter_mut()) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum = exp_sub_sum::<FMA>(row, max);
        *inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
    }

    // Pass 3: weighted sum of values, each V row read once for the whole group.
    acc.clear();
    acc.resize(group * d, 0.0);
    for_each_position(task, dims, |t, off| {
        let v_row = T::row_f32(&v[off..off + d], row);
        for (g, acc_g) in acc.chunks_exact_mut(d).enumerate() {
            axpy::<FMA>(scores[g * len + t], v_row, acc_g);
        }
    });
    for ((out_g, acc_g), &inv) in out_rows
        .chunks_exact_mut(d)
        .zip(acc.chunks_exact(d))
        .zip(inv_sums.iter())
    {
        for (o, &a) in out_g.iter_mut().zip(acc_g) {
            *o = T::from_f32(a * inv);
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
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 0.0);
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
