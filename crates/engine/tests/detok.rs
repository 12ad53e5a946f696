//! Incremental detokenizer and stop strings on real tokenizers.
//!
//! Qwen3 and Llama 3 (byte-level BPE) and Llama 2 (SentencePiece with byte fallback) come from
//! `tests/data/tokenizers/*/tokenizer.json`; SmolLM2 is built from its GGUF when
//! `LANTERN_SMOLLM2_GGUF` points at it (see `scripts/fetch-default-model.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lantern_engine::detok::IncrementalDetokenizer;
use lantern_engine::stop::StopMatcher;
use tokenizers::Tokenizer;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/tokenizers")
}

fn load(name: &str) -> Arc<Tokenizer> {
    let path = data_dir().join(name).join("tokenizer.json");
    Arc::new(Tokenizer::from_file(&path).unwrap_or_else(|e| panic!("load {}: {e}", path.display())))
}

/// Every tokenizer under test: (name, tokenizer, is_byte_level).
fn tokenizers() -> Vec<(String, Arc<Tokenizer>, bool)> {
    let mut all = vec![
        ("qwen3".to_string(), load("qwen3"), true),
        ("llama3".to_string(), load("llama3"), true),
        ("llama2".to_string(), load("llama2"), false),
    ];
    match std::env::var("LANTERN_SMOLLM2_GGUF") {
        Ok(path) => {
            let info = lantern_models::gguf_tokenizer::GgufTokenizerInfo::from_gguf_file(Path::new(&path)).unwrap();
            all.push(("smollm2-gguf".to_string(), Arc::new(info.tokenizer), true));
        }
        Err(_) => eprintln!(
            "SKIPPED (SmolLM2 part): set LANTERN_SMOLLM2_GGUF=$(scripts/fetch-default-model.sh | tail -n1) \
             to also run the detokenizer tests on the SmolLM2 GGUF tokenizer"
        ),
    }
    all
}

const TEXTS: &[&str] = &[
    "Hello world! How are you doing today?",
    "  leading spaces, trailing spaces  ",
    "Emoji: 😀 😂 🤖 🎉 ❤️ 👍🏽 🫠",
    "ZWJ sequences: 👨‍👩‍👧‍👦 🏳️‍🌈 👩🏽‍💻 🧑‍🤝‍🧑",
    "Flags: 🇺🇸🇯🇵🇫🇷🇧🇷🇩🇪 and 🏴󠁧󠁢󠁳󠁣󠁴󠁿",
    "日本語のテキストです。東京は大きい都市です。",
    "中文测试：你好，世界！我们今天学习分词。龘䶵𠀀𪚥",
    "한국어 문장도 테스트합니다.",
    "Ελληνικά και Русский текст и العربية و हिन्दी ไทย",
    "Café, naïve, résumé, jalapeño, Ångström, Zürich, façade, cœur, Đặng",
    "Combining: e\u{301} a\u{308} n\u{303} o\u{302}\u{323} Z\u{351}\u{36b}a\u{352}l\u{350}g\u{344}o",
    "fn main() {\n\tlet x: Vec<u32> = vec![1, 2, 3];\n\tprintln!(\"{x:?}\");\n}\n",
    "def f(x):\n    return x ** 2  # square\n\n\n    \n",
    "Math: ∑ x² ≤ ∞, α+β=γ, √2 ≈ 1.41421356, 12345 3.14159",
    "Mixed 価格は¥1,200です (about $8.50) 🙂\r\n\ttab",
];

/// Pushes `ids` one at a time and checks the deltas. Returns the concatenated text.
fn stream(tok: &Arc<Tokenizer>, context: &[u32], ids: &[u32], skip: bool, label: &str) -> String {
    let mut detok = IncrementalDetokenizer::new(tok.clone(), context, skip).unwrap();
    let mut out = String::new();
    for (i, &id) in ids.iter().enumerate() {
        let delta = detok.push(id).unwrap();
        assert!(
            !delta.contains('\u{fffd}'),
            "{label}: delta {i} {delta:?} has U+FFFD (held text leaked)"
        );
        // Bounded work: only the current chunk's tokens are ever pending.
        assert!(
            detok.pending_ids().len() <= 12,
            "{label}: window grew to {:?}",
            detok.pending_ids()
        );
        out.push_str(&delta);
    }
    out.push_str(&detok.flush().unwrap());
    out
}

