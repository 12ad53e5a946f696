//! A real [`tokenizers::Tokenizer`] built from the `tokenizer.ggml.*` metadata of a GGUF file.
//!
//! A GGUF has no `tokenizer.json`; llama.cpp stores the vocabulary, merges, token types and
//! special ids as metadata instead. [`GgufTokenizerInfo::from_content`] rebuilds the tokenizer
//! the model was trained with from those keys, so prompts encode to the same ids as the
//! original Hugging Face tokenizer (and llama.cpp):
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

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::sequence::Sequence as ProcessorSequence;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    SplitDelimiterBehavior, Tokenizer,
};

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

/// Llama 3's split regex, as in its `tokenizer.json`.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2/Qwen3's split regex, as in their `tokenizer.json` (single digits).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// SentencePiece's whitespace marker.
const SPM_SPACE: &str = "\u{2581}";

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

/// The split regex family of a byte-level vocabulary (`tokenizer.ggml.pre`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gpt2Pre {
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
    fn parse(value: &str) -> Result<Self> {
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
    fn adds_bos_by_default(self) -> bool {
        matches!(
            self,
            Self::Llama3 {
                ignore_merges: true
            }
        )
    }
}

/// llama.cpp's `llama_token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
    Undefined,
}

impl TokenType {
    fn from_i64(v: i64) -> Self {
        match v {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Undefined,
        }
    }
}

fn build_err(stage: &'static str) -> impl Fn(tokenizers::Error) -> GgufTokenizerError {
    move |e| GgufTokenizerError::Build {
        stage,
        message: e.to_string(),
    }
}

/// Vocabulary map; a text that appears twice keeps its first id (llama.cpp does the same).
fn vocab_map(tokens: &[&str]) -> Vocab {
    let mut vocab = Vocab::default();
    for (id, token) in tokens.iter().enumerate() {
        if let Ok(id) = u32::try_from(id) {
            vocab.entry((*token).to_string()).or_insert(id);
        }
    }
    vocab
}

fn merges_from_file(merges: &[&str]) -> Result<Vec<(String, String)>> {
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

fn build_byte_level(
    tokens: &[&str],
    pre: Gpt2Pre,
    md: &HashMap<String, Value>,
) -> Result<Tokenizer> {
    let merges = string_array(md, KEY_MERGES)?.ok_or(GgufTokenizerError::MissingKey {
        key: KEY_MERGES,
        hint: "a byte-level (gpt2) vocabulary cannot be used without its merges; re-convert the model",
    })?;
    let merges = merges_from_file(&merges)?;
    let ignore_merges = matches!(
        pre,
        Gpt2Pre::Llama3 {
            ignore_merges: true
        }
    );
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_map(tokens), merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(build_err("byte-level BPE model"))?;
    let mut tokenizer = Tokenizer::new(bpe);

    let split = |regex: &str| -> Result<PreTokenizerWrapper> {
        Split::new(
            SplitPattern::Regex(regex.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map(Into::into)
        .map_err(build_err("pre-tokenizer regex"))
    };
    let byte_level_no_regex: PreTokenizerWrapper = ByteLevel::new(false, false, false).into();
    let pre_tokenizer: PreTokenizerWrapper = match pre {
        // `use_regex: true` makes ByteLevel apply the GPT-2 split regex itself.
        Gpt2Pre::Gpt2 => ByteLevel::new(false, true, true).into(),
        Gpt2Pre::DigitsThenGpt2 => PreTokenizerSequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])
        .into(),
        Gpt2Pre::Llama3 { .. } => {
            PreTokenizerSequence::new(vec![split(LLAMA3_SPLIT)?, byte_level_no_regex]).into()
        }
        Gpt2Pre::Qwen2 => {
            PreTokenizerSequence::new(vec![split(QWEN2_SPLIT)?, byte_level_no_regex]).into()
        }
    };
    if pre == Gpt2Pre::Qwen2 {
        tokenizer
            .with_normalizer(Some(NormalizerWrapper::from(NFC)))
            .map_err(build_err("normalizer"))?;
    }
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(DecoderWrapper::from(ByteLevel::new(
        false, true, true,
    ))));
    Ok(tokenizer)
}

