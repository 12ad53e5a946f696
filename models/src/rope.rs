//! Rotary position embeddings with a precomputed cos/sin table indexed by absolute
//! position, so one batch may hold tokens at any mix of positions.

use crate::config::{ModelConfig, RopeScaling};
use candle_core::{DType, Device, Result, Tensor};

/// Inverse frequencies, computed in f32 the way Hugging Face `transformers` does
/// (including Llama 3 frequency scaling) so our logits match the reference closely.
pub fn inv_freq(cfg: &ModelConfig) -> Vec<f32> {
    let dim = cfg.head_dim;
    let base = cfg.rope_theta as f32;
    let mut inv: Vec<f32> = (0..dim)
        .step_by(2)
        .map(|i| 1.0 / base.powf(i as f32 / dim as f32))
        .collect();
    match &cfg.rope_scaling {
        None => {}
        Some(RopeScaling::Linear { factor }) => {
            let f = *factor as f32;
            for x in inv.iter_mut() {
                *x /= f;
            }
        }
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => {
            let factor = *factor as f32;
            let low = *low_freq_factor as f32;
            let high = *high_freq_factor as f32;
            let old_ctx = *original_max_position_embeddings as f32;
            let low_freq_wavelen = old_ctx / low;
            let high_freq_wavelen = old_ctx / high;
            for x in inv.iter_mut() {
                let wavelen = 2.0 * std::f32::consts::PI / *x;
                let scaled = if wavelen > low_freq_wavelen {
                    *x / factor
                } else {
                    *x
                };
                let is_medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
                *x = if is_medium {
                    let smooth = (old_ctx / wavelen - low) / (high - low);
                    (1.0 - smooth) * scaled / factor + smooth * scaled
                } else {
                    scaled
                };
            }
        }
    }
    inv
}

/// cos/sin tables of shape (max_positions, head_dim / 2).
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    cos: Tensor,
    sin: Tensor,
    max_positions: usize,
}

impl RotaryEmbedding {
    pub fn new(cfg: &ModelConfig, dtype: DType, device: &Device) -> Result<Self> {
        let inv = inv_freq(cfg);
        let half = inv.len();
        let max_positions = cfg.max_position_embeddings;
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        for p in 0..max_positions {
            for f in &inv {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let cos = Tensor::from_vec(cos, (max_positions, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (max_positions, half), device)?.to_dtype(dtype)?;
        Ok(Self {
            cos,
            sin,
            max_positions,
        })
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// The (max_positions, head_dim / 2) cos table.
    pub fn cos(&self) -> &Tensor {
        &self.cos
    }

    /// The (max_positions, head_dim / 2) sin table.
    pub fn sin(&self) -> &Tensor {
        &self.sin
    }

    /// Gathers the table rows for `positions` (T,) u32: returns (cos, sin), each (T, head_dim/2).
    pub fn gather(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((
            self.cos.index_select(positions, 0)?,
            self.sin.index_select(positions, 0)?,
        ))
    }

    /// Applies rotary embeddings (non-interleaved halves, as in HF `rotate_half`) to
    /// x: (T, heads, head_dim) using gathered (cos, sin).
    pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let x4 = x.unsqueeze(0)?.contiguous()?;
        candle_nn::rotary_emb::rope_thd(&x4, cos, sin)?.squeeze(0)
    }
}
