//! PEFT LoRA adapters: loading and validating `adapter_config.json` +
//! `adapter_model.safetensors`, and [`LoraStack`], the device-resident slot weights the
//! model reads (owned by the runner, like the KV cache).
//!
//! Each targeted projection computes `y = x W^T + scale * (x A^T) B^T` per token with the
//! token's adapter slot, through `lantern_kernels::lora_add` (never by merging weights).

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::linear::Proj;
use candle_core::{DType, Device, Tensor};
use lantern_kernels::LoraWeights;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// All projections LoRA may target.
pub const LORA_TARGETS: [Proj; 7] = [
    Proj::Q,
    Proj::K,
    Proj::V,
    Proj::O,
    Proj::Gate,
    Proj::Up,
    Proj::Down,
];

fn proj_index(p: Proj) -> usize {
    match p {
        Proj::Q => 0,
        Proj::K => 1,
        Proj::V => 2,
        Proj::O => 3,
        Proj::Gate => 4,
        Proj::Up => 5,
        Proj::Down => 6,
    }
}

fn proj_from_name(name: &str) -> Option<Proj> {
    LORA_TARGETS.into_iter().find(|p| p.hf_name() == name)
}

/// (in_dim, out_dim) of a projection.
pub fn proj_dims(cfg: &ModelConfig, p: Proj) -> (usize, usize) {
    let h = cfg.hidden_size;
    let q = cfg.num_attention_heads * cfg.head_dim;
    let kv = cfg.num_key_value_heads * cfg.head_dim;
    match p {
        Proj::Q => (h, q),
        Proj::K | Proj::V => (h, kv),
        Proj::O => (q, h),
        Proj::Gate | Proj::Up => (h, cfg.intermediate_size),
        Proj::Down => (cfg.intermediate_size, h),
    }
}

fn cfg_err(dir: &Path, msg: impl Into<String>) -> ModelError {
    ModelError::Config {
        field: format!("LoRA adapter {}", dir.display()),
        message: msg.into(),
    }
}

/// A LoRA adapter in host memory (f32), validated against the base model.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    pub path: PathBuf,
    pub rank: usize,
    pub alpha: f64,
    /// alpha / r, or alpha / sqrt(r) with rsLoRA.
    pub scaling: f64,
    /// (layer, proj) -> (A (r, in), B (out, r)), f32 on the CPU.
    pub weights: HashMap<(usize, Proj), (Tensor, Tensor)>,
}

impl LoraAdapter {
    /// `owner/name`: what [`LoraAdapter::resolve_source`] downloads from the hub when no
    /// such local directory exists.
    pub fn looks_like_hub_id(source: &str) -> bool {
        source.split('/').count() == 2
            && !source.starts_with('.')
            && !source.starts_with('/')
            && !source.contains('\\')
            && source
                .split('/')
                .all(|part| !part.is_empty() && part != "..")
    }

    /// Where an adapter source lives on disk: an existing local directory as is, otherwise
    /// a hub id (`owner/name[@revision]`) downloaded with hf-hub.
    pub fn resolve_source(source: &str) -> Result<PathBuf> {
        let p = Path::new(source);
        if p.is_dir() {
            return Ok(p.to_path_buf());
        }
        if Self::looks_like_hub_id(source) {
            return crate::hub::download_adapter(source, false);
        }
        Err(ModelError::Source {
            model: source.to_string(),
            message: "no such adapter directory (and not a hub id owner/name)".into(),
        })
    }

