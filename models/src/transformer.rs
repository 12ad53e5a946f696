//! One decoder-only transformer covering Llama, Mistral, Qwen2 and Qwen3. Built bottom-up
//! (`Mlp -> Attention -> DecoderLayer -> CausalLm`), names follow the HF checkpoints. The
//! model holds weights only: every per-request fact arrives in [`BatchInputs`] and the KV
//! cache lives in [`LayerKvCache`] tensors owned by the runner.
//!
//! Two builds of the same math ([`ModelOptions::fused`]):
//!
//! - fused (default): `qkv` and `gate_up` are one [`Linear`] each (weights concatenated at
//!   load); q, k and v are views of the qkv output, q and k rotated in place
//!   (`rotary_embedding_inplace`), k and v written to the cache as strided views; the MLP
//!   activation is `silu_and_mul`; every residual add is fused with the RMSNorm after it
//!   (`fused_add_rms_norm`), the last one with the final norm on the sampled rows only.
//!   LoRA deltas go onto each projection's slice of the fused output.
//! - unfused: separate projections and candle's `rms_norm`, `rope_thd` and `silu`.

use crate::config::ModelConfig;
use crate::linear::{Linear, Proj, QuantizedWeights, WeightLayout};
use crate::lora::LoraStack;
use crate::profile::op;
use crate::rope::RotaryEmbedding;
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use lantern_kernels::{LoraBatch, LoraWeights, PagedAttnMetadata};
use std::sync::Arc;

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

/// Options that change how a model is built and run, not what it computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelOptions {
    /// The fused path (default): q/k/v and gate/up each one matmul over weights concatenated
    /// at load, the residual add fused with the next RMSNorm, rotary embedding in place on
    /// views of the qkv output, and SiLU-and-mul in one op (`lantern-kernels`); the
    /// checkpoint's `(out, in)` weights are used as they are (no load-time transpose; on the
    /// CPU decode steps stream them through the skinny matmul kernel).
    /// `false` builds the model as before the fused path, for A/B benchmarks and debugging:
    /// separate projections, candle's RMSNorm / rotary / SiLU ops and every weight
    /// transposed at load (`--no-fused-ops`).
    pub fused: bool,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self { fused: true }
    }
}

impl ModelOptions {
    /// Weight layout of every projection: the checkpoint's `(out, in)` with the fused path,
    /// else `(in, out)` (the unfused model's, kept for A/B runs).
    fn weight_layout(&self) -> WeightLayout {
        if self.fused {
            WeightLayout::Checkpoint
        } else {
            WeightLayout::Transposed
        }
    }
}

/// What each layer needs for the rotary embedding of one batch.
enum RopeInputs<'a> {
    /// Unfused path: the table rows of every token's position, (T, head_dim / 2) each.
    Gathered { cos: Tensor, sin: Tensor },
    /// Fused path: the whole (max_positions, head_dim / 2) tables and (T,) u32 positions.
    Table {
        cos: &'a Tensor,
        sin: &'a Tensor,
        positions: &'a Tensor,
    },
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

    /// candle's RMSNorm (unfused path).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(x, &self.weight, self.eps)
    }

    /// `lantern_kernels::rms_norm` (fused path).
    fn forward_fused(&self, x: &Tensor) -> Result<Tensor> {
        op("rms_norm", || {
            lantern_kernels::rms_norm(x, &self.weight, self.eps)
        })
    }

    /// `h = x + residual`; returns `(rms_norm(h), h)` in one op (fused path).
    fn add_forward(&self, x: &Tensor, residual: &Tensor) -> Result<(Tensor, Tensor)> {
        op("add_rms_norm", || {
            lantern_kernels::fused_add_rms_norm(x, residual, &self.weight, self.eps)
        })
    }
}

/// The gate and up projections: one fused matmul, or two (unfused path).
#[derive(Debug, Clone)]
enum GateUp {
    /// (T, hidden) -> (T, 2 * intermediate): gate, then up.
    Fused(Linear),
    Separate {
        gate: Linear,
        up: Linear,
    },
}

#[derive(Debug, Clone)]
struct Mlp {
    gate_up: GateUp,
    down: Linear,
    intermediate: usize,
}