#[test]
fn deltas_concatenate_to_full_decode() {
    for (name, tok, byte_level) in tokenizers() {
        for text in TEXTS {
            let ids = tok.encode(*text, false).unwrap().get_ids().to_vec();
            for skip in [true, false] {
                let label = format!("{name} skip={skip} {text:?}");
                let full = tok.decode(&ids, skip).unwrap();
                assert!(
                    !full.contains('\u{fffd}'),
                    "{label}: test text should decode cleanly"
                );
                assert_eq!(stream(&tok, &[], &ids, skip, &label), full, "{label}");

                // With prompt context: the text the ids add after the context.
                let context = tok
                    .encode("Some prompt text here:", false)
                    .unwrap()
                    .get_ids()
                    .to_vec();
                let mut all = context.clone();
                all.extend(&ids);
                let ctx_text = tok.decode(&context, skip).unwrap();
                let with_ctx = tok.decode(&all, skip).unwrap();
                let want = with_ctx.strip_prefix(ctx_text.as_str()).unwrap();
                let got = stream(&tok, &context, &ids, skip, &label);
                assert_eq!(got, want, "{label} (with context)");
                if byte_level {
                    assert_eq!(got, full, "{label}: byte-level text is context-free");
                }
            }
        }
    }
}

#[test]
fn multibyte_characters_are_held_until_complete() {
    for (name, tok, _) in tokenizers() {
        for text in ["🇺🇸", "👨‍👩‍👧‍👦", "𪚥", "龘"] {
            let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
            let mut detok = IncrementalDetokenizer::new(tok.clone(), &[], true).unwrap();
            let deltas: Vec<String> = ids.iter().map(|id| detok.push(*id).unwrap()).collect();
            // Every delta is whole characters, and together they are the text.
            assert_eq!(deltas.concat(), text, "{name}: {deltas:?}");
            let has_partial_token = ids
                .iter()
                .any(|id| tok.decode(&[*id], false).unwrap().contains('\u{fffd}'));
            if has_partial_token {
                assert!(
                    deltas.iter().any(String::is_empty),
                    "{name}: {text:?} split over {ids:?} must be held"
                );
            }
        }
    }
}

#[test]
fn truncated_character_is_flushed_as_replacement() {
    // The generation stops in the middle of an emoji: `flush` renders the broken tail the way
    // `decode` does, and nothing before it.
    for (name, tok, _) in tokenizers() {
        let ids = tok.encode("ok 😀", false).unwrap().get_ids().to_vec();
        let byte_ids: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|id| tok.decode(&[*id], false).unwrap().contains('\u{fffd}'))
            .collect();
        if byte_ids.is_empty() {
            continue; // the emoji is one token in this vocabulary
        }
        let cut = ids.iter().position(|id| *id == byte_ids[0]).unwrap() + 1;
        let ids = &ids[..cut];
        let mut detok = IncrementalDetokenizer::new(tok.clone(), &[], false).unwrap();
        let mut out = detok.push_all(ids).unwrap();
        assert!(!out.contains('\u{fffd}'), "{name}: {out:?}");
        out.push_str(&detok.flush().unwrap());
        assert_eq!(out, tok.decode(ids, false).unwrap(), "{name}");
    }
}

#[test]
fn special_tokens_skipped_or_kept() {
    let cases = [
        (
            "qwen3",
            "<|im_start|>assistant\nSure! 😀<|im_end|>\n<|endoftext|>",
            "assistant\nSure! 😀\n",
            true,
        ),
        (
            "llama3",
            "<|start_header_id|>assistant<|end_header_id|>\n\nHi 👋<|eot_id|>",
            "assistant\n\nHi 👋",
            true,
        ),
        ("llama2", "<s>Hello world 😀</s>", "Hello world 😀", false),
    ];
    for (name, text, skipped, byte_level) in cases {
        let tok = load(name);
        let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
        let label = format!("{name} {text:?}");
        let got_skip = stream(&tok, &[], &ids, true, &label);
        assert_eq!(got_skip, tok.decode(&ids, true).unwrap(), "{label}");
        assert_eq!(got_skip, skipped, "{label}");
        let got_keep = stream(&tok, &[], &ids, false, &label);
        assert_eq!(got_keep, tok.decode(&ids, false).unwrap(), "{label}");
        if byte_level {
            assert_eq!(got_keep, text, "{label}");
        }
    }
}

#[test]
fn sentencepiece_first_token_space_follows_context() {
    let tok = load("llama2");
    let ids = tok.encode("Hello world", false).unwrap().get_ids().to_vec();
    let prompt = tok
        .encode("[INST] Say hi [/INST]", true)
        .unwrap()
        .get_ids()
        .to_vec();
    // Alone, SentencePiece strips the first space ...
    assert_eq!(stream(&tok, &[], &ids, true, "no ctx"), "Hello world");
    // ... after a prompt, the first word keeps it, as it reads in the conversation.
    assert_eq!(stream(&tok, &prompt, &ids, true, "ctx"), " Hello world");
}

