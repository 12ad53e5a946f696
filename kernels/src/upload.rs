//! [`copy_from_host`]: overwrite a device tensor in place with host data, keeping its
//! storage (and so its device address). CUDA graphs replay kernels with the addresses they
//! were captured with, so a graph's inputs live in persistent buffers that are refilled
//! before each replay instead of being allocated anew.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, InplaceOp1, Layout, Result, Tensor, WithDType};

/// Copies `host` into the contiguous tensor `dst` (same element count and dtype), in place.
///
/// On CUDA this is one host-to-device copy on the device's stream into `dst`'s existing
/// memory (from pageable memory: the call returns once `host` has been read). `dst` may be
/// a contiguous view (e.g. a narrow along dim 0) of a larger buffer. Supported dtypes: u32,
/// i64, f32, f16, bf16.
pub fn copy_from_host<T: WithDType>(dst: &Tensor, host: &[T]) -> Result<()> {
    if dst.dtype() != T::DTYPE {
        bail!(
            "copy_from_host: dst has dtype {:?} but the host data is {:?}",
            dst.dtype(),
            T::DTYPE
        );
    }
    if dst.elem_count() != host.len() {
        bail!(
            "copy_from_host: dst has {} elements ({:?}) but the host data has {}",
            dst.elem_count(),
            dst.shape(),
            host.len()
        );
    }
    if !dst.is_contiguous() {
        bail!(
            "copy_from_host: dst must be contiguous, got strides {:?}",
            dst.stride()
        );
    }
    if host.is_empty() {
        return Ok(());
    }
    dst.inplace_op1(&Upload {
        host: T::to_cpu_storage(host),
    })
}

struct Upload {
    /// The host data, typed like the destination (checked by `copy_from_host`).
    host: CpuStorage,
}

impl InplaceOp1 for Upload {
    fn name(&self) -> &'static str {
        "lantern-copy-from-host"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        let Some((start, end)) = l.contiguous_offsets() else {
            bail!("copy_from_host: dst must be contiguous");
        };
        fn put<T: Copy>(dst: &mut [T], start: usize, end: usize, src: &[T]) -> Result<()> {
            match dst.get_mut(start..end) {
                Some(d) if d.len() == src.len() => {
                    d.copy_from_slice(src);
                    Ok(())
                }
                _ => bail!("copy_from_host: dst window {start}..{end} does not fit the data"),
            }
        }
        match (s, &self.host) {
            (CpuStorage::U32(d), CpuStorage::U32(h)) => put(d, start, end, h),
            (CpuStorage::I64(d), CpuStorage::I64(h)) => put(d, start, end, h),
            (CpuStorage::F32(d), CpuStorage::F32(h)) => put(d, start, end, h),
            (CpuStorage::F16(d), CpuStorage::F16(h)) => put(d, start, end, h),
            (CpuStorage::BF16(d), CpuStorage::BF16(h)) => put(d, start, end, h),
            (d, h) => bail!(
                "copy_from_host: unsupported dtypes (dst {:?}, host {:?})",
                d.dtype(),
                h.dtype()
            ),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &mut candle_core::CudaStorage, l: &Layout) -> Result<()> {
        crate::cuda::upload::copy_from_host_cuda(s, l, &self.host)
    }
}
