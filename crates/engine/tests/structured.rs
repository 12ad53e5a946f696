//! Structured outputs on the tiny random-weight model: whatever the weights prefer, the
//! output must match the request's schema, regex or choices, under greedy and seeded
//! sampling, with n > 1, a length cut-off, and invalid grammars refused before queueing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use candle_core::{DType, Device};
use lantern_engine::{
    Engine, EngineConfig, EngineHandle, FinishReason, GenerationParams, RequestEvent,
    SamplingParams, StructuredOutput, StructuredRequest, SubmitError,
};
use serde_json::{json, Value};
use std::path::PathBuf;

fn engine() -> Engine {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-llama");
    let loaded = lantern_models::load_hf_dir(
        &dir,
        DType::F32,
        &Device::Cpu,
        &lantern_models::ModelOptions::default(),
    )
    .unwrap();
    Engine::start(loaded, EngineConfig::default()).unwrap()
}

fn structured(spec: StructuredOutput, sampling: SamplingParams, n: usize) -> GenerationParams {
    GenerationParams {
        sampling,
        max_tokens: Some(400),
        n,
        seed: Some(11),
        structured: Some(StructuredRequest {
            spec,
            field: "response_format",
            after: None,
        }),
        ..GenerationParams::default()
    }
}

/// (text, finish reason) of every completion.
fn run(h: &EngineHandle, prompt: &[u32], p: GenerationParams) -> Vec<(String, FinishReason)> {
    let n = p.n;
    let mut s = h
        .submit_blocking(prompt.to_vec(), h.validate(p).unwrap())
        .unwrap();
    let mut out = vec![(String::new(), FinishReason::Abort); n];
    while let Some(ev) = s.blocking_next() {
        match ev {
            RequestEvent::Delta(d) => out[d.index].0.push_str(&d.text),
            RequestEvent::Finished {
                index,
                reason,
                text,
                ..
            } => {
                out[index].0.push_str(&text);
                out[index].1 = reason;
            }
            RequestEvent::Error(e) => panic!("{e}"),
            RequestEvent::PromptLogprobs(_) => {}
        }
    }
    out
}

fn modes() -> Vec<SamplingParams> {
    vec![
        SamplingParams::greedy(),
        SamplingParams::default(),
        SamplingParams {
            temperature: 1.5,
            top_k: 20,
            top_p: 0.9,
            repetition_penalty: 1.3,
            ..SamplingParams::default()
        },
    ]
}

fn check_person(v: &Value) {
    let o = v.as_object().expect("an object");
    assert_eq!(o.len(), 3, "{v}");
    let name = o["name"].as_str().expect("name is a string");
    assert!(name.chars().count() <= 8, "{v}");
    let age = o["age"].as_i64().expect("age is an integer");
    assert!((0..=120).contains(&age), "{v}");
    let tags = o["tags"].as_array().expect("tags is an array");
    assert!(tags.len() <= 3, "{v}");
    assert!(tags.iter().all(|t| t == "a" || t == "b"), "{v}");
}

#[test]
fn json_schema_output_validates_in_every_sampling_mode() {
    let e = engine();
    let h = e.handle();
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 8},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": false
    });
    for (i, sampling) in modes().into_iter().enumerate() {
        let outs = run(
            &h,
            &[1, 2, 3, 4 + i as u32],
            structured(StructuredOutput::JsonSchema(schema.clone()), sampling, 2),
        );
        for (text, reason) in outs {
            assert_eq!(reason, FinishReason::Stop, "{text}");
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            check_person(&v);
        }
    }
    // json_object: any JSON object.
    let outs = run(
        &h,
        &[5, 6, 7],
        structured(StructuredOutput::JsonObject, SamplingParams::greedy(), 1),
    );
    for (text, reason) in outs {
        if reason == FinishReason::Stop {
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert!(v.is_object(), "{text}");
        } else {
            assert_eq!(reason, FinishReason::Length);
            assert!(text.starts_with('{'), "{text}");
        }
    }
}

#[test]
fn regex_and_choice_outputs_match() {
    let e = engine();
    let h = e.handle();
    for sampling in modes() {
        let outs = run(
            &h,
            &[9, 8, 7],
            structured(
                StructuredOutput::Regex("[a-z]{3}-[0-9]{2}".into()),
                sampling,
                3,
            ),
        );
        for (text, reason) in outs {
            assert_eq!(reason, FinishReason::Stop, "{text}");
            let b = text.as_bytes();
            assert!(
                b.len() == 6
                    && b[..3].iter().all(u8::is_ascii_lowercase)
                    && b[3] == b'-'
                    && b[4..].iter().all(u8::is_ascii_digit),
                "{text:?}"
            );
        }
        let choices = vec!["yes".to_string(), "no".into(), "maybe so".into()];
        let outs = run(
            &h,
            &[3, 1, 4, 1, 5],
            structured(StructuredOutput::Choice(choices.clone()), sampling, 3),
        );
        for (text, reason) in outs {
            assert_eq!(reason, FinishReason::Stop);
            assert!(choices.contains(&text), "{text:?}");
        }
    }
}

