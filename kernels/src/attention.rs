//! Paged attention over a flattened varlen batch (decode tokens and prefill chunks mixed).

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use crate::cache_write::check_float_dtype;
use crate::metadata::PagedAttnMetadata;

/// Paged attention for a flattened varlen batch mixing prefill chunks and decode tokens.
/// q: (num_tokens, num_heads, head_dim); caches as above (already containing this step's k/v).
/// Query row j of seq s (0-based within its chunk of length qlen = cu[s+1]-cu[s]) is at absolute position p = context_len[s] - qlen + j and attends (causally) to cache positions 0..=p of that seq, found through its block table (position t lives in block block_tables[s][t / block_size] at offset t % block_size).
/// GQA: query head h uses kv head h / (num_heads / num_kv_heads). Softmax in f32 with max-subtraction; inputs f32, f16 or bf16 (on the CPU the caches may have another of these types than q, e.g. an f16 cache for f32 activations; on CUDA they match); output same dtype as q, shape (num_tokens, num_heads, head_dim).
///
/// Rows of `q` past `cu_seqlens_q[num_seqs]` belong to no sequence (batch padding); their
/// output rows are zero. `q` may be strided (it is made contiguous if needed); the caches
/// must be contiguous (a non-zero start offset is fine). The metadata is validated against
/// the tensors (monotone `cu_seqlens_q`, `query_len <= context_len`, lengths within
/// `max_query_len`/`max_context_len`, block ids within the cache) before any data is read.
pub fn paged_attention(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    meta: &PagedAttnMetadata,
    softmax_scale: f32,
) -> Result<Tensor> {
    const OP: &str = "paged_attention";
    let &[_num_tokens, num_heads, head_dim] = q.dims() else {
        bail!(
            "{OP}: q must have shape (num_tokens, num_heads, head_dim), got {:?}",
            q.shape()
        );
    };
    let &[_num_blocks, block_size, num_kv_heads, cache_head_dim] = k_cache.dims() else {
        bail!(
            "{OP}: k_cache must have shape (num_blocks, block_size, num_kv_heads, head_dim), got {:?}",
            k_cache.shape()
        );
    };
    if v_cache.dims() != k_cache.dims() {
        bail!(
            "{OP}: v_cache shape {:?} differs from k_cache shape {:?}",
            v_cache.shape(),
            k_cache.shape()
        );
    }
    if cache_head_dim != head_dim {
        bail!("{OP}: q has head_dim {head_dim} but the caches have head_dim {cache_head_dim}");
    }
    if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
        bail!(
            "{OP}: num_heads = {num_heads} of q must be a positive multiple of num_kv_heads = {num_kv_heads} of the caches"
        );
    }
    if block_size != meta.block_size {
        bail!(
            "{OP}: meta.block_size = {} but the caches have block_size {block_size}",
            meta.block_size
        );
    }
    if !softmax_scale.is_finite() {
        bail!("{OP}: softmax_scale must be finite, got {softmax_scale}");
    }
    check_float_dtype(OP, "q", q.dtype())?;
    if v_cache.dtype() != k_cache.dtype() {
        bail!(
            "{OP}: v_cache has dtype {:?} but k_cache has dtype {:?}",
            v_cache.dtype(),
            k_cache.dtype()
        );
    }
    for (name, t) in [("k_cache", k_cache), ("v_cache", v_cache)] {
        check_float_dtype(OP, name, t.dtype())?;
        // On the CPU the caches may be narrower than q (`--kv-cache-dtype`); the CUDA
        // kernels read the caches in q's type.
        if t.dtype() != q.dtype() && !q.device().is_cpu() {
            bail!(
                "{OP}: {name} has dtype {:?} but q has dtype {:?} (on CUDA they must match)",
                t.dtype(),
                q.dtype()
            );
        }
        if !t.device().same_device(q.device()) {
            bail!(
                "{OP}: {name} is on {:?} but q is on {:?}",
                t.device(),
                q.device()
            );
        }
        if !t.is_contiguous() {
            bail!(
                "{OP}: {name} must be contiguous (got strides {:?})",
                t.stride()
            );
        }
    }
    meta.check_attention_shapes(q.device())?;
    let q = q.contiguous()?;
    let op = PagedAttnOp {
        meta: meta.clone(),
        softmax_scale,
    };
    q.apply_op3_no_bwd(k_cache, v_cache, &op)
}

/// `q.apply_op3_no_bwd(k_cache, v_cache)`; the metadata tensors ride along in the op.
struct PagedAttnOp {
    meta: PagedAttnMetadata,
    softmax_scale: f32,
}

impl CustomOp3 for PagedAttnOp {
    fn name(&self) -> &'static str {
        "lantern-paged-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        q_l: &Layout,
        k: &CpuStorage,
        k_l: &Layout,
        v: &CpuStorage,
        v_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        crate::cpu::attention::paged_attention_cpu(
            (q, q_l),
            (k, k_l),
            (v, v_l),
            &self.meta,
            self.softmax_scale,
        )
    }

    /// CUDA: metadata values stay on the device (no host validation); out-of-range block ids
    /// are skipped by the kernels instead of reported.
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        q: &candle_core::CudaStorage,
        q_l: &Layout,
        k: &candle_core::CudaStorage,
        k_l: &Layout,
        v: &candle_core::CudaStorage,
        v_l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::attention::paged_attention_cuda(
            (q, q_l),
            (k, k_l),
            (v, v_l),
            &self.meta,
            self.softmax_scale,
        )
    }
}
