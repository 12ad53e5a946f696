//! The one linear-layer type every projection goes through. Today it is `y = x W^T + b`;
//! multi-LoRA (issue 6) adds per-token low-rank deltas here without touching the models.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

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

/// A dense linear layer `(T, in) -> (T, out)` with an optional bias.
#[derive(Debug, Clone)]
pub struct Linear {
    /// (in, out): the checkpoint's (out, in) weight transposed once at load, so the
    /// forward pass is a plain row-major (T, in) x (in, out) product.
    weight_t: Tensor,
    bias: Option<Tensor>,
    proj: Proj,
    layer: usize,
}

impl Linear {
    pub fn load(
        vb: VarBuilder,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        proj: Proj,
        layer: usize,
    ) -> Result<Self> {
        let weight_t = vb.get((out_dim, in_dim), "weight")?.t()?.contiguous()?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self {
            weight_t,
            bias,
            proj,
            layer,
        })
    }

    pub fn proj(&self) -> Proj {
        self.proj
    }

    pub fn layer(&self) -> usize {
        self.layer
    }

    pub fn in_dim(&self) -> usize {
        self.weight_t.dims().first().copied().unwrap_or(0)
    }

    pub fn out_dim(&self) -> usize {
        self.weight_t.dims().get(1).copied().unwrap_or(0)
    }
}

impl Linear {
    /// `x W^T + b`, plus each token's LoRA delta when `lora` is given and some token uses
    /// an adapter (base-only batches skip the LoRA path entirely).
    pub fn forward_lora(
        &self,
        x: &Tensor,
        lora: Option<(&lantern_kernels::LoraWeights, &lantern_kernels::LoraBatch)>,
    ) -> Result<Tensor> {
        let y = self.forward(x)?;
        match lora {
            Some((w, batch)) if batch.any_lora => lantern_kernels::lora_add(&y, x, w, batch),
            _ => Ok(y),
        }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // x: (T, in) -> (T, out)
        let y = x.matmul(&self.weight_t)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}
