//! Fused elementwise/row ops of a decoder layer: RMSNorm (optionally fused with the residual
//! add), rotary embedding in place, and SiLU-and-mul. Each has a CPU implementation
//! (`cpu::norm`), a CUDA one (`cuda::norm`, feature `cuda`) and a naive reference
//! (`reference`). All math is f32; results are rounded once to the input dtype.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, InplaceOp3, Layout, Result};
use candle_core::{Shape, Tensor};

use crate::cache_write::check_float_dtype;

fn check_same(op: &str, name: &str, t: &Tensor, like: &Tensor) -> Result<()> {
    if t.dtype() != like.dtype() {
        bail!(
            "{op}: {name} has dtype {:?} but x has dtype {:?}",
            t.dtype(),
            like.dtype()
        );
    }
    if !t.device().same_device(like.device()) {
        bail!(
            "{op}: {name} is on {:?} but x is on {:?}",
            t.device(),
            like.device()
        );
    }
    Ok(())
}

fn check_norm_args(op: &str, x: &Tensor, weight: &Tensor, eps: f32) -> Result<usize> {
    let Some(&hidden) = x.dims().last() else {
        bail!("{op}: x must have at least one dimension (..., hidden)");
    };
    if weight.dims() != [hidden] {
        bail!(
            "{op}: weight must have shape ({hidden},) to match the last dim of x {:?}, got {:?}",
            x.shape(),
            weight.shape()
        );
    }
    check_float_dtype(op, "x", x.dtype())?;
    check_same(op, "weight", weight, x)?;
    if !(eps.is_finite() && eps >= 0.0) {
        bail!("{op}: eps must be finite and >= 0, got {eps}");
    }
    Ok(hidden)
}

/// RMSNorm over the last dimension: `x * rsqrt(mean(x^2) + eps) * weight`.
///
/// * `x`: `(..., hidden)` f32, f16 or bf16 (any layout; made contiguous if needed).
/// * `weight`: `(hidden,)`, same dtype as `x`.
///
/// Returns a tensor of `x`'s shape and dtype. The mean of squares is accumulated in f32.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    const OP: &str = "rms_norm";
    check_norm_args(OP, x, weight, eps)?;
    let x = x.contiguous()?;
    let w = weight.contiguous()?;
    x.apply_op2_no_bwd(&w, &RmsNormOp { eps })
}

/// Residual add fused with RMSNorm, as between the sublayers of a pre-norm decoder:
/// `h = x + residual` (rounded to the dtype), returns `(rms_norm(h, weight, eps), h)`.
///
/// * `x`, `residual`: same shape `(..., hidden)` and dtype (f32, f16 or bf16).
/// * `weight`: `(hidden,)`, same dtype.
///
/// Both results have `x`'s shape and dtype; the norm is computed from the rounded `h`, so
/// it equals `rms_norm(&(x + residual)?, weight, eps)` up to f32 rounding.
pub fn fused_add_rms_norm(
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "fused_add_rms_norm";
    check_norm_args(OP, x, weight, eps)?;
    if residual.dims() != x.dims() {
        bail!(
            "{OP}: residual shape {:?} differs from x shape {:?}",
            residual.shape(),
            x.shape()
        );
    }
    check_same(OP, "residual", residual, x)?;
    let x_c = x.contiguous()?;
    let r = residual.contiguous()?;
    let w = weight.contiguous()?;
    // Output (2, ..x) holds [normed, new residual].
    let both = x_c.apply_op3_no_bwd(&r, &w, &AddRmsNormOp { eps })?;
    Ok((both.get(0)?, both.get(1)?))
}