    /// Loads a PEFT adapter directory and checks it fits `cfg` and `max_rank`.
    /// Anything unsupported is refused with a message naming it.
    pub fn load(dir: &Path, cfg: &ModelConfig, max_rank: usize) -> Result<Self> {
        let config_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|source| ModelError::Io {
            path: config_path.clone(),
            source,
        })?;
        let c: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ModelError::Json {
                path: config_path.clone(),
                source,
            })?;
        if let Some(t) = c.get("peft_type").and_then(|v| v.as_str()) {
            if t != "LORA" {
                return Err(cfg_err(
                    dir,
                    format!("peft_type `{t}` is not supported (only LORA)"),
                ));
            }
        }
        let rank = c
            .get("r")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| cfg_err(dir, "`r` is missing from adapter_config.json"))?
            as usize;
        if rank == 0 {
            return Err(cfg_err(dir, "`r` must be at least 1"));
        }
        if rank > max_rank {
            return Err(cfg_err(
                dir,
                format!("rank {rank} is above --max-lora-rank {max_rank}; raise --max-lora-rank"),
            ));
        }
        let alpha = c
            .get("lora_alpha")
            .and_then(|v| v.as_f64())
            .unwrap_or(rank as f64);
        if c.get("use_dora").and_then(|v| v.as_bool()) == Some(true) {
            return Err(cfg_err(
                dir,
                "DoRA adapters (`use_dora: true`) are not supported",
            ));
        }
        match c.get("modules_to_save") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Array(a)) if a.is_empty() => {}
            Some(v) => {
                return Err(cfg_err(
                    dir,
                    format!("`modules_to_save` ({v}) is not supported: only LoRA deltas on q/k/v/o/gate/up/down projections can be served"),
                ))
            }
        }
        if let Some(b) = c.get("bias").and_then(|v| v.as_str()) {
            if b != "none" {
                return Err(cfg_err(
                    dir,
                    format!("`bias: {b}` is not supported (only `none`)"),
                ));
            }
        }
        for key in ["rank_pattern", "alpha_pattern"] {
            if let Some(obj) = c.get(key).and_then(|v| v.as_object()) {
                if !obj.is_empty() {
                    return Err(cfg_err(dir, format!("per-module `{key}` is not supported")));
                }
            }
        }
        if !matches!(
            c.get("layers_to_transform"),
            None | Some(serde_json::Value::Null)
        ) {
            return Err(cfg_err(dir, "`layers_to_transform` is not supported"));
        }
        if c.get("fan_in_fan_out").and_then(|v| v.as_bool()) == Some(true) {
            // PEFT itself resets this to false for nn.Linear targets (it only applies to
            // GPT-2 style Conv1D layers); our targets are all linear layers.
            tracing::warn!(adapter = %dir.display(), "ignoring fan_in_fan_out=true for linear targets, as PEFT does");
        }
        let targets: Vec<Proj> = match c.get("target_modules") {
            Some(serde_json::Value::Array(a)) => {
                let mut v = Vec::new();
                for t in a {
                    let name = t.as_str().unwrap_or("");
                    match proj_from_name(name) {
                        Some(p) => v.push(p),
                        None => {
                            return Err(cfg_err(
                                dir,
                                format!("target module `{name}` is not supported (supported: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)"),
                            ))
                        }
                    }
                }
                v
            }
            Some(serde_json::Value::String(s)) if s == "all-linear" => LORA_TARGETS.to_vec(),
            Some(other) => {
                return Err(cfg_err(
                    dir,
                    format!(
                    "`target_modules` {other} is not supported: give a list of projection names"
                ),
                ))
            }
            None => return Err(cfg_err(dir, "`target_modules` is missing")),
        };
        let use_rslora = c.get("use_rslora").and_then(|v| v.as_bool()) == Some(true);
        let scaling = if use_rslora {
            alpha / (rank as f64).sqrt()
        } else {
            alpha / rank as f64
        };

        let st_path = dir.join("adapter_model.safetensors");
        // `exists`, not `is_file`: a named pipe is a valid source too (tests use one).
        if !st_path.exists() {
            if dir.join("adapter_model.bin").is_file() {
                return Err(cfg_err(
                    dir,
                    "adapter_model.bin (pickle) is not loaded for safety; convert it to adapter_model.safetensors",
                ));
            }
            return Err(cfg_err(dir, "adapter_model.safetensors is missing"));
        }
        let tensors = candle_core::safetensors::load(&st_path, &Device::Cpu)?;
        let mut weights = HashMap::new();
        let mut seen = 0usize;
        for (name, t) in &tensors {
            if name.contains("lora_magnitude_vector") {
                return Err(cfg_err(
                    dir,
                    format!("tensor `{name}` (DoRA) is not supported"),
                ));
            }
            if name.contains("lora_embedding")
                || name.contains("embed_tokens")
                || name.contains("lm_head")
            {
                return Err(cfg_err(
                    dir,
                    format!("tensor `{name}`: embedding / lm_head targets are not supported"),
                ));
            }
            let Some(rest) = name.split(".layers.").nth(1) else {
                return Err(cfg_err(dir, format!("unexpected tensor `{name}`")));
            };
            let mut parts = rest.split('.');
            let layer: usize = parts
                .next()
                .and_then(|l| l.parse().ok())
                .ok_or_else(|| cfg_err(dir, format!("cannot read the layer of `{name}`")))?;
            let _block = parts.next(); // self_attn | mlp
            let proj = parts
                .next()
                .and_then(proj_from_name)
                .ok_or_else(|| cfg_err(dir, format!("unsupported module in `{name}`")))?;
            let which = parts.next().unwrap_or("");
            if layer >= cfg.num_hidden_layers {
                return Err(cfg_err(
                    dir,
                    format!(
                        "`{name}`: layer {layer} does not exist in the base model ({} layers)",
                        cfg.num_hidden_layers
                    ),
                ));
            }
            if !targets.contains(&proj) {
                return Err(cfg_err(
                    dir,
                    format!(
                        "`{name}` targets {} which is not in target_modules",
                        proj.hf_name()
                    ),
                ));
            }
            let (in_dim, out_dim) = proj_dims(cfg, proj);
            let entry = weights.entry((layer, proj)).or_insert((
                Tensor::zeros(0, DType::F32, &Device::Cpu)?,
                Tensor::zeros(0, DType::F32, &Device::Cpu)?,
            ));
            let t = t.to_dtype(DType::F32)?;
            match which {
                "lora_A" => {
                    if t.dims() != [rank, in_dim] {
                        return Err(cfg_err(dir, format!("`{name}` has shape {:?}, expected [{rank}, {in_dim}] for this base model", t.dims())));
                    }
                    entry.0 = t;
                }
                "lora_B" => {
                    if t.dims() != [out_dim, rank] {
                        return Err(cfg_err(dir, format!("`{name}` has shape {:?}, expected [{out_dim}, {rank}] for this base model", t.dims())));
                    }
                    entry.1 = t;
                }
                other => return Err(cfg_err(dir, format!("`{name}`: unexpected part `{other}`"))),
            }
            seen += 1;
        }
        if seen == 0 {
            return Err(cfg_err(dir, "the adapter has no LoRA tensors"));
        }
        for ((layer, proj), (a, b)) in &weights {
            if a.elem_count() == 0 || b.elem_count() == 0 {
                return Err(cfg_err(
                    dir,
                    format!(
                        "layer {layer} {}: lora_A and lora_B must both be present",
                        proj.hf_name()
                    ),
                ));
            }
        }
        Ok(Self {
            path: dir.to_path_buf(),
            rank,
            alpha,
            scaling,
            weights,
        })
    }

    /// Bytes of this adapter's weights in `dtype`.
    pub fn size_bytes(&self, dtype: DType) -> usize {
        self.weights
            .values()
            .map(|(a, b)| (a.elem_count() + b.elem_count()) * dtype.size_in_bytes())
            .sum()
    }
}