impl Mlp {
    fn load(
        vb: VarBuilder,
        quant: Option<&QuantizedWeights>,
        cfg: &ModelConfig,
        layer: usize,
        opts: &ModelOptions,
    ) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let layout = opts.weight_layout();
        let gate_up = if opts.fused {
            GateUp::Fused(Linear::load_fused(
                vb.clone(),
                quant,
                h,
                &[(Proj::Gate, i), (Proj::Up, i)],
                false,
                layer,
                layout,
            )?)
        } else {
            GateUp::Separate {
                gate: Linear::load(
                    vb.pp("gate_proj"),
                    quant,
                    h,
                    i,
                    false,
                    Proj::Gate,
                    layer,
                    layout,
                )?,
                up: Linear::load(
                    vb.pp("up_proj"),
                    quant,
                    h,
                    i,
                    false,
                    Proj::Up,
                    layer,
                    layout,
                )?,
            }
        };
        Ok(Self {
            gate_up,
            down: Linear::load(
                vb.pp("down_proj"),
                quant,
                i,
                h,
                false,
                Proj::Down,
                layer,
                layout,
            )?,
            intermediate: i,
        })
    }

    fn forward(&self, x: &Tensor, lora: Option<LoraCtx>) -> Result<Tensor> {
        // (T, hidden) -> (T, intermediate) -> (T, hidden)
        let l = self.down.layer();
        let act = match &self.gate_up {
            GateUp::Separate { gate, up } => {
                let g = candle_nn::ops::silu(
                    &gate.forward_lora(x, LoraCtx::get(lora, l, Proj::Gate))?,
                )?;
                let u = up.forward_lora(x, LoraCtx::get(lora, l, Proj::Up))?;
                (g * u)?
            }
            GateUp::Fused(gate_up) => {
                // (T, 2 * intermediate)
                let y = op("gate_up_proj", || gate_up.forward(x))?;
                match lora {
                    None => op("silu_and_mul", || lantern_kernels::silu_and_mul(&y))?,
                    Some(c) => {
                        let i = self.intermediate;
                        let mut parts = gate_up.lora_parts(&y, x, c.stack, c.batch)?.into_iter();
                        let g = match parts.next().flatten() {
                            Some(g) => g,
                            None => y.narrow(1, 0, i)?,
                        };
                        let u = match parts.next().flatten() {
                            Some(u) => u,
                            None => y.narrow(1, i, i)?,
                        };
                        lantern_kernels::silu_mul(&g, &u)?
                    }
                }
            }
        };
        op("down_proj", || {
            self.down
                .forward_lora(&act, LoraCtx::get(lora, l, Proj::Down))
        })
    }
}

/// The q, k and v projections: one fused matmul, or three (unfused path).
#[derive(Debug, Clone)]
enum Qkv {
    /// (T, hidden) -> (T, (heads + 2 * kv_heads) * head_dim): q, then k, then v.
    Fused(Linear),
    Separate {
        q: Linear,
        k: Linear,
        v: Linear,
    },
}

#[derive(Debug, Clone)]
struct Attention {
    qkv: Qkv,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    scale: f32,
}

impl Attention {
    fn load(
        vb: VarBuilder,
        quant: Option<&QuantizedWeights>,
        cfg: &ModelConfig,
        layer: usize,
        opts: &ModelOptions,
    ) -> Result<Self> {
        let h = cfg.hidden_size;
        let (nh, nkv, d) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let b = cfg.attention_bias;
        let layout = opts.weight_layout();
        let (q_norm, k_norm) = if cfg.qk_norm {
            (
                Some(RmsNorm::load(vb.pp("q_norm"), d, cfg.rms_norm_eps)?),
                Some(RmsNorm::load(vb.pp("k_norm"), d, cfg.rms_norm_eps)?),
            )
        } else {
            (None, None)
        };
        let qkv = if opts.fused {
            Qkv::Fused(Linear::load_fused(
                vb.clone(),
                quant,
                h,
                &[(Proj::Q, nh * d), (Proj::K, nkv * d), (Proj::V, nkv * d)],
                b,
                layer,
                layout,
            )?)
        } else {
            Qkv::Separate {
                q: Linear::load(vb.pp("q_proj"), quant, h, nh * d, b, Proj::Q, layer, layout)?,
                k: Linear::load(
                    vb.pp("k_proj"),
                    quant,
                    h,
                    nkv * d,
                    b,
                    Proj::K,
                    layer,
                    layout,
                )?,
                v: Linear::load(
                    vb.pp("v_proj"),
                    quant,
                    h,
                    nkv * d,
                    b,
                    Proj::V,
                    layer,
                    layout,
                )?,
            }
        };
        Ok(Self {
            qkv,
            o: Linear::load(
                vb.pp("o_proj"),
                quant,
                nh * d,
                h,
                cfg.o_bias,
                Proj::O,
                layer,
                layout,
            )?,
            q_norm,
            k_norm,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: d,
            scale: 1.0 / (d as f32).sqrt(),
        })
    }

