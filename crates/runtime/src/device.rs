//! Device selection (`--device cpu|cuda|cuda:N|auto`) and device facts (name, memory).
//!
//! CUDA exists only in builds with the `cuda` cargo feature; without it `cuda[:N]` is
//! refused with an error saying how to rebuild, and `auto` means the CPU.

use crate::error::{Result, RuntimeError};
use candle_core::Device;

/// Whether this build has the CUDA backend compiled in.
pub const CUDA_COMPILED: bool = cfg!(feature = "cuda");

/// A parsed `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    /// CUDA device with this ordinal (`cuda` = `cuda:0`).
    Cuda(usize),
    /// CUDA device 0 when compiled in and present, else the CPU.
    Auto,
}

impl DeviceSpec {
    /// Parses `cpu`, `cuda`, `cuda:N` or `auto`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim() {
            "cpu" => Ok(Self::Cpu),
            "auto" => Ok(Self::Auto),
            "cuda" => Ok(Self::Cuda(0)),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n.parse().map(Self::Cuda).map_err(|_| {
                    RuntimeError::Device(format!(
                        "--device `{other}`: `{n}` is not a device ordinal (use cuda:0, cuda:1, ...)"
                    ))
                }),
                None => Err(RuntimeError::Device(format!(
                    "--device `{other}` is not one of cpu, cuda, cuda:N, auto"
                ))),
            },
        }
    }
}

impl std::str::FromStr for DeviceSpec {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Opens the device `spec` names. `Auto` falls back to the CPU (with an info log) when this
/// build has no CUDA or no CUDA device can be opened.
pub fn open(spec: DeviceSpec) -> Result<Device> {
    let device = match spec {
        DeviceSpec::Cpu => Device::Cpu,
        DeviceSpec::Cuda(n) => open_cuda(n)?,
        DeviceSpec::Auto if !CUDA_COMPILED => Device::Cpu,
        DeviceSpec::Auto => match open_cuda(0) {
            Ok(d) => d,
            Err(e) => {
                tracing::info!("--device auto: no usable CUDA device ({e}); using the CPU");
                Device::Cpu
            }
        },
    };
    tracing::info!("device: {}", describe(&device));
    Ok(device)
}

/// Parses and opens a `--device` value.
pub fn select(spec: &str) -> Result<Device> {
    open(DeviceSpec::parse(spec)?)
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device> {
    // One explicit stream per device: every op of this process, whichever thread issues it
    // (model loading runs on a loader thread, steps on the engine thread), goes to the same
    // stream in issue order. `Device::new_cuda` would use the per-thread default stream
    // instead, where the loader's and the engine's work are not ordered.
    let device = Device::new_cuda_with_stream(ordinal).map_err(|e| {
        // candle appends a backtrace to driver errors under RUST_BACKTRACE; keep the cause.
        let e = e.to_string();
        let cause = e.lines().next().unwrap_or_default();
        RuntimeError::Device(format!(
            "cannot open CUDA device {ordinal}: {cause} (is the NVIDIA driver loaded and the GPU visible? `nvidia-smi -L` lists the devices and their ordinals)"
        ))
    })?;
    if let Device::Cuda(d) = &device {
        // SAFETY: cudarc's cross-stream event tracking guards tensors used on several
        // streams; everything here runs on the one stream created above (candle's kernels,
        // cuBLAS and our custom ops all launch on the device's stream), so stream order
        // already orders every use, and dropping the per-launch event records and waits
        // removes host overhead from every kernel launch. It is turned off before the first
        // tensor exists.
        unsafe { d.disable_event_tracking() };
        keep_freed_memory_pooled(d, ordinal)?;
    }
    Ok(device)
}

/// The default stream-ordered memory pool of the context's device.
#[cfg(feature = "cuda")]
fn default_mem_pool(
    ctx: &candle_core::cuda_backend::cudarc::driver::CudaContext,
) -> std::result::Result<
    candle_core::cuda_backend::cudarc::driver::sys::CUmemoryPool,
    candle_core::cuda_backend::cudarc::driver::sys::CUresult,
> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    // SAFETY: `pool` is a valid out-pointer; `cu_device` is the device of a live context.
    let r = unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) };
    if r == sys::CUresult::CUDA_SUCCESS {
        Ok(pool)
    } else {
        Err(r)
    }
}