/// Device-resident adapter slots: for every layer and projection, A and B of all slots
/// stacked and zero-padded to `max_rank`, plus per-slot scales. Owned by the runner;
/// the model only reads it.
#[derive(Debug)]
pub struct LoraStack {
    max_loras: usize,
    max_rank: usize,
    /// layers x 7 projections.
    a: Vec<[Tensor; 7]>,
    b: Vec<[Tensor; 7]>,
    scales: Vec<f32>,
    ranks: Vec<usize>,
    weights: Vec<[LoraWeights; 7]>,
    device: Device,
}

impl LoraStack {
    /// Allocates `max_loras` empty slots (zeros; scale 0) for `cfg` in `dtype`.
    pub fn new(
        cfg: &ModelConfig,
        max_loras: usize,
        max_rank: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut a = Vec::with_capacity(cfg.num_hidden_layers);
        let mut b = Vec::with_capacity(cfg.num_hidden_layers);
        for _ in 0..cfg.num_hidden_layers {
            let mk_a = |p: Proj| -> Result<Tensor> {
                let (i, _) = proj_dims(cfg, p);
                Ok(Tensor::zeros((max_loras, max_rank, i), dtype, device)?)
            };
            let mk_b = |p: Proj| -> Result<Tensor> {
                let (_, o) = proj_dims(cfg, p);
                Ok(Tensor::zeros((max_loras, o, max_rank), dtype, device)?)
            };
            a.push([
                mk_a(Proj::Q)?,
                mk_a(Proj::K)?,
                mk_a(Proj::V)?,
                mk_a(Proj::O)?,
                mk_a(Proj::Gate)?,
                mk_a(Proj::Up)?,
                mk_a(Proj::Down)?,
            ]);
            b.push([
                mk_b(Proj::Q)?,
                mk_b(Proj::K)?,
                mk_b(Proj::V)?,
                mk_b(Proj::O)?,
                mk_b(Proj::Gate)?,
                mk_b(Proj::Up)?,
                mk_b(Proj::Down)?,
            ]);
        }
        let mut s = Self {
            max_loras,
            max_rank,
            a,
            b,
            scales: vec![0.0; max_loras],
            ranks: vec![0; max_loras],
            weights: Vec::new(),
            device: device.clone(),
        };
        s.rebuild()?;
        Ok(s)
    }

