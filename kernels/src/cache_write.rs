//! In-place scatter of this step's keys and values into the paged KV cache.

use candle_core::{bail, CpuStorage, DType, InplaceOp3, Layout, Result, Tensor};

/// Dtypes the cache ops accept.
pub(crate) fn check_float_dtype(op: &str, name: &str, dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => Ok(()),
        other => bail!("{op}: {name} must be f32, f16 or bf16, got {other:?}"),
    }
}

/// Writes k, v (num_tokens, num_kv_heads, head_dim) into k_cache, v_cache (num_blocks, block_size, num_kv_heads, head_dim) in place at slot_mapping.
///
/// `slot_mapping` is `(num_tokens,)` i64; token `i` goes to slot `slot_mapping[i]`
/// (`= block_id * block_size + offset`), and a negative slot skips the token (padding).
/// The caches must be contiguous (a non-zero start offset, e.g. a view into a larger
/// allocation, is fine) and have the dtype of `k`/`v` (f32, f16 or bf16; on the CPU another
/// of these, rows being converted as they are written). `k`/`v` may be
/// strided views (e.g. a narrow of a fused qkv projection).
///
/// Every slot is bounds-checked against `num_blocks * block_size` before anything is
/// written, so an out-of-range slot fails with an error and leaves both caches untouched.
pub fn write_kv_cache(
    k: &Tensor,
    v: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    slot_mapping: &Tensor,
) -> Result<()> {
    const OP: &str = "write_kv_cache";
    let &[num_tokens, num_kv_heads, head_dim] = k.dims() else {
        bail!(
            "{OP}: k must have shape (num_tokens, num_kv_heads, head_dim), got {:?}",
            k.shape()
        );
    };
    if v.dims() != k.dims() {
        bail!(
            "{OP}: v shape {:?} differs from k shape {:?}",
            v.shape(),
            k.shape()
        );
    }
    let &[_num_blocks, _block_size, cache_kv_heads, cache_head_dim] = k_cache.dims() else {
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
    if (cache_kv_heads, cache_head_dim) != (num_kv_heads, head_dim) {
        bail!(
            "{OP}: k/v have (num_kv_heads, head_dim) = ({num_kv_heads}, {head_dim}) but the caches have ({cache_kv_heads}, {cache_head_dim})"
        );
    }
    if slot_mapping.dims() != [num_tokens] {
        bail!(
            "{OP}: slot_mapping must have shape ({num_tokens},) to match k, got {:?}",
            slot_mapping.shape()
        );
    }
    if slot_mapping.dtype() != DType::I64 {
        bail!(
            "{OP}: slot_mapping must be i64, got {:?}",
            slot_mapping.dtype()
        );
    }
    check_float_dtype(OP, "k", k.dtype())?;
    check_float_dtype(OP, "k_cache", k_cache.dtype())?;
    for (name, t, want) in [("v", v, k.dtype()), ("v_cache", v_cache, k_cache.dtype())] {
        if t.dtype() != want {
            bail!("{OP}: {name} has dtype {:?}, expected {want:?}", t.dtype());
        }
    }
    // On the CPU rows are converted to the cache's type as they are written
    // (`--kv-cache-dtype`); the CUDA kernel copies them as they are.
    if k_cache.dtype() != k.dtype() && !k.device().is_cpu() {
        bail!(
            "{OP}: k_cache has dtype {:?} but k has dtype {:?} (on CUDA they must match)",
            k_cache.dtype(),
            k.dtype()
        );
    }
    for (name, t) in [
        ("v", v),
        ("k_cache", k_cache),
        ("v_cache", v_cache),
        ("slot_mapping", slot_mapping),
    ] {
        if !t.device().same_device(k.device()) {
            bail!(
                "{OP}: {name} is on {:?} but k is on {:?}",
                t.device(),
                k.device()
            );
        }
    }
    for (name, t) in [("k_cache", k_cache), ("v_cache", v_cache)] {
        if !t.is_contiguous() {
            bail!(
                "{OP}: {name} must be contiguous (got strides {:?})",
                t.stride()
            );
        }
    }
    if num_tokens == 0 {
        return Ok(());
    }
    // Rows of head_dim elements must be contiguous; outer dims may have any stride.
    let k = unit_stride_rows(k)?;
    let v = unit_stride_rows(v)?;
    // The CUDA kernel reads the slots as one contiguous array (a no-op for from_host's).
    let slots = if slot_mapping.device().is_cpu() {
        slot_mapping.clone()
    } else {
        slot_mapping.contiguous()?
    };
    let op = WriteKvOp;
    k_cache.inplace_op3(&k, &slots, &op)?;
    v_cache.inplace_op3(&v, &slots, &op)
}

/// Returns `t` itself when its last dim has unit stride, otherwise a contiguous copy.
fn unit_stride_rows(t: &Tensor) -> Result<Tensor> {
    match t.stride().last() {
        Some(1) => Ok(t.clone()),
        _ if t.dims().last() == Some(&1) => Ok(t.clone()),
        _ => t.contiguous(),
    }
}

/// `dst = cache`, `src1 = rows (num_tokens, num_kv_heads, head_dim)`, `src2 = slot_mapping`.
struct WriteKvOp;

impl InplaceOp3 for WriteKvOp {
    fn name(&self) -> &'static str {
        "lantern-write-kv-cache"
    }

    fn cpu_fwd(
        &self,
        cache: &mut CpuStorage,
        cache_l: &Layout,
        rows: &CpuStorage,
        rows_l: &Layout,
        slots: &CpuStorage,
        slots_l: &Layout,
    ) -> Result<()> {
        crate::cpu::cache_write::write_kv_cache_cpu(cache, cache_l, rows, rows_l, slots, slots_l)
    }

    /// CUDA: slots are not read back to the host; out-of-range slots are skipped on the
    /// device instead of reported.
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        cache: &mut candle_core::CudaStorage,
        cache_l: &Layout,
        rows: &candle_core::CudaStorage,
        rows_l: &Layout,
        slots: &candle_core::CudaStorage,
        slots_l: &Layout,
    ) -> Result<()> {
        crate::cuda::cache_write::write_kv_cache_cuda(cache, cache_l, rows, rows_l, slots, slots_l)
    }
}
