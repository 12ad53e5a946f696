//! Model configuration: one normalised [`ModelConfig`] for every supported architecture,
//! parsed from a Hugging Face `config.json` (or built from GGUF metadata).

use crate::error::{ModelError, Result};
use serde::Deserialize;
use std::path::Path;

/// The architectures we can run. They share one decoder implementation and differ
/// only in a few switches (q/k/v bias, q/k norm, tied embeddings, rope scaling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

impl Architecture {
    /// Maps a `config.json` `architectures[0]` entry.
    pub fn from_hf_name(name: &str) -> Option<Self> {
        match name {
            "LlamaForCausalLM" => Some(Self::Llama),
            "MistralForCausalLM" => Some(Self::Mistral),
            "Qwen2ForCausalLM" => Some(Self::Qwen2),
            "Qwen3ForCausalLM" => Some(Self::Qwen3),
            _ => None,
        }
    }

    /// The Hugging Face class name.
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Mistral => "MistralForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Qwen3 => "Qwen3ForCausalLM",
        }
    }
}

/// Rotary embedding frequency scaling.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Llama 3.1 / 3.2 style smooth frequency scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
    /// Position interpolation: every frequency divided by `factor`.
    Linear { factor: f64 },
}

/// A normalised decoder-only transformer configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    /// The longest context this model supports (after any sliding-window cap).
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias (Qwen2, some Llama fine-tunes).
    pub attention_bias: bool,
    /// o_proj carries a bias.
    pub o_bias: bool,
    /// Per-head RMSNorm on q and k before rotary (Qwen3).
    pub qk_norm: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<u32> {
        match self {
            Self::One(x) => vec![x],
            Self::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    architectures: Option<Vec<String>>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    /// transformers >= 5 writes `rope_theta` and the scaling together under this key.
    rope_parameters: Option<serde_json::Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    bos_token_id: Option<OneOrMany>,
    eos_token_id: Option<OneOrMany>,
}

fn required<T>(v: Option<T>, field: &str) -> Result<T> {
    v.ok_or_else(|| ModelError::config(field, "missing from config.json"))
}

impl ModelConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text).map_err(|e| match e {
            ModelError::Json { source, .. } => ModelError::Json {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    /// Parses a `config.json` document.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|source| ModelError::Json {
            path: "config.json".into(),
            source,
        })?;
        let arch_name = raw
            .architectures
            .as_ref()
            .and_then(|a| a.first().cloned())
            .ok_or_else(|| ModelError::config("architectures", "missing or empty"))?;
        let architecture = Architecture::from_hf_name(&arch_name).ok_or_else(|| {
            ModelError::config(
                "architectures",
                format!(
                    "`{arch_name}` is not supported; supported: LlamaForCausalLM, \
                     MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM"
                ),
            )
        })?;
        let hidden_size = required(raw.hidden_size, "hidden_size")?;
        let num_attention_heads = required(raw.num_attention_heads, "num_attention_heads")?;
        let num_key_value_heads = raw.num_key_value_heads.unwrap_or(num_attention_heads);
        if num_attention_heads == 0 || num_key_value_heads == 0 {
            return Err(ModelError::config(
                "num_attention_heads",
                "head counts must be positive",
            ));
        }
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(ModelError::config(
                "num_key_value_heads",
                format!(
                    "{num_key_value_heads} does not divide num_attention_heads {num_attention_heads}"
                ),
            ));
        }
        let head_dim = match raw.head_dim {
            Some(d) => d,
            None => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(ModelError::config(
                        "hidden_size",
                        format!("{hidden_size} is not divisible by num_attention_heads {num_attention_heads} and no head_dim is given"),
                    ));
                }
                hidden_size / num_attention_heads
            }
        };
        if head_dim % 2 != 0 {
            return Err(ModelError::config(
                "head_dim",
                format!("{head_dim} must be even for rotary embeddings"),
            ));
        }
        if let Some(act) = &raw.hidden_act {
            if act != "silu" {
                return Err(ModelError::config(
                    "hidden_act",
                    format!("`{act}` is not supported (only `silu`)"),
                ));
            }
        }
        if raw.mlp_bias == Some(true) {
            return Err(ModelError::config(
                "mlp_bias",
                "MLP biases are not supported",
            ));
        }
        let (rope_scaling, rope_theta) = match &raw.rope_parameters {
            Some(p) if !p.is_null() => (
                parse_rope_scaling(Some(p))?,
                p.get("rope_theta")
                    .and_then(|t| t.as_f64())
                    .or(raw.rope_theta),
            ),
            _ => (
                parse_rope_scaling(raw.rope_scaling.as_ref())?,
                raw.rope_theta,
            ),
        };
        let mut max_position_embeddings =
            required(raw.max_position_embeddings, "max_position_embeddings")?;
        // A sliding window shorter than the context would change attention; we do not
        // implement it, so cap the usable context at the window (the window never bites).
        let window_in_use = match architecture {
            Architecture::Mistral => raw.sliding_window,
            Architecture::Qwen2 | Architecture::Qwen3 => {
                if raw.use_sliding_window == Some(true) {
                    raw.sliding_window
                } else {
                    None
                }
            }
            Architecture::Llama => None,
        };
        if let Some(w) = window_in_use {
            if w < max_position_embeddings {
                tracing::warn!(
                    sliding_window = w,
                    max_position_embeddings,
                    "sliding-window attention is not implemented: capping the context at the window"
                );
                max_position_embeddings = w;
            }
        }
        let (attention_bias, o_bias) = match architecture {
            Architecture::Qwen2 => (true, false),
            Architecture::Llama | Architecture::Mistral | Architecture::Qwen3 => {
                let b = raw.attention_bias.unwrap_or(false);
                (b, b)
            }
        };
        Ok(Self {
            architecture,
            vocab_size: required(raw.vocab_size, "vocab_size")?,
            hidden_size,
            intermediate_size: required(raw.intermediate_size, "intermediate_size")?,
            num_hidden_layers: required(raw.num_hidden_layers, "num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: rope_theta.unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            attention_bias,
            o_bias,
            qk_norm: architecture == Architecture::Qwen3,
            bos_token_id: raw.bos_token_id.and_then(|b| b.into_vec().first().copied()),
            eos_token_ids: raw
                .eos_token_id
                .map(OneOrMany::into_vec)
                .unwrap_or_default(),
        })
    }

    /// Number of bytes one token's K and V take over all layers at `dtype_size` bytes/element.
    pub fn kv_bytes_per_token(&self, dtype_size: usize) -> usize {
        2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim * dtype_size
    }
}

