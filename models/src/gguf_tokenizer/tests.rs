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
