//! The one linear-layer type every projection goes through: `y = x W^T + b`, plus per-token
//! multi-LoRA deltas. A layer may be *fused*: several projections that read the same input
//! (q/k/v, gate/up) concatenated along the output dimension into one weight, so one matmul
//! computes all of them; LoRA adapters still target each projection by name and are applied
//! to its slice of the fused output.

use crate::lora::LoraStack;
use candle_core::{bail, Module, Result, Tensor};
use candle_nn::VarBuilder;
use lantern_kernels::{LoraBatch, LoraWeights};

/// Which projection of a decoder layer a linear layer is; LoRA adapters target these by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proj {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Proj {
    /// The checkpoint name of the projection (`q_proj`, ..., `down_proj`).
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::Q => "q_proj",
            Self::K => "k_proj",
            Self::V => "v_proj",
            Self::O => "o_proj",
            Self::Gate => "gate_proj",
            Self::Up => "up_proj",
            Self::Down => "down_proj",
        }
    }
}

/// How a [`Linear`] stores its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// `(in, out)`: the checkpoint's weight transposed once at load, so the forward pass is
    /// a plain row-major `(T, in) x (in, out)` product (the unfused path's layout).
    Transposed,
    /// `(out, in)` as in the checkpoint; the forward pass multiplies by the transposed view
    /// (cuBLAS and candle's CPU matmul take it without a copy, so there is no load-time
    /// transpose), and on the CPU steps of up to [`lantern_kernels::SKINNY_MATMUL_MAX_ROWS`]
    /// tokens use the skinny kernel, which streams the rows in storage order.
    Checkpoint,
}

/// One projection inside a (possibly fused) [`Linear`]: output columns
/// `offset..offset + size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearPart {
    pub proj: Proj,
    pub offset: usize,
    pub size: usize,
}

/// A dense linear layer `(T, in) -> (T, out)` with an optional bias, made of one projection
/// or of several fused side by side (`parts`, in output-column order).
#[derive(Debug, Clone)]
pub struct Linear {
    /// `(in, out)` or `(out, in)`, see `layout`.
    weight: Tensor,
    layout: WeightLayout,
    /// `(out,)`.
    bias: Option<Tensor>,
    parts: Vec<LinearPart>,
    layer: usize,
    in_dim: usize,
    out_dim: usize,
}