fn build_sentencepiece(
    tokens: &[&str],
    types: &[TokenType],
    unk_token_id: Option<u32>,
    add_space_prefix: bool,
    md: &HashMap<String, Value>,
) -> Result<Tokenizer> {
    let vocab = vocab_map(tokens);
    let merges = match string_array(md, KEY_MERGES)? {
        Some(merges) => merges_from_file(&merges)?,
        None => {
            let scores = f32_array(md, KEY_SCORES)?.ok_or(GgufTokenizerError::MissingKey {
                key: KEY_SCORES,
                hint: "a llama (SentencePiece) vocabulary without tokenizer.ggml.merges needs piece scores to derive them",
            })?;
            if scores.len() != tokens.len() {
                return Err(GgufTokenizerError::Inconsistent {
                    key: KEY_SCORES,
                    reason: format!("{} scores for {} tokens", scores.len(), tokens.len()),
                });
            }
            merges_from_scores(tokens, &scores, types, &vocab)
        }
    };
    let unk_id = unk_token_id.or_else(|| {
        types
            .iter()
            .position(|t| *t == TokenType::Unknown)
            .and_then(|i| u32::try_from(i).ok())
    });
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .fuse_unk(true)
        .byte_fallback(true);
    if let Some(unk) = unk_id.and_then(|id| tokens.get(id as usize)) {
        builder = builder.unk_token((*unk).to_string());
    }
    let bpe = builder
        .build()
        .map_err(build_err("SentencePiece BPE model"))?;
    let mut tokenizer = Tokenizer::new(bpe);

    let replace_space = Replace::new(" ", SPM_SPACE).map_err(build_err("normalizer"))?;
    let normalizer: NormalizerWrapper = if add_space_prefix {
        NormalizerSequence::new(vec![
            Prepend::new(SPM_SPACE.to_string()).into(),
            replace_space.into(),
        ])
        .into()
    } else {
        replace_space.into()
    };
    tokenizer
        .with_normalizer(Some(normalizer))
        .map_err(build_err("normalizer"))?;
    tokenizer.with_pre_tokenizer(None::<PreTokenizerWrapper>);

    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new(SPM_SPACE, " ")
            .map_err(build_err("decoder"))?
            .into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tokenizer.with_decoder(Some(DecoderWrapper::from(DecoderSequence::new(decoders))));
    Ok(tokenizer)
}

/// Derives BPE merges from SentencePiece scores: every split of a normal piece into two
/// pieces of the vocabulary is a merge ranked by the piece's score (higher first), then
/// longer left and right halves first, then piece id, as Hugging Face's converter does.
fn merges_from_scores(
    tokens: &[&str],
    scores: &[f32],
    types: &[TokenType],
    vocab: &Vocab,
) -> Vec<(String, String)> {
    struct Candidate {
        score: f32,
        left_chars: usize,
        right_chars: usize,
        piece: usize,
        left_id: u32,
        right_id: u32,
        split: usize,
    }
    let mut candidates = Vec::new();
    for (piece, text) in tokens.iter().enumerate() {
        if types.get(piece) != Some(&TokenType::Normal) {
            continue;
        }
        let score = scores.get(piece).copied().unwrap_or(0.0);
        let total_chars = text.chars().count();
        for (left_chars, (split, _)) in text.char_indices().enumerate().skip(1) {
            let (left, right) = text.split_at(split);
            if let (Some(&left_id), Some(&right_id)) = (vocab.get(left), vocab.get(right)) {
                candidates.push(Candidate {
                    score,
                    left_chars,
                    right_chars: total_chars - left_chars,
                    piece,
                    left_id,
                    right_id,
                    split,
                });
            }
        }
    }
    candidates.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.left_chars.cmp(&a.left_chars))
            .then(b.right_chars.cmp(&a.right_chars))
            .then(a.piece.cmp(&b.piece))
            .then(a.left_id.cmp(&b.left_id))
            .then(a.right_id.cmp(&b.right_id))
    });
    candidates
        .into_iter()
        .filter_map(|c| {
            let text = tokens.get(c.piece)?;
            let (l, r) = text.split_at(c.split);
            Some((l.to_string(), r.to_string()))
        })
        .collect()
}

