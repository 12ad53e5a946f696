//! Host-to-device copy into an existing CUDA storage (`copy_from_host`).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CpuStorage, CudaStorage, Layout, Result};
use half::{bf16, f16};

use super::view_mut;

pub(crate) fn copy_from_host_cuda(
    s: &mut CudaStorage,
    l: &Layout,
    host: &CpuStorage,
) -> Result<()> {
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("copy_from_host: dst must be contiguous");
    };
    let dev = s.device.clone();
    let stream = dev.cuda_stream();
    macro_rules! put {
        ($t:ty, $h:expr) => {{
            let mut v = view_mut(
                s.as_cuda_slice_mut::<$t>()?,
                start,
                end - start,
                "copy_from_host: dst",
            )?;
            if $h.len() != end - start {
                bail!(
                    "copy_from_host: {} host elements for a window of {}",
                    $h.len(),
                    end - start
                );
            }
            stream.memcpy_htod($h.as_slice(), &mut v).w()
        }};
    }
    match host {
        CpuStorage::U32(h) => put!(u32, h),
        CpuStorage::I64(h) => put!(i64, h),
        CpuStorage::F32(h) => put!(f32, h),
        CpuStorage::F16(h) => put!(f16, h),
        CpuStorage::BF16(h) => put!(bf16, h),
        other => bail!("copy_from_host: dtype {:?} is not supported", other.dtype()),
    }
}
