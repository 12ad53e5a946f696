//! One decoder-only transformer covering Llama, Mistral, Qwen2 and Qwen3. Built bottom-up
//! (`Mlp -> Attention -> DecoderLayer -> CausalLm`), names follow the HF checkpoints. The
//! model holds weights only: every per-request fact arrives in [`BatchInputs`] and the KV
//! cache lives in [`LayerKvCache`] tensors owned by the runner.

use crate::config::ModelConfig;
use crate::linear::{Linear, Proj};
use crate::lora::LoraStack;
use crate::rope::RotaryEmbedding;
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use lantern_kernels::{LoraBatch, LoraWeights, PagedAttnMetadata};

/// Per-step LoRA context: the resident slot weights and which slot each token uses.
#[derive(Clone, Copy)]
struct LoraCtx<'a> {
    stack: &'a LoraStack,
    batch: &'a LoraBatch,
}

impl<'a> LoraCtx<'a> {
    fn get(
        ctx: Option<Self>,
        layer: usize,
        proj: Proj,
    ) -> Option<(&'a LoraWeights, &'a LoraBatch)> {
        let c = ctx?;
        Some((c.stack.weights(layer, proj)?, c.batch))
    }
}

/// One flattened batch: tokens of many sequences (prefill chunks and decode tokens mixed),
/// with no padding.
#[derive(Debug)]
pub struct BatchInputs {
    /// (T,) u32 token ids.
    pub input_ids: Tensor,
    /// (T,) u32 absolute position of each token in its sequence.
    pub positions: Tensor,
    /// Paged-attention metadata (slot mapping, block tables, query/context lengths).
    pub attn: PagedAttnMetadata,
    /// (S,) u32 rows of the batch whose logits are needed (usually each sequence's last token).
    pub logits_indices: Tensor,
    /// Adapter slot of each token; `None` (or no token with a slot) skips LoRA entirely.
    pub lora: Option<LoraBatch>,
}

/// The paged K and V cache of one layer: (num_blocks, block_size, num_kv_heads, head_dim) each.
#[derive(Debug, Clone)]
pub struct LayerKvCache {
    pub k: Tensor,
    pub v: Tensor,
}

#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn load(vb: VarBuilder, size: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(x, &self.weight, self.eps)
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn load(vb: VarBuilder, cfg: &ModelConfig, layer: usize) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate: Linear::load(vb.pp("gate_proj"), h, i, false, Proj::Gate, layer)?,
            up: Linear::load(vb.pp("up_proj"), h, i, false, Proj::Up, layer)?,
            down: Linear::load(vb.pp("down_proj"), i, h, false, Proj::Down, layer)?,
        })
    }

    fn forward(&self, x: &Tensor, lora: Option<LoraCtx>) -> Result<Tensor> {
        // (T, hidden) -> (T, intermediate) -> (T, hidden)
        let l = self.gate.layer();
        let g = candle_nn::ops::silu(
            &self
                .gate
                .forward_lora(x, LoraCtx::get(lora, l, Proj::Gate))?,
        )?;
        let u = self.up.forward_lora(x, LoraCtx::get(lora, l, Proj::Up))?;
        self.down
            .forward_lora(&(g * u)?, LoraCtx::get(lora, l, Proj::Down))
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    scale: f32,
}

