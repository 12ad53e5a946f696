//! Request defaults from the model's `generation_config.json`, as vLLM's
//! `--generation-config auto` applies them: the model creator's recommended `temperature`,
//! `top_p`, `top_k`, `min_p`, `repetition_penalty` (and `max_new_tokens` as the default
//! `max_tokens`) fill the fields a request leaves unset. `--generation-config vllm` ignores
//! the file; a directory path reads that directory's file instead.

use serde_json::Value;

/// Defaults for fields a request leaves unset (`None`: the OpenAI default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SamplingDefaults {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub max_tokens: Option<usize>,
}

impl SamplingDefaults {
    /// The defaults a `generation_config.json` recommends (the keys vLLM reads).
    pub fn from_generation_config(v: &Value) -> Self {
        let f = |k: &str| v.get(k).and_then(Value::as_f64).map(|x| x as f32);
        Self {
            temperature: f("temperature"),
            top_p: f("top_p"),
            top_k: v.get("top_k").and_then(Value::as_i64),
            min_p: f("min_p"),
            repetition_penalty: f("repetition_penalty"),
            max_tokens: v
                .get("max_new_tokens")
                .and_then(Value::as_u64)
                .map(|n| n as usize),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_keys_vllm_reads() {
        // Qwen2.5-7B-Instruct's generation_config.json.
        let g = json!({
            "bos_token_id": 151643, "pad_token_id": 151643, "do_sample": true,
            "eos_token_id": [151645, 151643], "repetition_penalty": 1.05,
            "temperature": 0.7, "top_p": 0.8, "top_k": 20, "transformers_version": "4.37.0"
        });
        let d = SamplingDefaults::from_generation_config(&g);
        assert_eq!(d.temperature, Some(0.7));
        assert_eq!(d.top_p, Some(0.8));
        assert_eq!(d.top_k, Some(20));
        assert_eq!(d.repetition_penalty, Some(1.05));
        assert_eq!((d.min_p, d.max_tokens), (None, None));
        assert!(SamplingDefaults::from_generation_config(&json!({"eos_token_id": 2})).is_empty());
    }
}
