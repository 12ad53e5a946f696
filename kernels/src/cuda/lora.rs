//! CUDA multi-LoRA add (`cuda/lora.cu`): BGMV kernels for tokens of short segments (decode),
//! SGMV tile kernels for long segments (prefill), both in two phases (shrink into an f32
//! scratch `h`, then expand into the output, which starts as a copy of `y`).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaStorage, DType, Layout, Result, Shape, Tensor};
use half::{bf16, f16};

use super::{
    contiguous_view, kernel, kernel_smem, to_i32, to_u32, wrap, Held, KernelFloat, Module,
};
use crate::lora::{LoraBatch, LoraDims, LoraWeights, LORA_SGMV_MIN_TOKENS};

/// Per-slot ranks passed by value; must match `LORA_MAX_RANK_TABLE` in cuda/lora.cu.
const RANK_TABLE: usize = 64;
/// Tokens per SGMV tile; must match `SG_TOK`.
const SG_TOK: usize = 16;
/// Largest padded rank the expand kernels' shared memory is sized for.
const MAX_RANK: usize = 512;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct RankTable {
    n: i32,
    r: [i32; RANK_TABLE],
}
// SAFETY: plain `#[repr(C)]` data laid out like the CUDA struct.
unsafe impl DeviceRepr for RankTable {}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct LoraParams {
    num_tokens: i32,
    in_dim: i32,
    out_dim: i32,
    max_rank: i32,
    num_slots: i32,
    num_segments: i32,
    sgmv_min: i32,
}
// SAFETY: plain `#[repr(C)]` data laid out like the CUDA struct.
unsafe impl DeviceRepr for LoraParams {}

pub(crate) fn lora_add_cuda(
    x: (&CudaStorage, &Layout),
    a: (&CudaStorage, &Layout),
    b: (&CudaStorage, &Layout),
    y: &Tensor,
    w: &LoraWeights,
    batch: &LoraBatch,
    dims: LoraDims,
) -> Result<(CudaStorage, Shape)> {
    let s = match x.0.dtype() {
        DType::F32 => run::<f32>(x, a, b, y, w, batch, dims)?,
        DType::F16 => run::<f16>(x, a, b, y, w, batch, dims)?,
        DType::BF16 => run::<bf16>(x, a, b, y, w, batch, dims)?,
        other => bail!("lora_add: dtype {other:?} is not supported (f32, f16, bf16)"),
    };
    Ok((s, Shape::from((dims.num_tokens, dims.w.out_dim))))
}

