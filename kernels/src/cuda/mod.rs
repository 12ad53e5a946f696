//! CUDA implementations of the Lantern custom ops (feature `cuda`).
//!
//! The `.cu` sources under `kernels/cuda/` are compiled by `build.rs` into one fatbin per
//! source file (SASS for the targets picked from `CUDA_COMPUTE_CAP`, plus PTX), embedded in
//! the library and loaded once per device on first use. Each launcher here takes the
//! storages candle hands to a custom op's `cuda_fwd` (plus the metadata tensors that ride in
//! the op), checks what the kernel relies on (dtypes, contiguity, sizes that fit in `i32`) and
//! launches on the device's stream. Metadata *values* (slots, block ids, adapter slots) are
//! not copied back to the host: the kernels skip out-of-range indices instead of failing.

pub(crate) mod attention;
pub(crate) mod cache_write;
pub(crate) mod lora;
pub(crate) mod norm;
pub(crate) mod sampling;
pub(crate) mod upload;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::cuda_backend::cudarc::driver::{
    sys, CudaFunction, CudaModule, CudaSlice, CudaView, CudaViewMut, DeviceRepr, ValidAsZeroBits,
};
use candle_core::cuda_backend::cudarc::nvrtc::Ptx;
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{bail, CudaDevice, CudaStorage, Layout, Result, Storage, Tensor};
use half::{bf16, f16};

/// One compiled `.cu` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Module {
    Cache,
    Attention,
    Norm,
    Lora,
    Sampling,
}

impl Module {
    fn name(self) -> &'static str {
        match self {
            Module::Cache => "cache",
            Module::Attention => "attention",
            Module::Norm => "norm",
            Module::Lora => "lora",
            Module::Sampling => "sampling",
        }
    }

    fn fatbin(self) -> &'static [u8] {
        match self {
            Module::Cache => include_bytes!(concat!(env!("OUT_DIR"), "/cache.fatbin")),
            Module::Attention => include_bytes!(concat!(env!("OUT_DIR"), "/attention.fatbin")),
            Module::Norm => include_bytes!(concat!(env!("OUT_DIR"), "/norm.fatbin")),
            Module::Lora => include_bytes!(concat!(env!("OUT_DIR"), "/lora.fatbin")),
            Module::Sampling => include_bytes!(concat!(env!("OUT_DIR"), "/sampling.fatbin")),
        }
    }
}

/// Loaded modules by CUDA context. Devices created for the same ordinal share the primary
/// context, hence the modules; a cached module keeps its context alive, so a context address
/// is never reused while it is a key here. Consulted only on a thread's first use of a kernel.
fn modules() -> &'static Mutex<HashMap<(usize, Module), Arc<CudaModule>>> {
    static CACHE: OnceLock<Mutex<HashMap<(usize, Module), Arc<CudaModule>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A looked-up kernel and the dynamic shared memory limit already raised for it.
struct CachedFn {
    f: CudaFunction,
    smem_limit: usize,
}

/// Per-context device facts read once.
#[derive(Clone, Copy)]
struct DeviceFacts {
    num_sms: usize,
}

thread_local! {
    /// Kernels by (context, base name, dtype suffix): the launch path (the engine thread) finds
    /// its kernels here without a lock, a name allocation or a driver call.
    static FUNCTIONS: RefCell<HashMap<(usize, &'static str, &'static str), CachedFn>> =
        RefCell::new(HashMap::new());
    static FACTS: RefCell<HashMap<usize, DeviceFacts>> = RefCell::new(HashMap::new());
}

fn ctx_key(dev: &CudaDevice) -> usize {
    dev.cuda_stream().context().cu_ctx() as usize
}

