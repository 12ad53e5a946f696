//! CUDA paged attention (`cuda/attention.cu`): a warp-per-row kernel with split-K for decode
//! rows, a shared-memory tile kernel for prefill chunks, and the split-K reduce.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaStorage, DType, Layout, Result, Shape};
use half::{bf16, f16};

use super::{
    contiguous_view, kernel, kernel_smem, num_sms, to_i32, to_u32, wrap, Held, KernelFloat, Module,
};
use crate::metadata::PagedAttnMetadata;

/// Sequences with at most this many query rows in the step go through the per-row kernel
/// (with split-K); longer ones (prefill chunks) through the tile kernel.
const ROWS_MAX_QLEN: usize = 8;
/// Query vectors (positions x GQA heads) per tile-kernel block; must match `TILE_R`.
const TILE_R: usize = 32;
/// Keys per shared-memory tile; must match `TILE_K`.
const TILE_K: usize = 32;
/// Largest head_dim the kernels support (register tiles are sized for it).
const MAX_HEAD_DIM: usize = 256;
/// Fewest keys a split covers.
const MIN_KEYS_PER_SPLIT: usize = 32;
const MAX_SPLITS: usize = 64;
/// Default target of row-kernel warps per multiprocessor when choosing the split count. The
/// row kernel holds ~150 registers per thread (bf16, 4 query heads per kv head), so about 13
/// warps fit on an SM at once; a few waves of them hide memory latency. Override with
/// `LANTERN_ATTN_SPLIT_WARPS` (read once) to sweep it.
const DEFAULT_SPLIT_WARPS_PER_SM: usize = 48;

fn split_warps_per_sm() -> usize {
    static V: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *V.get_or_init(|| {
        std::env::var("LANTERN_ATTN_SPLIT_WARPS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&v| v > 0)
            .unwrap_or(DEFAULT_SPLIT_WARPS_PER_SM)
    })
}

/// Mirrors `AttnParams` in cuda/attention.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct AttnParams {
    num_tokens: i32,
    num_seqs: i32,
    num_heads: i32,
    num_kv_heads: i32,
    head_dim: i32,
    block_size: i32,
    max_blocks: i32,
    group: i32,
    heads_per_chunk: i32,
    num_chunks: i32,
    num_splits: i32,
    rows_max_qlen: i32,
    num_blocks: i32,
    scale: f32,
}

// SAFETY: plain `#[repr(C)]` data with the layout of the CUDA struct (13 ints and a float).
unsafe impl DeviceRepr for AttnParams {}

fn tile_smem_bytes(d: usize) -> usize {
    4 * (TILE_R * d + TILE_K * (d + 1) + TILE_K * d + TILE_R * TILE_K + 3 * TILE_R)
}

pub(crate) fn paged_attention_cuda(
    (q, q_l): (&CudaStorage, &Layout),
    (k, k_l): (&CudaStorage, &Layout),
    (v, v_l): (&CudaStorage, &Layout),
    meta: &PagedAttnMetadata,
    softmax_scale: f32,
) -> Result<(CudaStorage, Shape)> {
    let storage = match q.dtype() {
        DType::F32 => run::<f32>((q, q_l), (k, k_l), (v, v_l), meta, softmax_scale)?,
        DType::F16 => run::<f16>((q, q_l), (k, k_l), (v, v_l), meta, softmax_scale)?,
        DType::BF16 => run::<bf16>((q, q_l), (k, k_l), (v, v_l), meta, softmax_scale)?,
        other => bail!("paged_attention: q dtype {other:?} is not supported (f32, f16, bf16)"),
    };
    Ok((storage, q_l.shape().clone()))
}