struct RmsNormOp {
    eps: f32,
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "lantern-rms-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_l: &Layout,
        w: &CpuStorage,
        w_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let s = crate::cpu::norm::rms_norm_cpu((x, x_l), None, (w, w_l), self.eps)?;
        Ok((s, x_l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        x_l: &Layout,
        w: &candle_core::CudaStorage,
        w_l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let s = crate::cuda::norm::rms_norm_cuda((x, x_l), None, (w, w_l), self.eps)?;
        Ok((s, x_l.shape().clone()))
    }
}

struct AddRmsNormOp {
    eps: f32,
}

fn stacked_shape(x_l: &Layout) -> Shape {
    let mut dims = vec![2];
    dims.extend_from_slice(x_l.dims());
    Shape::from(dims)
}

impl CustomOp3 for AddRmsNormOp {
    fn name(&self) -> &'static str {
        "lantern-fused-add-rms-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_l: &Layout,
        r: &CpuStorage,
        r_l: &Layout,
        w: &CpuStorage,
        w_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let s = crate::cpu::norm::rms_norm_cpu((x, x_l), Some((r, r_l)), (w, w_l), self.eps)?;
        Ok((s, stacked_shape(x_l)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        x_l: &Layout,
        r: &candle_core::CudaStorage,
        r_l: &Layout,
        w: &candle_core::CudaStorage,
        w_l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let s = crate::cuda::norm::rms_norm_cuda((x, x_l), Some((r, r_l)), (w, w_l), self.eps)?;
        Ok((s, stacked_shape(x_l)))
    }
}

/// Rotary position embedding applied in place (half rotation, as Hugging Face `rotate_half`
/// and candle's `rope_thd`): for each token `t`, head `h` and `i < head_dim / 2`, with
/// `c = cos[positions[t]][i]`, `s = sin[positions[t]][i]`:
/// `x[i] <- x[i] c - x[i + half] s` and `x[i + half] <- x[i + half] c + x[i] s`.
///
/// * `x`: `(num_tokens, num_heads, head_dim)` f32, f16 or bf16, unit stride on `head_dim`
///   (other strides are fine, e.g. a narrow of a fused qkv projection); `head_dim` even.
/// * `cos`, `sin`: `(max_positions, head_dim / 2)`, same dtype as `x` (the table of
///   `models::rope`, with any frequency scaling baked in).
/// * `positions`: `(num_tokens,)` u32 absolute positions.
///
/// On CPU every position is checked against `max_positions` first (an error leaves `x`
/// untouched); on CUDA positions are not read back, and tokens with an out-of-range position
/// are left unrotated.
pub fn rotary_embedding_inplace(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    positions: &Tensor,
) -> Result<()> {
    const OP: &str = "rotary_embedding_inplace";
    let &[num_tokens, _num_heads, head_dim] = x.dims() else {
        bail!(
            "{OP}: x must have shape (num_tokens, num_heads, head_dim), got {:?}",
            x.shape()
        );
    };
    if head_dim % 2 != 0 {
        bail!("{OP}: head_dim must be even, got {head_dim}");
    }
    let &[_max_pos, half] = cos.dims() else {
        bail!(
            "{OP}: cos must have shape (max_positions, head_dim / 2), got {:?}",
            cos.shape()
        );
    };
    if half != head_dim / 2 || sin.dims() != cos.dims() {
        bail!(
            "{OP}: cos {:?} and sin {:?} must both be (max_positions, {})",
            cos.shape(),
            sin.shape(),
            head_dim / 2
        );
    }
    if positions.dims() != [num_tokens] || positions.dtype() != DType::U32 {
        bail!(
            "{OP}: positions must be ({num_tokens},) u32, got {:?} {:?}",
            positions.shape(),
            positions.dtype()
        );
    }
    check_float_dtype(OP, "x", x.dtype())?;
    check_same(OP, "cos", cos, x)?;
    check_same(OP, "sin", sin, x)?;
    if !positions.device().same_device(x.device()) {
        bail!(
            "{OP}: positions is on {:?} but x is on {:?}",
            positions.device(),
            x.device()
        );
    }
    if head_dim > 1 && x.stride()[2] != 1 {
        bail!(
            "{OP}: x must have unit stride on head_dim (got strides {:?}); make it contiguous",
            x.stride()
        );
    }
    if num_tokens == 0 || head_dim == 0 {
        return Ok(());
    }
    let cos = cos.contiguous()?;
    let sin = sin.contiguous()?;
    let op = RopeOp {
        positions: positions.contiguous()?,
    };
    x.inplace_op3(&cos, &sin, &op)
}

/// `x.inplace_op3(cos, sin)`; the positions ride along in the op.
struct RopeOp {
    positions: Tensor,
}

impl InplaceOp3 for RopeOp {
    fn name(&self) -> &'static str {
        "lantern-rotary-embedding"
    }

