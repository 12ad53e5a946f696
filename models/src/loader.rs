//! Turning a model reference (local directory, `.gguf` file or hub id) into a loaded
//! [`LoadedModel`]: config, weights (memory-mapped safetensors or dequantized GGUF),
//! tokenizer, EOS ids and chat template.

use crate::config::{read_generation_eos, Architecture, ModelConfig};
use crate::error::{ModelError, Result};
use crate::gguf_tokenizer::GgufTokenizerInfo;
use crate::linear::{quantized_from_bytes, quantized_row_bytes, QuantizedWeights};
use crate::transformer::{CausalLm, ModelOptions};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// `--dtype`: the weight and activation dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum DTypeChoice {
    /// f32 on CPU, bf16 on CUDA.
    #[default]
    Auto,
    #[cfg_attr(
        feature = "clap",
        value(name = "float32", alias = "f32", alias = "float")
    )]
    F32,
    #[cfg_attr(feature = "clap", value(name = "bfloat16", alias = "bf16"))]
    BF16,
    #[cfg_attr(
        feature = "clap",
        value(name = "float16", alias = "f16", alias = "half")
    )]
    F16,
}

impl DTypeChoice {
    pub fn resolve(self, device: &Device) -> DType {
        match self {
            Self::Auto => {
                if device.is_cpu() {
                    DType::F32
                } else {
                    DType::BF16
                }
            }
            Self::F32 => DType::F32,
            Self::BF16 => DType::BF16,
            Self::F16 => DType::F16,
        }
    }
}

/// `--quantization`: what happens to the block-quantized tensors of a GGUF file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quantization {
    /// `gguf` on the CPU; on CUDA `none` (the quantized CUDA matmul is not validated yet).
    #[default]
    Auto,
    /// Keep the GGUF's quantized projection, embedding and `lm_head` weights in their block
    /// format (Q8_0, Q4_0, Q4_1, Q4_K, Q6_K, ...): the memory of the file, and fewer bytes
    /// to stream per decode step. Norms and biases are dense (`--dtype`).
    Gguf,
    /// Dequantize every tensor to `--dtype` at load.
    None,
}

impl Quantization {
    /// The accepted spellings, for messages.
    pub const NAMES: &'static str = "auto, gguf, none";

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Some(Self::Auto),
            "gguf" => Some(Self::Gguf),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    /// Whether a GGUF's quantized tensors stay quantized on `device`.
    pub fn keeps_gguf_blocks(self, device: &Device) -> bool {
        match self {
            Self::Auto => device.is_cpu(),
            Self::Gguf => true,
            Self::None => false,
        }
    }
}

/// Everything the engine needs from a model directory besides the weights.
#[derive(Debug, Clone)]
pub struct ModelMeta {
    pub config: ModelConfig,
    /// EOS ids: generation_config.json first, then config.json, then the tokenizer's eos.
    pub eos_token_ids: Vec<u32>,
    pub bos_token_id: Option<u32>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub chat_template: Option<String>,
    /// Where the files were found (directory or .gguf file).
    pub path: PathBuf,
}

/// A model ready to run.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub model: CausalLm,
    pub tokenizer: Tokenizer,
    pub meta: ModelMeta,
}

/// Where a model reference points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A directory in Hugging Face layout (config.json, *.safetensors, tokenizer.json).
    HfDir(PathBuf),
    /// A single GGUF file (weights, tokenizer and config in its metadata).
    Gguf(PathBuf),
    /// A hub id such as `Qwen/Qwen2.5-7B-Instruct`.
    Hub(String),
}