/// xorshift64*: deterministic pseudo-random numbers without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_byte_level_id_streams_match_decode() {
    // Arbitrary ids (mostly byte fragments that form invalid UTF-8 half the time): the
    // invariant must still hold exactly for byte-level tokenizers.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (name, tok, byte_level) in tokenizers() {
        if !byte_level {
            continue;
        }
        let vocab = tok.get_vocab_size(true);
        // Single-byte tokens are the interesting ones: bias towards them.
        let bytes: Vec<u32> = (0..vocab as u32)
            .filter(|id| tok.id_to_token(*id).is_some_and(|t| t.chars().count() == 1))
            .collect();
        for round in 0..200 {
            let len = 1 + rng.below(24);
            let ids: Vec<u32> = (0..len)
                .map(|_| {
                    if rng.below(3) == 0 {
                        rng.below(vocab) as u32
                    } else {
                        bytes[rng.below(bytes.len())]
                    }
                })
                .collect();
            for skip in [true, false] {
                let mut detok = IncrementalDetokenizer::new(tok.clone(), &[], skip).unwrap();
                let mut out = detok.push_all(&ids).unwrap();
                out.push_str(&detok.flush().unwrap());
                assert_eq!(
                    out,
                    tok.decode(&ids, skip).unwrap(),
                    "{name} round {round} {ids:?}"
                );
            }
        }
    }
}

#[test]
fn random_text_token_streams_match_decode_sentencepiece() {
    // Llama 2: random *text* pieces and whole-character byte runs (the exact case; see the
    // module docs of detok for invalid byte runs).
    let tok = load("llama2");
    let mut rng = Rng(42);
    let pieces: Vec<&str> = TEXTS.iter().flat_map(|t| t.split(' ')).collect();
    for round in 0..200 {
        let n = 1 + rng.below(8);
        let text: Vec<&str> = (0..n).map(|_| pieces[rng.below(pieces.len())]).collect();
        let text = text.join(if rng.below(2) == 0 { " " } else { "" });
        let ids = tok
            .encode(text.as_str(), rng.below(2) == 0)
            .unwrap()
            .get_ids()
            .to_vec();
        for skip in [true, false] {
            let label = format!("round {round} {text:?}");
            assert_eq!(
                stream(&tok, &[], &ids, skip, &label),
                tok.decode(&ids, skip).unwrap(),
                "{label}"
            );
        }
    }
}

// --- Stop strings --------------------------------------------------------------------------

/// Detokenizes `text` token by token through a StopMatcher; checks that what was emitted so
/// far is always a prefix of the final output (nothing is ever taken back, so no partial stop
/// string leaked). Returns (output, stop index).
fn run_stop(
    tok: &Arc<Tokenizer>,
    text: &str,
    stops: &[&str],
    include: bool,
) -> (String, Option<usize>) {
    let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
    let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
    let expected = expected_stop_output(&tok.decode(&ids, true).unwrap(), &stops, include);
    let mut detok = IncrementalDetokenizer::new(tok.clone(), &[], true).unwrap();
    let mut matcher = StopMatcher::new(&stops, include);
    let mut out = String::new();
    let mut stopped = None;
    for id in &ids {
        let step = matcher.push(&detok.push(*id).unwrap());
        out.push_str(&step.text);
        assert!(
            expected.0.starts_with(&out),
            "emitted {out:?} is not a prefix of {:?}",
            expected.0
        );
        if step.stopped.is_some() {
            stopped = step.stopped;
            break;
        }
    }
    if stopped.is_none() {
        let step = matcher.push(&detok.flush().unwrap());
        out.push_str(&step.text);
        stopped = step.stopped;
        if stopped.is_none() {
            out.push_str(&matcher.finish());
        }
    }
    assert_eq!(
        (out.clone(), stopped),
        expected,
        "{text:?} stops={stops:?} include={include}"
    );
    (out, stopped)
}

/// The reference: search the whole text at once.
fn expected_stop_output(full: &str, stops: &[String], include: bool) -> (String, Option<usize>) {
    let mut best: Option<(usize, usize)> = None;
    for (i, s) in stops.iter().enumerate() {
        if let Some(pos) = full.find(s.as_str()) {
            let better = match best {
                None => true,
                Some((bi, bp)) => pos < bp || (pos == bp && s.len() > stops[bi].len()),
            };
            if better {
                best = Some((i, pos));
            }
        }
    }
    match best {
        None => (full.to_string(), None),
        Some((i, pos)) => {
            let end = if include { pos + stops[i].len() } else { pos };
            (full[..end].to_string(), Some(i))
        }
    }
}

