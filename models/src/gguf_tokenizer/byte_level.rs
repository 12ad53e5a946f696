//! A byte-level BPE tokenizer (`tokenizer.ggml.model = "gpt2"`): vocabulary and merges from
//! the file, the split regex of its `tokenizer.ggml.pre`, GPT-2's byte-to-unicode mapping.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer,
};

use super::metadata::string_array;
use super::pre_tokenizer::{Gpt2Pre, LLAMA3_SPLIT, QWEN2_SPLIT};
use super::{build_err, merges_from_file, vocab_map, GgufTokenizerError, Result, KEY_MERGES};

pub(super) fn build_byte_level(
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