impl ModelSource {
    /// Classifies a `--model` argument.
    pub fn parse(spec: &str) -> Result<Self> {
        let p = Path::new(spec);
        if p.is_file() {
            if p.extension().and_then(|e| e.to_str()) == Some("gguf") {
                return Ok(Self::Gguf(p.to_path_buf()));
            }
            return Err(ModelError::Source {
                model: spec.into(),
                message: "a model file must be a .gguf; otherwise pass a directory".into(),
            });
        }
        if p.is_dir() {
            if p.join("config.json").is_file() {
                return Ok(Self::HfDir(p.to_path_buf()));
            }
            let ggufs = list_with_ext(p, "gguf");
            if ggufs.len() == 1 {
                if let Some(g) = ggufs.into_iter().next() {
                    return Ok(Self::Gguf(g));
                }
            }
            return Err(ModelError::Source {
                model: spec.into(),
                message: "directory has no config.json (and not exactly one .gguf file)".into(),
            });
        }
        let looks_like_hub_id = spec.split('/').count() == 2
            && !spec.starts_with('.')
            && !spec.starts_with('/')
            && spec.split('/').all(|s| !s.is_empty());
        if looks_like_hub_id {
            Ok(Self::Hub(spec.to_string()))
        } else {
            Err(ModelError::Source {
                model: spec.into(),
                message: "no such file or directory, and not a hub id of the form owner/name"
                    .into(),
            })
        }
    }
}

fn list_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(ext))
        .collect();
    v.sort();
    v
}

/// Options for [`load_model`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub dtype: DTypeChoice,
    pub device: Device,
    /// Show download progress bars (hub downloads).
    pub progress: bool,
    /// `--chat-template FILE` contents, overriding the model's own.
    pub chat_template_override: Option<String>,
    /// How the model is built (`--no-fused-ops` turns `fused` off).
    pub model: ModelOptions,
    /// GGUF files: keep quantized weights quantized or dequantize them (`--quantization`).
    pub quantization: Quantization,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DTypeChoice::Auto,
            device: Device::Cpu,
            progress: true,
            chat_template_override: None,
            model: ModelOptions::default(),
            quantization: Quantization::Auto,
        }
    }
}