#[test]
fn stop_strings_across_token_boundaries() {
    for (name, tok, _) in tokenizers() {
        let text = "The answer is 42.\nUser: what about 43?\nAssistant: 🤔 no idea";
        for include in [false, true] {
            let (out, hit) = run_stop(&tok, text, &["\nUser:"], include);
            assert_eq!(hit, Some(0), "{name}");
            let want = if include {
                "The answer is 42.\nUser:"
            } else {
                "The answer is 42."
            };
            assert_eq!(out, want, "{name}");

            // Earliest of several stops wins; an emoji stop spanning byte-level tokens.
            let (out, hit) = run_stop(&tok, text, &["Assistant", "🤔", "what about"], include);
            assert_eq!(hit, Some(2), "{name}");
            assert_eq!(
                out,
                if include {
                    "The answer is 42.\nUser: what about"
                } else {
                    "The answer is 42.\nUser: "
                }
            );

            let (out, hit) = run_stop(&tok, text, &["🤔 no"], include);
            assert_eq!(hit, Some(0), "{name}");
            assert!(
                out.ends_with(if include { "🤔 no" } else { "Assistant: " }),
                "{name}: {out:?}"
            );

            // A stop that only starts to match is released in full at the end.
            let (out, hit) = run_stop(&tok, text, &["no idea!", "43?!"], include);
            assert_eq!(hit, None);
            assert_eq!(out, text);

            // Stop right at the start.
            let (out, hit) = run_stop(&tok, text, &["The"], include);
            assert_eq!(hit, Some(0));
            assert_eq!(out, if include { "The" } else { "" });
        }
    }
}

#[test]
fn stop_strings_on_cjk_and_combining_text() {
    for (name, tok, _) in tokenizers() {
        for (text, stop) in [
            ("中文测试：你好，世界！我们今天学习分词。", "世界"),
            ("Café naïve résumé e\u{301}x", "e\u{301}"),
            ("flags 🇺🇸🇯🇵🇫🇷 end", "🇯🇵"),
            ("family 👨‍👩‍👧‍👦 end", "👩‍👧"),
        ] {
            // Qwen's NFC normalizer turns "e\u{301}" into "é": then the stop is rightly absent.
            let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
            let present = tok.decode(&ids, true).unwrap().contains(stop);
            for include in [false, true] {
                let (_, hit) = run_stop(&tok, text, &[stop], include);
                assert_eq!(hit.is_some(), present, "{name} {text:?} {stop:?}");
            }
        }
    }
}

#[test]
fn stop_matcher_is_independent_of_delta_boundaries() {
    let mut rng = Rng(7);
    let texts = [
        "aaab aab ab b abcabc",
        "x</s>y",
        "line\n\nUser: hi\n\nUser: again",
        "日本語😀テキスト😀😀end",
    ];
    let stop_sets: [&[&str]; 5] = [
        &["aab"],
        &["abc", "bca"],
        &["\n\nUser:"],
        &["😀😀", "テキ"],
        &["zzz"],
    ];
    for text in texts {
        for stops in stop_sets {
            let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
            for include in [false, true] {
                let expected = expected_stop_output(text, &stops, include);
                for _ in 0..50 {
                    // Random split at char boundaries.
                    let bounds: Vec<usize> = text
                        .char_indices()
                        .map(|(i, _)| i)
                        .chain([text.len()])
                        .collect();
                    let mut cuts: Vec<usize> = (0..rng.below(6))
                        .map(|_| bounds[rng.below(bounds.len())])
                        .collect();
                    cuts.push(0);
                    cuts.push(text.len());
                    cuts.sort_unstable();
                    let mut m = StopMatcher::new(&stops, include);
                    let mut out = String::new();
                    let mut hit = None;
                    for w in cuts.windows(2) {
                        let step = m.push(&text[w[0]..w[1]]);
                        out.push_str(&step.text);
                        assert!(expected.0.starts_with(&out), "{out:?} vs {:?}", expected.0);
                        if step.stopped.is_some() {
                            hit = step.stopped;
                            break;
                        }
                    }
                    if hit.is_none() {
                        out.push_str(&m.finish());
                    }
                    assert_eq!((out, hit), expected, "{text:?} {stops:?} {cuts:?}");
                }
            }
        }
    }
}