impl Attention {
    fn load(vb: VarBuilder, cfg: &ModelConfig, layer: usize) -> Result<Self> {
        let h = cfg.hidden_size;
        let (nh, nkv, d) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let b = cfg.attention_bias;
        let (q_norm, k_norm) = if cfg.qk_norm {
            (
                Some(RmsNorm::load(vb.pp("q_norm"), d, cfg.rms_norm_eps)?),
                Some(RmsNorm::load(vb.pp("k_norm"), d, cfg.rms_norm_eps)?),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            q: Linear::load(vb.pp("q_proj"), h, nh * d, b, Proj::Q, layer)?,
            k: Linear::load(vb.pp("k_proj"), h, nkv * d, b, Proj::K, layer)?,
            v: Linear::load(vb.pp("v_proj"), h, nkv * d, b, Proj::V, layer)?,
            o: Linear::load(vb.pp("o_proj"), nh * d, h, cfg.o_bias, Proj::O, layer)?,
            q_norm,
            k_norm,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: d,
            scale: 1.0 / (d as f32).sqrt(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        attn: &PagedAttnMetadata,
        cache: &LayerKvCache,
        lora: Option<LoraCtx>,
    ) -> Result<Tensor> {
        let t = x.dim(0)?;
        let l = self.q.layer();
        // (T, heads, head_dim)
        let q = self
            .q
            .forward_lora(x, LoraCtx::get(lora, l, Proj::Q))?
            .reshape((t, self.num_heads, self.head_dim))?;
        let k = self
            .k
            .forward_lora(x, LoraCtx::get(lora, l, Proj::K))?
            .reshape((t, self.num_kv_heads, self.head_dim))?;
        let v = self
            .v
            .forward_lora(x, LoraCtx::get(lora, l, Proj::V))?
            .reshape((t, self.num_kv_heads, self.head_dim))?;
        let q = match &self.q_norm {
            Some(n) => n.forward(&q)?,
            None => q,
        };
        let k = match &self.k_norm {
            Some(n) => n.forward(&k)?,
            None => k,
        };
        let q = RotaryEmbedding::apply(&q, cos, sin)?;
        let k = RotaryEmbedding::apply(&k, cos, sin)?;
        lantern_kernels::write_kv_cache(
            &k,
            &v.contiguous()?,
            &cache.k,
            &cache.v,
            &attn.slot_mapping,
        )?;
        // (T, heads, head_dim)
        let out = lantern_kernels::paged_attention(&q, &cache.k, &cache.v, attn, self.scale)?;
        self.o.forward_lora(
            &out.reshape((t, self.num_heads * self.head_dim))?,
            LoraCtx::get(lora, l, Proj::O),
        )
    }
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
    attn: Attention,
    mlp: Mlp,
}

impl DecoderLayer {
    fn load(vb: VarBuilder, cfg: &ModelConfig, layer: usize) -> Result<Self> {
        Ok(Self {
            input_layernorm: RmsNorm::load(
                vb.pp("input_layernorm"),
                cfg.hidden_size,
                cfg.rms_norm_eps,
            )?,
            post_attention_layernorm: RmsNorm::load(
                vb.pp("post_attention_layernorm"),
                cfg.hidden_size,
                cfg.rms_norm_eps,
            )?,
            attn: Attention::load(vb.pp("self_attn"), cfg, layer)?,
            mlp: Mlp::load(vb.pp("mlp"), cfg, layer)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        attn: &PagedAttnMetadata,
        cache: &LayerKvCache,
        lora: Option<LoraCtx>,
    ) -> Result<Tensor> {
        let h = self.input_layernorm.forward(x)?;
        let h = (x + self.attn.forward(&h, cos, sin, attn, cache, lora)?)?;
        let m = self.post_attention_layernorm.forward(&h)?;
        h + self.mlp.forward(&m, lora)?
    }
}

/// A causal language model over a paged KV cache.
#[derive(Debug, Clone)]
pub struct CausalLm {
    cfg: ModelConfig,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    /// (vocab, hidden); shares storage with `embed_tokens` when embeddings are tied.
    lm_head: Tensor,
    rope: RotaryEmbedding,
    dtype: DType,
    device: Device,
}

impl CausalLm {
    /// Builds the model from a var builder rooted at the checkpoint's top level
    /// (`model.embed_tokens.weight`, `model.layers.N...`, `lm_head.weight`).
    pub fn load(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        Self::load_with_progress(vb, cfg, &mut |_, _| {})
    }

    /// Like [`CausalLm::load`], calling `progress(layers_done, num_layers)` as it goes.
    pub fn load_with_progress(
        vb: VarBuilder,
        cfg: &ModelConfig,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let vm = vb.pp("model");
        let embed_tokens = vm
            .pp("embed_tokens")
            .get((cfg.vocab_size, cfg.hidden_size), "weight")?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            layers.push(DecoderLayer::load(vm.pp(format!("layers.{i}")), cfg, i)?);
            progress(i + 1, cfg.num_hidden_layers);
        }
        let norm = RmsNorm::load(vm.pp("norm"), cfg.hidden_size, cfg.rms_norm_eps)?;
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            vb.pp("lm_head")
                .get((cfg.vocab_size, cfg.hidden_size), "weight")?
        };
        let rope = RotaryEmbedding::new(cfg, vb.dtype(), vb.device())?;
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs one flattened batch. Writes this step's K/V into `kv` (one entry per layer) and
    /// returns f32 logits (S, vocab) for the rows in `batch.logits_indices` only.
    pub fn forward(&self, batch: &BatchInputs, kv: &[LayerKvCache]) -> Result<Tensor> {
        self.forward_with_lora(batch, kv, None)
    }

    /// [`CausalLm::forward`] with adapter slots: tokens whose `batch.lora` slot is set get
    /// that slot's LoRA deltas on every targeted projection.
    pub fn forward_with_lora(
        &self,
        batch: &BatchInputs,
        kv: &[LayerKvCache],
        lora: Option<&LoraStack>,
    ) -> Result<Tensor> {
        let ctx = match (lora, &batch.lora) {
            (Some(stack), Some(b)) if b.any_lora => Some(LoraCtx { stack, batch: b }),
            _ => None,
        };
        if kv.len() != self.layers.len() {
            candle_core::bail!(
                "kv cache has {} layers but the model has {}",
                kv.len(),
                self.layers.len()
            );
        }
        // (T, hidden)
        let mut x = self.embed_tokens.index_select(&batch.input_ids, 0)?;
        // (T, head_dim / 2) each
        let (cos, sin) = self.rope.gather(&batch.positions)?;
        for (layer, cache) in self.layers.iter().zip(kv) {
            x = layer.forward(&x, &cos, &sin, &batch.attn, cache, ctx)?;
        }
        // (S, hidden): only the rows that will be sampled go through the norm and lm_head.
        let x = x.index_select(&batch.logits_indices, 0)?;
        let x = self.norm.forward(&x)?;
        x.matmul(&self.lm_head.t()?)?.to_dtype(DType::F32)
    }
}