/// Loads a model from a local directory, a `.gguf` file or the hub.
pub fn load_model(spec: &str, opts: &LoadOptions) -> Result<LoadedModel> {
    let source = ModelSource::parse(spec)?;
    if opts.quantization == Quantization::Gguf && !matches!(source, ModelSource::Gguf(_)) {
        return Err(ModelError::Source {
            model: spec.into(),
            message: "--quantization gguf needs a .gguf model file; safetensors checkpoints load in their own dtype (drop the flag)".into(),
        });
    }
    let dir_or_file = match &source {
        ModelSource::Hub(id) => crate::hub::download(id, opts.progress)?,
        ModelSource::HfDir(p) | ModelSource::Gguf(p) => p.clone(),
    };
    let dtype = opts.dtype.resolve(&opts.device);
    let bar = if opts.progress {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b.set_message("loading weights");
        Some(b)
    } else {
        None
    };
    let mut progress = |done: usize, total: usize| {
        if let Some(b) = &bar {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
    };
    let mut loaded = match source {
        ModelSource::Gguf(_) => load_gguf_with_progress(
            &dir_or_file,
            dtype,
            &opts.device,
            &opts.model,
            opts.quantization.keeps_gguf_blocks(&opts.device),
            &mut progress,
        )?,
        ModelSource::HfDir(_) | ModelSource::Hub(_) => load_hf_dir_with_progress(
            &dir_or_file,
            dtype,
            &opts.device,
            &opts.model,
            &mut progress,
        )?,
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(t) = &opts.chat_template_override {
        loaded.meta.chat_template = Some(t.clone());
    }
    Ok(loaded)
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ModelError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// A special token in tokenizer_config.json is a string or `{"content": ...}`.
fn token_string(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// Chat template from tokenizer_config.json (a string, or a list of named templates) or a
/// `chat_template.jinja` file beside it.
fn chat_template_from_dir(dir: &Path, tok_cfg: Option<&serde_json::Value>) -> Option<String> {
    if let Ok(t) = std::fs::read_to_string(dir.join("chat_template.jinja")) {
        return Some(t);
    }
    match tok_cfg?.get("chat_template")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(items) => {
            let named = |n: &str| {
                items.iter().find_map(|it| {
                    (it.get("name")?.as_str()? == n)
                        .then(|| it.get("template")?.as_str().map(str::to_string))
                        .flatten()
                })
            };
            named("default").or_else(|| {
                items
                    .first()
                    .and_then(|it| it.get("template")?.as_str().map(str::to_string))
            })
        }
        _ => None,
    }
}

/// Loads a Hugging Face layout directory.
pub fn load_hf_dir(
    dir: &Path,
    dtype: DType,
    device: &Device,
    opts: &ModelOptions,
) -> Result<LoadedModel> {
    load_hf_dir_with_progress(dir, dtype, device, opts, &mut |_, _| {})
}

fn load_hf_dir_with_progress(
    dir: &Path,
    dtype: DType,
    device: &Device,
    opts: &ModelOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LoadedModel> {
    let config = ModelConfig::from_file(&dir.join("config.json"))?;
    let weights = safetensors_files(dir)?;
    // SAFETY: the files are memory-mapped read-only; we require that nobody modifies the
    // checkpoint files while the server runs (the same contract as every mmap loader).
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&weights, dtype, device)? };
    let model = CausalLm::load_with_progress(vb, &config, opts, progress)?;

    let tok_path = dir.join("tokenizer.json");
    let tokenizer = Tokenizer::from_file(&tok_path)
        .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", tok_path.display())))?;
    let tok_cfg_path = dir.join("tokenizer_config.json");
    let tok_cfg = if tok_cfg_path.is_file() {
        Some(read_json(&tok_cfg_path)?)
    } else {
        None
    };
    let bos_token = token_string(tok_cfg.as_ref().and_then(|c| c.get("bos_token")));
    let eos_token = token_string(tok_cfg.as_ref().and_then(|c| c.get("eos_token")));
    let gen_path = dir.join("generation_config.json");
    let mut eos_token_ids = if gen_path.is_file() {
        read_generation_eos(&gen_path)?.unwrap_or_default()
    } else {
        Vec::new()
    };
    if eos_token_ids.is_empty() {
        eos_token_ids = config.eos_token_ids.clone();
    }
    if eos_token_ids.is_empty() {
        if let Some(id) = eos_token.as_deref().and_then(|t| tokenizer.token_to_id(t)) {
            eos_token_ids.push(id);
        }
    }
    let bos_token_id = config
        .bos_token_id
        .or_else(|| bos_token.as_deref().and_then(|t| tokenizer.token_to_id(t)));
    let chat_template = chat_template_from_dir(dir, tok_cfg.as_ref());
    Ok(LoadedModel {
        model,
        tokenizer,
        meta: ModelMeta {
            config,
            eos_token_ids,
            bos_token_id,
            bos_token,
            eos_token,
            chat_template,
            path: dir.to_path_buf(),
        },
    })
}

/// `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let v = read_json(&index)?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| {
                ModelError::config("weight_map", "missing from model.safetensors.index.json")
            })?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(ModelError::Source {
        model: dir.display().to_string(),
        message: "no model.safetensors or model.safetensors.index.json (pytorch .bin checkpoints are not supported; convert them to safetensors)".into(),
    })
}

fn md_u64(md: &HashMap<String, gguf_file::Value>, key: &str) -> Result<u64> {
    let v = md
        .get(key)
        .ok_or_else(|| ModelError::config(key, "missing from GGUF metadata"))?;
    v.to_u64()
        .or_else(|_| v.to_u32().map(u64::from))
        .or_else(|_| v.to_i32().map(|x| x.max(0) as u64))
        .or_else(|_| v.to_i64().map(|x| x.max(0) as u64))
        .map_err(|e| ModelError::config(key, format!("not an integer: {e}")))
}

fn md_f64(md: &HashMap<String, gguf_file::Value>, key: &str) -> Option<f64> {
    let v = md.get(key)?;
    v.to_f32().map(f64::from).or_else(|_| v.to_f64()).ok()
}