    fn cpu_fwd(
        &self,
        x: &mut CpuStorage,
        x_l: &Layout,
        cos: &CpuStorage,
        cos_l: &Layout,
        sin: &CpuStorage,
        sin_l: &Layout,
    ) -> Result<()> {
        let positions = self.positions.to_vec1::<u32>()?;
        crate::cpu::norm::rope_cpu(x, x_l, (cos, cos_l), (sin, sin_l), &positions)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &mut candle_core::CudaStorage,
        x_l: &Layout,
        cos: &candle_core::CudaStorage,
        cos_l: &Layout,
        sin: &candle_core::CudaStorage,
        sin_l: &Layout,
    ) -> Result<()> {
        crate::cuda::norm::rope_cuda(x, x_l, (cos, cos_l), (sin, sin_l), &self.positions)
    }
}

/// `silu(gate) * up` elementwise (`silu(g) = g / (1 + exp(-g))`), the gated MLP activation.
///
/// * `gate`, `up`: `(num_tokens, intermediate)`, same dtype (f32, f16 or bf16); rows may be
///   strided views (e.g. the two halves of a fused gate_up projection) as long as the last
///   dim has unit stride (otherwise they are made contiguous).
///
/// Returns a contiguous `(num_tokens, intermediate)` tensor of the same dtype.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    const OP: &str = "silu_mul";
    let &[_, _] = gate.dims() else {
        bail!(
            "{OP}: gate must have shape (num_tokens, intermediate), got {:?}",
            gate.shape()
        );
    };
    if up.dims() != gate.dims() {
        bail!(
            "{OP}: up shape {:?} differs from gate shape {:?}",
            up.shape(),
            gate.shape()
        );
    }
    check_float_dtype(OP, "gate", gate.dtype())?;
    check_same(OP, "up", up, gate)?;
    let unit_rows = |t: &Tensor| -> Result<Tensor> {
        if t.dims()[1] <= 1 || t.stride()[1] == 1 {
            Ok(t.clone())
        } else {
            t.contiguous()
        }
    };
    let (g, u) = (unit_rows(gate)?, unit_rows(up)?);
    g.apply_op2_no_bwd(&u, &SiluMulOp)
}

/// [`silu_mul`] of the two halves of a fused projection: `x` is `(num_tokens, 2 * intermediate)`
/// with the gate in the first half and the up projection in the second; returns
/// `(num_tokens, intermediate)`.
pub fn silu_and_mul(x: &Tensor) -> Result<Tensor> {
    let &[_, two_i] = x.dims() else {
        bail!(
            "silu_and_mul: x must have shape (num_tokens, 2 * intermediate), got {:?}",
            x.shape()
        );
    };
    if two_i % 2 != 0 {
        bail!("silu_and_mul: the last dim of x must be even, got {two_i}");
    }
    let i = two_i / 2;
    silu_mul(&x.narrow(1, 0, i)?, &x.narrow(1, i, i)?)
}

struct SiluMulOp;

impl CustomOp2 for SiluMulOp {
    fn name(&self) -> &'static str {
        "lantern-silu-mul"
    }

    fn cpu_fwd(
        &self,
        g: &CpuStorage,
        g_l: &Layout,
        u: &CpuStorage,
        u_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let s = crate::cpu::norm::silu_mul_cpu((g, g_l), (u, u_l))?;
        Ok((s, g_l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        g: &candle_core::CudaStorage,
        g_l: &Layout,
        u: &candle_core::CudaStorage,
        u_l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let s = crate::cuda::norm::silu_mul_cuda((g, g_l), (u, u_l))?;
        Ok((s, g_l.shape().clone()))
    }
}