    /// Unfused path: q, k (rotated, contiguous) and v, each (T, heads, head_dim).
    fn qkv_unfused(
        &self,
        (q, k, v): (&Linear, &Linear, &Linear),
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        lora: Option<LoraCtx>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let t = x.dim(0)?;
        let l = self.o.layer();
        // (T, heads, head_dim)
        let q = q
            .forward_lora(x, LoraCtx::get(lora, l, Proj::Q))?
            .reshape((t, self.num_heads, self.head_dim))?;
        let k = k
            .forward_lora(x, LoraCtx::get(lora, l, Proj::K))?
            .reshape((t, self.num_kv_heads, self.head_dim))?;
        let v = v
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
        Ok((q, k, v.contiguous()?))
    }

    /// Fused path: one matmul, then q, k and v as views of its output (T, heads, head_dim),
    /// q and k rotated in place. No copies unless LoRA or the q/k norms make new tensors.
    fn qkv_fused(
        &self,
        qkv: &Linear,
        x: &Tensor,
        (cos, sin, positions): (&Tensor, &Tensor, &Tensor),
        lora: Option<LoraCtx>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let t = x.dim(0)?;
        let (nh, nkv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        // (T, (heads + 2 * kv_heads) * head_dim)
        let y = op("qkv_proj", || qkv.forward(x))?;
        // (T, heads + 2 * kv_heads, head_dim): a view; each part keeps the row stride of y.
        let heads = y.reshape((t, nh + 2 * nkv, d))?;
        let mut q = heads.narrow(1, 0, nh)?;
        let mut k = heads.narrow(1, nh, nkv)?;
        let mut v = heads.narrow(1, nh + nkv, nkv)?;
        if let Some(c) = lora {
            let adjusted = qkv.lora_parts(&y, x, c.stack, c.batch)?;
            for ((part, n), adj) in [(&mut q, nh), (&mut k, nkv), (&mut v, nkv)]
                .into_iter()
                .zip(adjusted)
            {
                if let Some(a) = adj {
                    // (T, n * head_dim), contiguous -> (T, n, head_dim)
                    *part = a.reshape((t, n, d))?;
                }
            }
        }
        if let Some(n) = &self.q_norm {
            q = n.forward_fused(&q)?;
        }
        if let Some(n) = &self.k_norm {
            k = n.forward_fused(&k)?;
        }
        op("rotary", || {
            lantern_kernels::rotary_embedding_inplace(&q, cos, sin, positions)?;
            lantern_kernels::rotary_embedding_inplace(&k, cos, sin, positions)
        })?;
        Ok((q, k, v))
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &RopeInputs,
        attn: &PagedAttnMetadata,
        cache: &LayerKvCache,
        lora: Option<LoraCtx>,
    ) -> Result<Tensor> {
        let t = x.dim(0)?;
        let l = self.o.layer();
        // (T, heads, head_dim) each
        let (q, k, v) = match (&self.qkv, rope) {
            (Qkv::Separate { q, k, v }, RopeInputs::Gathered { cos, sin }) => {
                self.qkv_unfused((q, k, v), x, cos, sin, lora)?
            }
            (
                Qkv::Fused(qkv),
                RopeInputs::Table {
                    cos,
                    sin,
                    positions,
                },
            ) => self.qkv_fused(qkv, x, (cos, sin, positions), lora)?,
            _ => candle_core::bail!(
                "layer {l}: rotary inputs do not match the projections (fused and unfused mixed)"
            ),
        };
        // Strided k/v rows (unit stride on head_dim) are written as they are.
        op("write_kv_cache", || {
            lantern_kernels::write_kv_cache(&k, &v, &cache.k, &cache.v, &attn.slot_mapping)
        })?;
        // (T, heads, head_dim); a strided q is made contiguous inside.
        let out = op("paged_attention", || {
            lantern_kernels::paged_attention(&q, &cache.k, &cache.v, attn, self.scale)
        })?;
        op("o_proj", || {
            self.o.forward_lora(
                &out.reshape((t, self.num_heads * self.head_dim))?,
                LoraCtx::get(lora, l, Proj::O),
            )
        })
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
    fn load(
        vb: VarBuilder,
        quant: Option<&QuantizedWeights>,
        cfg: &ModelConfig,
        layer: usize,
        opts: &ModelOptions,
    ) -> Result<Self> {
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
            attn: Attention::load(vb.pp("self_attn"), quant, cfg, layer, opts)?,
            mlp: Mlp::load(vb.pp("mlp"), quant, cfg, layer, opts)?,
        })
    }