fn parse_rope_scaling(v: Option<&serde_json::Value>) -> Result<Option<RopeScaling>> {
    let Some(v) = v else { return Ok(None) };
    if v.is_null() {
        return Ok(None);
    }
    let obj = v
        .as_object()
        .ok_or_else(|| ModelError::config("rope_scaling", "must be an object or null"))?;
    let kind = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(|t| t.as_str())
        .ok_or_else(|| ModelError::config("rope_scaling.rope_type", "missing"))?;
    let num = |key: &str| -> Result<f64> {
        obj.get(key).and_then(|x| x.as_f64()).ok_or_else(|| {
            ModelError::config(format!("rope_scaling.{key}"), "missing or not a number")
        })
    };
    match kind {
        "default" => Ok(None),
        "llama3" => Ok(Some(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
        })),
        "linear" => Ok(Some(RopeScaling::Linear {
            factor: num("factor")?,
        })),
        other => Err(ModelError::config(
            "rope_scaling.rope_type",
            format!("`{other}` is not supported (supported: default, llama3, linear)"),
        )),
    }
}

/// `generation_config.json`: only the EOS ids matter to us (an int or a list).
pub fn read_generation_eos(path: &Path) -> Result<Option<Vec<u32>>> {
    #[derive(Deserialize)]
    struct Gen {
        eos_token_id: Option<OneOrMany>,
    }
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let g: Gen = serde_json::from_str(&text).map_err(|source| ModelError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(g.eos_token_id.map(OneOrMany::into_vec))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn unknown_architecture_names_field() {
        let e = ModelConfig::from_json_str(r#"{"architectures":["GPT2LMHeadModel"]}"#).unwrap_err();
        assert!(e.to_string().contains("architectures"), "{e}");
    }

    #[test]
    fn unknown_rope_type_names_field() {
        let e = ModelConfig::from_json_str(
            r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"vocab_size":10,"max_position_embeddings":64,
            "rope_scaling":{"rope_type":"yarn","factor":4.0}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("rope_scaling.rope_type"), "{e}");
    }

    #[test]
    fn mistral_window_caps_context() {
        let c = ModelConfig::from_json_str(
            r#"{"architectures":["MistralForCausalLM"],"hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":10,
            "max_position_embeddings":32768,"sliding_window":4096,"eos_token_id":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(c.max_position_embeddings, 4096);
        assert_eq!(c.eos_token_ids, vec![1, 2]);
        assert_eq!(c.head_dim, 16);
    }
}