/// Registers CONTROL/UNKNOWN tokens as special added tokens and USER_DEFINED ones as plain
/// added tokens; both are matched whole in input text before normalization.
fn add_typed_tokens(
    tokenizer: &mut Tokenizer,
    tokens: &[&str],
    types: &[TokenType],
    unk_token_id: Option<u32>,
) -> Result<()> {
    let mut special = Vec::new();
    let mut user_defined = Vec::new();
    for (id, (text, ty)) in tokens.iter().zip(types).enumerate() {
        if text.is_empty() {
            continue;
        }
        let is_unk = unk_token_id.is_some_and(|u| u as usize == id);
        match ty {
            TokenType::Control | TokenType::Unknown => {
                special.push(AddedToken::from((*text).to_string(), true).normalized(false))
            }
            _ if is_unk => {
                special.push(AddedToken::from((*text).to_string(), true).normalized(false))
            }
            TokenType::UserDefined => {
                user_defined.push(AddedToken::from((*text).to_string(), false).normalized(false))
            }
            _ => {}
        }
    }
    if !special.is_empty() {
        tokenizer
            .add_special_tokens(special)
            .map_err(build_err("special tokens"))?;
    }
    if !user_defined.is_empty() {
        tokenizer
            .add_tokens(user_defined)
            .map_err(build_err("user-defined tokens"))?;
    }
    Ok(())
}

/// `<bos> $A [<eos>]` (and the same around `$B`) as Hugging Face's Llama tokenizers do.
fn template_processing(
    bos: Option<(&str, u32)>,
    eos: Option<(&str, u32)>,
) -> Result<Option<TemplateProcessing>> {
    if bos.is_none() && eos.is_none() {
        return Ok(None);
    }
    let special = |text: &str, type_id: u32| serde_json::json!({ "SpecialToken": { "id": text, "type_id": type_id } });
    let sequence = |id: &str, type_id: u32| serde_json::json!({ "Sequence": { "id": id, "type_id": type_id } });
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut special_tokens = serde_json::Map::new();
    for (seq, type_id) in [("A", 0u32), ("B", 1u32)] {
        let target = if seq == "A" { &mut single } else { &mut pair };
        if let Some((text, _)) = bos {
            target.push(special(text, type_id));
        }
        target.push(sequence(seq, type_id));
        if let Some((text, _)) = eos {
            target.push(special(text, type_id));
        }
    }
    let pair: Vec<_> = single.iter().cloned().chain(pair).collect();
    for (text, id) in [bos, eos].into_iter().flatten() {
        special_tokens.insert(
            text.to_string(),
            serde_json::json!({ "id": text, "ids": [id], "tokens": [text] }),
        );
    }
    let json = serde_json::json!({
        "type": "TemplateProcessing",
        "single": single,
        "pair": pair,
        "special_tokens": special_tokens,
    });
    serde_json::from_value(json)
        .map(Some)
        .map_err(|e| GgufTokenizerError::Build {
            stage: "BOS/EOS post-processor",
            message: e.to_string(),
        })
}

// ---------------------------------------------------------------------------------------------
// Typed access to metadata values.

fn type_name(v: &Value) -> String {
    match v {
        Value::Array(items) => match items.first() {
            Some(first) => format!("an array of {:?}", first.value_type()),
            None => "an empty array".to_string(),
        },
        other => format!("{:?}", other.value_type()),
    }
}

fn optional_str<'a>(md: &'a HashMap<String, Value>, key: &'static str) -> Result<Option<&'a str>> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(GgufTokenizerError::WrongType {
            key,
            expected: "a string",
            found: type_name(other),
        }),
    }
}

fn required_str<'a>(
    md: &'a HashMap<String, Value>,
    key: &'static str,
    hint: &'static str,
) -> Result<&'a str> {
    optional_str(md, key)?.ok_or(GgufTokenizerError::MissingKey { key, hint })
}

