//! `tokenizer_from_gguf` against independent references.
//!
//! * SmolLM2 GGUF (gated on `LANTERN_SMOLLM2_GGUF`): ids must equal the ones Hugging Face
//!   transformers produces for the same file (`tests/data/tokenizers/smollm2-gguf-reference.json`,
//!   written by `scripts/gen_tokenizer_fixtures.py`).
//! * Qwen3, Llama 3 and Llama 2 (always run): GGUF-style metadata is synthesized from each
//!   model's real `tokenizer.json` the way llama.cpp's converter lays it out (tokens by id,
//!   token types, merges or scores), written to an in-memory GGUF, read back, and the rebuilt
//!   tokenizer must encode and decode exactly like the original `tokenizer.json`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Content, Value};
use lantern_models::gguf_tokenizer::{tokenizer_from_gguf, GgufTokenizerInfo};
use tokenizers::Tokenizer;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/tokenizers")
}

fn json(path: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Varied text: scripts, emoji sequences, numbers, code, whitespace, chat markup.
const TEXTS: &[&str] = &[
    "",
    "Hello world",
    " leading space and trailing space ",
    "  two leading spaces and   three inside",
    "I'm sure you'll see they've done it, haven't they? We'd GO. IT'S",
    "12345 3.14159 1,000,000 0.001 -42 1e-9 0x1F 2024-11-22",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "fn main() {\n\tlet x: Vec<u32> = vec![1, 2, 3];\n\tprintln!(\"{x:?}\");\n}\n",
    "{\"key\": \"value\", \"list\": [1, 2, 3]}",
    "line one\nline two\n\nline four\r\nwindows\rcr\n\n\n",
    "tabs\tand\t\tdouble tabs\t     ",
    "a\u{a0}non-breaking\u{2009}thin\u{3000}ideographic",
    "Emoji: 😀 😂 🤖 🎉 ❤️ 👍🏽",
    "ZWJ: 👨‍👩‍👧‍👦 🏳️‍🌈 👩🏽‍💻 Flags: 🇺🇸🇯🇵 🇫🇷",
    "日本語のテキストです。東京は大きい都市です。",
    "中文测试：你好，世界！我们今天学习分词。",
    "한국어 문장도 테스트합니다.",
    "Ελληνικά και Русский текст и العربية و हिन्दी",
    "Café, naïve, résumé, jalapeño, Ångström, Zürich, façade, cœur",
    "Combining: e\u{301} a\u{308} n\u{303} o\u{302}\u{323} vs é ä ñ ộ",
    "Zalgo: Z\u{351}\u{36b}\u{343}a\u{352}l\u{350}g\u{344}o\u{308}",
    "Math: ∑_{i=1}^{n} x_i² ≤ ∞, α + β = γ, √2 ≈ 1.414 Ⓐ ① ½ Ⅻ",
    "invalid-ish: \u{fffd} replacement and \u{200b} zero width",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA ababababababababababab",
];

fn check_same(
    name: &str,
    ours: &Tokenizer,
    reference: &Tokenizer,
    texts: &[&str],
    add_special: bool,
) {
    for text in texts {
        let want = reference.encode(*text, add_special).unwrap();
        let got = ours.encode(*text, add_special).unwrap();
        assert_eq!(
            got.get_ids(),
            want.get_ids(),
            "{name}: ids differ for {text:?} (add_special_tokens={add_special})\n ours: {:?}\n  ref: {:?}",
            got.get_tokens(),
            want.get_tokens()
        );
        for skip in [false, true] {
            assert_eq!(
                ours.decode(want.get_ids(), skip).unwrap(),
                reference.decode(want.get_ids(), skip).unwrap(),
                "{name}: decode differs for {text:?} (skip_special_tokens={skip})"
            );
        }
    }
}

/// Writes metadata to an in-memory GGUF and reads it back, so the test goes through the
/// real file format.
fn roundtrip_gguf(md: HashMap<String, Value>) -> Content {
    let mut buf = Cursor::new(Vec::new());
    let pairs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut buf, &pairs, &[]).unwrap();
    buf.set_position(0);
    Content::read(&mut buf).unwrap()
}

