//! The split regexes of byte-level (`gpt2`) vocabularies, chosen by `tokenizer.ggml.pre`.

use super::{GgufTokenizerError, Result, KEY_PRE, SUPPORTED_GPT2_PRE};

/// Llama 3's split regex, as in its `tokenizer.json`.
pub(super) const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2/Qwen3's split regex, as in their `tokenizer.json` (single digits).
pub(super) const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split regex family of a byte-level vocabulary (`tokenizer.ggml.pre`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gpt2Pre {
    /// Plain GPT-2 regex.
    Gpt2,
    /// Every digit split on its own, then the GPT-2 regex (StarCoder, SmolLM).
    DigitsThenGpt2,
    /// Llama 3's regex (numbers in groups of up to 3); `ignore_merges` as in Llama 3.
    Llama3 { ignore_merges: bool },
    /// Qwen2's regex (single digits) with NFC normalization, as in Qwen's tokenizer.json.
    Qwen2,
}

impl Gpt2Pre {
    pub(super) fn parse(value: &str) -> Result<Self> {
        Ok(match value {
            "gpt2" | "mpt" | "olmo" => Self::Gpt2,
            "smollm" | "starcoder" | "refact" => Self::DigitsThenGpt2,
            "llama-bpe" | "llama3" | "llama-v3" => Self::Llama3 {
                ignore_merges: true,
            },
            "dbrx" | "smaug-bpe" => Self::Llama3 {
                ignore_merges: false,
            },
            "qwen2" | "deepseek-r1-qwen" => Self::Qwen2,
            other => {
                return Err(GgufTokenizerError::Unsupported {
                    key: KEY_PRE,
                    value: other.to_string(),
                    supported: SUPPORTED_GPT2_PRE,
                })
            }
        })
    }

    /// llama.cpp turns BOS on by default for the Llama 3 family only.
    pub(super) fn adds_bos_by_default(self) -> bool {
        matches!(
            self,
            Self::Llama3 {
                ignore_merges: true
            }
        )
    }
}
