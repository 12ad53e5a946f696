//! Parser names.
#![allow(clippy::unwrap_used)]

use lantern_parsers::tool::ToolParserKind;

#[test]
fn tool_parser_names_round_trip() {
    let names: Vec<_> = ToolParserKind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(names, ["hermes", "llama3_json", "mistral", "pythonic"]);
    for kind in ToolParserKind::ALL {
        assert_eq!(kind.name().parse::<ToolParserKind>().unwrap(), kind);
        assert_eq!(kind.to_string(), kind.name());
    }
}

#[test]
fn unknown_tool_parser_lists_valid_names() {
    let err = "llama4_json".parse::<ToolParserKind>().unwrap_err();
    assert_eq!(err.name, "llama4_json");
    assert_eq!(
        err.to_string(),
        "unknown tool call parser `llama4_json` (valid: hermes, llama3_json, mistral, pythonic)"
    );
}