    /// Unfused path: `x` is the residual stream in, the residual stream out is returned.
    fn forward(
        &self,
        x: &Tensor,
        rope: &RopeInputs,
        attn: &PagedAttnMetadata,
        cache: &LayerKvCache,
        lora: Option<LoraCtx>,
    ) -> Result<Tensor> {
        let h = self.input_layernorm.forward(x)?;
        let h = (x + self.attn.forward(&h, rope, attn, cache, lora)?)?;
        let m = self.post_attention_layernorm.forward(&h)?;
        h + self.mlp.forward(&m, lora)?
    }

    /// Fused path: the residual stream is `x + residual` (just `x`, the embeddings, in the
    /// first layer, where `residual` is `None`); each residual add is fused with the norm
    /// that follows it. Returns `(mlp_out, residual)`, whose sum is the stream out.
    #[allow(clippy::too_many_arguments)]
    fn forward_fused(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        rope: &RopeInputs,
        attn: &PagedAttnMetadata,
        cache: &LayerKvCache,
        lora: Option<LoraCtx>,
    ) -> Result<(Tensor, Tensor)> {
        let (h, residual) = match residual {
            None => (self.input_layernorm.forward_fused(x)?, x.clone()),
            Some(r) => self.input_layernorm.add_forward(x, r)?,
        };
        let a = self.attn.forward(&h, rope, attn, cache, lora)?;
        let (m, residual) = self.post_attention_layernorm.add_forward(&a, &residual)?;
        Ok((self.mlp.forward(&m, lora)?, residual))
    }
}

/// The token embedding table `(vocab, hidden)`: dense, or block-quantized with the rows
/// of each step's tokens dequantized on lookup.
#[derive(Debug, Clone)]
enum Embedding {
    Dense(Tensor),
    Quantized(Arc<QTensor>),
}

/// The output projection `(vocab, hidden)`: dense or block-quantized (a tied quantized
/// embedding is shared, not copied).
#[derive(Debug, Clone)]
enum LmHead {
    Dense(Tensor),
    Quantized(QMatMul),
}

/// A causal language model over a paged KV cache.
#[derive(Debug, Clone)]
pub struct CausalLm {
    cfg: ModelConfig,
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    /// (vocab, hidden); shares storage with `embed_tokens` when embeddings are tied.
    lm_head: LmHead,
    /// Bytes of block-quantized weights (0 when every weight is dense).
    quantized_bytes: usize,
    rope: RotaryEmbedding,
    opts: ModelOptions,
    dtype: DType,
    device: Device,
}

impl CausalLm {
    /// Builds the model from a var builder rooted at the checkpoint's top level
    /// (`model.embed_tokens.weight`, `model.layers.N...`, `lm_head.weight`).
    pub fn load(vb: VarBuilder, cfg: &ModelConfig, opts: &ModelOptions) -> Result<Self> {
        Self::load_with_progress(vb, cfg, opts, &mut |_, _| {})
    }

    /// Like [`CausalLm::load`], calling `progress(layers_done, num_layers)` as it goes.
    pub fn load_with_progress(
        vb: VarBuilder,
        cfg: &ModelConfig,
        opts: &ModelOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        Self::load_quantized(vb, None, cfg, opts, progress)
    }