fn value_as_i64(v: &Value) -> Option<i64> {
    match *v {
        Value::U8(x) => Some(i64::from(x)),
        Value::I8(x) => Some(i64::from(x)),
        Value::U16(x) => Some(i64::from(x)),
        Value::I16(x) => Some(i64::from(x)),
        Value::U32(x) => Some(i64::from(x)),
        Value::I32(x) => Some(i64::from(x)),
        Value::U64(x) => i64::try_from(x).ok(),
        Value::I64(x) => Some(x),
        _ => None,
    }
}

fn optional_bool(md: &HashMap<String, Value>, key: &'static str) -> Result<Option<bool>> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => match value_as_i64(other) {
            Some(0) => Ok(Some(false)),
            Some(1) => Ok(Some(true)),
            _ => Err(GgufTokenizerError::WrongType {
                key,
                expected: "a bool",
                found: type_name(other),
            }),
        },
    }
}

/// A token id key; a negative id (llama.cpp's "none") reads as absent.
fn token_id(
    md: &HashMap<String, Value>,
    key: &'static str,
    n_tokens: usize,
) -> Result<Option<u32>> {
    let Some(v) = md.get(key) else {
        return Ok(None);
    };
    let raw = value_as_i64(v).ok_or_else(|| GgufTokenizerError::WrongType {
        key,
        expected: "an integer token id",
        found: type_name(v),
    })?;
    if raw < 0 {
        return Ok(None);
    }
    match u32::try_from(raw) {
        Ok(id) if (id as usize) < n_tokens => Ok(Some(id)),
        _ => Err(GgufTokenizerError::Inconsistent {
            key,
            reason: format!("token id {raw} is outside the vocabulary of {n_tokens} tokens"),
        }),
    }
}

fn array<'a>(md: &'a HashMap<String, Value>, key: &'static str) -> Result<Option<&'a [Value]>> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items.as_slice())),
        Some(other) => Err(GgufTokenizerError::WrongType {
            key,
            expected: "an array",
            found: type_name(other),
        }),
    }
}