#[test]
fn a_length_cut_off_ends_with_length_and_a_valid_prefix() {
    let e = engine();
    let h = e.handle();
    let p = GenerationParams {
        max_tokens: Some(3),
        ..structured(
            StructuredOutput::Regex("x{20}".into()),
            SamplingParams::greedy(),
            1,
        )
    };
    let outs = run(&h, &[1, 2], p);
    assert_eq!(outs[0].1, FinishReason::Length);
    assert!(
        !outs[0].0.is_empty() && outs[0].0.chars().all(|c| c == 'x'),
        "{:?}",
        outs[0].0
    );
    // Nothing leaked: every block is free again.
    let snap = h.fresh_snapshot_blocking().unwrap();
    assert_eq!(snap.last_step.kv_blocks_used, 0);
}

#[test]
fn invalid_grammars_are_refused_with_the_field_and_reason() {
    let e = engine();
    let h = e.handle();
    let cases = [
        (
            StructuredOutput::JsonSchema(json!({"type": "string", "format": "color"})),
            "color",
        ),
        (
            StructuredOutput::JsonSchema(json!({"if": {"type": "string"}, "then": {}})),
            "if",
        ),
        (StructuredOutput::Regex("(ab".into()), "regex"),
        (StructuredOutput::Lark("start: foo".into()), "foo"),
        (StructuredOutput::Choice(vec![]), "empty"),
        // Compiles, but llguidance cannot start it (found by scripts/structured_outputs_check.py).
        (
            StructuredOutput::JsonSchema(
                json!({"type": "number", "multipleOf": 0.1, "minimum": 0.25, "maximum": 0.35}),
            ),
            "start",
        ),
    ];
    for (spec, needle) in cases {
        let p = structured(spec.clone(), SamplingParams::greedy(), 1);
        match h.submit_blocking(vec![1, 2], h.validate(p).unwrap()) {
            Err(SubmitError::Invalid(v)) => {
                assert_eq!(v.field(), "response_format", "{spec:?}");
                assert!(v.to_string().contains(needle), "{spec:?}: {v}");
            }
            Err(other) => panic!("{spec:?}: {other:?}"),
            Ok(_) => panic!("{spec:?} was accepted"),
        }
    }
    // The engine still serves.
    let outs = run(
        &h,
        &[1, 2],
        structured(
            StructuredOutput::Choice(vec!["ok".into()]),
            SamplingParams::greedy(),
            1,
        ),
    );
    assert_eq!(outs[0], ("ok".to_string(), FinishReason::Stop));
}

#[test]
fn a_constraint_after_the_reasoning_marker_leaves_the_thinking_free() {
    let e = engine();
    let h = e.handle();
    // The marker token is pushed to the top by logit_bias, so it comes first; the
    // grammar then applies (its mask overrides the bias from there on).
    let marker = 100u32;
    let mut p = structured(
        StructuredOutput::Regex("[0-9]{3}".into()),
        SamplingParams::greedy(),
        1,
    );
    p.logit_bias = vec![(marker, 100.0)];
    if let Some(r) = p.structured.as_mut() {
        r.after = Some(vec![marker]);
    }
    let mut s = h
        .submit_blocking(vec![1, 2, 3], h.validate(p).unwrap())
        .unwrap();
    let (mut ids, mut text, mut reason) = (Vec::new(), String::new(), None);
    while let Some(ev) = s.blocking_next() {
        match ev {
            RequestEvent::Delta(d) => {
                ids.extend(d.token_ids);
                text.push_str(&d.text);
            }
            RequestEvent::Finished {
                reason: r, text: t, ..
            } => {
                text.push_str(&t);
                reason = Some(r);
            }
            RequestEvent::Error(e) => panic!("{e}"),
            RequestEvent::PromptLogprobs(_) => {}
        }
    }
    assert_eq!(reason, Some(FinishReason::Stop), "{ids:?} {text:?}");
    assert_eq!(ids.first(), Some(&marker), "{ids:?}");
    assert!(!ids[1..].contains(&marker), "{ids:?}");
    let tail: String = text.chars().rev().take(3).collect();
    assert!(tail.chars().all(|c| c.is_ascii_digit()), "{text:?}");
    // Without the marker the bias is overridden from the first token.
    let mut p = structured(
        StructuredOutput::Regex("[0-9]{3}".into()),
        SamplingParams::greedy(),
        1,
    );
    p.logit_bias = vec![(marker, 100.0)];
    let outs = run(&h, &[1, 2, 3], p);
    assert_eq!(outs[0].1, FinishReason::Stop);
    assert!(
        outs[0].0.len() == 3 && outs[0].0.bytes().all(|b| b.is_ascii_digit()),
        "{:?}",
        outs[0].0
    );
}