fn strings(v: impl IntoIterator<Item = String>) -> Value {
    Value::Array(v.into_iter().map(Value::String).collect())
}

/// The pieces llama.cpp's converter would store for a Hugging Face `tokenizer.json`.
struct Synth {
    tokens: Vec<String>,
    types: Vec<i32>,
    merges: Vec<String>,
}

fn synthesize(tokenizer_json: &serde_json::Value) -> Synth {
    let vocab = tokenizer_json["model"]["vocab"].as_object().unwrap();
    let added = tokenizer_json["added_tokens"].as_array().unwrap();
    let mut by_id: HashMap<u64, (String, i32)> = HashMap::new();
    for (text, id) in vocab {
        by_id.insert(id.as_u64().unwrap(), (text.clone(), 1));
    }
    for t in added {
        let ty = if t["special"].as_bool().unwrap() {
            3
        } else {
            4
        };
        by_id.insert(
            t["id"].as_u64().unwrap(),
            (t["content"].as_str().unwrap().to_string(), ty),
        );
    }
    let n = by_id.keys().max().unwrap() + 1;
    let (tokens, types) = (0..n)
        .map(|id| {
            by_id
                .remove(&id)
                .unwrap_or_else(|| (format!("[PAD{id}]"), 5))
        })
        .unzip();
    let merges = tokenizer_json["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(pair) => format!(
                "{} {}",
                pair[0].as_str().unwrap(),
                pair[1].as_str().unwrap()
            ),
            other => panic!("unexpected merge {other}"),
        })
        .collect();
    Synth {
        tokens,
        types,
        merges,
    }
}

fn base_metadata(model: &str, synth: &Synth) -> HashMap<String, Value> {
    let mut md = HashMap::new();
    md.insert("general.architecture".into(), Value::String("llama".into()));
    md.insert("tokenizer.ggml.model".into(), Value::String(model.into()));
    md.insert(
        "tokenizer.ggml.tokens".into(),
        strings(synth.tokens.iter().cloned()),
    );
    md.insert(
        "tokenizer.ggml.token_type".into(),
        Value::Array(synth.types.iter().map(|t| Value::I32(*t)).collect()),
    );
    md
}

fn id_of(synth: &Synth, text: &str) -> u32 {
    synth.tokens.iter().position(|t| t == text).unwrap() as u32
}

#[test]
fn qwen3_tokenizer_json_via_gguf_metadata() {
    let dir = data_dir().join("qwen3");
    let reference = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let synth = synthesize(&json(&dir.join("tokenizer.json")));
    let mut md = base_metadata("gpt2", &synth);
    md.insert("tokenizer.ggml.pre".into(), Value::String("qwen2".into()));
    md.insert(
        "tokenizer.ggml.merges".into(),
        strings(synth.merges.iter().cloned()),
    );
    md.insert(
        "tokenizer.ggml.eos_token_id".into(),
        Value::U32(id_of(&synth, "<|im_end|>")),
    );
    md.insert(
        "tokenizer.ggml.padding_token_id".into(),
        Value::U32(id_of(&synth, "<|endoftext|>")),
    );
    md.insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(false));
    md.insert(
        "tokenizer.chat_template".into(),
        Value::String("{{ messages }}".into()),
    );
    let content = roundtrip_gguf(md);
    let info = GgufTokenizerInfo::from_content(&content).unwrap();

    let chat = [
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\nsimple</think>\n\n4<|im_end|>",
        "<tool_call>\n{\"name\": \"f\"}\n</tool_call><|endoftext|>",
    ];
    check_same("qwen3", &info.tokenizer, &reference, TEXTS, false);
    check_same("qwen3", &info.tokenizer, &reference, &chat, false);
    check_same("qwen3", &info.tokenizer, &reference, TEXTS, true);

    let im_end = id_of(&synth, "<|im_end|>");
    let endoftext = id_of(&synth, "<|endoftext|>");
    assert_eq!(info.eos_token_ids.first(), Some(&im_end));
    assert!(info.eos_token_ids.contains(&endoftext));
    assert_eq!(info.eos_token.as_deref(), Some("<|im_end|>"));
    assert_eq!(info.bos_token_id, None);
    assert!(!info.add_bos_token);
    assert_eq!(info.pad_token_id, Some(endoftext));
    assert_eq!(info.chat_template.as_deref(), Some("{{ messages }}"));
}