/// Raises the release threshold of the device's default memory pool to "never": candle
/// allocates every tensor with `cuMemAllocAsync` from that pool, and with the default
/// threshold (0) the driver hands freed memory back to the OS at every synchronisation (each
/// engine step synchronises to read the sampled tokens), so the next step's allocations map
/// fresh pages again. Kept in the pool, they are reused at the cost of a free-list lookup.
/// The KV cache is sized from the memory free after the weights and a reserve for one step's
/// activations, which is exactly what stays pooled.
#[cfg(feature = "cuda")]
fn keep_freed_memory_pooled(d: &candle_core::CudaDevice, ordinal: usize) -> Result<()> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let ctx = d.cuda_stream().context().clone();
    if !ctx.has_async_alloc() {
        return Ok(());
    }
    let fail = |what: &str, r: sys::CUresult| {
        RuntimeError::Device(format!(
            "CUDA device {ordinal}: {what} failed ({r:?}) while configuring the memory pool"
        ))
    };
    ctx.bind_to_thread()
        .map_err(|e| RuntimeError::Device(format!("CUDA device {ordinal}: {e}")))?;
    let pool = default_mem_pool(&ctx).map_err(|r| fail("cuDeviceGetDefaultMemPool", r))?;
    let mut threshold: u64 = u64::MAX;
    // SAFETY: the release threshold attribute takes a pointer to a cuuint64_t, which
    // `threshold` is, and `pool` was just returned by the driver.
    let r = unsafe {
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
    };
    if r != sys::CUresult::CUDA_SUCCESS {
        return Err(fail("cuMemPoolSetAttribute(RELEASE_THRESHOLD)", r));
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize) -> Result<Device> {
    Err(RuntimeError::Device(format!(
        "--device cuda:{ordinal}: this lantern binary was built without CUDA support; rebuild with `cargo build --release --features cuda` (see README, Building with CUDA)"
    )))
}

/// Free and total memory of a device, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceMemory {
    pub free: u64,
    pub total: u64,
}

/// Free/total memory of a CUDA device (after waiting for its queued work, so memory freed
/// by finished work is counted as free); `None` on the CPU.
pub fn memory_info(device: &Device) -> Result<Option<DeviceMemory>> {
    memory_info_impl(device)
}

#[cfg(feature = "cuda")]
fn memory_info_impl(device: &Device) -> Result<Option<DeviceMemory>> {
    match device {
        Device::Cuda(d) => {
            device.synchronize()?;
            let ctx = d.cuda_stream().context().clone();
            // Memory freed into the pool (which keeps it: `keep_freed_memory_pooled`) is
            // free for this purpose: hand it back before asking the driver.
            if ctx.has_async_alloc() {
                if let Ok(pool) = default_mem_pool(&ctx) {
                    use candle_core::cuda_backend::cudarc::driver::sys;
                    // SAFETY: `pool` is the live default pool of this context's device, and
                    // the stream was synchronised above, so nothing freed is still in use.
                    let _ = unsafe { sys::cuMemPoolTrimTo(pool, 0) };
                }
            }
            let (free, total) = ctx
                .mem_get_info()
                .map_err(|e| RuntimeError::Device(format!("cuMemGetInfo failed: {e}")))?;
            Ok(Some(DeviceMemory {
                free: free as u64,
                total: total as u64,
            }))
        }
        _ => Ok(None),
    }
}

#[cfg(not(feature = "cuda"))]
fn memory_info_impl(_device: &Device) -> Result<Option<DeviceMemory>> {
    Ok(None)
}

/// One line about the device for logs: `cpu`, or `cuda:0 (NVIDIA H100 80GB HBM3, sm_90,
/// 79.1 GiB, 78.6 GiB free)`.
pub fn describe(device: &Device) -> String {
    describe_impl(device)
}

#[cfg(feature = "cuda")]
fn describe_impl(device: &Device) -> String {
    match device {
        Device::Cuda(d) => {
            let stream = d.cuda_stream();
            let ctx = stream.context();
            let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
            let cap = ctx
                .compute_capability()
                .map(|(a, b)| format!(", sm_{a}{b}"))
                .unwrap_or_default();
            let mem = match ctx.mem_get_info() {
                Ok((free, total)) => format!(
                    ", {:.1} GiB, {:.1} GiB free",
                    gib(total as u64),
                    gib(free as u64)
                ),
                Err(_) => String::new(),
            };
            format!("cuda:{} ({name}{cap}{mem})", ctx.ordinal())
        }
        other => format!("{:?}", other.location()).to_lowercase(),
    }
}

#[cfg(not(feature = "cuda"))]
fn describe_impl(device: &Device) -> String {
    format!("{:?}", device.location()).to_lowercase()
}

pub(crate) fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(DeviceSpec::parse("cpu").unwrap(), DeviceSpec::Cpu);
        assert_eq!(DeviceSpec::parse("auto").unwrap(), DeviceSpec::Auto);
        assert_eq!(DeviceSpec::parse("cuda").unwrap(), DeviceSpec::Cuda(0));
        assert_eq!(DeviceSpec::parse("cuda:3").unwrap(), DeviceSpec::Cuda(3));
        let e = DeviceSpec::parse("cuda:x").unwrap_err().to_string();
        assert!(e.contains("not a device ordinal"), "{e}");
        let e = DeviceSpec::parse("tpu").unwrap_err().to_string();
        assert!(e.contains("cpu, cuda, cuda:N, auto"), "{e}");
    }

    #[test]
    fn cpu_and_auto_open_without_a_gpu() {
        assert!(open(DeviceSpec::Cpu).unwrap().is_cpu());
        if !CUDA_COMPILED {
            assert!(open(DeviceSpec::Auto).unwrap().is_cpu());
            let e = open(DeviceSpec::Cuda(0)).unwrap_err().to_string();
            assert!(e.contains("built without CUDA"), "{e}");
        }
        assert_eq!(describe(&Device::Cpu), "cpu");
        assert_eq!(memory_info(&Device::Cpu).unwrap(), None);
    }
}
