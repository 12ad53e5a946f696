//! A SentencePiece-style BPE tokenizer (`tokenizer.ggml.model = "llama"`): `▁` for spaces,
//! `<0xNN>` byte fallback, merges from the file or derived from `tokenizer.ggml.scores`.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::{DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, Tokenizer};

use super::metadata::{f32_array, string_array, TokenType};
use super::{
    build_err, merges_from_file, vocab_map, GgufTokenizerError, Result, KEY_MERGES, KEY_SCORES,
};

/// SentencePiece's whitespace marker.
pub(super) const SPM_SPACE: &str = "\u{2581}";

pub(super) fn build_sentencepiece(
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
pub(super) fn merges_from_scores(
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