#[test]
fn llama3_tokenizer_json_via_gguf_metadata() {
    let dir = data_dir().join("llama3");
    let reference = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let synth = synthesize(&json(&dir.join("tokenizer.json")));
    let bos = id_of(&synth, "<|begin_of_text|>");
    let mut md = base_metadata("gpt2", &synth);
    md.insert(
        "tokenizer.ggml.pre".into(),
        Value::String("llama-bpe".into()),
    );
    md.insert(
        "tokenizer.ggml.merges".into(),
        strings(synth.merges.iter().cloned()),
    );
    md.insert("tokenizer.ggml.bos_token_id".into(), Value::U32(bos));
    md.insert(
        "tokenizer.ggml.eos_token_id".into(),
        Value::U32(id_of(&synth, "<|end_of_text|>")),
    );
    md.insert(
        "tokenizer.ggml.eot_token_id".into(),
        Value::U32(id_of(&synth, "<|eot_id|>")),
    );
    let content = roundtrip_gguf(md);
    let info = GgufTokenizerInfo::from_content(&content).unwrap();

    let chat = ["<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"];
    check_same("llama3", &info.tokenizer, &reference, TEXTS, false);
    check_same("llama3", &info.tokenizer, &reference, &chat, false);

    // llama.cpp adds BOS for Llama 3 vocabularies by default.
    assert!(info.add_bos_token);
    let with_bos = info.tokenizer.encode("Hello world", true).unwrap();
    let without = reference.encode("Hello world", false).unwrap();
    assert_eq!(with_bos.get_ids()[0], bos);
    assert_eq!(&with_bos.get_ids()[1..], without.get_ids());
    assert_eq!(info.bos_token.as_deref(), Some("<|begin_of_text|>"));
    assert_eq!(
        info.eos_token_ids[..2],
        [
            id_of(&synth, "<|end_of_text|>"),
            id_of(&synth, "<|eot_id|>")
        ]
    );
}

