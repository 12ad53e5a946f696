//! A real [`tokenizers::Tokenizer`] built from the `tokenizer.ggml.*` metadata of a GGUF file.
//!
//! A GGUF has no `tokenizer.json`; llama.cpp stores the vocabulary, merges, token types and
//! special ids as metadata instead. [`GgufTokenizerInfo::from_content`] rebuilds the tokenizer
//! the model was trained with from those keys, so prompts encode to the same ids as the
//! original Hugging Face tokenizer (and llama.cpp). It is hand-written because no crate builds
//! a `tokenizers::Tokenizer` from GGUF metadata (`tokenizers` reads `tokenizer.json`, candle
//! reads the GGUF but not its tokenizer), so the pieces are assembled here from the
//! `tokenizers` building blocks:
//!
//! | `tokenizer.ggml.model` | what is built |
//! | --- | --- |
//! | `gpt2` | byte-level BPE; `tokenizer.ggml.pre` picks the split regex (see [`SUPPORTED_GPT2_PRE`]) |
//! | `llama` | SentencePiece-style BPE: `▁` for spaces, `<0xNN>` byte fallback, merges from the file or derived from `tokenizer.ggml.scores` |
//!
//! Tokens typed CONTROL (3) or UNKNOWN (2) in `tokenizer.ggml.token_type` become added *special*
//! tokens (matched whole in text, dropped by `decode(.., skip_special_tokens = true)`);
//! USER_DEFINED (4) tokens become added non-special tokens, as in llama.cpp.
//!
//! Anything else (`bert`, `t5`, an unknown `tokenizer.ggml.pre`, …) is rejected with an error
//! naming the key and its value rather than silently tokenizing differently from the model.
//!
//! Layout: this file holds the keys, the error type and [`GgufTokenizerInfo`]; `metadata`
//! reads typed values, `pre_tokenizer` holds the `tokenizer.ggml.pre` regexes, `byte_level`
//! and `sentencepiece` build the two tokenizer families, `special` adds the special tokens and
//! the BOS/EOS post-processor.

mod byte_level;
mod metadata;
mod pre_tokenizer;
mod sentencepiece;
mod special;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::models::bpe::Vocab;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::sequence::Sequence as ProcessorSequence;
use tokenizers::{PostProcessorWrapper, Tokenizer};

use byte_level::build_byte_level;
use metadata::{
    optional_bool, optional_str, required_str, string_array, token_id, token_types, TokenType,
};
use pre_tokenizer::Gpt2Pre;
use sentencepiece::build_sentencepiece;
use special::{add_typed_tokens, template_processing};

/// `tokenizer.ggml.model`: which tokenizer family the vocabulary belongs to.
pub const KEY_MODEL: &str = "tokenizer.ggml.model";
/// `tokenizer.ggml.pre`: which pre-tokenizer (split regex) a byte-level vocabulary was trained with.
pub const KEY_PRE: &str = "tokenizer.ggml.pre";
/// `tokenizer.ggml.tokens`: the vocabulary, indexed by token id.
pub const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
/// `tokenizer.ggml.token_type`: llama.cpp token type per id (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
pub const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
/// `tokenizer.ggml.scores`: SentencePiece piece scores (merge priority for `llama` vocabularies).
pub const KEY_SCORES: &str = "tokenizer.ggml.scores";
/// `tokenizer.ggml.merges`: BPE merges as `"left right"` strings, highest priority first.
pub const KEY_MERGES: &str = "tokenizer.ggml.merges";
/// `tokenizer.ggml.bos_token_id`.
pub const KEY_BOS_ID: &str = "tokenizer.ggml.bos_token_id";
/// `tokenizer.ggml.eos_token_id`.
pub const KEY_EOS_ID: &str = "tokenizer.ggml.eos_token_id";
/// `tokenizer.ggml.eot_token_id` (end of turn, e.g. Llama 3's `<|eot_id|>`).
pub const KEY_EOT_ID: &str = "tokenizer.ggml.eot_token_id";
/// `tokenizer.ggml.eom_token_id` (end of message, e.g. Llama 3.1's `<|eom_id|>`).
pub const KEY_EOM_ID: &str = "tokenizer.ggml.eom_token_id";
/// `tokenizer.ggml.unknown_token_id`.
pub const KEY_UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
/// `tokenizer.ggml.padding_token_id`.
pub const KEY_PAD_ID: &str = "tokenizer.ggml.padding_token_id";
/// `tokenizer.ggml.add_bos_token`: whether encoding a prompt prepends BOS.
pub const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
/// `tokenizer.ggml.add_eos_token`: whether encoding a prompt appends EOS.
pub const KEY_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
/// `tokenizer.ggml.add_space_prefix`: whether a `llama` vocabulary prefixes text with `▁`.
pub const KEY_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
/// `tokenizer.chat_template`: the Jinja chat template shipped with the model.
pub const KEY_CHAT_TEMPLATE: &str = "tokenizer.chat_template";