fn load_module(dev: &CudaDevice, ctx_key: usize, module: Module) -> Result<Arc<CudaModule>> {
    let mut cache = match modules().lock() {
        Ok(c) => c,
        Err(_) => bail!("lantern-kernels: the CUDA module cache lock is poisoned"),
    };
    if let Some(m) = cache.get(&(ctx_key, module)) {
        return Ok(m.clone());
    }
    let ctx = dev.cuda_stream().context().clone();
    let m = match ctx.load_module(Ptx::from_binary(module.fatbin().to_vec())) {
        Ok(m) => m,
        Err(e) => bail!(
            "lantern-kernels: loading the `{}` CUDA module failed ({e:?}); if the error is \
             NO_BINARY_FOR_GPU or an unsupported PTX version, rebuild with CUDA_COMPUTE_CAP set \
             to this GPU's compute capability (e.g. 90) and an nvcc no newer than the driver",
            module.name()
        ),
    };
    cache.insert((ctx_key, module), m.clone());
    Ok(m)
}

/// Kernel `base` + `suffix` of `module`, with its dynamic shared memory limit raised to at
/// least `smem` bytes when that is over the default 48 KiB. The first call per thread loads
/// the module (once per context) and looks the function up; later calls are a thread-local
/// hash lookup.
fn lookup(
    dev: &CudaDevice,
    module: Module,
    base: &'static str,
    suffix: &'static str,
    smem: usize,
) -> Result<CudaFunction> {
    let key = (ctx_key(dev), base, suffix);
    let hit = FUNCTIONS.with(|m| {
        m.borrow()
            .get(&key)
            .filter(|c| smem <= c.smem_limit)
            .map(|c| c.f.clone())
    });
    if let Some(f) = hit {
        return Ok(f);
    }
    let existing = FUNCTIONS.with(|m| m.borrow().get(&key).map(|c| (c.f.clone(), c.smem_limit)));
    let (f, mut limit) = match existing {
        Some(e) => e,
        None => {
            let m = load_module(dev, key.0, module)?;
            let name = if suffix.is_empty() {
                base.to_string()
            } else {
                format!("{base}_{suffix}")
            };
            (m.load_function(&name).w()?, 48 * 1024)
        }
    };
    if smem > limit {
        f.set_attribute(
            sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            to_i32(smem, "dynamic shared memory")?,
        )
        .w()?;
        limit = smem;
    }
    FUNCTIONS.with(|m| {
        m.borrow_mut().insert(
            key,
            CachedFn {
                f: f.clone(),
                smem_limit: limit,
            },
        )
    });
    Ok(f)
}

/// The `T` instantiation of kernel `base` (`{base}_f32`, `_f16` or `_bf16`).
pub(crate) fn kernel<T: KernelFloat>(
    dev: &CudaDevice,
    module: Module,
    base: &'static str,
) -> Result<CudaFunction> {
    lookup(dev, module, base, T::SUFFIX, 0)
}

/// [`kernel`] for a launch with `smem` bytes of dynamic shared memory (raises the kernel's
/// limit once when that is over 48 KiB).
pub(crate) fn kernel_smem<T: KernelFloat>(
    dev: &CudaDevice,
    module: Module,
    base: &'static str,
    smem: usize,
) -> Result<CudaFunction> {
    lookup(dev, module, base, T::SUFFIX, smem)
}

/// A kernel with no dtype suffix.
pub(crate) fn function(
    dev: &CudaDevice,
    module: Module,
    name: &'static str,
) -> Result<CudaFunction> {
    lookup(dev, module, name, "", 0)
}

/// Number of streaming multiprocessors of `dev` (used to size split-K grids), read once per
/// context and thread.
pub(crate) fn num_sms(dev: &CudaDevice) -> usize {
    let key = ctx_key(dev);
    if let Some(f) = FACTS.with(|m| m.borrow().get(&key).copied()) {
        return f.num_sms;
    }
    let ctx = dev.cuda_stream().context().clone();
    let n = ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map(|n| n.max(1) as usize)
        .unwrap_or(108);
    FACTS.with(|m| m.borrow_mut().insert(key, DeviceFacts { num_sms: n }));
    n
}