/// SentencePiece: scores as llama.cpp stores them for Llama 2 (piece order, whitespace runs
/// last), no merges key, so the merges are derived; byte fallback for what the vocabulary lacks.
#[test]
fn llama2_sentencepiece_via_gguf_scores() {
    let dir = data_dir().join("llama2");
    let reference = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let tokenizer_json = json(&dir.join("tokenizer.json"));
    let mut synth = synthesize(&tokenizer_json);
    let mut scores = Vec::new();
    for (id, token) in synth.tokens.iter().enumerate() {
        let is_byte = token.len() == 6 && token.starts_with("<0x") && token.ends_with('>');
        if token == "<unk>" {
            synth.types[id] = 2;
        } else if is_byte {
            synth.types[id] = 6;
        }
        let whitespace_run = token.chars().count() > 1 && token.chars().all(|c| c == '\u{2581}');
        scores.push(Value::F32(match synth.types[id] {
            1 if whitespace_run => -1e9,
            1 => -(id as f32),
            _ => 0.0,
        }));
    }
    let mut md = base_metadata("llama", &synth);
    md.insert("tokenizer.ggml.scores".into(), Value::Array(scores));
    md.insert("tokenizer.ggml.bos_token_id".into(), Value::U32(1));
    md.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(2));
    md.insert("tokenizer.ggml.unknown_token_id".into(), Value::U32(0));
    md.insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(true));
    let content = roundtrip_gguf(md.clone());
    let info = GgufTokenizerInfo::from_content(&content).unwrap();

    let extra = [
        "<s>[INST] Hi [/INST] Hello!</s>",
        "hello</s>world",
        "x  y   z",
    ];
    check_same(
        "llama2 (derived merges)",
        &info.tokenizer,
        &reference,
        TEXTS,
        true,
    );
    check_same(
        "llama2 (derived merges)",
        &info.tokenizer,
        &reference,
        &extra,
        true,
    );
    check_same(
        "llama2 (derived merges)",
        &info.tokenizer,
        &reference,
        TEXTS,
        false,
    );
    assert_eq!(info.eos_token_ids, vec![2]);
    assert_eq!(info.bos_token.as_deref(), Some("<s>"));

    // Same vocabulary with the merges stored in the file.
    md.insert(
        "tokenizer.ggml.merges".into(),
        strings(synth.merges.iter().cloned()),
    );
    let tok = tokenizer_from_gguf(&roundtrip_gguf(md)).unwrap();
    check_same("llama2 (stored merges)", &tok, &reference, TEXTS, true);
}

/// The default model's GGUF against transformers' reference ids. Gated: needs the 100 MB file.
#[test]
fn smollm2_gguf_matches_transformers_reference() {
    let Ok(path) = std::env::var("LANTERN_SMOLLM2_GGUF") else {
        eprintln!(
            "SKIPPED: set LANTERN_SMOLLM2_GGUF=$(scripts/fetch-default-model.sh | tail -n1) \
             to check the SmolLM2 GGUF tokenizer against transformers' reference ids"
        );
        return;
    };
    let info = GgufTokenizerInfo::from_gguf_file(Path::new(&path)).unwrap();
    let fixture = json(&data_dir().join("smollm2-gguf-reference.json"));
    let md = &fixture["metadata"];

    assert_eq!(
        info.bos_token_id,
        Some(md["tokenizer.ggml.bos_token_id"].as_u64().unwrap() as u32)
    );
    let eos = md["tokenizer.ggml.eos_token_id"].as_u64().unwrap() as u32;
    assert_eq!(info.eos_token_ids.first(), Some(&eos));
    assert_eq!(info.eos_token.as_deref(), Some("<|im_end|>"));
    assert!(
        info.eos_token_ids.contains(&0),
        "<|endoftext|> also ends generation"
    );
    assert_eq!(
        info.add_bos_token,
        md["tokenizer.ggml.add_bos_token"].as_bool().unwrap()
    );
    assert_eq!(
        info.chat_template.as_deref(),
        md["tokenizer.chat_template"].as_str()
    );
    assert_eq!(
        info.tokenizer.get_vocab_size(true) as u64,
        md["n_tokens"].as_u64().unwrap()
    );

    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 40);
    let ids_of = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want = ids_of(&case["ids"]);
        let got = info.tokenizer.encode(text, false).unwrap();
        assert_eq!(
            got.get_ids(),
            want.as_slice(),
            "ids differ for {text:?}; our tokens {:?}",
            got.get_tokens()
        );
        let got_special = info.tokenizer.encode(text, true).unwrap();
        assert_eq!(
            got_special.get_ids(),
            ids_of(&case["ids_with_special"]).as_slice(),
            "{text:?}"
        );
        assert_eq!(
            info.tokenizer.decode(&want, false).unwrap(),
            case["decoded"].as_str().unwrap()
        );
        assert_eq!(
            info.tokenizer.decode(&want, true).unwrap(),
            case["decoded_skip_special"].as_str().unwrap()
        );
        // Byte-level BPE loses nothing: decoding gives the text back.
        assert_eq!(info.tokenizer.decode(&want, false).unwrap(), text);
    }
}