fn run<T: KernelFloat>(
    (q, q_l): (&CudaStorage, &Layout),
    (k, k_l): (&CudaStorage, &Layout),
    (v, v_l): (&CudaStorage, &Layout),
    meta: &PagedAttnMetadata,
    scale: f32,
) -> Result<CudaStorage> {
    const OP: &str = "paged_attention";
    let &[num_tokens, num_heads, head_dim] = q_l.dims() else {
        bail!("{OP}: q must be 3-D, got shape {:?}", q_l.shape());
    };
    let &[num_blocks, block_size, num_kv_heads, cache_dim] = k_l.dims() else {
        bail!("{OP}: k_cache must be 4-D, got shape {:?}", k_l.shape());
    };
    if v_l.dims() != k_l.dims() || cache_dim != head_dim {
        bail!(
            "{OP}: inconsistent shapes q {:?}, k_cache {:?}, v_cache {:?}",
            q_l.shape(),
            k_l.shape(),
            v_l.shape()
        );
    }
    if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
        bail!("{OP}: num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}");
    }
    if head_dim == 0 || head_dim > MAX_HEAD_DIM {
        bail!("{OP}: head_dim = {head_dim} is not supported on CUDA (1..={MAX_HEAD_DIM})");
    }
    let group = num_heads / num_kv_heads;
    if group > TILE_R {
        bail!("{OP}: {group} query heads per kv head is not supported on CUDA (at most {TILE_R})");
    }
    let (num_seqs, max_blocks) =
        meta.check_attention_shapes(&candle_core::Device::Cuda(q.device().clone()))?;
    let dev = q.device().clone();
    let n_out = num_tokens * num_heads * head_dim;
    // SAFETY: every (row, head) of `out` is written exactly once below: rows of sequences with
    // query_len <= ROWS_MAX_QLEN and padding rows (as zeros) by the row kernel (directly or
    // through the split-K reduce), rows of longer sequences by the tile kernel.
    let mut out = unsafe { dev.alloc::<T>(n_out.max(1)) }?;
    if n_out == 0 {
        return Ok(wrap(out, &dev));
    }

    let q_v = contiguous_view::<T>(q, q_l, "paged_attention: q")?;
    let k_v = contiguous_view::<T>(k, k_l, "paged_attention: k_cache")?;
    let v_v = contiguous_view::<T>(v, v_l, "paged_attention: v_cache")?;
    let tables = Held::new(&meta.block_tables, "meta.block_tables");
    let cu = Held::new(&meta.cu_seqlens_q, "meta.cu_seqlens_q");
    let ctx = Held::new(&meta.context_lens, "meta.context_lens");
    let (tables_v, cu_v, ctx_v) = (tables.view::<u32>()?, cu.view::<u32>()?, ctx.view::<u32>()?);

    // GQA: each warp of the row kernel covers up to 8 query heads of one kv head.
    let num_chunks = group.div_ceil(8);
    let heads_per_chunk = group.div_ceil(num_chunks);
    let gmax = heads_per_chunk.next_power_of_two();
    // Split-K: enough warps to fill the GPU, each split covering >= MIN_KEYS_PER_SPLIT keys.
    let units = num_tokens * num_kv_heads * num_chunks;
    let target = num_sms(&dev) * split_warps_per_sm();
    let max_splits = (meta.max_context_len / MIN_KEYS_PER_SPLIT).clamp(1, MAX_SPLITS);
    let num_splits = (target / units.max(1)).clamp(1, max_splits);

    let vec = T::VEC;
    let aligned = q_l.start_offset() % vec == 0
        && k_l.start_offset() % vec == 0
        && v_l.start_offset() % vec == 0
        && head_dim % vec == 0;
    let rows_vec = aligned && head_dim / vec <= 32;
    let params = AttnParams {
        num_tokens: to_i32(num_tokens, "num_tokens")?,
        num_seqs: to_i32(num_seqs, "num_seqs")?,
        num_heads: to_i32(num_heads, "num_heads")?,
        num_kv_heads: to_i32(num_kv_heads, "num_kv_heads")?,
        head_dim: to_i32(head_dim, "head_dim")?,
        block_size: to_i32(block_size, "block_size")?,
        max_blocks: to_i32(max_blocks, "max_blocks_per_seq")?,
        group: to_i32(group, "group")?,
        heads_per_chunk: to_i32(heads_per_chunk, "heads_per_chunk")?,
        num_chunks: to_i32(num_chunks, "num_chunks")?,
        num_splits: to_i32(num_splits, "num_splits")?,
        rows_max_qlen: to_i32(ROWS_MAX_QLEN, "rows_max_qlen")?,
        num_blocks: to_i32(num_blocks, "num_blocks")?,
        scale,
    };
    let stream = dev.cuda_stream();

    // 1. Row kernel (decode rows and padding rows), split-K partials when num_splits > 1.
    let parts = if num_splits > 1 {
        num_tokens * num_heads * num_splits
    } else {
        1
    };
    // SAFETY: scratch buffers, fully written by the row kernel before the reduce reads them
    // (the reduce reads exactly the (row, head, split) entries the row kernel writes).
    let mut part_acc =
        unsafe { dev.alloc::<f32>(parts * if num_splits > 1 { head_dim } else { 1 }) }?;
    // SAFETY: as above.
    let mut part_ml = unsafe { dev.alloc::<f32>(parts * 2) }?;
    {
        let name = match (rows_vec, gmax) {
            (true, 1) => "attn_rows_vec_g1",
            (true, 2) => "attn_rows_vec_g2",
            (true, 4) => "attn_rows_vec_g4",
            (true, _) => "attn_rows_vec_g8",
            (false, 1) => "attn_rows_scalar_g1",
            (false, 2) => "attn_rows_scalar_g2",
            (false, 4) => "attn_rows_scalar_g4",
            (false, _) => "attn_rows_scalar_g8",
        };
        let f = kernel::<T>(&dev, Module::Attention, name)?;
        let cfg = LaunchConfig {
            grid_dim: (
                to_u32(units.div_ceil(4), "row-kernel grid")?,
                to_u32(num_splits, "num_splits")?,
                1,
            ),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = stream.launch_builder(&f);
        b.arg(&mut out)
            .arg(&mut part_acc)
            .arg(&mut part_ml)
            .arg(&q_v)
            .arg(&k_v)
            .arg(&v_v)
            .arg(&tables_v)
            .arg(&cu_v)
            .arg(&ctx_v)
            .arg(&params);
        // SAFETY: arguments match `attn_rows_*` in cuda/attention.cu; q/out hold num_tokens
        // rows of num_heads * head_dim, the caches num_blocks blocks (block ids are checked in
        // the kernel), the metadata has the shapes checked above, and the partial buffers hold
        // num_tokens * num_heads * num_splits entries when num_splits > 1.
        unsafe { b.launch(cfg) }.w()?;
    }
    // 2. Split-K reduce.
    if num_splits > 1 {
        let f = kernel::<T>(&dev, Module::Attention, "attn_reduce")?;
        let cfg = LaunchConfig {
            grid_dim: (to_u32(num_tokens * num_heads, "reduce grid")?, 1, 1),
            block_dim: (head_dim.next_multiple_of(32).min(128) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = stream.launch_builder(&f);
        b.arg(&mut out)
            .arg(&part_acc)
            .arg(&part_ml)
            .arg(&cu_v)
            .arg(&params);
        // SAFETY: arguments match `attn_reduce_*`; it reads the partials written above.
        unsafe { b.launch(cfg) }.w()?;
    }
    // 3. Tile kernel for prefill chunks.
    if meta.max_query_len > ROWS_MAX_QLEN && num_seqs > 0 {
        let tq = (TILE_R / group).max(1);
        // Register tiles sized for head_dim <= 128 or <= 256.
        let name = match (aligned, head_dim <= 128) {
            (true, true) => "attn_tile_vec_d128",
            (true, false) => "attn_tile_vec_d256",
            (false, true) => "attn_tile_scalar_d128",
            (false, false) => "attn_tile_scalar_d256",
        };
        let smem = tile_smem_bytes(head_dim);
        let f = kernel_smem::<T>(&dev, Module::Attention, name, smem)?;
        let cfg = LaunchConfig {
            grid_dim: (
                to_u32(meta.max_query_len.div_ceil(tq), "tile grid")?,
                to_u32(num_seqs, "num_seqs")?,
                to_u32(num_kv_heads, "num_kv_heads")?,
            ),
            block_dim: (128, 1, 1),
            shared_mem_bytes: to_u32(smem, "shared memory")?,
        };
        let mut b = stream.launch_builder(&f);
        b.arg(&mut out)
            .arg(&q_v)
            .arg(&k_v)
            .arg(&v_v)
            .arg(&tables_v)
            .arg(&cu_v)
            .arg(&ctx_v)
            .arg(&params);
        // SAFETY: arguments match `attn_tile_*`; shapes as for the row kernel, and the
        // dynamic shared memory is sized by the same formula as `tile_smem_floats` in the .cu.
        unsafe { b.launch(cfg) }.w()?;
    }
    Ok(wrap(out, &dev))
}