/// Supported values of `tokenizer.ggml.model`.
pub const SUPPORTED_MODELS: &str = "\"gpt2\" (byte-level BPE), \"llama\" (SentencePiece BPE)";

/// Supported values of `tokenizer.ggml.pre` for `tokenizer.ggml.model = "gpt2"`.
pub const SUPPORTED_GPT2_PRE: &str = "\"gpt2\", \"mpt\", \"olmo\", \"smollm\", \"starcoder\", \
     \"refact\", \"llama-bpe\", \"llama3\", \"llama-v3\", \"dbrx\", \"smaug-bpe\", \"qwen2\", \
     \"deepseek-r1-qwen\"";

/// Control/user-defined token texts that llama.cpp also treats as end-of-generation.
const END_OF_GENERATION_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "<end_of_utterance>",
];

/// Why a tokenizer could not be built from GGUF metadata.
#[derive(Debug, thiserror::Error)]
pub enum GgufTokenizerError {
    /// A key the tokenizer needs is absent.
    #[error("GGUF metadata key `{key}` is missing: {hint}")]
    MissingKey {
        /// The absent key.
        key: &'static str,
        /// What to do about it.
        hint: &'static str,
    },
    /// A key holds a value of the wrong type.
    #[error("GGUF metadata key `{key}` should be {expected}, found {found}; the file is malformed or from an incompatible converter")]
    WrongType {
        /// The key.
        key: &'static str,
        /// The type that was expected.
        expected: &'static str,
        /// The type found (or the offending element).
        found: String,
    },
    /// A key holds a value this loader does not implement.
    #[error("unsupported GGUF tokenizer: `{key}` = {value:?}; supported values: {supported}. Use a model converted with one of those, or load its tokenizer.json instead")]
    Unsupported {
        /// The key.
        key: &'static str,
        /// Its value.
        value: String,
        /// What would have been accepted.
        supported: &'static str,
    },
    /// Keys disagree with each other (array lengths, ids out of range, ...).
    #[error("GGUF metadata key `{key}` is inconsistent: {reason}; the file is malformed")]
    Inconsistent {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The `tokenizers` crate rejected the assembled pieces.
    #[error("could not assemble the tokenizer from GGUF metadata ({stage}): {message}")]
    Build {
        /// Which part was being built.
        stage: &'static str,
        /// The underlying error.
        message: String,
    },
    /// The GGUF file could not be opened or parsed.
    #[error("could not read GGUF metadata from {path}: {message}; check the path points at a complete .gguf file")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        message: String,
    },
}

type Result<T> = std::result::Result<T, GgufTokenizerError>;

/// The tokenizer of a GGUF model plus the special-token facts the engine and chat template need.
#[derive(Clone)]
pub struct GgufTokenizerInfo {
    /// The assembled tokenizer. `encode(text, true)` adds BOS/EOS exactly when the file says so.
    pub tokenizer: Tokenizer,
    /// `tokenizer.ggml.bos_token_id`, if the file has one.
    pub bos_token_id: Option<u32>,
    /// Every id that ends generation: `eos_token_id` first, then `eot`/`eom` ids and control
    /// tokens llama.cpp also treats as end-of-generation (`<|im_end|>`, `<|eot_id|>`,
    /// `<|endoftext|>`, ...). Deduplicated, in that order.
    pub eos_token_ids: Vec<u32>,
    /// `tokenizer.ggml.padding_token_id`, if present.
    pub pad_token_id: Option<u32>,
    /// Whether encoding a prompt with special tokens prepends BOS (`tokenizer.ggml.add_bos_token`,
    /// defaulting like llama.cpp: true for `llama` vocabularies and Llama 3 `gpt2` ones, else false).
    pub add_bos_token: bool,
    /// Whether encoding a prompt with special tokens appends EOS (`tokenizer.ggml.add_eos_token`).
    pub add_eos_token: bool,
    /// `tokenizer.chat_template`, if present.
    pub chat_template: Option<String>,
    /// The text of the BOS token (for chat templates that reference `bos_token`).
    pub bos_token: Option<String>,
    /// The text of the EOS token (`tokenizer.ggml.eos_token_id`).
    pub eos_token: Option<String>,
}

