//! CUDA RMSNorm / fused add + RMSNorm, rotary embedding in place, SiLU-and-mul
//! (`cuda/norm.cu`).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaStorage, DType, Layout, Result, Tensor};
use half::{bf16, f16};

use super::{
    contiguous_view, kernel, to_i32, to_u32, view, view_mut, wrap, Held, KernelFloat, Module,
};

/// Largest grid.y of a launch.
const MAX_GRID_Y: usize = 65_535;

pub(crate) fn rms_norm_cuda(
    x: (&CudaStorage, &Layout),
    residual: Option<(&CudaStorage, &Layout)>,
    w: (&CudaStorage, &Layout),
    eps: f32,
) -> Result<CudaStorage> {
    match x.0.dtype() {
        DType::F32 => rms_run::<f32>(x, residual, w, eps),
        DType::F16 => rms_run::<f16>(x, residual, w, eps),
        DType::BF16 => rms_run::<bf16>(x, residual, w, eps),
        other => bail!("rms_norm: dtype {other:?} is not supported (f32, f16, bf16)"),
    }
}

fn rms_run<T: KernelFloat>(
    (x, x_l): (&CudaStorage, &Layout),
    residual: Option<(&CudaStorage, &Layout)>,
    (w, w_l): (&CudaStorage, &Layout),
    eps: f32,
) -> Result<CudaStorage> {
    let dev = x.device().clone();
    let n = x_l.shape().elem_count();
    let hidden = w_l.shape().elem_count();
    let total = if residual.is_some() { 2 * n } else { n };
    // SAFETY: every element is written below (normed rows, then the new residual rows).
    let mut out = unsafe { dev.alloc::<T>(total.max(1)) }?;
    if n == 0 || hidden == 0 {
        return Ok(wrap(out, &dev));
    }
    if n % hidden != 0 {
        bail!("rms_norm: x has {n} elements, not a multiple of hidden = {hidden}");
    }
    let rows = n / hidden;
    let x_v = contiguous_view::<T>(x, x_l, "rms_norm: x")?;
    let w_v = contiguous_view::<T>(w, w_l, "rms_norm: weight")?;
    let r_v = match residual {
        Some((r, r_l)) => Some(contiguous_view::<T>(
            r,
            r_l,
            "fused_add_rms_norm: residual",
        )?),
        None => None,
    };
    let vec = T::VEC;
    let use_vec = hidden % vec == 0
        && x_l.start_offset() % vec == 0
        && w_l.start_offset() % vec == 0
        && residual.is_none_or(|(_, l)| l.start_offset() % vec == 0);
    let f = kernel::<T>(
        &dev,
        Module::Norm,
        if use_vec { "rms_norm_vec" } else { "rms_norm" },
    )?;
    let threads = (hidden / if use_vec { vec } else { 1 })
        .next_multiple_of(32)
        .clamp(32, 1024) as u32;
    let cfg = LaunchConfig {
        grid_dim: (to_u32(rows, "rows")?, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    let hidden_i = to_i32(hidden, "hidden")?;
    let null: u64 = 0;
    let stream = dev.cuda_stream();
    match r_v {
        Some(r_v) => {
            let Some((mut normed, mut new_res)) = out.try_split_at_mut(n) else {
                bail!("rms_norm: internal output split failed");
            };
            let mut b = stream.launch_builder(&f);
            b.arg(&mut normed)
                .arg(&mut new_res)
                .arg(&x_v)
                .arg(&r_v)
                .arg(&w_v)
                .arg(&hidden_i)
                .arg(&eps);
            // SAFETY: arguments match `rms_norm[_vec]_<T>` in cuda/norm.cu; x, residual and
            // both outputs hold rows * hidden elements, w holds hidden; the vector path needs
            // hidden and all offsets to be multiples of the vector width (checked above).
            unsafe { b.launch(cfg) }.w()?;
        }
        None => {
            let mut b = stream.launch_builder(&f);
            b.arg(&mut out)
                .arg(&null)
                .arg(&x_v)
                .arg(&null)
                .arg(&w_v)
                .arg(&hidden_i)
                .arg(&eps);
            // SAFETY: as above; the residual pointers are null, which the kernel checks.
            unsafe { b.launch(cfg) }.w()?;
        }
    }
    Ok(wrap(out, &dev))
}

pub(crate) fn rope_cuda(
    x: &mut CudaStorage,
    x_l: &Layout,
    cos: (&CudaStorage, &Layout),
    sin: (&CudaStorage, &Layout),
    positions: &Tensor,
) -> Result<()> {
    match x.dtype() {
        DType::F32 => rope_run::<f32>(x, x_l, cos, sin, positions),
        DType::F16 => rope_run::<f16>(x, x_l, cos, sin, positions),
        DType::BF16 => rope_run::<bf16>(x, x_l, cos, sin, positions),
        other => bail!("rotary_embedding_inplace: dtype {other:?} is not supported"),
    }
}

fn rope_run<T: KernelFloat>(
    x: &mut CudaStorage,
    x_l: &Layout,
    (cos, cos_l): (&CudaStorage, &Layout),
    (sin, sin_l): (&CudaStorage, &Layout),
    positions: &Tensor,
) -> Result<()> {
    const OP: &str = "rotary_embedding_inplace";
    let (&[tokens, heads, head_dim], &[s0, s1, _]) = (x_l.dims(), x_l.stride()) else {
        bail!("{OP}: x must be 3-D, got shape {:?}", x_l.shape());
    };
    let half = head_dim / 2;
    if tokens == 0 || heads == 0 || half == 0 {
        return Ok(());
    }
    let max_pos = cos_l.shape().elem_count() / half;
    let dev = x.device().clone();
    let pos = Held::new(positions, "positions");
    let pos_v = pos.view::<u32>()?;
    let cos_v = contiguous_view::<T>(cos, cos_l, "rotary_embedding_inplace: cos")?;
    let sin_v = contiguous_view::<T>(sin, sin_l, "rotary_embedding_inplace: sin")?;
    let start = x_l.start_offset();
    let span = (tokens - 1) * s0 + (heads - 1) * s1 + head_dim;
    let mut x_v = view_mut(
        x.as_cuda_slice_mut::<T>()?,
        start,
        span,
        "rotary_embedding_inplace: x",
    )?;
    let f = kernel::<T>(&dev, Module::Norm, "rope")?;
    let cfg = LaunchConfig {
        grid_dim: (to_u32(tokens, "num_tokens")?, 1, 1),
        block_dim: (
            (heads * half).next_multiple_of(32).clamp(32, 256) as u32,
            1,
            1,
        ),
        shared_mem_bytes: 0,
    };
    let (heads_i, dim_i, max_pos_i) = (
        to_i32(heads, "num_heads")?,
        to_i32(head_dim, "head_dim")?,
        to_i32(max_pos, "max_positions")?,
    );
    let (s0, s1) = (s0 as i64, s1 as i64);
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&f);
    b.arg(&mut x_v)
        .arg(&cos_v)
        .arg(&sin_v)
        .arg(&pos_v)
        .arg(&heads_i)
        .arg(&dim_i)
        .arg(&s0)
        .arg(&s1)
        .arg(&max_pos_i);
    // SAFETY: arguments match `rope_<T>` in cuda/norm.cu; x_v spans every element the layout
    // addresses, positions has one u32 per token, and the kernel skips positions >= max_pos,
    // so table reads stay inside cos/sin (max_pos rows of head_dim / 2).
    unsafe { b.launch(cfg) }.w()?;
    Ok(())
}

pub(crate) fn silu_mul_cuda(
    g: (&CudaStorage, &Layout),
    u: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    match g.0.dtype() {
        DType::F32 => silu_run::<f32>(g, u),
        DType::F16 => silu_run::<f16>(g, u),
        DType::BF16 => silu_run::<bf16>(g, u),
        other => bail!("silu_mul: dtype {other:?} is not supported (f32, f16, bf16)"),
    }
}

fn silu_run<T: KernelFloat>(
    (g, g_l): (&CudaStorage, &Layout),
    (u, u_l): (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let (&[rows, n], &[gs, _]) = (g_l.dims(), g_l.stride()) else {
        bail!("silu_mul: gate must be 2-D, got shape {:?}", g_l.shape());
    };
    let &[us, _] = u_l.stride() else {
        bail!("silu_mul: up must be 2-D, got shape {:?}", u_l.shape());
    };
    let dev = g.device().clone();
    // SAFETY: every element is written by the kernel below.
    let mut out = unsafe { dev.alloc::<T>((rows * n).max(1)) }?;
    if rows == 0 || n == 0 {
        return Ok(wrap(out, &dev));
    }
    let (g_start, u_start) = (g_l.start_offset(), u_l.start_offset());
    let vec = T::VEC;
    let use_vec =
        n % vec == 0 && g_start % vec == 0 && u_start % vec == 0 && gs % vec == 0 && us % vec == 0;
    let f = kernel::<T>(
        &dev,
        Module::Norm,
        if use_vec { "silu_mul_vec" } else { "silu_mul" },
    )?;
    let per_row = n / if use_vec { vec } else { 1 };
    let n_i = to_i32(n, "intermediate")?;
    let (gs_i, us_i) = (gs as i64, us as i64);
    let g_slice = g.as_cuda_slice::<T>()?;
    let u_slice = u.as_cuda_slice::<T>()?;
    let stream = dev.cuda_stream();
    let mut r0 = 0;
    while r0 < rows {
        let nr = (rows - r0).min(MAX_GRID_Y);
        let g_v = view(
            g_slice,
            g_start + r0 * gs,
            (nr - 1) * gs + n,
            "silu_mul: gate",
        )?;
        let u_v = view(
            u_slice,
            u_start + r0 * us,
            (nr - 1) * us + n,
            "silu_mul: up",
        )?;
        let mut o_v = view_mut(&mut out, r0 * n, nr * n, "silu_mul: out")?;
        let cfg = LaunchConfig {
            grid_dim: (
                to_u32(per_row.div_ceil(256), "grid")?,
                to_u32(nr, "rows")?,
                1,
            ),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = stream.launch_builder(&f);
        b.arg(&mut o_v)
            .arg(&g_v)
            .arg(&u_v)
            .arg(&n_i)
            .arg(&gs_i)
            .arg(&us_i);
        // SAFETY: arguments match `silu_mul[_vec]_<T>`; the views cover rows r0..r0 + nr of
        // each operand (row strides gs / us, n elements per row); the vector path needs n,
        // the offsets and the strides to be multiples of the vector width (checked above).
        unsafe { b.launch(cfg) }.w()?;
        r0 += nr;
    }
    Ok(wrap(out, &dev))
}
