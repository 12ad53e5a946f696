//! Property tests: random calls with random JSON arguments, rendered in each format the way
//! models write them, must come back exactly (from `extract` and from every chunking of the
//! stream); random marker soup must never panic and must stream the same for every chunking.
#![allow(clippy::unwrap_used)]

mod common;

use common::{check_required, check_split, check_tool};
use lantern_parsers::reasoning::ReasoningParserKind;
use lantern_parsers::tool::{ToolCall, ToolParserKind};
use serde_json::{Map, Number, Value};

/// Small deterministic generator (PCG-style LCG), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const STRINGS: &[&str] = &[
    "Paris",
    "São Paulo",
    "say \"hi\"",
    "back\\slash",
    "it's",
    "line\nbreak\ttab",
    "ctl\u{1}\u{1f}",
    "emoji 😀🇫🇷",
    "中文",
    "",
    "</tool_call>",
    "[TOOL_CALLS]",
    "a, b=c)",
    "{not: json}",
];
const KEYS: &[&str] = &[
    "city",
    "q",
    "unit",
    "nested",
    "é",
    "with space",
    "n",
    "list",
    "x",
];
const NAMES: &[&str] = &["get_weather", "search", "f", "create_event", "get_time2"];

fn value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth == 0 { 4 } else { 6 }) {
        0 => Value::String(rng.pick(STRINGS).to_owned()),
        1 => {
            let n = rng.next() as i64 - (1 << 30);
            if rng.below(2) == 0 {
                Value::Number(n.into())
            } else {
                Value::Number(Number::from_f64(n as f64 / 64.0).unwrap())
            }
        }
        2 => Value::Bool(rng.below(2) == 0),
        3 => Value::Null,
        4 => Value::Array((0..rng.below(3)).map(|_| value(rng, depth - 1)).collect()),
        _ => Value::Object(object(rng, depth - 1)),
    }
}

fn object(rng: &mut Rng, depth: usize) -> Map<String, Value> {
    let mut map = Map::new();
    for _ in 0..rng.below(4) {
        let key = rng.pick(KEYS).to_owned();
        map.insert(key, value(rng, depth));
    }
    map
}

fn json(rng: &mut Rng, v: &impl serde::Serialize) -> String {
    if rng.below(2) == 0 {
        serde_json::to_string(v).unwrap()
    } else {
        serde_json::to_string_pretty(v).unwrap()
    }
}

fn python(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut out = String::from("'");
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\'' => out.push_str("\\'"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('\'');
            out
        }
        Value::Array(items) => {
            format!(
                "[{}]",
                items.iter().map(python).collect::<Vec<_>>().join(", ")
            )
        }
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", python(&Value::String(k.clone())), python(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn calls(rng: &mut Rng, python_names: bool) -> Vec<(String, Map<String, Value>)> {
    (0..1 + rng.below(3))
        .map(|_| {
            let mut args = object(rng, 2);
            if python_names {
                // Keyword names must be identifiers.
                args = args
                    .into_iter()
                    .filter(|(k, _)| k.chars().all(|c| c.is_ascii_alphabetic()))
                    .collect();
            }
            (rng.pick(NAMES).to_owned(), args)
        })
        .collect()
}

fn expected(calls: &[(String, Map<String, Value>)]) -> Vec<ToolCall> {
    calls
        .iter()
        .map(|(name, args)| ToolCall {
            name: name.clone(),
            arguments: serde_json::to_string(args).unwrap(),
        })
        .collect()
}

fn assert_round_trip(kind: ToolParserKind, text: &str, content: &str, want: &[ToolCall]) {
    let (extracted, _, malformed) = check_tool(kind, text);
    assert!(!malformed, "{kind}: {text}");
    assert_eq!(extracted.calls, want, "{kind}: {text}");
    assert_eq!(extracted.content, content, "{kind}: {text}");
}

