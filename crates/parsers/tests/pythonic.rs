//! `pythonic` on Llama 3.2 / Llama 4 style outputs (cases after vLLM's own parser tests).
#![allow(clippy::unwrap_used)]

mod common;

use common::{call, malformed, ok};
use lantern_parsers::tool::{ToolDelta, ToolParserKind, ToolStreamParser};

const K: ToolParserKind = ToolParserKind::Pythonic;

const SIMPLE: &str = "get_weather(city='San Francisco', metric='celsius')";
const MORE_TYPES: &str = "register_user(name='John Doe', age=37, address={'city': 'San \
                          Francisco', 'state': 'CA'}, role=None, passed_test=True, \
                          aliases=['John', 'Johnny'])";

#[test]
fn no_call_is_content_verbatim() {
    for text in [
        "How can I help you today?",
        "[1, 2, 3] are the first primes after 0.",
        "[Note] see below.",
        "[see(below)] for details",
        "[link](https://example.com)",
    ] {
        let (extracted, streamed, _) = common::check_tool(K, text);
        assert_eq!(extracted.content, text);
        assert_eq!(streamed.content, text);
        assert!(extracted.calls.is_empty() && streamed.calls.is_empty());
    }
}

#[test]
fn simple_call() {
    let r = ok(K, &format!("[{SIMPLE}]"));
    assert_eq!(r.content, "");
    assert_eq!(
        r.calls,
        vec![call(
            "get_weather",
            r#"{"city":"San Francisco","metric":"celsius"}"#
        )]
    );
}

#[test]
fn more_types() {
    let r = ok(K, &format!("[{MORE_TYPES}]"));
    assert_eq!(
        r.calls,
        vec![call(
            "register_user",
            r#"{"name": "John Doe", "age": 37, "address": {"city": "San Francisco", "state": "CA"}, "role": null, "passed_test": true, "aliases": ["John", "Johnny"]}"#
        )]
    );
}

#[test]
fn parameterless_empty_dict_empty_list() {
    let r = ok(
        K,
        "[get_weather(), do_something_cool(additional_data={}), do_it(steps=[])]",
    );
    assert_eq!(
        r.calls,
        vec![
            call("get_weather", "{}"),
            call("do_something_cool", r#"{"additional_data": {}}"#),
            call("do_it", r#"{"steps": []}"#),
        ]
    );
}

#[test]
fn escaped_strings() {
    let r = ok(
        K,
        r#"[get_weather(city='Martha\'s Vineyard', metric='\"cool units\"')]"#,
    );
    assert_eq!(
        r.calls,
        vec![call(
            "get_weather",
            r#"{"city": "Martha's Vineyard", "metric": "\"cool units\""}"#
        )]
    );
    let r = ok(
        K,
        r#"[f(s="tab\tnl\nhex\x41 uni\u00e9 big\U0001F600 oct\101 keep\d q\"")]"#,
    );
    assert_eq!(
        r.calls,
        vec![call(
            "f",
            r#"{"s": "tab\tnl\nhexA unié big😀 octA keep\\d q\""}"#
        )]
    );
}

#[test]
fn parallel_calls() {
    let r = ok(K, &format!("[{SIMPLE}, {MORE_TYPES}]"));
    assert_eq!(r.calls.len(), 2);
    assert_eq!(r.calls[0].name, "get_weather");
    assert_eq!(r.calls[1].name, "register_user");
}

#[test]
fn llama4_wrapper_and_layout() {
    let text = "<|python_start|>[get_weather(city='Boston', days=3),\n get_time(tz = 'EST',)]\
                <|python_end|>";
    let r = ok(K, text);
    assert_eq!(r.content, "");
    assert_eq!(
        r.calls,
        vec![
            call("get_weather", r#"{"city": "Boston", "days": 3}"#),
            call("get_time", r#"{"tz": "EST"}"#)
        ]
    );
}

#[test]
fn nested_arguments_unicode_numbers() {
    let text = "[plan_trip(dest='São Paulo 🇧🇷', legs=[{'from': 'Zürich', 'hops': [1, 2,]}, \
                {'note': \"it's \\\"fine\\\"\"}], budget=-1_250.5, ratio=.5, big=1e3, whole=3., \
                opts={'a': None, 'b': [True, False]},)]";
    let r = ok(K, text);
    assert_eq!(
        r.calls,
        vec![call(
            "plan_trip",
            r#"{"dest": "São Paulo 🇧🇷", "legs": [{"from": "Zürich", "hops": [1, 2]}, {"note": "it's \"fine\""}], "budget": -1250.5, "ratio": 0.5, "big": 1000.0, "whole": 3.0, "opts": {"a": null, "b": [true, false]}}"#
        )]
    );
}

#[test]
fn text_after_the_list_is_content() {
    let r = ok(K, "[get_time()]\nI'll fetch the time.");
    assert_eq!(r.content, "I'll fetch the time.");
    assert_eq!(r.calls, vec![call("get_time", "{}")]);
}

#[test]
fn malformed_calls() {
    // Started, then broken.
    for text in [
        "[get_weather(city='Paris')",
        "[get_weather(city='Paris', city='Lyon')]",
        "[get_weather(city=Paris)]",
        "[get_weather(city='Paris'), 3]",
        "[f(x={1: 'a'})]",
        "[f(s='unterminated\n')]",
    ] {
        let streamed = malformed(K, text);
        assert_eq!(streamed.calls.len(), 1, "{text}");
        assert_eq!(streamed.content, "", "{text}");
    }
    // Broken before any call started: streams back as content.
    for text in ["[get_weather('Paris')]", "[get_weather(city", "[", "[]"] {
        let streamed = malformed(K, text);
        assert_eq!(streamed.content, text);
    }
}

#[test]
fn start_waits_for_first_keyword() {
    let mut p = ToolStreamParser::new(K);
    assert_eq!(p.push("[get_weather("), vec![]);
    assert_eq!(p.push("city"), vec![]);
    assert_eq!(
        p.push("='Par"),
        vec![
            ToolDelta::Start {
                index: 0,
                name: "get_weather".into()
            },
            ToolDelta::Arguments {
                index: 0,
                text: "{\"city\":\"Par".into()
            },
        ]
    );
    assert_eq!(
        p.push("is', n=4"),
        vec![ToolDelta::Arguments {
            index: 0,
            text: "is\",\"n\":".into()
        }]
    );
    assert_eq!(
        p.push(")]"),
        vec![ToolDelta::Arguments {
            index: 0,
            text: "4}".into()
        }]
    );
    assert!(p.finish().is_empty());
}