impl std::fmt::Debug for GgufTokenizerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufTokenizerInfo")
            .field("vocab_size", &self.tokenizer.get_vocab_size(true))
            .field("bos_token_id", &self.bos_token_id)
            .field("eos_token_ids", &self.eos_token_ids)
            .field("pad_token_id", &self.pad_token_id)
            .field("add_bos_token", &self.add_bos_token)
            .field("add_eos_token", &self.add_eos_token)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("has_chat_template", &self.chat_template.is_some())
            .finish()
    }
}

/// Builds the tokenizer described by a GGUF file's metadata.
///
/// Shorthand for `GgufTokenizerInfo::from_content(content)?.tokenizer`.
pub fn tokenizer_from_gguf(content: &Content) -> Result<Tokenizer> {
    Ok(GgufTokenizerInfo::from_content(content)?.tokenizer)
}

impl GgufTokenizerInfo {
    /// Reads only the metadata of the GGUF file at `path` and builds its tokenizer.
    pub fn from_gguf_file(path: &Path) -> Result<Self> {
        let read_err = |message: String| GgufTokenizerError::Read {
            path: path.to_path_buf(),
            message,
        };
        let mut file = std::fs::File::open(path).map_err(|e| read_err(e.to_string()))?;
        let content = Content::read(&mut file).map_err(|e| read_err(e.to_string()))?;
        Self::from_content(&content)
    }

    /// Builds the tokenizer and special-token facts from parsed GGUF content.
    pub fn from_content(content: &Content) -> Result<Self> {
        Self::from_metadata(&content.metadata)
    }

