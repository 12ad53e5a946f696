//! Shared checks: every way of splitting an output into pieces must give the same result.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use lantern_parsers::reasoning::{
    self, ReasoningDelta, ReasoningParserKind, ReasoningStreamParser, Split,
};
use lantern_parsers::tool::{
    self, Extracted, RequiredStreamParser, ToolCall, ToolDelta, ToolParserKind, ToolStreamParser,
};

/// Char-boundary offsets of `text`, 0 and `len` included.
fn boundaries(text: &str) -> Vec<usize> {
    text.char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect()
}

/// Chunkings to try: every 2-piece split, char by char, and some pseudo-random splits.
pub fn chunkings(text: &str) -> Vec<Vec<&str>> {
    let b = boundaries(text);
    let mut all = Vec::new();
    for &cut in &b {
        all.push(vec![&text[..cut], &text[cut..]]);
    }
    all.push(b.windows(2).map(|w| &text[w[0]..w[1]]).collect());
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15 ^ text.len() as u64;
    for _ in 0..20 {
        let mut pieces = Vec::new();
        let mut i = 0;
        while i + 1 < b.len() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let step = 1 + (seed >> 33) as usize % 7;
            let j = (i + step).min(b.len() - 1);
            pieces.push(&text[b[i]..b[j]]);
            i = j;
        }
        all.push(pieces);
    }
    all
}

/// Checks the delta stream's shape: calls numbered 0, 1, ... in order, each `Start` before
/// its arguments, arguments only for the latest started call.
pub fn check_shape(deltas: &[ToolDelta]) {
    let mut started: Option<usize> = None;
    for d in deltas {
        match d {
            ToolDelta::Start { index, name } => {
                assert_eq!(
                    *index,
                    started.map_or(0, |s| s + 1),
                    "call indexes in order"
                );
                assert!(!name.is_empty());
                started = Some(*index);
            }
            ToolDelta::Arguments { index, text } => {
                assert_eq!(Some(*index), started, "arguments for the current call");
                assert!(!text.is_empty(), "no empty argument pieces");
            }
            ToolDelta::Content(text) => assert!(!text.is_empty(), "no empty content pieces"),
        }
    }
}

/// Streams `chunks` through a fresh parser.
pub fn stream(kind: ToolParserKind, chunks: &[&str]) -> (Vec<ToolDelta>, bool, bool) {
    let mut p = ToolStreamParser::new(kind);
    let mut deltas = Vec::new();
    for c in chunks {
        deltas.extend(p.push(c));
    }
    deltas.extend(p.finish());
    assert!(p.finish().is_empty(), "finish is idempotent");
    assert!(p.push("more").is_empty(), "push after finish does nothing");
    check_shape(&deltas);
    (deltas, p.called(), p.malformed())
}

/// Every chunking streams to the same result; when the markup is well formed that result is
/// `extract`'s. Returns `(extract, streamed, malformed)`.
pub fn check_tool(kind: ToolParserKind, text: &str) -> (Extracted, Extracted, bool) {
    let extracted = tool::extract(kind, text);
    let (deltas, called, malformed) = stream(kind, &[text]);
    let streamed = Extracted::from_deltas(&deltas);
    assert_eq!(called, !streamed.calls.is_empty());
    for chunks in chunkings(text) {
        let (d, c, m) = stream(kind, &chunks);
        assert_eq!(
            Extracted::from_deltas(&d),
            streamed,
            "{kind} chunks {chunks:?}"
        );
        assert_eq!((c, m), (called, malformed), "{kind} chunks {chunks:?}");
    }
    if malformed {
        assert_eq!(
            extracted,
            Extracted {
                content: text.to_owned(),
                calls: vec![]
            }
        );
    } else {
        assert_eq!(streamed, extracted, "{kind}: streaming equals extract");
        for call in &extracted.calls {
            assert_canonical(&call.arguments);
        }
    }
    (extracted, streamed, malformed)
}

/// `arguments` is a JSON object in exactly serde_json's compact form.
pub fn assert_canonical(arguments: &str) {
    let value: serde_json::Value = serde_json::from_str(arguments).expect("arguments parse");
    assert!(value.is_object(), "arguments are an object: {arguments}");
    assert_eq!(serde_json::to_string(&value).unwrap(), arguments);
}

/// The compact serde_json form of the JSON text `raw` (the definition of `arguments`).
pub fn canonical(raw: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(raw).expect("valid JSON");
    serde_json::to_string(&value).unwrap()
}

/// A call with canonicalized `raw_args`.
pub fn call(name: &str, raw_args: &str) -> ToolCall {
    ToolCall {
        name: name.to_owned(),
        arguments: canonical(raw_args),
    }
}

/// Well-formed output: checks streaming and returns `extract`'s result.
pub fn ok(kind: ToolParserKind, text: &str) -> Extracted {
    let (extracted, _, malformed) = check_tool(kind, text);
    assert!(!malformed, "{kind}: unexpectedly malformed: {text:?}");
    extracted
}

/// Malformed output: `extract` gives it all back as content; returns the streamed result.
pub fn malformed(kind: ToolParserKind, text: &str) -> Extracted {
    let (extracted, streamed, malformed) = check_tool(kind, text);
    assert!(malformed, "{kind}: expected malformed: {text:?}");
    assert_eq!(extracted.content, text);
    assert!(extracted.calls.is_empty());
    streamed
}

/// `tool_choice: "required"`: every chunking equals `extract_required`.
pub fn check_required(text: &str) -> Option<Vec<ToolCall>> {
    let expected = tool::extract_required(text);
    for chunks in chunkings(text) {
        let mut p = RequiredStreamParser::new();
        let mut deltas = Vec::new();
        for c in &chunks {
            deltas.extend(p.push(c));
        }
        deltas.extend(p.finish());
        check_shape(&deltas);
        assert!(deltas.iter().all(|d| !matches!(d, ToolDelta::Content(_))));
        let streamed = Extracted::from_deltas(&deltas);
        if let Some(calls) = &expected {
            assert!(!p.malformed());
            assert_eq!(&streamed.calls, calls, "chunks {chunks:?}");
        } else {
            assert!(p.malformed(), "chunks {chunks:?}");
        }
    }
    expected
}

/// Every chunking of `text` streams to `split`'s result; returns it.
pub fn check_split(kind: ReasoningParserKind, text: &str, prompt_opened: bool) -> Split {
    let expected = reasoning::split(kind, text, prompt_opened);
    for chunks in chunkings(text) {
        let mut p = ReasoningStreamParser::new(kind, prompt_opened);
        let mut deltas = Vec::new();
        for c in &chunks {
            deltas.extend(p.push(c));
        }
        deltas.extend(p.finish());
        assert!(p.finish().is_empty());
        let (mut r, mut c) = (String::new(), String::new());
        for d in deltas {
            match d {
                ReasoningDelta::Reasoning(t) => {
                    assert!(!t.is_empty());
                    r.push_str(&t)
                }
                ReasoningDelta::Content(t) => {
                    assert!(!t.is_empty());
                    c.push_str(&t)
                }
            }
        }
        let got = Split {
            reasoning: (!r.is_empty()).then_some(r),
            content: (!c.is_empty()).then_some(c),
        };
        assert_eq!(got, expected, "{kind} chunks {chunks:?}");
    }
    expected
}
