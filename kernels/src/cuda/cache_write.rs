//! CUDA scatter of key/value rows into the paged cache (`cuda/cache.cu`).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaStorage, DType, Layout, Result};
use half::{bf16, f16};

use super::{contiguous_view, kernel, to_i32, to_u32, view, view_mut, KernelFloat, Module};

pub(crate) fn write_kv_cache_cuda(
    cache: &mut CudaStorage,
    cache_l: &Layout,
    rows: &CudaStorage,
    rows_l: &Layout,
    slots: &CudaStorage,
    slots_l: &Layout,
) -> Result<()> {
    match cache.dtype() {
        DType::F32 => run::<f32>(cache, cache_l, rows, rows_l, slots, slots_l),
        DType::F16 => run::<f16>(cache, cache_l, rows, rows_l, slots, slots_l),
        DType::BF16 => run::<bf16>(cache, cache_l, rows, rows_l, slots, slots_l),
        other => bail!("write_kv_cache: cache dtype {other:?} is not supported (f32, f16, bf16)"),
    }
}

fn run<T: KernelFloat>(
    cache: &mut CudaStorage,
    cache_l: &Layout,
    rows: &CudaStorage,
    rows_l: &Layout,
    slots: &CudaStorage,
    slots_l: &Layout,
) -> Result<()> {
    let &[num_blocks, block_size, num_kv_heads, head_dim] = cache_l.dims() else {
        bail!(
            "write_kv_cache: cache must be 4-D, got shape {:?}",
            cache_l.shape()
        );
    };
    let Some((c_start, c_end)) = cache_l.contiguous_offsets() else {
        bail!(
            "write_kv_cache: cache must be contiguous (got strides {:?})",
            cache_l.stride()
        );
    };
    let (&[num_tokens, r_heads, r_dim], &[s0, s1, s2]) = (rows_l.dims(), rows_l.stride()) else {
        bail!(
            "write_kv_cache: k/v must be 3-D, got shape {:?}",
            rows_l.shape()
        );
    };
    if (r_heads, r_dim) != (num_kv_heads, head_dim) || slots_l.dims() != [num_tokens] {
        bail!(
            "write_kv_cache: k/v shape {:?} / slot_mapping shape {:?} do not match the cache {:?}",
            rows_l.shape(),
            slots_l.shape(),
            cache_l.shape()
        );
    }
    if s2 != 1 && head_dim > 1 {
        bail!(
            "write_kv_cache: k/v rows must have unit stride on head_dim, got strides {:?}",
            rows_l.stride()
        );
    }
    if num_tokens == 0 || num_kv_heads == 0 || head_dim == 0 {
        return Ok(());
    }
    let dev = cache.device().clone();
    let r_start = rows_l.start_offset();
    let r_span = (num_tokens - 1) * s0 + (num_kv_heads - 1) * s1 + head_dim;
    let rows_v = view(
        rows.as_cuda_slice::<T>()?,
        r_start,
        r_span,
        "write_kv_cache: k/v",
    )?;
    let slots_v = contiguous_view::<i64>(slots, slots_l, "write_kv_cache: slot_mapping")?;
    let vec = T::VEC;
    let use_vec = head_dim % vec == 0
        && c_start % vec == 0
        && r_start.is_multiple_of(vec)
        && s0 % vec == 0
        && s1 % vec == 0;
    let per_token = num_kv_heads * head_dim / if use_vec { vec } else { 1 };
    let threads = per_token.clamp(32, 256).next_multiple_of(32) as u32;
    let f = kernel::<T>(
        &dev,
        Module::Cache,
        if use_vec {
            "write_kv_cache_vec"
        } else {
            "write_kv_cache"
        },
    )?;
    let cache_s = cache.as_cuda_slice_mut::<T>()?;
    let mut cache_v = view_mut(cache_s, c_start, c_end - c_start, "write_kv_cache: cache")?;
    let (heads, dim) = (
        to_i32(num_kv_heads, "num_kv_heads")?,
        to_i32(head_dim, "head_dim")?,
    );
    let (s0, s1) = (s0 as i64, s1 as i64);
    let num_slots = (num_blocks * block_size) as i64;
    let cfg = LaunchConfig {
        grid_dim: (to_u32(num_tokens, "num_tokens")?, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&f);
    b.arg(&mut cache_v)
        .arg(&rows_v)
        .arg(&slots_v)
        .arg(&heads)
        .arg(&dim)
        .arg(&s0)
        .arg(&s1)
        .arg(&num_slots);
    // SAFETY: the argument list matches `write_kv_cache[_vec]_<T>` in cuda/cache.cu; every
    // row read is inside `rows_v` (span computed from the layout), every write goes to a slot
    // the kernel checks against `num_slots` (the cache view holds num_slots rows), and the
    // vector path is only taken when all offsets and strides are multiples of the vector width.
    unsafe { b.launch(cfg) }.w()?;
    Ok(())
}