/// Builds a [`ModelConfig`] from GGUF metadata.
fn gguf_config(content: &gguf_file::Content) -> Result<(ModelConfig, String)> {
    let md = &content.metadata;
    let arch = md
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| ModelError::config("general.architecture", "missing from GGUF metadata"))?;
    let architecture = match arch.as_str() {
        "llama" => Architecture::Llama,
        "qwen2" => Architecture::Qwen2,
        "qwen3" => Architecture::Qwen3,
        other => {
            return Err(ModelError::config(
                "general.architecture",
                format!("GGUF architecture `{other}` is not supported (llama, qwen2, qwen3)"),
            ))
        }
    };
    if content.tensor_infos.contains_key("rope_freqs.weight") {
        return Err(ModelError::config(
            "rope_freqs.weight",
            "GGUF files with precomputed rope frequency factors (Llama 3.1+) are not supported yet; use the safetensors checkpoint",
        ));
    }
    let k = |s: &str| format!("{arch}.{s}");
    let hidden_size = md_u64(md, &k("embedding_length"))? as usize;
    let num_attention_heads = md_u64(md, &k("attention.head_count"))? as usize;
    let num_key_value_heads = md_u64(md, &k("attention.head_count_kv"))
        .map(|x| x as usize)
        .unwrap_or(num_attention_heads);
    let head_dim = md_u64(md, &k("attention.key_length"))
        .map(|x| x as usize)
        .unwrap_or(hidden_size / num_attention_heads.max(1));
    let vocab_size = match md_u64(md, &k("vocab_size")) {
        Ok(v) => v as usize,
        Err(_) => content
            .tensor_infos
            .get("token_embd.weight")
            .map(|t| t.shape.dims().first().copied().unwrap_or(0))
            .ok_or_else(|| ModelError::config("token_embd.weight", "missing from GGUF"))?,
    };
    let cfg = ModelConfig {
        architecture,
        vocab_size,
        hidden_size,
        intermediate_size: md_u64(md, &k("feed_forward_length"))? as usize,
        num_hidden_layers: md_u64(md, &k("block_count"))? as usize,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps: md_f64(md, &k("attention.layer_norm_rms_epsilon")).unwrap_or(1e-6),
        rope_theta: md_f64(md, &k("rope.freq_base")).unwrap_or(10_000.0),
        rope_scaling: None,
        max_position_embeddings: md_u64(md, &k("context_length"))? as usize,
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
        attention_bias: content.tensor_infos.contains_key("blk.0.attn_q.bias"),
        o_bias: content.tensor_infos.contains_key("blk.0.attn_output.bias"),
        qk_norm: content
            .tensor_infos
            .contains_key("blk.0.attn_q_norm.weight"),
        bos_token_id: None,
        eos_token_ids: Vec::new(),
    };
    Ok((cfg, arch))
}

