//! A byte-length bound on prompts, checked before tokenizing: a prompt longer than
//! `max_model_len` times the longest token (in bytes) cannot fit the context, so it is
//! refused without paying for its tokenization (a multi-megabyte body costs seconds of CPU
//! and hundreds of megabytes of memory to tokenize).
//!
//! The bound holds only when the tokenizer's normalizer and pre-tokenizer never delete
//! input (a whitespace-splitting pre-tokenizer drops any run of spaces, so no byte bound
//! exists): those are recognised from their serialized form, and anything unknown turns
//! the check off rather than risk refusing a prompt that fits.

use serde_json::Value;
use tokenizers::Tokenizer;

/// Unicode normalization (NFC, NFKC…) can compose up to three code points into one
/// (Hangul jamo), shrinking the text; allow for it when the normalizer does that.
const NORMALIZATION_SLACK: usize = 4;

/// The most bytes a prompt that fits `max_model_len` tokens can have, or `None` when the
/// tokenizer's pipeline may delete input (no sound bound).
pub fn prompt_byte_cap(tok: &Tokenizer, max_model_len: usize) -> Option<usize> {
    let normalizer = match tok.get_normalizer() {
        None => Some(false),
        Some(n) => serde_json::to_value(n)
            .ok()
            .and_then(|v| normalizer_shrinks(&v)),
    }?;
    if let Some(p) = tok.get_pre_tokenizer() {
        let v = serde_json::to_value(p).ok()?;
        if !pre_tokenizer_keeps_input(&v) {
            return None;
        }
    }
    let longest = tok.get_vocab(true).keys().map(String::len).max()?.max(1);
    let slack = if normalizer { NORMALIZATION_SLACK } else { 1 };
    Some(max_model_len.saturating_mul(longest).saturating_mul(slack))
}

/// `Some(true)`: may shrink text by normalization; `Some(false)`: never shrinks;
/// `None`: may delete text.
fn normalizer_shrinks(v: &Value) -> Option<bool> {
    match v.get("type")?.as_str()? {
        "Sequence" => {
            let mut any = false;
            for n in v.get("normalizers")?.as_array()? {
                any |= normalizer_shrinks(n)?;
            }
            Some(any)
        }
        "NFC" | "NFKC" | "NFD" | "NFKD" => Some(true),
        "Lowercase" | "Prepend" => Some(false),
        // `Replace`: a fixed string by a non-empty one shrinks by at most their ratio; a
        // regex (unbounded matches) or an empty replacement may delete.
        "Replace" => {
            let from = v.get("pattern")?.get("String")?.as_str()?.len();
            let to = v.get("content")?.as_str()?.len();
            if to == 0 {
                None
            } else if from <= to {
                Some(false)
            } else if from <= to * NORMALIZATION_SLACK {
                Some(true)
            } else {
                None
            }
        }
        _ => None,
    }
}

fn pre_tokenizer_keeps_input(v: &Value) -> bool {
    let removes = |v: &Value| v.get("behavior").and_then(Value::as_str) == Some("Removed");
    match v.get("type").and_then(Value::as_str) {
        Some("Sequence") => v
            .get("pretokenizers")
            .and_then(Value::as_array)
            .is_some_and(|ps| ps.iter().all(pre_tokenizer_keeps_input)),
        Some("ByteLevel" | "Metaspace" | "Digits" | "UnicodeScripts") => true,
        Some("Split" | "Punctuation") => !removes(v),
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Tokenizer {
        let p = format!(
            "{}/../../tests/fixtures/{name}/tokenizer.json",
            env!("CARGO_MANIFEST_DIR")
        );
        Tokenizer::from_file(&p).unwrap()
    }

    #[test]
    fn byte_level_bpe_gets_a_sound_cap() {
        let tok = fixture("tiny-llama");
        let cap = prompt_byte_cap(&tok, 100).unwrap();
        let longest = tok.get_vocab(true).keys().map(String::len).max().unwrap();
        assert_eq!(cap, 100 * longest);
        // Past the cap, even the most compressible text needs more than 100 tokens.
        let text = "a".repeat(cap + 1);
        let n = tok.encode(text.as_str(), false).unwrap().len();
        assert!(n > 100, "{n} tokens for {} bytes", cap + 1);
    }

    #[test]
    fn pipelines_that_delete_input_get_no_cap() {
        let ws = serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "WhitespaceSplit"}]});
        assert!(!pre_tokenizer_keeps_input(&ws));
        let split_removed = serde_json::json!({"type": "Split", "pattern": {"String": " "},
            "behavior": "Removed", "invert": false});
        assert!(!pre_tokenizer_keeps_input(&split_removed));
        let qwen = serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "x"}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]});
        assert!(pre_tokenizer_keeps_input(&qwen));
        assert_eq!(
            normalizer_shrinks(&serde_json::json!({"type": "NFC"})),
            Some(true)
        );
        assert_eq!(
            normalizer_shrinks(&serde_json::json!({"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]})),
            Some(false)
        );
        assert_eq!(
            normalizer_shrinks(&serde_json::json!({"type": "Replace",
                "pattern": {"String": "x"}, "content": ""})),
            None
        );
        assert_eq!(
            normalizer_shrinks(&serde_json::json!({"type": "Replace",
                "pattern": {"Regex": " +"}, "content": " "})),
            None
        );
        assert_eq!(
            normalizer_shrinks(&serde_json::json!({"type": "BertNormalizer"})),
            None
        );
        assert_eq!(
            normalizer_shrinks(&serde_json::json!({"type": "StripAccents"})),
            None
        );
    }
}
