//! `llama3_json` on Llama 3.1–3.3 style outputs.
#![allow(clippy::unwrap_used)]

mod common;

use common::{call, malformed, ok};
use lantern_parsers::tool::{ToolDelta, ToolParserKind, ToolStreamParser};

const K: ToolParserKind = ToolParserKind::Llama3Json;

#[test]
fn no_call_is_content_verbatim() {
    for text in [
        "I'm sorry, I can't check live weather, but Paris is usually mild in May.",
        "  \n Leading whitespace kept.",
        "<|python_tag|>import math\nprint(math.pi)",
        "",
        "   ",
    ] {
        let r = ok(K, text);
        assert_eq!(r.content, text);
        assert!(r.calls.is_empty());
    }
}

#[test]
fn single_call_llama31() {
    // Llama-3.1-8B-Instruct with the JSON tool-calling system prompt.
    let text = "{\"name\": \"get_current_conditions\", \"parameters\": {\"location\": \"San \
                Francisco, CA\", \"unit\": \"Fahrenheit\"}}";
    let r = ok(K, text);
    assert_eq!(r.content, "");
    assert_eq!(
        r.calls,
        vec![call(
            "get_current_conditions",
            r#"{"location": "San Francisco, CA", "unit": "Fahrenheit"}"#
        )]
    );
}

#[test]
fn python_tag_prefix_and_arguments_key() {
    let text = "<|python_tag|>{\"name\": \"searchTool\", \"arguments\": {\"query\": \"test\"}}";
    let r = ok(K, text);
    assert_eq!(r.content, "");
    assert_eq!(r.calls, vec![call("searchTool", r#"{"query": "test"}"#)]);
    let r = ok(K, "\n<|python_tag|> {\"name\": \"t\", \"parameters\": {}}");
    assert_eq!(r.calls, vec![call("t", "{}")]);
}

#[test]
fn parallel_calls_separated_by_semicolons() {
    let text = "{\"name\": \"searchTool\", \"parameters\": {\"query\": \"test1\"}}; \
                {\"name\": \"getOpenIncidentsTool\", \"parameters\": {}} ; \
                {\"name\": \"searchTool\", \"parameters\": {\"query\": \"test2\", \"limit\": 10}}";
    let r = ok(K, text);
    assert_eq!(r.content, "");
    assert_eq!(
        r.calls,
        vec![
            call("searchTool", r#"{"query": "test1"}"#),
            call("getOpenIncidentsTool", "{}"),
            call("searchTool", r#"{"query": "test2", "limit": 10}"#),
        ]
    );
}

#[test]
fn whitespace_separated_calls_and_trailing_semicolon() {
    let text = "{\"name\": \"a\", \"parameters\": {}}\n{\"name\": \"b\", \"parameters\": {}};\n";
    let r = ok(K, text);
    assert_eq!(r.calls, vec![call("a", "{}"), call("b", "{}")]);
    assert_eq!(r.content, "");
}

#[test]
fn text_after_calls_is_content() {
    let text = "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}\n\nI have \
                requested the weather.";
    let r = ok(K, text);
    assert_eq!(r.content, "I have requested the weather.");
    assert_eq!(r.calls.len(), 1);
    let r = ok(K, "{\"name\": \"a\", \"parameters\": {}}; done");
    assert_eq!(r.content, "; done");
}

#[test]
fn nested_arguments_unicode_and_escaped_quotes() {
    let raw_args = r#"{"filters": {"city": "Zürich", "tags": ["café", "naïve \"quoted\""], "range": {"min": -3.5, "max": 12}}, "note": "tab\there\u2014dash 🚀", "exact": true}"#;
    let text = format!("{{\"name\": \"find_places\", \"parameters\": {raw_args}}}");
    let r = ok(K, &text);
    assert_eq!(r.calls, vec![call("find_places", raw_args)]);
    assert!(r.calls[0]
        .arguments
        .contains(r#""note":"tab\there—dash 🚀""#));
}

#[test]
fn json_that_is_not_a_call_is_content() {
    for text in [
        "{\"answer\": 42}",
        "{\"name\": \"Bob\", \"age\": 31}",
        "{not json at all}",
    ] {
        let streamed = malformed(K, text);
        assert_eq!(
            streamed.content, text,
            "nothing started, so all of it streams as content"
        );
        assert!(streamed.calls.is_empty());
    }
}

#[test]
fn malformed_arguments_after_start() {
    let streamed = malformed(
        K,
        "{\"name\": \"invalidTool\", \"parameters\": {invalid json}",
    );
    assert_eq!(streamed.calls.len(), 1);
    assert_eq!(streamed.calls[0].name, "invalidTool");
    assert_eq!(streamed.content, "");
}

#[test]
fn both_parameters_and_arguments_is_malformed() {
    let streamed = malformed(
        K,
        "{\"name\": \"f\", \"parameters\": {}, \"arguments\": {}}",
    );
    assert_eq!(streamed.calls.len(), 1);
}

#[test]
fn unclosed_call_is_malformed() {
    let streamed = malformed(K, "{\"name\": \"f\", \"parameters\": {\"x\": 1}");
    assert_eq!(streamed.calls[0].arguments, r#"{"x":1}"#);
    // A second call cut off before it started: the first stays, the fragment is content.
    let streamed = malformed(K, "{\"name\": \"a\", \"parameters\": {}}; {\"na");
    assert_eq!(streamed.calls, vec![call("a", "{}")]);
}

#[test]
fn streams_arguments_incrementally() {
    let mut p = ToolStreamParser::new(K);
    assert!(
        p.push("{\"name\": \"f\", \"parameters\": {\"city\": \"Par")
            .len()
            == 2
    );
    assert_eq!(
        p.push("is\"}}"),
        vec![ToolDelta::Arguments {
            index: 0,
            text: "is\"}".into()
        }]
    );
    assert!(p.finish().is_empty());
}
