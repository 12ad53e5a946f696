//! `hermes` on Qwen2.5 / Qwen3 / Hermes 2 Pro style outputs.
#![allow(clippy::unwrap_used)]

mod common;

use common::{call, malformed, ok};
use lantern_parsers::tool::{ToolDelta, ToolParserKind, ToolStreamParser};

const K: ToolParserKind = ToolParserKind::Hermes;

#[test]
fn no_call_is_content_verbatim() {
    let text = "The capital of France is Paris.\n\nIt has been the capital since 987 AD. ";
    let r = ok(K, text);
    assert_eq!(r.content, text);
    assert!(r.calls.is_empty());
}

#[test]
fn single_call_qwen25() {
    let text = "<tool_call>\n{\"name\": \"get_current_temperature\", \"arguments\": \
                {\"location\": \"San Francisco, CA, USA\", \"unit\": \"celsius\"}}\n</tool_call>";
    let r = ok(K, text);
    assert_eq!(r.content, "");
    assert_eq!(r.calls.len(), 1);
    assert_eq!(r.calls[0].name, "get_current_temperature");
    assert_eq!(
        r.calls[0].arguments,
        r#"{"location":"San Francisco, CA, USA","unit":"celsius"}"#
    );
}

#[test]
fn content_before_call() {
    let text = "I'll check the current weather in Paris for you.\n<tool_call>\n{\"name\": \
                \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 3}}\n</tool_call>";
    let r = ok(K, text);
    assert_eq!(
        r.content,
        "I'll check the current weather in Paris for you."
    );
    assert_eq!(
        r.calls,
        vec![call("get_weather", r#"{"city": "Paris", "days": 3}"#)]
    );
}

#[test]
fn parallel_calls_qwen25() {
    // Qwen2.5-7B-Instruct answering "temperature now and tomorrow in San Francisco".
    let text = "<tool_call>\n{\"name\": \"get_current_temperature\", \"arguments\": {\"location\": \
                \"San Francisco, CA, USA\"}}\n</tool_call>\n<tool_call>\n{\"name\": \
                \"get_temperature_date\", \"arguments\": {\"location\": \"San Francisco, CA, USA\", \
                \"date\": \"2024-10-01\"}}\n</tool_call>";
    let r = ok(K, text);
    assert_eq!(r.content, "");
    assert_eq!(
        r.calls,
        vec![
            call(
                "get_current_temperature",
                r#"{"location": "San Francisco, CA, USA"}"#
            ),
            call(
                "get_temperature_date",
                r#"{"location": "San Francisco, CA, USA", "date": "2024-10-01"}"#
            ),
        ]
    );
}

#[test]
fn qwen3_text_between_and_after_calls() {
    let text = "Let me look both up.\n\n<tool_call>\n{\"name\": \"search\", \"arguments\": \
                {\"q\": \"rust\"}}\n</tool_call>\nAnd the second one:\n<tool_call>\n{\"name\": \
                \"search\", \"arguments\": {\"q\": \"go\"}}\n</tool_call>\n";
    let r = ok(K, text);
    assert_eq!(r.content, "Let me look both up.\n\n\nAnd the second one:");
    assert_eq!(r.calls.len(), 2);
    assert_eq!(r.calls[1].arguments, r#"{"q":"go"}"#);
}

#[test]
fn nested_arguments_unicode_and_escaped_quotes() {
    let raw_args = r#"{"title": "Réunion \"Q3\" — équipe", "attendees": [{"name": "Zoë", "email": "zoe@example.com"}, {"name": "李雷"}], "notes": "Line1\nLine2 \u00e9 \ud83d\ude00 😀 \/ \\ \t", "priority": 2, "all_day": false, "budget": 1.50, "ratio": 1e3, "meta": null, "tags": []}"#;
    let text = format!(
        "<tool_call>\n{{\"name\": \"create_event\", \"arguments\": {raw_args}}}\n</tool_call>"
    );
    let r = ok(K, &text);
    assert_eq!(r.calls, vec![call("create_event", raw_args)]);
    let args = &r.calls[0].arguments;
    assert!(args.starts_with(r#"{"title":"Réunion \"Q3\" — équipe","attendees":[{"name":"Zoë""#));
    assert!(
        args.contains(r#""notes":"Line1\nLine2 é 😀 😀 / \\ \t""#),
        "{args}"
    );
    assert!(
        args.contains(r#""budget":1.5,"ratio":1000.0,"meta":null,"tags":[]}"#),
        "{args}"
    );
}

#[test]
fn arguments_before_name_and_extra_keys() {
    let text = "<tool_call>\n{\"arguments\": {\"a\": [1, {\"b\": \"c\"}]}, \"id\": 7, \
                \"name\": \"f\"}\n</tool_call>";
    let r = ok(K, text);
    assert_eq!(r.calls, vec![call("f", r#"{"a": [1, {"b": "c"}]}"#)]);
}

#[test]
fn unclosed_final_call_with_complete_json() {
    // Qwen3 stopped (EOS or max_tokens) before `</tool_call>`.
    let text = "Checking.\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n";
    let r = ok(K, text);
    assert_eq!(r.content, "Checking.");
    assert_eq!(r.calls, vec![call("get_time", "{}")]);
    // Cut inside the closing tag.
    let r = ok(
        K,
        "<tool_call>{\"name\": \"get_time\", \"arguments\": {}}</tool_",
    );
    assert_eq!(r.calls, vec![call("get_time", "{}")]);
}

#[test]
fn unclosed_call_with_incomplete_json_is_malformed() {
    let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Par";
    let streamed = malformed(K, text);
    // The call had started before the output ran out: it stays sent, nothing leaks.
    assert_eq!(streamed.content, "");
    assert_eq!(streamed.calls.len(), 1);
    assert_eq!(streamed.calls[0].name, "get_weather");
}

#[test]
fn malformed_json_after_start() {
    let text = "Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \
                \"Paris\"}\n</tool_call>";
    let streamed = malformed(K, text);
    assert_eq!(streamed.content, "Sure.");
    assert_eq!(streamed.calls.len(), 1);
    assert_eq!(streamed.calls[0].arguments, r#"{"city":"Paris"}"#);
}

#[test]
fn malformed_before_start_streams_text_back_as_content() {
    for text in [
        "<tool_call>\n{\"name\": get_weather, \"arguments\": {}}\n</tool_call>",
        "You can wrap calls in <tool_call> tags.",
        "<tool_call>\n{\"name\": \"f\"}\n</tool_call>",
        "<tool_call>\n{\"name\": \"f\", \"arguments\": \"{}\"}\n</tool_call>",
        "<tool_call>\n{\"name\": \"\", \"arguments\": {}}\n</tool_call>",
        "Trailing marker <tool_call>",
    ] {
        let streamed = malformed(K, text);
        assert_eq!(streamed.content, text);
        assert!(streamed.calls.is_empty());
    }
}

#[test]
fn repeated_keys_are_malformed() {
    malformed(
        K,
        "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1, \"a\": 2}}</tool_call>",
    );
    malformed(
        K,
        "<tool_call>{\"name\": \"f\", \"name\": \"g\", \"arguments\": {}}</tool_call>",
    );
}

#[test]
fn junk_between_object_and_close_is_malformed() {
    let streamed = malformed(
        K,
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}}\n</tool_call>\nafter",
    );
    assert_eq!(streamed.calls.len(), 1);
    assert_eq!(
        streamed.content, "",
        "the rest after a started malformed call is dropped"
    );
}

#[test]
fn holds_back_partial_marker_and_never_leaks_markup() {
    let mut p = ToolStreamParser::new(K);
    assert_eq!(
        p.push("Hello <tool"),
        vec![ToolDelta::Content("Hello".into())]
    );
    assert_eq!(p.push("_call>\n{\"na"), vec![]);
    assert_eq!(p.push("me\": \"f\", \"argu"), vec![]);
    assert!(!p.called());
    assert_eq!(
        p.push("ments\": {\"x\""),
        vec![
            ToolDelta::Start {
                index: 0,
                name: "f".into()
            },
            ToolDelta::Arguments {
                index: 0,
                text: "{\"x\":".into()
            },
        ]
    );
    assert!(p.called());
    assert_eq!(
        p.push(": 1}}\n</tool_"),
        vec![ToolDelta::Arguments {
            index: 0,
            text: "1}".into()
        }]
    );
    assert_eq!(p.push("call>"), vec![]);
    assert_eq!(p.finish(), vec![]);
    assert!(!p.malformed());
}

#[test]
fn text_that_only_looks_like_a_marker_prefix_is_released_at_finish() {
    let mut p = ToolStreamParser::new(K);
    assert_eq!(p.push("a <tool_c"), vec![ToolDelta::Content("a".into())]);
    assert_eq!(p.finish(), vec![ToolDelta::Content(" <tool_c".into())]);
    common::ok(K, "x < y and <tool_ca");
}
