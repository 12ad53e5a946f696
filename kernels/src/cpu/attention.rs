//! CPU paged attention: one rayon task per (token, head), two-pass softmax in f32.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result, Shape};
use half::{bf16, f16};
use rayon::prelude::*;

use super::{contiguous_window, Elem};
use crate::metadata::{AttnDims, HostMeta, PagedAttnMetadata};

/// Problem sizes shared by every (token, head) task.
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
    out.par_chunks_mut(dims.head_dim).enumerate().for_each_init(
        Scratch::default,
        |scratch, (idx, out_row)| {
            let token = idx / dims.num_heads;
            let head = idx % dims.num_heads;
            let Some((seq, pos)) = positions[token] else {
                return; // padding row: stays zero
            };
            let table = &host.block_tables[seq * host.max_blocks..(seq + 1) * host.max_blocks];
            let q_row = &q[idx * dims.head_dim..(idx + 1) * dims.head_dim];
            attend_one(
                scratch,
                q_row,
                k,
                v,
                table,
                pos + 1,
                head / group,
                dims,
                scale,
                out_row,
            );
        },
    );
    Ok(T::to_cpu_storage_owned(out))
}

/// Per-thread buffers reused across tasks.
#[derive(Default)]
struct Scratch {
    q: Vec<f32>,
    scores: Vec<f32>,
    acc: Vec<f32>,
}

/// Attention of one query row (one head) over the first `len` positions of a sequence.
/// Indices were validated by `HostMeta::read_and_validate`.
#[allow(clippy::too_many_arguments)]
#[inline]
fn attend_one<T: Elem>(
    scratch: &mut Scratch,
    q_row: &[T],
    k: &[T],
    v: &[T],
    table: &[u32],
    len: usize,
    kv_head: usize,
    dims: Dims,
    scale: f32,
    out_row: &mut [T],
) {
    let d = dims.head_dim;
    let row_stride = dims.num_kv_heads * d;
    let block_stride = dims.block_size * row_stride;
    let head_off = kv_head * d;
    let num_used_blocks = len.div_ceil(dims.block_size);

    scratch.q.clear();
    scratch.q.extend(q_row.iter().map(|x| x.to_f32() * scale));
    scratch.scores.clear();

    // Pass 1: scores and their max.
    let mut max = f32::NEG_INFINITY;
    for (b, &block) in table.iter().take(num_used_blocks).enumerate() {
        let in_block = (len - b * dims.block_size).min(dims.block_size);
        let base = block as usize * block_stride + head_off;
        for o in 0..in_block {
            let off = base + o * row_stride;
            let s = dot(&scratch.q, &k[off..off + d]);
            max = max.max(s);
            scratch.scores.push(s);
        }
    }

    // Pass 2: exponentiate and normalise.
    let mut sum = 0.0f32;
    for s in scratch.scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    let inv_sum = if sum > 0.0 { 1.0 / sum } else { 0.0 };

    // Pass 3: weighted sum of values.
    scratch.acc.clear();
    scratch.acc.resize(d, 0.0);
    let mut t = 0;
    for (b, &block) in table.iter().take(num_used_blocks).enumerate() {
        let in_block = (len - b * dims.block_size).min(dims.block_size);
        let base = block as usize * block_stride + head_off;
        for o in 0..in_block {
            let off = base + o * row_stride;
            axpy(scratch.scores[t], &v[off..off + d], &mut scratch.acc);
            t += 1;
        }
    }
    for (o, &a) in out_row.iter_mut().zip(&scratch.acc) {
        *o = T::from_f32(a * inv_sum);
    }
}

/// `sum(q[i] * k[i])` with 8 independent accumulators so the loop vectorises.
#[inline(always)]
fn dot<T: Elem>(q: &[f32], k: &[T]) -> f32 {
    let qc = q.chunks_exact(8);
    let kc = k.chunks_exact(8);
    let tail: f32 = qc
        .remainder()
        .iter()
        .zip(kc.remainder())
        .map(|(&a, &b)| a * b.to_f32())
        .sum();
    let mut acc = [0.0f32; 8];
    for (qa, ka) in qc.zip(kc) {
        for ((s, &a), &b) in acc.iter_mut().zip(qa).zip(ka) {
            *s += a * b.to_f32();
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `acc[i] += w * v[i]`.
#[inline(always)]
fn axpy<T: Elem>(w: f32, v: &[T], acc: &mut [f32]) {
    for (a, &x) in acc.iter_mut().zip(v) {
        *a += w * x.to_f32();
    }
}