#[test]
fn random_calls_round_trip_in_every_format() {
    let mut rng = Rng(7);
    for _ in 0..150 {
        let cs = calls(&mut rng, false);
        let want = expected(&cs);
        let pre = ["", "Let me check that for you.", "Sure — d'accord 👍"][rng.below(3)];
        let sep = if pre.is_empty() { "" } else { "\n" };

        // hermes
        let blocks: Vec<String> = cs
            .iter()
            .map(|(n, a)| {
                let obj = serde_json::json!({"name": n, "arguments": a});
                format!("<tool_call>\n{}\n</tool_call>", json(&mut rng, &obj))
            })
            .collect();
        let text = format!("{pre}{sep}{}", blocks.join("\n"));
        assert_round_trip(ToolParserKind::Hermes, &text, pre, &want);

        // llama3_json: no content before calls
        let objs: Vec<String> = cs
            .iter()
            .map(|(n, a)| json(&mut rng, &serde_json::json!({"name": n, "parameters": a})))
            .collect();
        let tag = ["", "<|python_tag|>"][rng.below(2)];
        let text = format!("{tag}{}", objs.join("; "));
        assert_round_trip(ToolParserKind::Llama3Json, &text, "", &want);

        // mistral, array form and [ARGS] form
        let arr: Vec<Value> = cs
            .iter()
            .map(|(n, a)| serde_json::json!({"name": n, "arguments": a}))
            .collect();
        let text = format!("{pre}{sep}[TOOL_CALLS]{}", json(&mut rng, &arr));
        assert_round_trip(ToolParserKind::Mistral, &text, pre, &want);
        let text: String = cs
            .iter()
            .map(|(n, a)| format!("[TOOL_CALLS]{n}[ARGS]{}", json(&mut rng, a)))
            .collect();
        assert_round_trip(ToolParserKind::Mistral, &format!("{pre}{text}"), pre, &want);

        // required
        let arr: Vec<Value> = cs
            .iter()
            .map(|(n, a)| serde_json::json!({"name": n, "parameters": a}))
            .collect();
        assert_eq!(check_required(&json(&mut rng, &arr)), Some(want.clone()));
    }
}

#[test]
fn random_pythonic_calls_round_trip() {
    let mut rng = Rng(11);
    for _ in 0..200 {
        let cs = calls(&mut rng, true);
        let want = expected(&cs);
        let list: Vec<String> = cs
            .iter()
            .map(|(n, a)| {
                let kw: Vec<String> = a
                    .iter()
                    .map(|(k, v)| format!("{k}={}", python(v)))
                    .collect();
                format!("{n}({})", kw.join(", "))
            })
            .collect();
        let text = format!("[{}]", list.join(", "));
        assert_round_trip(ToolParserKind::Pythonic, &text, "", &want);
        let wrapped = format!("<|python_start|>{text}<|python_end|>");
        assert_round_trip(ToolParserKind::Pythonic, &wrapped, "", &want);
    }
}

const SOUP: &[&str] = &[
    "<tool_call>",
    "</tool_call>",
    "[TOOL_CALLS]",
    "[ARGS]",
    "<|python_tag|>",
    "<|python_start|>",
    "<|python_end|>",
    "<think>",
    "</think>",
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    ",",
    ":",
    ";",
    "=",
    "\"name\"",
    "\"arguments\"",
    "\"parameters\"",
    "\"f\"",
    "'x'",
    "f",
    "x",
    " ",
    "\n",
    "1",
    "-2.5",
    "true",
    "None",
    "\\",
    "\"",
    "é",
    "😀",
    "<",
    "</",
    "[TOOL",
    "abc",
    "{\"name\": \"f\", \"arguments\": {}}",
    "g(a=1)",
    "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": [1]}}</tool_call>",
    "{\"name\": \"f\", \"parameters\": {\"b\": \"é\"}}",
    "[TOOL_CALLS]f[ARGS]{\"c\": null}",
    "[g(a='x'), h()]",
    "[{\"name\": \"f\", \"parameters\": {}}]",
];

#[test]
fn random_marker_soup_never_panics_and_streams_consistently() {
    let mut rng = Rng(3);
    let (mut good_calls, mut broken) = (0, 0);
    for _ in 0..600 {
        let text: String = (0..rng.below(12)).map(|_| rng.pick(SOUP)).collect();
        for kind in ToolParserKind::ALL {
            let (extracted, _, malformed) = check_tool(kind, &text);
            good_calls += usize::from(!malformed && !extracted.calls.is_empty());
            broken += usize::from(malformed);
        }
        check_required(&text);
        for kind in ReasoningParserKind::ALL {
            check_split(kind, &text, false);
            check_split(kind, &text, true);
        }
    }
    // The soup reaches both the call paths and the failure paths.
    eprintln!("soup: {good_calls} outputs with calls, {broken} malformed");
    assert!(good_calls >= 50 && broken >= 100, "{good_calls} {broken}");
}