/// Float storage types of the kernels.
pub(crate) trait KernelFloat:
    CudaDType + DeviceRepr + ValidAsZeroBits + candle_core::WithDType
{
    /// Kernel name suffix.
    const SUFFIX: &'static str;
    /// Elements per 16-byte vector.
    const VEC: usize;
}

impl KernelFloat for f32 {
    const SUFFIX: &'static str = "f32";
    const VEC: usize = 4;
}
impl KernelFloat for f16 {
    const SUFFIX: &'static str = "f16";
    const VEC: usize = 8;
}
impl KernelFloat for bf16 {
    const SUFFIX: &'static str = "bf16";
    const VEC: usize = 8;
}

/// Converts a size to the `i32` a kernel takes.
pub(crate) fn to_i32(v: usize, what: &str) -> Result<i32> {
    match i32::try_from(v) {
        Ok(v) => Ok(v),
        Err(_) => bail!("{what} = {v} does not fit in i32 (CUDA kernels index with 32-bit sizes)"),
    }
}

pub(crate) fn to_u32(v: usize, what: &str) -> Result<u32> {
    match u32::try_from(v) {
        Ok(v) => Ok(v),
        Err(_) => bail!("{what} = {v} does not fit in u32 (CUDA grid dimension)"),
    }
}

/// Elements `start..start + len` of `s` as a view.
pub(crate) fn view<'a, T>(
    s: &'a CudaSlice<T>,
    start: usize,
    len: usize,
    what: &str,
) -> Result<CudaView<'a, T>> {
    match s.try_slice(start..start + len) {
        Some(v) => Ok(v),
        None => bail!(
            "{what}: window {start}..{} exceeds its CUDA buffer of {} elements",
            start + len,
            s.len()
        ),
    }
}

/// Mutable elements `start..start + len` of `s`.
pub(crate) fn view_mut<'a, T>(
    s: &'a mut CudaSlice<T>,
    start: usize,
    len: usize,
    what: &str,
) -> Result<CudaViewMut<'a, T>> {
    let n = s.len();
    match s.try_slice_mut(start..start + len) {
        Some(v) => Ok(v),
        None => bail!(
            "{what}: window {start}..{} exceeds its CUDA buffer of {n} elements",
            start + len
        ),
    }
}

/// The contiguous window of a storage + layout as a typed view.
pub(crate) fn contiguous_view<'a, T: CudaDType>(
    s: &'a CudaStorage,
    l: &Layout,
    what: &str,
) -> Result<CudaView<'a, T>> {
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("{what} must be contiguous (got strides {:?})", l.stride());
    };
    view(s.as_cuda_slice::<T>()?, start, end - start, what)
}

/// A tensor that rides along in an op (metadata, weights): read-locked while kernels are
/// launched from it.
pub(crate) struct Held<'a> {
    guard: candle_core::StorageRef<'a>,
    layout: &'a Layout,
    name: &'static str,
}

impl<'a> Held<'a> {
    pub(crate) fn new(t: &'a Tensor, name: &'static str) -> Self {
        let (guard, layout) = t.storage_and_layout();
        Self {
            guard,
            layout,
            name,
        }
    }

    pub(crate) fn storage(&self) -> Result<&CudaStorage> {
        match &*self.guard {
            Storage::Cuda(s) => Ok(s),
            _ => bail!(
                "{} must be a CUDA tensor on the device of the op",
                self.name
            ),
        }
    }

    /// Contiguous typed view of the whole tensor.
    pub(crate) fn view<T: CudaDType>(&self) -> Result<CudaView<'_, T>> {
        contiguous_view(self.storage()?, self.layout, self.name)
    }
}

/// `CudaStorage` wrapping a freshly computed slice.
pub(crate) fn wrap<T: CudaDType>(s: CudaSlice<T>, dev: &CudaDevice) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(s, dev.clone())
}
