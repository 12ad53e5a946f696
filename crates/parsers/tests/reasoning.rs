//! `qwen3` and `deepseek_r1` reasoning splitting.
#![allow(clippy::unwrap_used)]

mod common;

use common::check_split;
use lantern_parsers::reasoning::{
    ReasoningDelta, ReasoningParserKind, ReasoningStreamParser, Split,
};

const QWEN3: ReasoningParserKind = ReasoningParserKind::Qwen3;
const R1: ReasoningParserKind = ReasoningParserKind::DeepSeekR1;

fn s(reasoning: Option<&str>, content: Option<&str>) -> Split {
    Split {
        reasoning: reasoning.map(str::to_owned),
        content: content.map(str::to_owned),
    }
}

#[test]
fn qwen3_think_block_in_output() {
    let text = "<think>\nOkay, the user asks for 2+2. That's 4.\n</think>\n\nThe answer is **4**.";
    assert_eq!(
        check_split(QWEN3, text, false),
        s(
            Some("\nOkay, the user asks for 2+2. That's 4.\n"),
            Some("\n\nThe answer is **4**.")
        )
    );
}

#[test]
fn qwen3_without_think_is_content() {
    let text = "Hello! How can I help you today?";
    assert_eq!(check_split(QWEN3, text, false), s(None, Some(text)));
    // A stray close tag without an opened block is plain text too.
    let text = "Use </think> to close.";
    assert_eq!(check_split(QWEN3, text, false), s(None, Some(text)));
}

#[test]
fn qwen3_prompt_opened() {
    // Qwen3-Thinking-2507 / Qwen3.5 templates end the prompt with `<think>\n`.
    let text = "The user greets me; reply politely.\n</think>\n\nHello! How can I help?";
    assert_eq!(
        check_split(QWEN3, text, true),
        s(
            Some("The user greets me; reply politely.\n"),
            Some("\n\nHello! How can I help?")
        )
    );
    assert_eq!(
        check_split(QWEN3, "Still thinking about", true),
        s(Some("Still thinking about"), None)
    );
}

#[test]
fn qwen3_truncated_and_empty_blocks() {
    assert_eq!(
        check_split(QWEN3, "<think>This is a reasoning section", false),
        s(Some("This is a reasoning section"), None)
    );
    assert_eq!(
        check_split(QWEN3, "<think>\n\n</think>\n\nHi", false),
        s(Some("\n\n"), Some("\n\nHi"))
    );
    assert_eq!(
        check_split(QWEN3, "<think></think>Hi", false),
        s(None, Some("Hi"))
    );
    assert_eq!(
        check_split(QWEN3, "<think>abc</think>", false),
        s(Some("abc"), None)
    );
    assert_eq!(check_split(QWEN3, "", false), s(None, None));
}

#[test]
fn qwen3_text_before_think_and_markers_after() {
    assert_eq!(
        check_split(
            QWEN3,
            "Sure. <think>plan</think>Answer with <think> and </think> tags.",
            false
        ),
        s(
            Some("plan"),
            Some("Sure. Answer with <think> and </think> tags.")
        )
    );
}

#[test]
fn deepseek_r1_everything_before_close_is_reasoning() {
    let text = "Okay, so I need to compute 17*23. 17*20=340, 17*3=51, total 391.\n</think>\n\n\
                17 × 23 = **391**.";
    assert_eq!(
        check_split(R1, text, false),
        s(
            Some("Okay, so I need to compute 17*23. 17*20=340, 17*3=51, total 391.\n"),
            Some("\n\n17 × 23 = **391**.")
        )
    );
    assert_eq!(check_split(R1, text, true), check_split(R1, text, false));
}

#[test]
fn deepseek_r1_leading_think_stripped_and_no_close_is_all_reasoning() {
    assert_eq!(
        check_split(R1, "<think>\nHmm, 中文推理 😀\n</think>答案", false),
        s(Some("\nHmm, 中文推理 😀\n"), Some("答案"))
    );
    assert_eq!(
        check_split(R1, "Still thinking <thin", false),
        s(Some("Still thinking <thin"), None)
    );
    assert_eq!(check_split(R1, "</think>", false), s(None, None));
}

#[test]
fn streaming_holds_back_partial_markers() {
    let mut p = ReasoningStreamParser::new(QWEN3, false);
    assert_eq!(
        p.push("Hi <thi"),
        vec![ReasoningDelta::Content("Hi ".into())]
    );
    assert!(!p.in_reasoning());
    assert_eq!(
        p.push("nk>plan </th"),
        vec![ReasoningDelta::Reasoning("plan ".into())]
    );
    assert!(p.in_reasoning());
    assert_eq!(
        p.push("ink>\n\nDone"),
        vec![ReasoningDelta::Content("\n\nDone".into())]
    );
    assert!(!p.in_reasoning());
    assert_eq!(p.finish(), vec![]);

    let mut p = ReasoningStreamParser::new(R1, false);
    assert!(p.in_reasoning());
    assert_eq!(
        p.push("abc</"),
        vec![ReasoningDelta::Reasoning("abc".into())]
    );
    assert_eq!(p.finish(), vec![ReasoningDelta::Reasoning("</".into())]);
}

#[test]
fn names_parse_and_markers() {
    for kind in ReasoningParserKind::ALL {
        assert_eq!(kind.name().parse::<ReasoningParserKind>().unwrap(), kind);
        assert_eq!(
            (kind.start_marker(), kind.end_marker()),
            ("<think>", "</think>")
        );
    }
    let err = "deepseek"
        .parse::<ReasoningParserKind>()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("deepseek") && err.contains("qwen3, deepseek_r1"),
        "{err}"
    );
}
