//! The vocabulary as llguidance sees it: the bytes each token id stands for, in a
//! [`TokTrie`]. Built from our `tokenizers::Tokenizer` (tokenizer.json or GGUF-built), for
//! the two vocabulary families the models use:
//!
//! - byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM): every character of a token's string maps
//!   back to one byte through the GPT-2 byte <-> printable-character table;
//! - SentencePiece-style BPE with byte fallback (Llama 2, Mistral): `<0xNN>` tokens are one
//!   byte, `▁` is a space, everything else is its UTF-8.
//!
//! Special tokens get the trie's special marker (so no JSON/regex grammar can produce them),
//! model rows beyond the tokenizer get unique unreachable names, and the EOS set is every id
//! that ends generation. Forced text is tokenized with the trie itself and the environment
//! says it is not canonical, so llguidance allows every tokenization of forced bytes rather
//! than assuming the Hugging Face tokenizer's split.

use super::StructuredError;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use std::collections::HashMap;
use std::sync::Arc;
use tokenizers::{DecoderWrapper, Tokenizer};

struct TrieEnv {
    trie: TokTrie,
}

impl TokenizerEnv for TrieEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.greedy_tokenize(s)
    }

    fn tokenize_is_canonical(&self) -> bool {
        false
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    ByteLevel,
    ByteFallback,
}

fn family(decoder: Option<&DecoderWrapper>) -> Option<Family> {
    fn walk(d: &DecoderWrapper, found: &mut Option<Family>) {
        match d {
            DecoderWrapper::ByteLevel(_) => *found = Some(Family::ByteLevel),
            DecoderWrapper::ByteFallback(_) if found.is_none() => {
                *found = Some(Family::ByteFallback);
            }
            DecoderWrapper::Sequence(seq) => {
                for d in seq.get_decoders() {
                    walk(d, found);
                }
            }
            _ => {}
        }
    }
    let mut found = None;
    if let Some(d) = decoder {
        walk(d, &mut found);
    }
    found
}

/// GPT-2's table, inverted: the printable character that stands for each byte.
fn byte_level_chars() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 256u32;
    let mut map = HashMap::with_capacity(256);
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or('\u{FFFD}');
            next += 1;
            c
        };
        map.insert(c, b);
    }
    map
}

fn special(name: &str) -> Vec<u8> {
    let mut b = vec![TokTrie::SPECIAL_TOKEN_MARKER];
    b.extend_from_slice(name.as_bytes());
    b
}

/// The token bytes of every id in `0..n_vocab` (`n_vocab`: rows of the model's logits).
fn token_bytes(tok: &Tokenizer, n_vocab: usize) -> Result<Vec<Vec<u8>>, StructuredError> {
    let fam = family(tok.get_decoder()).ok_or_else(|| {
        StructuredError::Unsupported(
            "its tokenizer is neither byte-level BPE nor byte-fallback SentencePiece".into(),
        )
    })?;
    let added = tok.get_added_tokens_decoder();
    let chars = byte_level_chars();
    let mut words = Vec::with_capacity(n_vocab);
    for id in 0..n_vocab as u32 {
        let bytes = if let Some(a) = added.get(&id) {
            if a.special {
                special(&a.content)
            } else {
                a.content.as_bytes().to_vec()
            }
        } else if let Some(name) = tok.id_to_token(id) {
            match fam {
                // A token whose characters are not all in the table can never be produced
                // by a grammar (empty bytes are never allowed).
                Family::ByteLevel => name
                    .chars()
                    .map(|c| chars.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    .unwrap_or_default(),
                Family::ByteFallback => match byte_token(&name) {
                    Some(b) => vec![b],
                    None => name.replace('\u{2581}', " ").into_bytes(),
                },
            }
        } else {
            special(&format!("<[{id}]>"))
        };
        words.push(bytes);
    }
    Ok(words)
}

/// `<0xNN>` -> the byte NN.
fn byte_token(name: &str) -> Option<u8> {
    let hex = name.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// The llguidance environment of a model: `n_vocab` logits rows, `eos` the ids that end
/// generation (the first is the trie's EOS).
pub(crate) fn token_env(
    tok: &Tokenizer,
    n_vocab: usize,
    eos: &[u32],
) -> Result<TokEnv, StructuredError> {
    let tok_size = tok.get_vocab_size(true);
    if n_vocab < tok_size {
        return Err(StructuredError::Unsupported(format!(
            "the model has {n_vocab} logits rows but its tokenizer {tok_size} tokens"
        )));
    }
    let &first_eos = eos.first().ok_or_else(|| {
        StructuredError::Unsupported("the model has no end-of-sequence token".into())
    })?;
    let words = token_bytes(tok, n_vocab)?;
    let info = TokRxInfo::new(n_vocab as u32, first_eos);
    let trie = TokTrie::from(&info, &words).with_eos_tokens(eos);
    Ok(Arc::new(TrieEnv { trie }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_is_a_bijection() {
        let m = byte_level_chars();
        assert_eq!(m.len(), 256);
        assert_eq!(m[&'Ġ'], b' ');
        assert_eq!(m[&'Ċ'], b'\n');
        assert_eq!(m[&'a'], b'a');
        let mut bytes: Vec<u8> = m.values().copied().collect();
        bytes.sort_unstable();
        bytes.dedup();
        assert_eq!(bytes.len(), 256);
    }

    #[test]
    fn byte_tokens() {
        assert_eq!(byte_token("<0x0A>"), Some(b'\n'));
        assert_eq!(byte_token("<0xZZ>"), None);
        assert_eq!(byte_token("<0x0AA>"), None);
        assert_eq!(byte_token("hello"), None);
    }
}