fn run<T: KernelFloat>(
    (x, x_l): (&CudaStorage, &Layout),
    (a, a_l): (&CudaStorage, &Layout),
    (b, b_l): (&CudaStorage, &Layout),
    y: &Tensor,
    w: &LoraWeights,
    batch: &LoraBatch,
    dims: LoraDims,
) -> Result<CudaStorage> {
    const OP: &str = "lora_add";
    let wd = dims.w;
    let nt = dims.num_tokens;
    if x_l.dims() != [nt, wd.in_dim]
        || a_l.dims() != [wd.num_slots, wd.max_rank, wd.in_dim]
        || b_l.dims() != [wd.num_slots, wd.out_dim, wd.max_rank]
        || y.dims() != [nt, wd.out_dim]
    {
        bail!(
            "{OP}: inconsistent shapes x {:?}, a {:?}, b {:?}, y {:?}",
            x_l.shape(),
            a_l.shape(),
            b_l.shape(),
            y.shape()
        );
    }
    if wd.max_rank > MAX_RANK {
        bail!(
            "{OP}: max_rank = {} is not supported on CUDA (at most {MAX_RANK})",
            wd.max_rank
        );
    }
    let dev = x.device().clone();
    // The output starts as a copy of y.
    let y = y.contiguous()?;
    let y_held = Held::new(&y, "y");
    let y_v = y_held.view::<T>()?;
    // SAFETY: fully overwritten by the copy of y right below.
    let mut out = unsafe { dev.alloc::<T>((nt * wd.out_dim).max(1)) }?;
    if nt * wd.out_dim == 0 {
        return Ok(wrap(out, &dev));
    }
    dev.memcpy_dtod(&y_v, &mut out)?;
    if wd.max_rank == 0 || wd.in_dim == 0 || !batch.any_lora {
        return Ok(wrap(out, &dev));
    }

    let x_v = contiguous_view::<T>(x, x_l, "lora_add: x")?;
    let a_v = contiguous_view::<T>(a, a_l, "lora_add: lora a")?;
    let b_v = contiguous_view::<T>(b, b_l, "lora_add: lora b")?;
    let scales = Held::new(&w.scales, "lora scales");
    let token_slots = Held::new(&batch.token_slots, "batch.token_slots");
    let seg_starts = Held::new(&batch.seg_starts, "batch.seg_starts");
    let seg_slots = Held::new(&batch.seg_slots, "batch.seg_slots");
    let (scales_v, tok_v, starts_v, segs_v) = (
        scales.view::<f32>()?,
        token_slots.view::<i32>()?,
        seg_starts.view::<u32>()?,
        seg_slots.view::<i32>()?,
    );
    let num_segments = batch.num_segments();
    if num_segments == 0 {
        return Ok(wrap(out, &dev));
    }

    let mut ranks = RankTable {
        n: 0,
        r: [0; RANK_TABLE],
    };
    if let Some(r) = &w.ranks {
        let n = r.len().min(RANK_TABLE);
        ranks.n = n as i32;
        for (dst, &src) in ranks.r.iter_mut().zip(r.iter()) {
            *dst = to_i32(src, "rank")?;
        }
    }
    let p = LoraParams {
        num_tokens: to_i32(nt, "num_tokens")?,
        in_dim: to_i32(wd.in_dim, "in_dim")?,
        out_dim: to_i32(wd.out_dim, "out_dim")?,
        max_rank: to_i32(wd.max_rank, "max_rank")?,
        num_slots: to_i32(wd.num_slots, "num_slots")?,
        num_segments: to_i32(num_segments, "num_segments")?,
        sgmv_min: to_i32(LORA_SGMV_MIN_TOKENS, "sgmv_min")?,
    };
    // SAFETY: scratch; the expand kernels read exactly the (token, k < rank) entries the
    // shrink kernels of the same path write.
    let mut h = unsafe { dev.alloc::<f32>(nt * wd.max_rank) }?;

    let vec = T::VEC;
    let shrink_vec = wd.in_dim.is_multiple_of(vec)
        && x_l.start_offset() % vec == 0
        && a_l.start_offset() % vec == 0;
    let expand_vec = wd.max_rank.is_multiple_of(vec) && b_l.start_offset() % vec == 0;
    let ev = if expand_vec { vec } else { 1 };
    let out_blocks = to_u32(wd.out_dim.div_ceil(128), "out_dim blocks")?;
    let stream = dev.cuda_stream();

    // BGMV: every token; tokens of long segments exit at once.
    {
        let f = kernel::<T>(
            &dev,
            Module::Lora,
            if shrink_vec {
                "bgmv_shrink_vec"
            } else {
                "bgmv_shrink_scalar"
            },
        )?;
        let cfg = LaunchConfig {
            grid_dim: (
                to_u32(nt, "num_tokens")?,
                to_u32(wd.max_rank.div_ceil(4), "rank blocks")?,
                1,
            ),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut lb = stream.launch_builder(&f);
        lb.arg(&mut h)
            .arg(&x_v)
            .arg(&a_v)
            .arg(&scales_v)
            .arg(&tok_v)
            .arg(&starts_v)
            .arg(&p)
            .arg(&ranks);
        // SAFETY: arguments match `bgmv_shrink_*` in cuda/lora.cu; slots are checked against
        // num_slots in the kernel, ranks are clamped to max_rank, and h holds
        // num_tokens * max_rank floats.
        unsafe { lb.launch(cfg) }.w()?;

        let f = kernel::<T>(
            &dev,
            Module::Lora,
            if expand_vec {
                "bgmv_expand_vec"
            } else {
                "bgmv_expand_scalar"
            },
        )?;
        let cfg = LaunchConfig {
            grid_dim: (to_u32(nt, "num_tokens")?, out_blocks, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: to_u32((wd.max_rank + ev) * 4, "shared memory")?,
        };
        let mut lb = stream.launch_builder(&f);
        lb.arg(&mut out)
            .arg(&h)
            .arg(&b_v)
            .arg(&tok_v)
            .arg(&starts_v)
            .arg(&p)
            .arg(&ranks);
        // SAFETY: arguments match `bgmv_expand_*`; the shared buffer holds max_rank + VEC
        // floats (the kernel uses the rank rounded up to the vector width, <= max_rank on the
        // vector path); out holds num_tokens * out_dim elements.
        unsafe { lb.launch(cfg) }.w()?;
    }

    // SGMV: segments of at least LORA_SGMV_MIN_TOKENS tokens, in tiles of SG_TOK.
    if batch.max_lora_segment_len >= LORA_SGMV_MIN_TOKENS {
        let tiles = to_u32(batch.max_lora_segment_len.div_ceil(SG_TOK), "segment tiles")?;
        let segs = to_u32(num_segments, "num_segments")?;
        let f = kernel::<T>(&dev, Module::Lora, "sgmv_shrink")?;
        let cfg = LaunchConfig {
            grid_dim: (segs, tiles, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut lb = stream.launch_builder(&f);
        lb.arg(&mut h)
            .arg(&x_v)
            .arg(&a_v)
            .arg(&scales_v)
            .arg(&starts_v)
            .arg(&segs_v)
            .arg(&p)
            .arg(&ranks);
        // SAFETY: arguments match `sgmv_shrink_*`; segment bounds come from seg_starts (the
        // kernel only touches rows lo..hi of its segment), slots are range-checked.
        unsafe { lb.launch(cfg) }.w()?;

        let smem = SG_TOK * (wd.max_rank + ev) * 4;
        let name = if expand_vec {
            "sgmv_expand_vec"
        } else {
            "sgmv_expand_scalar"
        };
        let f = kernel_smem::<T>(&dev, Module::Lora, name, smem)?;
        let cfg = LaunchConfig {
            grid_dim: (segs, tiles, out_blocks),
            block_dim: (128, 1, 1),
            shared_mem_bytes: to_u32(smem, "shared memory")?,
        };
        let mut lb = stream.launch_builder(&f);
        lb.arg(&mut out)
            .arg(&h)
            .arg(&b_v)
            .arg(&starts_v)
            .arg(&segs_v)
            .arg(&p)
            .arg(&ranks);
        // SAFETY: arguments match `sgmv_expand_*`; shared memory holds SG_TOK rows of the
        // padded rank.
        unsafe { lb.launch(cfg) }.w()?;
    }
    Ok(wrap(out, &dev))
}