fn string_array<'a>(
    md: &'a HashMap<String, Value>,
    key: &'static str,
) -> Result<Option<Vec<&'a str>>> {
    let Some(items) = array(md, key)? else {
        return Ok(None);
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s.as_str()),
            other => Err(GgufTokenizerError::WrongType {
                key,
                expected: "an array of strings",
                found: format!("element {i} of type {}", type_name(other)),
            }),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn f32_array(md: &HashMap<String, Value>, key: &'static str) -> Result<Option<Vec<f32>>> {
    let Some(items) = array(md, key)? else {
        return Ok(None);
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match *v {
            Value::F32(x) => Ok(x),
            // Narrowing is fine: scores only order merges.
            #[allow(clippy::cast_possible_truncation)]
            Value::F64(x) => Ok(x as f32),
            ref other => Err(GgufTokenizerError::WrongType {
                key,
                expected: "an array of f32",
                found: format!("element {i} of type {}", type_name(other)),
            }),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// `tokenizer.ggml.token_type`, or all-normal when absent.
fn token_types(md: &HashMap<String, Value>, n_tokens: usize) -> Result<Vec<TokenType>> {
    let Some(items) = array(md, KEY_TOKEN_TYPE)? else {
        return Ok(vec![TokenType::Normal; n_tokens]);
    };
    if items.len() != n_tokens {
        return Err(GgufTokenizerError::Inconsistent {
            key: KEY_TOKEN_TYPE,
            reason: format!("{} token types for {n_tokens} tokens", items.len()),
        });
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            value_as_i64(v)
                .map(TokenType::from_i64)
                .ok_or_else(|| GgufTokenizerError::WrongType {
                    key: KEY_TOKEN_TYPE,
                    expected: "an array of integers",
                    found: format!("element {i} of type {}", type_name(v)),
                })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn s(v: &str) -> Value {
        Value::String(v.to_string())
    }

    fn strings(v: &[&str]) -> Value {
        Value::Array(v.iter().map(|t| s(t)).collect())
    }

    /// A tiny byte-level vocabulary: the 256 byte symbols, "Ġa", "12" and "ĠÂ" via merges, one
    /// control token.
    fn tiny_gpt2(pre: &str) -> HashMap<String, Value> {
        let mut tokens: Vec<String> = vec!["<|end|>".to_string()];
        let mut seen = HashSet::new();
        for b in 0u8..=255 {
            let c = byte_char(b);
            if seen.insert(c) {
                tokens.push(c.to_string());
            }
        }
        tokens.push("Ġa".to_string());
        tokens.push("12".to_string());
        tokens.push("ĠÂ".to_string());
        let n = tokens.len();
        let mut types = vec![Value::I32(1); n];
        types[0] = Value::I32(3);
        let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let mut md = HashMap::new();
        md.insert(KEY_MODEL.to_string(), s("gpt2"));
        md.insert(KEY_PRE.to_string(), s(pre));
        md.insert(KEY_TOKENS.to_string(), strings(&token_refs));
        md.insert(KEY_TOKEN_TYPE.to_string(), Value::Array(types));
        md.insert(KEY_MERGES.to_string(), strings(&["Ġ a", "1 2", "Ġ Â"]));
        md.insert(KEY_EOS_ID.to_string(), Value::U32(0));
        md
    }

    /// GPT-2's byte-to-unicode table (the printable bytes map to themselves).
    fn byte_char(b: u8) -> char {
        let printable = |b: u8| {
            (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
        };
        if printable(b) {
            return char::from(b);
        }
        let mut n = 0u32;
        for x in 0u8..=255 {
            if !printable(x) {
                if x == b {
                    return char::from_u32(256 + n).unwrap_or('?');
                }
                n += 1;
            }
        }
        '?'
    }

    #[test]
    fn builds_tiny_byte_level_tokenizer() {
        let info = GgufTokenizerInfo::from_metadata(&tiny_gpt2("gpt2")).unwrap();
        let enc = info.tokenizer.encode("a a<|end|>", true).unwrap();
        let ids = enc.get_ids();
        let ga = info.tokenizer.token_to_id("Ġa").unwrap();
        let a = info.tokenizer.token_to_id("a").unwrap();
        assert_eq!(ids, &[a, ga, 0]);
        assert_eq!(info.tokenizer.decode(ids, false).unwrap(), "a a<|end|>");
        assert_eq!(info.tokenizer.decode(ids, true).unwrap(), "a a");
        assert_eq!(info.eos_token_ids, vec![0]);
        assert_eq!(info.eos_token.as_deref(), Some("<|end|>"));
        assert!(!info.add_bos_token);
        assert_eq!(info.bos_token_id, None);
    }

    #[test]
    fn smollm_pre_splits_every_digit() {
        let gpt2 = GgufTokenizerInfo::from_metadata(&tiny_gpt2("gpt2")).unwrap();
        let smollm = GgufTokenizerInfo::from_metadata(&tiny_gpt2("smollm")).unwrap();
        let twelve = gpt2.tokenizer.token_to_id("12").unwrap();
        let one = gpt2.tokenizer.token_to_id("1").unwrap();
        let two = gpt2.tokenizer.token_to_id("2").unwrap();
        assert_eq!(
            gpt2.tokenizer.encode("12", false).unwrap().get_ids(),
            &[twelve]
        );
        assert_eq!(
            smollm.tokenizer.encode("12", false).unwrap().get_ids(),
            &[one, two]
        );
        // Numerals beyond ASCII are split off too (\p{N}), taking no space with them.
        let toks = smollm
            .tokenizer
            .encode("a ½", false)
            .unwrap()
            .get_tokens()
            .to_vec();
        assert_eq!(toks, ["a", "Ġ", "Â", "½"]);
        let toks = gpt2
            .tokenizer
            .encode("a ½", false)
            .unwrap()
            .get_tokens()
            .to_vec();
        assert_eq!(toks, ["a", "ĠÂ", "½"]);
    }

    #[test]
    fn unsupported_values_name_key_and_value() {
        let err = GgufTokenizerInfo::from_metadata(&tiny_gpt2("chatglm-bpe")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("tokenizer.ggml.pre") && msg.contains("chatglm-bpe"),
            "{msg}"
        );

        let mut md = tiny_gpt2("gpt2");
        md.insert(KEY_MODEL.to_string(), s("bert"));
        let msg = GgufTokenizerInfo::from_metadata(&md)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("tokenizer.ggml.model") && msg.contains("bert"),
            "{msg}"
        );

        let mut md = tiny_gpt2("gpt2");
        md.remove(KEY_PRE);
        let msg = GgufTokenizerInfo::from_metadata(&md)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("tokenizer.ggml.pre") && msg.contains("missing"),
            "{msg}"
        );

        let mut md = tiny_gpt2("gpt2");
        md.insert(KEY_EOS_ID.to_string(), Value::U32(100_000));
        let msg = GgufTokenizerInfo::from_metadata(&md)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("eos_token_id") && msg.contains("100000"),
            "{msg}"
        );

        let mut md = tiny_gpt2("gpt2");
        md.insert(KEY_TOKENS.to_string(), s("oops"));
        let msg = GgufTokenizerInfo::from_metadata(&md)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("tokenizer.ggml.tokens") && msg.contains("array"),
            "{msg}"
        );
    }

    #[test]
    fn add_bos_uses_template() {
        let mut md = tiny_gpt2("llama-bpe");
        md.insert(KEY_BOS_ID.to_string(), Value::U32(0));
        let info = GgufTokenizerInfo::from_metadata(&md).unwrap();
        assert!(info.add_bos_token, "llama-bpe defaults to add_bos");
        let ids = info.tokenizer.encode("a", true).unwrap().get_ids().to_vec();
        assert_eq!(ids.first(), Some(&0));
        let ids = info
            .tokenizer
            .encode("a", false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_ne!(ids.first(), Some(&0));

        md.insert(KEY_ADD_BOS.to_string(), Value::Bool(false));
        let info = GgufTokenizerInfo::from_metadata(&md).unwrap();
        let ids = info.tokenizer.encode("a", true).unwrap().get_ids().to_vec();
        assert_ne!(ids.first(), Some(&0));
    }

    #[test]
    fn sentencepiece_merges_from_scores() {
        // <unk> <s> </s> then bytes for "!" and pieces ▁, h, i, ▁h, hi, ▁hi.
        let tokens = [
            "<unk>", "<s>", "</s>", "<0x21>", "▁", "h", "i", "▁h", "hi", "▁hi",
        ];
        let types = [2, 3, 3, 6, 1, 1, 1, 1, 1, 1];
        let scores = [0.0f32, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0];
        let mut md = HashMap::new();
        md.insert(KEY_MODEL.to_string(), s("llama"));
        md.insert(KEY_TOKENS.to_string(), strings(&tokens));
        md.insert(
            KEY_TOKEN_TYPE.to_string(),
            Value::Array(types.iter().map(|t| Value::I32(*t)).collect()),
        );
        md.insert(
            KEY_SCORES.to_string(),
            Value::Array(scores.iter().map(|x| Value::F32(*x)).collect()),
        );
        md.insert(KEY_BOS_ID.to_string(), Value::U32(1));
        md.insert(KEY_EOS_ID.to_string(), Value::U32(2));
        md.insert(KEY_UNK_ID.to_string(), Value::U32(0));
        let info = GgufTokenizerInfo::from_metadata(&md).unwrap();
        assert!(info.add_bos_token, "llama vocabularies add BOS by default");
        let enc = info.tokenizer.encode("hi hi!", true).unwrap();
        assert_eq!(enc.get_ids(), &[1, 9, 9, 3]);
        assert_eq!(
            info.tokenizer.decode(enc.get_ids(), true).unwrap(),
            "hi hi!"
        );
        assert_eq!(
            info.tokenizer.decode(enc.get_ids(), false).unwrap(),
            "<s> hi hi!"
        );
        assert_eq!(info.bos_token.as_deref(), Some("<s>"));
    }
}