/// Maps a GGUF tensor name to the Hugging Face checkpoint name.
fn gguf_to_hf_name(name: &str) -> Option<String> {
    match name {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, kind) = rest.rsplit_once('.')?;
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// llama.cpp's converter permutes the rows of q/k projections of `llama` models so that
/// rotary pairs are interleaved; undo it to get the Hugging Face (rotate-half) layout.
fn unpermute_rows(t: &Tensor, n_head: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims.first().copied().unwrap_or(0);
    let half = rows / n_head / 2;
    let rest: Vec<usize> = dims.iter().skip(1).copied().collect();
    let mut shape = vec![n_head, half, 2];
    shape.extend_from_slice(&rest);
    Ok(t.reshape(shape)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?)
}

/// The row permutation of [`unpermute_rows`] on raw rows of `row_bytes` bytes each (a
/// block-quantized tensor's rows are whole blocks, so rows move as bytes).
fn unpermute_row_bytes(data: &[u8], row_bytes: usize, n_head: usize) -> Result<Vec<u8>> {
    let rows = data.len() / row_bytes.max(1);
    if n_head == 0 || !rows.is_multiple_of(2 * n_head) || rows * row_bytes != data.len() {
        return Err(ModelError::config(
            "attention.head_count",
            format!("{rows} q/k rows cannot be split into {n_head} heads of rotary pairs"),
        ));
    }
    let half = rows / n_head / 2;
    let mut out = Vec::with_capacity(data.len());
    for h in 0..n_head {
        for a in 0..2 {
            for b in 0..half {
                let src = h * 2 * half + 2 * b + a;
                out.extend_from_slice(&data[src * row_bytes..(src + 1) * row_bytes]);
            }
        }
    }
    Ok(out)
}

/// Whether a GGUF tensor (by its Hugging Face name) may stay block-quantized: the matrices
/// the forward pass multiplies by or looks rows up in.
fn keeps_blocks(hf: &str) -> bool {
    const MATRICES: [&str; 9] = [
        "q_proj.weight",
        "k_proj.weight",
        "v_proj.weight",
        "o_proj.weight",
        "gate_proj.weight",
        "up_proj.weight",
        "down_proj.weight",
        "embed_tokens.weight",
        "lm_head.weight",
    ];
    MATRICES.iter().any(|m| hf.ends_with(m))
}

/// Loads a GGUF file: dequantizes every tensor to `dtype` and builds the tokenizer from
/// the file's metadata.
pub fn load_gguf(
    path: &Path,
    dtype: DType,
    device: &Device,
    opts: &ModelOptions,
) -> Result<LoadedModel> {
    load_gguf_with_progress(path, dtype, device, opts, false, &mut |_, _| {})
}

/// Loads a GGUF file keeping its block-quantized matrices quantized (see
/// [`Quantization::Gguf`]); everything else is dequantized to `dtype`.
pub fn load_gguf_quantized(
    path: &Path,
    dtype: DType,
    device: &Device,
    opts: &ModelOptions,
) -> Result<LoadedModel> {
    load_gguf_with_progress(path, dtype, device, opts, true, &mut |_, _| {})
}

fn load_gguf_with_progress(
    path: &Path,
    dtype: DType,
    device: &Device,
    opts: &ModelOptions,
    keep_blocks: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LoadedModel> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let content = gguf_file::Content::read(&mut file)?;
    let (mut config, arch) = gguf_config(&content)?;
    let tok = GgufTokenizerInfo::from_content(&content)
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;

    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = HashMap::new();
    let mut quant = QuantizedWeights::default();
    let total = names.len();
    for (done, name) in names.into_iter().enumerate() {
        progress(done, total);
        let Some(hf) = gguf_to_hf_name(name) else {
            tracing::debug!(tensor = %name, "ignoring GGUF tensor");
            continue;
        };
        let q = content.tensor(&mut file, name, &Device::Cpu)?;
        let n_head = if hf.contains("q_proj.") {
            Some(config.num_attention_heads)
        } else if hf.contains("k_proj.") {
            Some(config.num_key_value_heads)
        } else {
            None
        };
        let n_head = n_head.filter(|_| arch == "llama");
        if keep_blocks && q.dtype().block_size() > 1 && keeps_blocks(&hf) {
            let (rows, row_bytes) = quantized_row_bytes(&q)?;
            let cols = q.shape().dims2()?.1;
            let data = q.data()?;
            let bytes = match n_head {
                Some(n) => Cow::Owned(unpermute_row_bytes(&data, row_bytes, n)?),
                None => data,
            };
            let qt = quantized_from_bytes(&bytes, q.dtype(), (rows, cols), device)?;
            quant.insert(hf, qt);
            continue;
        }
        let mut t = q.dequantize(&Device::Cpu)?;
        if arch == "llama" && (hf.ends_with("q_proj.weight") || hf.ends_with("q_proj.bias")) {
            t = unpermute_rows(&t, config.num_attention_heads)?;
        } else if arch == "llama" && (hf.ends_with("k_proj.weight") || hf.ends_with("k_proj.bias"))
        {
            t = unpermute_rows(&t, config.num_key_value_heads)?;
        }
        tensors.insert(hf, t.to_dtype(dtype)?.to_device(device)?);
    }
    progress(total, total);
    config.eos_token_ids = tok.eos_token_ids.clone();
    config.bos_token_id = tok.bos_token_id;
    let vb = VarBuilder::from_tensors(tensors, dtype, device);
    if !quant.is_empty() {
        tracing::info!(
            "keeping {} GGUF matrices block-quantized ({} MiB); --quantization none dequantizes them",
            quant.len(),
            quant.bytes() >> 20
        );
    }
    let quant = (!quant.is_empty()).then_some(&quant);
    let model = CausalLm::load_quantized(vb, quant, &config, opts, &mut |_, _| {})?;
    Ok(LoadedModel {
        model,
        tokenizer: tok.tokenizer,
        meta: ModelMeta {
            eos_token_ids: config.eos_token_ids.clone(),
            bos_token_id: config.bos_token_id,
            bos_token: tok.bos_token,
            eos_token: tok.eos_token,
            chat_template: tok.chat_template,
            config,
            path: path.to_path_buf(),
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names_map_to_hf() {
        assert_eq!(
            gguf_to_hf_name("blk.3.attn_q.weight").unwrap(),
            "model.layers.3.self_attn.q_proj.weight"
        );
        assert_eq!(
            gguf_to_hf_name("blk.0.ffn_down.weight").unwrap(),
            "model.layers.0.mlp.down_proj.weight"
        );
        assert_eq!(gguf_to_hf_name("output.weight").unwrap(), "lm_head.weight");
        assert!(gguf_to_hf_name("rope_freqs.weight").is_none());
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2).reshape(w.shape)
        let n_head = 2;
        let w = Tensor::arange(0f32, 8.0 * 3.0, &Device::Cpu)
            .unwrap()
            .reshape((8, 3))
            .unwrap();
        let permuted = w
            .reshape((n_head, 2, 2, 3))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((8, 3))
            .unwrap();
        let back = unpermute_rows(&permuted, n_head).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
    }

    /// Moving whole quantized rows as bytes is the same permutation as dequantizing and
    /// permuting the rows (q/k of llama GGUFs stay quantized).
    #[test]
    fn quantized_rows_unpermute_like_dense_rows() {
        use candle_core::quantized::{GgmlDType, QTensor};
        let (n_head, rows, cols) = (3, 24, 64);
        let w = Tensor::randn(0f32, 1.0, (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let (r, row_bytes) = quantized_row_bytes(&q).unwrap();
        assert_eq!((r, row_bytes), (rows, 2 * 34));
        let bytes = unpermute_row_bytes(&q.data().unwrap(), row_bytes, n_head).unwrap();
        let moved = quantized_from_bytes(&bytes, GgmlDType::Q8_0, (rows, cols), &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
        let want = unpermute_rows(&q.dequantize(&Device::Cpu).unwrap(), n_head).unwrap();
        assert_eq!(
            moved.to_vec2::<f32>().unwrap(),
            want.to_vec2::<f32>().unwrap()
        );
        assert!(unpermute_row_bytes(&bytes[..row_bytes * 5], row_bytes, n_head).is_err());
    }

    #[test]
    fn gguf_quantization_needs_a_gguf_file() {
        let dir = std::env::temp_dir().join(format!("lantern-q-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        let opts = LoadOptions {
            quantization: Quantization::Gguf,
            progress: false,
            ..LoadOptions::default()
        };
        let e = load_model(dir.to_str().unwrap(), &opts)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--quantization gguf needs a .gguf"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(Quantization::parse("GGUF"), Some(Quantization::Gguf));
        assert_eq!(Quantization::parse("awq"), None);
        assert!(Quantization::Auto.keeps_gguf_blocks(&Device::Cpu));
        assert!(!Quantization::None.keeps_gguf_blocks(&Device::Cpu));
    }

    #[test]
    fn source_parse_rejects_nonsense() {
        assert!(ModelSource::parse("./does/not/exist").is_err());
        assert_eq!(
            ModelSource::parse("Qwen/Qwen2.5-7B-Instruct").unwrap(),
            ModelSource::Hub("Qwen/Qwen2.5-7B-Instruct".into())
        );
    }
}
