//! CUDA token sampling (`cuda/sampling.cu`): arg-max fast path for all-greedy batches;
//! otherwise logits -> f32 work rows, sparse processing entries, one block per row.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaStorage, DType, Layout, Result};
use half::{bf16, f16};

use super::{function, kernel, to_i32, to_u32, view, wrap, Held, KernelFloat, Module};
use crate::sampling::SamplingBatch;

/// Mirrors `SampleParams` in cuda/sampling.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct SampleParams {
    vocab: i32,
    row_stride: i64,
}
// SAFETY: `#[repr(C)]` (int, padding, long long), the layout of the CUDA struct.
unsafe impl DeviceRepr for SampleParams {}

pub(crate) fn sample_cuda(
    logits: (&CudaStorage, &Layout),
    batch: &SamplingBatch,
) -> Result<CudaStorage> {
    match logits.0.dtype() {
        DType::F32 => run::<f32>(logits, batch),
        DType::F16 => run::<f16>(logits, batch),
        DType::BF16 => run::<bf16>(logits, batch),
        other => bail!("sample_tokens: logits dtype {other:?} is not supported (f32, f16, bf16)"),
    }
}

fn run<T: KernelFloat>(
    (logits, l): (&CudaStorage, &Layout),
    batch: &SamplingBatch,
) -> Result<CudaStorage> {
    let (&[rows, vocab], &[s0, _]) = (l.dims(), l.stride()) else {
        bail!(
            "sample_tokens: logits must be 2-D, got shape {:?}",
            l.shape()
        );
    };
    let dev = logits.device().clone();
    // SAFETY: one id per row is written by the kernels below.
    let mut out = unsafe { dev.alloc::<u32>(rows.max(1)) }?;
    if rows == 0 {
        return Ok(wrap(out, &dev));
    }
    if rows > 65_535 {
        bail!("sample_tokens: {rows} rows exceed the CUDA grid limit of 65535 per call");
    }
    let lv = view(
        logits.as_cuda_slice::<T>()?,
        l.start_offset(),
        (rows - 1) * s0 + vocab,
        "sample_tokens: logits",
    )?;
    let p = SampleParams {
        vocab: to_i32(vocab, "vocab")?,
        row_stride: s0 as i64,
    };
    let rows_u = to_u32(rows, "rows")?;
    let stream = dev.cuda_stream();
    if batch.all_greedy {
        let f = kernel::<T>(&dev, Module::Sampling, "argmax")?;
        let cfg = LaunchConfig {
            grid_dim: (rows_u, 1, 1),
            block_dim: (1024, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = stream.launch_builder(&f);
        b.arg(&mut out).arg(&lv).arg(&p);
        // SAFETY: arguments match `argmax_<T>`; the view covers every row (stride s0, vocab
        // elements each) and out holds one u32 per row.
        unsafe { b.launch(cfg) }.w()?;
        return Ok(wrap(out, &dev));
    }
    let params = Held::new(&batch.params, "batch.params");
    let offsets = Held::new(&batch.entry_offsets, "batch.entry_offsets");
    let entries = Held::new(&batch.entries, "batch.entries");
    let (params_v, offsets_v, entries_v) = (
        params.view::<f32>()?,
        offsets.view::<u32>()?,
        entries.view::<u32>()?,
    );
    // SAFETY: every element is written by `sample_prepare` before anything reads it.
    let mut work = unsafe { dev.alloc::<f32>(rows * vocab) }?;
    let vocab_i = p.vocab;
    {
        let f = kernel::<T>(&dev, Module::Sampling, "sample_prepare")?;
        let cfg = LaunchConfig {
            grid_dim: (to_u32(vocab.div_ceil(256), "grid")?, rows_u, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = stream.launch_builder(&f);
        b.arg(&mut work).arg(&lv).arg(&p);
        // SAFETY: arguments match `sample_prepare_<T>`; work holds rows * vocab floats.
        unsafe { b.launch(cfg) }.w()?;
    }
    if batch.num_entries > 0 {
        let f = function(&dev, Module::Sampling, "sample_penalties")?;
        let cfg = LaunchConfig {
            grid_dim: (rows_u, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = stream.launch_builder(&f);
        b.arg(&mut work)
            .arg(&params_v)
            .arg(&offsets_v)
            .arg(&entries_v)
            .arg(&vocab_i);
        // SAFETY: arguments match `sample_penalties`; offsets index the entries table (built
        // by `SamplingBatch::from_host`), tokens >= vocab are skipped, and each (row, token)
        // appears once, so the in-place updates do not race.
        unsafe { b.launch(cfg) }.w()?;
    }
    {
        let f = function(&dev, Module::Sampling, "sample_main")?;
        let cfg = LaunchConfig {
            grid_dim: (rows_u, 1, 1),
            block_dim: (1024, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = stream.launch_builder(&f);
        b.arg(&mut out).arg(&work).arg(&params_v).arg(&vocab_i);
        // SAFETY: arguments match `sample_main`; work holds rows * vocab floats and params
        // 8 floats per row.
        unsafe { b.launch(cfg) }.w()?;
    }
    Ok(wrap(out, &dev))
}