    /// Builds the tokenizer and special-token facts from a GGUF metadata map.
    pub fn from_metadata(md: &HashMap<String, Value>) -> Result<Self> {
        let model = required_str(
            md,
            KEY_MODEL,
            "this GGUF carries no tokenizer; load the model's tokenizer.json instead",
        )?;
        let tokens = string_array(md, KEY_TOKENS)?.ok_or(GgufTokenizerError::MissingKey {
            key: KEY_TOKENS,
            hint: "the vocabulary is required to build a tokenizer; re-convert the model with llama.cpp's convert_hf_to_gguf.py",
        })?;
        if tokens.is_empty() {
            return Err(GgufTokenizerError::Inconsistent {
                key: KEY_TOKENS,
                reason: "the vocabulary is empty".into(),
            });
        }
        let token_types = token_types(md, tokens.len())?;
        let n_tokens = tokens.len();
        let bos_token_id = token_id(md, KEY_BOS_ID, n_tokens)?;
        let eos_token_id = token_id(md, KEY_EOS_ID, n_tokens)?;
        let unk_token_id = token_id(md, KEY_UNK_ID, n_tokens)?;
        let pad_token_id = token_id(md, KEY_PAD_ID, n_tokens)?;
        let pre = optional_str(md, KEY_PRE)?;

        let (kind, default_add_bos) = match model {
            "gpt2" => {
                let pre = pre.ok_or(GgufTokenizerError::MissingKey {
                    key: KEY_PRE,
                    hint: "a byte-level (gpt2) vocabulary needs it to know which split regex it was trained with; re-convert the model with a recent llama.cpp convert_hf_to_gguf.py",
                })?;
                let pre_kind = Gpt2Pre::parse(pre)?;
                (
                    VocabKind::ByteLevel(pre_kind),
                    pre_kind.adds_bos_by_default(),
                )
            }
            "llama" => (VocabKind::SentencePiece, true),
            other => {
                return Err(GgufTokenizerError::Unsupported {
                    key: KEY_MODEL,
                    value: other.to_string(),
                    supported: SUPPORTED_MODELS,
                })
            }
        };
        let add_bos_token = optional_bool(md, KEY_ADD_BOS)?.unwrap_or(default_add_bos);
        let add_eos_token = optional_bool(md, KEY_ADD_EOS)?.unwrap_or(false);

        let mut tokenizer = match kind {
            VocabKind::ByteLevel(pre) => build_byte_level(&tokens, pre, md)?,
            VocabKind::SentencePiece => {
                let add_space_prefix = optional_bool(md, KEY_ADD_SPACE_PREFIX)?.unwrap_or(true);
                build_sentencepiece(&tokens, &token_types, unk_token_id, add_space_prefix, md)?
            }
        };
        add_typed_tokens(&mut tokenizer, &tokens, &token_types, unk_token_id)?;

        let token_text =
            |id: Option<u32>| id.and_then(|i| tokens.get(i as usize).map(|t| t.to_string()));
        let bos_token = token_text(bos_token_id);
        let eos_token = token_text(eos_token_id);

        let bos_for_template = match (add_bos_token, &bos_token, bos_token_id) {
            (true, Some(t), Some(id)) => Some((t.as_str(), id)),
            (true, _, _) => {
                return Err(GgufTokenizerError::MissingKey {
                    key: KEY_BOS_ID,
                    hint: "tokenizer.ggml.add_bos_token is true but no BOS id is given",
                })
            }
            _ => None,
        };
        let eos_for_template = match (add_eos_token, &eos_token, eos_token_id) {
            (true, Some(t), Some(id)) => Some((t.as_str(), id)),
            (true, _, _) => {
                return Err(GgufTokenizerError::MissingKey {
                    key: KEY_EOS_ID,
                    hint: "tokenizer.ggml.add_eos_token is true but no EOS id is given",
                })
            }
            _ => None,
        };
        let template = template_processing(bos_for_template, eos_for_template)?;
        let post: Option<PostProcessorWrapper> = match (kind, template) {
            (VocabKind::ByteLevel(_), Some(t)) => Some(
                ProcessorSequence::new(vec![ByteLevel::new(false, false, true).into(), t.into()])
                    .into(),
            ),
            (VocabKind::ByteLevel(_), None) => Some(ByteLevel::new(false, false, true).into()),
            (VocabKind::SentencePiece, t) => t.map(Into::into),
        };
        tokenizer.with_post_processor(post);

        let mut eos_token_ids = Vec::new();
        let mut push_eos = |id: u32| {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        };
        if let Some(id) = eos_token_id {
            push_eos(id);
        }
        for key in [KEY_EOT_ID, KEY_EOM_ID] {
            if let Some(id) = token_id(md, key, n_tokens)? {
                push_eos(id);
            }
        }
        for (id, (text, ty)) in tokens.iter().zip(&token_types).enumerate() {
            if matches!(ty, TokenType::Control | TokenType::UserDefined)
                && END_OF_GENERATION_TEXTS.contains(text)
            {
                if let Ok(id) = u32::try_from(id) {
                    push_eos(id);
                }
            }
        }

        let chat_template = optional_str(md, KEY_CHAT_TEMPLATE)?.map(str::to_string);

        Ok(Self {
            tokenizer,
            bos_token_id,
            eos_token_ids,
            pad_token_id,
            add_bos_token,
            add_eos_token,
            chat_template,
            bos_token,
            eos_token,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VocabKind {
    ByteLevel(Gpt2Pre),
    SentencePiece,
}

pub(super) fn build_err(stage: &'static str) -> impl Fn(tokenizers::Error) -> GgufTokenizerError {
    move |e| GgufTokenizerError::Build {
        stage,
        message: e.to_string(),
    }
}

/// Vocabulary map; a text that appears twice keeps its first id (llama.cpp does the same).
pub(super) fn vocab_map(tokens: &[&str]) -> Vocab {
    let mut vocab = Vocab::default();
    for (id, token) in tokens.iter().enumerate() {
        if let Ok(id) = u32::try_from(id) {
            vocab.entry((*token).to_string()).or_insert(id);
        }
    }
    vocab
}

pub(super) fn merges_from_file(merges: &[&str]) -> Result<Vec<(String, String)>> {
    merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(l, r)| (l.to_string(), r.to_string()))
                .ok_or_else(|| GgufTokenizerError::Inconsistent {
                    key: KEY_MERGES,
                    reason: format!("merge {m:?} is not two tokens separated by one space"),
                })
        })
        .collect()
}
