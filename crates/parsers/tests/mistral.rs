//! `mistral` on Mistral 7B v0.3 (`[TOOL_CALLS] [...]`) and Mistral Small 3.x / Devstral
//! (`[TOOL_CALLS]name[ARGS]{...}`) outputs.
#![allow(clippy::unwrap_used)]

mod common;

use common::{call, malformed, ok};
use lantern_parsers::tool::{ToolDelta, ToolParserKind, ToolStreamParser};

const K: ToolParserKind = ToolParserKind::Mistral;

#[test]
fn no_call_is_content_verbatim() {
    let text = "The weather in Paris is usually mild in spring [citation needed].\n";
    let r = ok(K, text);
    assert_eq!(r.content, text);
    assert!(r.calls.is_empty());
}

#[test]
fn v03_array_form() {
    let text = "[TOOL_CALLS] [{\"name\": \"get_current_weather\", \"arguments\": {\"location\": \
                \"Paris, France\", \"format\": \"celsius\"}}]";
    let r = ok(K, text);
    assert_eq!(r.content, "");
    assert_eq!(
        r.calls,
        vec![call(
            "get_current_weather",
            r#"{"location": "Paris, France", "format": "celsius"}"#
        )]
    );
}

#[test]
fn v03_parallel_calls_with_content_before() {
    let text = "Sure, let me check both cities. [TOOL_CALLS][{\"name\": \"get_current_weather\", \
                \"arguments\": {\"location\": \"Paris\"}}, {\"name\": \"get_current_weather\", \
                \"arguments\": {\"location\": \"Tokyo\", \"format\": \"fahrenheit\"}}]";
    let r = ok(K, text);
    assert_eq!(r.content, "Sure, let me check both cities.");
    assert_eq!(
        r.calls,
        vec![
            call("get_current_weather", r#"{"location": "Paris"}"#),
            call(
                "get_current_weather",
                r#"{"location": "Tokyo", "format": "fahrenheit"}"#
            ),
        ]
    );
}

#[test]
fn v11_args_form_repeated() {
    let text = "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\", \"unit\": \"celsius\"}\
                [TOOL_CALLS]get_time[ARGS]{\"timezone\": \"Europe/Paris\"}";
    let r = ok(K, text);
    assert_eq!(r.content, "");
    assert_eq!(
        r.calls,
        vec![
            call("get_weather", r#"{"city": "Paris", "unit": "celsius"}"#),
            call("get_time", r#"{"timezone": "Europe/Paris"}"#),
        ]
    );
}

#[test]
fn v11_without_args_tag_and_content_before() {
    let text = "I'll add them.[TOOL_CALLS]add_numbers{\"a\": 3, \"b\": 4}";
    let r = ok(K, text);
    assert_eq!(r.content, "I'll add them.");
    assert_eq!(r.calls, vec![call("add_numbers", r#"{"a": 3, "b": 4}"#)]);
}

#[test]
fn nested_arguments_unicode_and_escaped_quotes() {
    let raw = r#"{"to": ["ana@example.com"], "subject": "Réservation \"confirmée\" ✅", "body": {"lines": ["Bonjour,", "À bientôt\u0021"], "sig": null}, "urgent": true}"#;
    let r = ok(K, &format!("[TOOL_CALLS]send_email[ARGS]{raw}"));
    assert_eq!(r.calls, vec![call("send_email", raw)]);
    let r = ok(
        K,
        &format!("[TOOL_CALLS][{{\"name\": \"send_email\", \"arguments\": {raw}}}]"),
    );
    assert_eq!(r.calls, vec![call("send_email", raw)]);
}

#[test]
fn text_after_calls_is_content() {
    let r = ok(K, "Checking.[TOOL_CALLS]ping[ARGS]{} Done, see above.");
    assert_eq!(r.content, "Checking. Done, see above.");
    assert_eq!(r.calls, vec![call("ping", "{}")]);
}

#[test]
fn malformed_json() {
    let streamed = malformed(
        K,
        "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": 'Paris'}}]",
    );
    assert_eq!(streamed.calls.len(), 1);
    // Broken before any call started: everything streams back as content.
    for text in [
        "[TOOL_CALLS] sure thing",
        "[TOOL_CALLS][]",
        "A [TOOL_CALLS][{\"x\": 1}]",
    ] {
        let streamed = malformed(K, text);
        assert_eq!(streamed.content, text);
        assert!(streamed.calls.is_empty());
    }
}

#[test]
fn unclosed_call_is_malformed() {
    let streamed = malformed(K, "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Par");
    assert_eq!(streamed.calls.len(), 1);
    let streamed = malformed(K, "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}");
    assert_eq!(streamed.calls, vec![call("a", "{}")]);
    let streamed = malformed(K, "Hi [TOOL_CALLS]get_wea");
    assert_eq!(streamed.content, "Hi [TOOL_CALLS]get_wea");
}

#[test]
fn start_comes_at_args_tag_before_arguments() {
    let mut p = ToolStreamParser::new(K);
    assert_eq!(p.push("Ok [TOOL_"), vec![ToolDelta::Content("Ok".into())]);
    assert_eq!(p.push("CALLS]get_weather[AR"), vec![]);
    assert_eq!(
        p.push("GS]"),
        vec![ToolDelta::Start {
            index: 0,
            name: "get_weather".into()
        }]
    );
    assert_eq!(
        p.push("{\"city\": \"Pa"),
        vec![ToolDelta::Arguments {
            index: 0,
            text: "{\"city\":\"Pa".into()
        }]
    );
    assert_eq!(
        p.push("ris\"}"),
        vec![ToolDelta::Arguments {
            index: 0,
            text: "ris\"}".into()
        }]
    );
    assert!(p.finish().is_empty());
}