impl Linear {
    /// Loads one projection (`vb` at e.g. `...self_attn.o_proj`): weight `(out_dim, in_dim)`
    /// and, with `bias`, `(out_dim,)`.
    pub fn load(
        vb: VarBuilder,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        proj: Proj,
        layer: usize,
        layout: WeightLayout,
    ) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Self::from_checkpoint(
            weight,
            bias,
            vec![LinearPart {
                proj,
                offset: 0,
                size: out_dim,
            }],
            layer,
            layout,
        )
    }

    /// Loads several projections that read the same input and fuses them: `vb` is the parent
    /// module (e.g. `...self_attn`), `parts` the projections with their output sizes in the
    /// order their outputs are laid out (each loaded from `vb.pp(proj.hf_name())`). Weights
    /// (and biases, when `bias`) are concatenated along the output dimension.
    pub fn load_fused(
        vb: VarBuilder,
        in_dim: usize,
        parts: &[(Proj, usize)],
        bias: bool,
        layer: usize,
        layout: WeightLayout,
    ) -> Result<Self> {
        let mut weights = Vec::with_capacity(parts.len());
        let mut biases = Vec::with_capacity(parts.len());
        let mut layout_parts = Vec::with_capacity(parts.len());
        let mut offset = 0;
        for &(proj, size) in parts {
            let p = vb.pp(proj.hf_name());
            weights.push(p.get((size, in_dim), "weight")?);
            if bias {
                biases.push(p.get(size, "bias")?);
            }
            layout_parts.push(LinearPart { proj, offset, size });
            offset += size;
        }
        let weight = Tensor::cat(&weights, 0)?;
        drop(weights);
        let bias = if bias {
            Some(Tensor::cat(&biases, 0)?)
        } else {
            None
        };
        Self::from_checkpoint(weight, bias, layout_parts, layer, layout)
    }

    /// `weight`: `(out, in)` as in the checkpoint.
    fn from_checkpoint(
        weight: Tensor,
        bias: Option<Tensor>,
        parts: Vec<LinearPart>,
        layer: usize,
        layout: WeightLayout,
    ) -> Result<Self> {
        let (out_dim, in_dim) = weight.dims2()?;
        let weight = match layout {
            WeightLayout::Transposed => weight.t()?.contiguous()?,
            WeightLayout::Checkpoint => weight,
        };
        Ok(Self {
            weight,
            layout,
            bias,
            parts,
            layer,
            in_dim,
            out_dim,
        })
    }

    /// The projections of this layer, in output-column order (one unless fused).
    pub fn parts(&self) -> &[LinearPart] {
        &self.parts
    }

    pub fn layer(&self) -> usize {
        self.layer
    }

    pub fn layout(&self) -> WeightLayout {
        self.layout
    }

    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Total output width (all parts).
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// `x W^T + b`, plus each token's LoRA delta when `lora` is given and some token uses
    /// an adapter (base-only batches skip the LoRA path entirely). For a single projection;
    /// a fused layer goes through [`Module::forward`] and [`Linear::lora_parts`].
    pub fn forward_lora(
        &self,
        x: &Tensor,
        lora: Option<(&LoraWeights, &LoraBatch)>,
    ) -> Result<Tensor> {
        let y = self.forward(x)?;
        match lora {
            Some((w, batch)) if batch.any_lora => {
                if self.parts.len() != 1 {
                    bail!(
                        "layer {}: forward_lora on a fused linear of {} projections; use lora_parts",
                        self.layer,
                        self.parts.len()
                    );
                }
                lantern_kernels::lora_add(&y, x, w, batch)
            }
            _ => Ok(y),
        }
    }

    /// The LoRA-adjusted parts of a fused output: `y` is `self.forward(x)` (T, out); entry
    /// `i` is `Some(y_i + delta_i)` (a new `(T, size_i)` tensor) when some resident adapter
    /// targets part `i`'s projection and some token of `batch` uses an adapter, else `None`
    /// (the part is `y`'s slice unchanged; callers take their own view of it, so no copy is
    /// made).
    pub fn lora_parts(
        &self,
        y: &Tensor,
        x: &Tensor,
        stack: &LoraStack,
        batch: &LoraBatch,
    ) -> Result<Vec<Option<Tensor>>> {
        self.parts
            .iter()
            .map(|p| match stack.weights(self.layer, p.proj) {
                Some(w) if batch.any_lora => {
                    let y_p = y.narrow(1, p.offset, p.size)?;
                    lantern_kernels::lora_add(&y_p, x, w, batch).map(Some)
                }
                _ => Ok(None),
            })
            .collect()
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // x: (T, in) -> (T, out)
        let y = match self.layout {
            WeightLayout::Transposed => x.matmul(&self.weight)?,
            WeightLayout::Checkpoint => matmul_checkpoint(x, &self.weight)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// `x (T, in)` times `w^T` for `w` `(out, in)`: the skinny kernel for few rows on the CPU
/// (decode steps), else the general matmul on the transposed view.
pub(crate) fn matmul_checkpoint(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dims2()?.0 <= lantern_kernels::SKINNY_MATMUL_MAX_ROWS {
        lantern_kernels::skinny_matmul(x, w)
    } else {
        x.matmul(&w.t()?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use std::collections::HashMap;

    fn vb_with(tensors: Vec<(&str, Tensor)>) -> VarBuilder<'static> {
        let map: HashMap<String, Tensor> = tensors
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        VarBuilder::from_tensors(map, DType::F32, &Device::Cpu)
    }

    fn randn(shape: &[usize]) -> Tensor {
        Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// A fused q/k/v layer (with biases) equals the three projections side by side, in
    /// either weight layout.
    #[test]
    fn fused_equals_separate_projections() {
        let (h, q, kv) = (8, 12, 4);
        let vb = vb_with(vec![
            ("q_proj.weight", randn(&[q, h])),
            ("q_proj.bias", randn(&[q])),
            ("k_proj.weight", randn(&[kv, h])),
            ("k_proj.bias", randn(&[kv])),
            ("v_proj.weight", randn(&[kv, h])),
            ("v_proj.bias", randn(&[kv])),
        ]);
        let x = randn(&[5, h]);
        let parts = [(Proj::Q, q), (Proj::K, kv), (Proj::V, kv)];
        for layout in [WeightLayout::Transposed, WeightLayout::Checkpoint] {
            let fused = Linear::load_fused(vb.clone(), h, &parts, true, 3, layout).unwrap();
            assert_eq!((fused.in_dim(), fused.out_dim()), (h, q + 2 * kv));
            assert_eq!(fused.layer(), 3);
            let y = fused.forward(&x).unwrap();
            for (p, &(proj, size)) in fused.parts().iter().zip(&parts) {
                assert_eq!((p.proj, p.size), (proj, size));
                let single = Linear::load(
                    vb.pp(proj.hf_name()),
                    h,
                    size,
                    true,
                    proj,
                    3,
                    WeightLayout::Transposed,
                )
                .unwrap();
                let want = single.forward(&x).unwrap();
                let got = y.narrow(1, p.offset, p.size).unwrap();
                assert!(max_diff(&got, &want) < 1e-5, "{proj:?} {layout:?}");
            }
        }
    }
}
