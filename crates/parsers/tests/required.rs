//! `tool_choice: "required"` output: a JSON array of `{"name", "parameters"}` objects.
#![allow(clippy::unwrap_used)]

mod common;

use common::{call, check_required};
use lantern_parsers::tool::{RequiredStreamParser, ToolDelta};

#[test]
fn single_and_parallel_calls() {
    let text = r#"[{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}]"#;
    assert_eq!(
        check_required(text),
        Some(vec![call(
            "get_weather",
            r#"{"city": "Paris", "unit": "celsius"}"#
        )])
    );
    let text = "\n[\n  {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Köln\"}},\n  \
                {\"name\": \"get_time\", \"arguments\": {}}\n]\n";
    assert_eq!(
        check_required(text),
        Some(vec![
            call("get_weather", r#"{"city": "Köln"}"#),
            call("get_time", "{}")
        ])
    );
}

#[test]
fn nested_unicode_escaped_quotes() {
    let raw = r#"{"query": "\"exact phrase\" AND ñandú", "filters": [{"k": "lang", "v": ["es", "pt"]}], "limit": 5.0}"#;
    let text = format!(r#"[{{"name": "search", "parameters": {raw}}}]"#);
    assert_eq!(check_required(&text), Some(vec![call("search", raw)]));
}

#[test]
fn invalid_outputs() {
    for text in [
        "",
        "[]",
        "I will call get_weather.",
        r#"[{"name": "f", "parameters": {}}"#,
        r#"[{"name": "f", "parameters": {}}] trailing"#,
        r#"[{"name": "f", "parameters": {"a": 1, "a": 2}}]"#,
        r#"[{"name": "f"}]"#,
        r#"{"name": "f", "parameters": {}}"#,
    ] {
        assert_eq!(check_required(text), None, "{text}");
    }
}

#[test]
fn never_emits_content_and_starts_before_arguments() {
    let mut p = RequiredStreamParser::new();
    assert_eq!(p.push("[{\"name\": \"f\", \"parameters\""), vec![]);
    assert_eq!(
        p.push(": {\"x\": tr"),
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
    assert_eq!(
        p.push("ue}}]"),
        vec![ToolDelta::Arguments {
            index: 0,
            text: "true}".into()
        }]
    );
    assert!(p.finish().is_empty());
    assert!(p.called() && !p.malformed());
}