    pub fn max_loras(&self) -> usize {
        self.max_loras
    }

    pub fn max_rank(&self) -> usize {
        self.max_rank
    }

    /// Rebuilds the per-(layer, proj) views after scales/ranks changed (the big A/B
    /// tensors are shared, not copied).
    fn rebuild(&mut self) -> Result<()> {
        let scales = Tensor::from_vec(self.scales.clone(), self.max_loras, &self.device)?;
        let mut weights = Vec::with_capacity(self.a.len());
        for (la, lb) in self.a.iter().zip(&self.b) {
            let mut v: Vec<LoraWeights> = Vec::with_capacity(7);
            for k in 0..7 {
                let w = LoraWeights::new(la[k].clone(), lb[k].clone(), scales.clone())?
                    .with_ranks(self.ranks.clone())?;
                v.push(w);
            }
            let arr: [LoraWeights; 7] = v.try_into().map_err(|_| {
                candle_core::Error::Msg("LoRA stack: expected 7 projections".into())
            })?;
            weights.push(arr);
        }
        self.weights = weights;
        Ok(())
    }

    /// Copies `adapter` into `slot` (in place; projections it does not target get zeros).
    pub fn load_slot(&mut self, slot: usize, adapter: &LoraAdapter) -> Result<()> {
        if slot >= self.max_loras {
            return Err(ModelError::config(
                "lora slot",
                format!("slot {slot} is outside 0..{}", self.max_loras),
            ));
        }
        if adapter.rank > self.max_rank {
            return Err(ModelError::config(
                "max_lora_rank",
                format!("adapter rank {} is above {}", adapter.rank, self.max_rank),
            ));
        }
        for (layer, (la, lb)) in self.a.iter().zip(&self.b).enumerate() {
            for p in LORA_TARGETS {
                let k = proj_index(p);
                let dtype = la[k].dtype();
                let (in_dim, out_dim) = (la[k].dim(2)?, lb[k].dim(1)?);
                // (1, max_rank, in) and (1, out, max_rank), zero-padded beyond the rank.
                let (a_pad, b_pad) = match adapter.weights.get(&(layer, p)) {
                    Some((a, b)) => {
                        let pad_r = self.max_rank - adapter.rank;
                        let a = if pad_r > 0 {
                            Tensor::cat(
                                &[
                                    a.clone(),
                                    Tensor::zeros((pad_r, in_dim), DType::F32, &Device::Cpu)?,
                                ],
                                0,
                            )?
                        } else {
                            a.clone()
                        };
                        let b = if pad_r > 0 {
                            Tensor::cat(
                                &[
                                    b.clone(),
                                    Tensor::zeros((out_dim, pad_r), DType::F32, &Device::Cpu)?,
                                ],
                                1,
                            )?
                        } else {
                            b.clone()
                        };
                        (a, b)
                    }
                    None => (
                        Tensor::zeros((self.max_rank, in_dim), DType::F32, &Device::Cpu)?,
                        Tensor::zeros((out_dim, self.max_rank), DType::F32, &Device::Cpu)?,
                    ),
                };
                let a_pad = a_pad
                    .to_dtype(dtype)?
                    .to_device(&self.device)?
                    .unsqueeze(0)?
                    .contiguous()?;
                let b_pad = b_pad
                    .to_dtype(dtype)?
                    .to_device(&self.device)?
                    .unsqueeze(0)?
                    .contiguous()?;
                la[k].slice_set(&a_pad, 0, slot)?;
                lb[k].slice_set(&b_pad, 0, slot)?;
            }
        }
        if let Some(s) = self.scales.get_mut(slot) {
            *s = adapter.scaling as f32;
        }
        if let Some(r) = self.ranks.get_mut(slot) {
            *r = adapter.rank;
        }
        self.rebuild()
    }

    /// Marks `slot` empty (scale 0, rank 0); its weights are never read again.
    pub fn clear_slot(&mut self, slot: usize) -> Result<()> {
        if let Some(s) = self.scales.get_mut(slot) {
            *s = 0.0;
        }
        if let Some(r) = self.ranks.get_mut(slot) {
            *r = 0;
        }
        self.rebuild()
    }

    /// The stacked weights of `proj` in `layer`.
    pub fn weights(&self, layer: usize, proj: Proj) -> Option<&LoraWeights> {
        self.weights.get(layer).map(|w| &w[proj_index(proj)])
    }
}