    /// Like [`CausalLm::load_with_progress`], taking every weight found in `quant` (by
    /// checkpoint name) in its block-quantized form instead of from `vb`: the projections,
    /// the embedding table (rows dequantized on lookup) and `lm_head`.
    pub fn load_quantized(
        vb: VarBuilder,
        quant: Option<&QuantizedWeights>,
        cfg: &ModelConfig,
        opts: &ModelOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let (v, h) = (cfg.vocab_size, cfg.hidden_size);
        let quantized = |name: &str| -> Result<Option<Arc<QTensor>>> {
            match quant.and_then(|q| q.get(name)) {
                None => Ok(None),
                Some(q) if q.shape().dims() == [v, h] => Ok(Some(q.clone())),
                Some(q) => candle_core::bail!(
                    "{name}: quantized weight is {:?}, expected ({v}, {h})",
                    q.shape().dims()
                ),
            }
        };
        let vm = vb.pp("model");
        let embed_tokens = match quantized("model.embed_tokens.weight")? {
            Some(q) => Embedding::Quantized(q),
            None => Embedding::Dense(vm.pp("embed_tokens").get((v, h), "weight")?),
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            layers.push(DecoderLayer::load(
                vm.pp(format!("layers.{i}")),
                quant,
                cfg,
                i,
                opts,
            )?);
            progress(i + 1, cfg.num_hidden_layers);
        }
        let norm = RmsNorm::load(vm.pp("norm"), cfg.hidden_size, cfg.rms_norm_eps)?;
        let lm_head = if cfg.tie_word_embeddings {
            match &embed_tokens {
                Embedding::Dense(t) => LmHead::Dense(t.clone()),
                Embedding::Quantized(q) => LmHead::Quantized(QMatMul::from_arc(q.clone())?),
            }
        } else {
            match quantized("lm_head.weight")? {
                Some(q) => LmHead::Quantized(QMatMul::from_arc(q)?),
                None => LmHead::Dense(vb.pp("lm_head").get((v, h), "weight")?),
            }
        };
        let rope = RotaryEmbedding::new(cfg, vb.dtype(), vb.device())?;
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            quantized_bytes: quant.map_or(0, QuantizedWeights::bytes),
            rope,
            opts: *opts,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The options the model was built with.
    pub fn options(&self) -> &ModelOptions {
        &self.opts
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Bytes of weights held block-quantized (GGUF Q8_0, Q4_K, ...); 0 when all are dense.
    pub fn quantized_bytes(&self) -> usize {
        self.quantized_bytes
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
        let x = op("embed", || match &self.embed_tokens {
            Embedding::Dense(t) => t.index_select(&batch.input_ids, 0),
            Embedding::Quantized(q) => {
                let x = q.embedding(&batch.input_ids)?;
                if x.dtype() == self.dtype {
                    Ok(x)
                } else {
                    x.to_dtype(self.dtype)
                }
            }
        })?;
        // (S, hidden): only the rows that will be sampled go through the final norm and
        // lm_head.
        let x = if self.opts.fused {
            let rope = RopeInputs::Table {
                cos: self.rope.cos(),
                sin: self.rope.sin(),
                positions: &batch.positions,
            };
            // The stream is mlp_out + residual; each add is fused with the next norm.
            let (mut x, mut residual) = (x, None);
            for (layer, cache) in self.layers.iter().zip(kv) {
                let (out, r) =
                    layer.forward_fused(&x, residual.as_ref(), &rope, &batch.attn, cache, ctx)?;
                (x, residual) = (out, Some(r));
            }
            let x = x.index_select(&batch.logits_indices, 0)?;
            match residual {
                Some(r) => {
                    let r = r.index_select(&batch.logits_indices, 0)?;
                    self.norm.add_forward(&x, &r)?.0
                }
                None => self.norm.forward_fused(&x)?,
            }
        } else {
            // (T, head_dim / 2) each
            let (cos, sin) = self.rope.gather(&batch.positions)?;
            let rope = RopeInputs::Gathered { cos, sin };
            let mut x = x;
            for (layer, cache) in self.layers.iter().zip(kv) {
                x = layer.forward(&x, &rope, &batch.attn, cache, ctx)?;
            }
            let x = x.index_select(&batch.logits_indices, 0)?;
            self.norm.forward(&x)?
        };
        let logits = op("lm_head", || match &self.lm_head {
            LmHead::Dense(w) if self.opts.fused => crate::linear::matmul_checkpoint(&x, w),
            LmHead::Dense(w) => x.matmul(&w.t()?),
            LmHead::Quantized(w) => crate::linear::quantized_forward(w, &x),
        })?;
        op("logits_to_f32", || logits.to_dtype(DType::F32))
    }
}
