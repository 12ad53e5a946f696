//! Issue 14's HTTP-layer defects, each as a regression test: strict JSON, `param` on
//! missing fields, JSON bodies for every error status, the key on tokenize/detokenize,
//! and `/metrics` labels that made-up paths can neither grow nor break.

use super::fake::FakeEngine;
use super::*;

#[tokio::test]
async fn trailing_bytes_after_the_json_are_a_400() {
    let s = app(FakeEngine::new());
    let body = chat_body("Hi", 2).to_string() + " {\"x\": 1}";
    let msg = assert_error(
        &post_raw(&s, "/v1/chat/completions", &body).await,
        400,
        None,
    );
    assert!(msg.contains("after the JSON"), "{msg}");
    // Trailing whitespace is fine.
    let body = chat_body("Hi", 2).to_string() + " \n";
    assert_eq!(
        post_raw(&s, "/v1/chat/completions", &body).await.status,
        200
    );
}

#[tokio::test]
async fn missing_required_fields_name_themselves() {
    let s = app(FakeEngine::new());
    let r = post(&s, "/v1/chat/completions", &json!({"messages": []})).await;
    let msg = assert_error(&r, 400, Some("model"));
    assert!(msg.contains("`model` is required"), "{msg}");
    let r = post(&s, "/v1/completions", &json!({"model": NAME})).await;
    assert_error(&r, 400, Some("prompt"));
}

#[tokio::test]
async fn wrong_methods_get_a_json_405() {
    let s = app(FakeEngine::new());
    let r = get(&s, "/v1/chat/completions").await;
    let msg = assert_error(&r, 405, None);
    assert!(msg.contains("GET"), "{msg}");
}

#[tokio::test]
async fn the_key_covers_tokenize_but_not_health_or_metrics() {
    let s = app_with(
        FakeEngine::new(),
        ServerConfig {
            api_key: Some("k".into()),
            ..Default::default()
        },
    );
    let r = post(&s, "/tokenize", &json!({"prompt": "hi"})).await;
    assert_error(&r, 401, None);
    let r = post(&s, "/detokenize", &json!({"tokens": [1]})).await;
    assert_error(&r, 401, None);
    let with = [("authorization", "Bearer k")];
    let r = send(
        &s,
        Method::POST,
        "/tokenize",
        Some(r#"{"prompt": "hi"}"#),
        &with,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    for open in ["/health", "/ping", "/metrics", "/version"] {
        assert_eq!(get(&s, open).await.status, 200, "{open}");
    }
}

#[tokio::test]
async fn made_up_paths_share_one_metrics_label() {
    let s = app_with(
        FakeEngine::new(),
        ServerConfig {
            api_key: Some("k".into()),
            ..Default::default()
        },
    );
    for i in 0..50 {
        get(&s, &format!("/v1/made-up-{i}")).await;
    }
    get(&s, "/v1/a%22%7D").await;
    let with = [("authorization", "Bearer k")];
    send(&s, Method::GET, "/v1/nope\"}", None, &with).await;
    let m = get(&s, "/metrics").await.body;
    assert!(!m.contains("made-up"), "{m}");
    assert!(!m.contains("a\"}"), "{m}");
    let lines: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("lantern_requests_total{"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(r#"endpoint="other",status="401""#),
        "{lines:?}"
    );
}

/// Defect 4: request preparation (parsing, templating, tokenizing) runs on the blocking
/// pool. On a one-thread runtime, `/health` answers while a tokenization is stuck; before,
/// the tokenization held the only async worker until its gate gave up.
#[tokio::test(flavor = "current_thread")]
async fn health_answers_while_a_prompt_is_being_tokenized() {
    for path in ["/tokenize", "/v1/completions", "/v1/chat/completions"] {
        let e = FakeEngine::new();
        let gate = e.hold_tokenizer();
        let s = app(e);
        let body = match path {
            "/tokenize" => json!({"prompt": "a prompt to tokenize"}),
            "/v1/completions" => completion_body(json!("a prompt"), 2),
            _ => chat_body("a prompt", 2),
        };
        let st = s.clone();
        let slow = tokio::spawn(async move { post(&st, path, &body).await });
        while !gate.entered() {
            tokio::task::yield_now().await;
        }
        assert_eq!(get(&s, "/health").await.status, 200);
        assert!(
            !gate.timed_out(),
            "{path}: /health waited for the tokenization (it ran on the async worker)"
        );
        gate.open();
        let r = slow.await.unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
}

/// Defect 4: a prompt too long in bytes to fit the context is refused before it is
/// tokenized, naming the field (the fixture: 512 tokens, tokens of at most 13 bytes).
#[tokio::test]
async fn prompts_too_long_in_bytes_are_refused_before_tokenizing() {
    let e = FakeEngine::new();
    let s = app(e.clone());
    let huge = "word ".repeat(2_000); // 10,000 bytes > 512 x 13
                                      // The first request computes the cap from the vocabulary.
    assert_eq!(
        post(&s, "/tokenize", &json!({"prompt": "hi"})).await.status,
        200
    );
    // If the tokenizer were used, the held gate would make the request wait 10 s and
    // report it.
    let gate = e.hold_tokenizer();
    for (path, body, param) in [
        ("/tokenize", json!({"prompt": huge}), "prompt"),
        ("/v1/completions", completion_body(json!(huge), 2), "prompt"),
        ("/v1/chat/completions", chat_body(&huge, 2), "messages"),
    ] {
        let r = post(&s, path, &body).await;
        let msg = assert_error(&r, 400, Some(param));
        assert!(
            msg.contains("bytes") && msg.contains("512 tokens"),
            "{path}: {msg}"
        );
    }
    assert!(!gate.entered(), "the tokenizer was used");
    gate.open();
    // Just under the cap, text is tokenized and the token count decides.
    let r = post(&s, "/tokenize", &json!({"prompt": "word ".repeat(1_000)})).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Defect 9: choices the engine's events end without finishing (the engine stopped)
/// say `finish_reason: "abort"` in whole and streamed responses alike.
#[tokio::test]
async fn choices_cut_off_without_an_end_say_abort() {
    use lantern_engine::FinishReason;
    let e = FakeEngine::new();
    let s = app(e.clone());
    // Choice 0 finishes, choice 1 is cut off after a token.
    let events = || {
        vec![
            fake::delta(0, 9, " ok", None),
            fake::delta(1, 9, " ok", None),
            fake::finished(0, FinishReason::Length, None, "", (3, 1, 0)),
        ]
    };
    e.then(Ok(events()));
    let mut body = completion_body(json!("Hi"), 1);
    body["n"] = json!(2);
    let v = post_ok(&s, "/v1/completions", &body).await;
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    assert_eq!(v["choices"][1]["finish_reason"], "abort", "{v}");
    assert_eq!(v["choices"][1]["text"], " ok", "{v}");

    e.then(Ok(events()));
    let mut body = chat_body("Hi", 1);
    body["n"] = json!(2);
    body["stream"] = json!(true);
    let r = post(&s, "/v1/chat/completions", &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut finishes = std::collections::BTreeMap::new();
    for d in sse_data(&r.body) {
        if d == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(&d).unwrap();
        for c in v["choices"].as_array().unwrap() {
            if let Some(f) = c["finish_reason"].as_str() {
                finishes.insert(c["index"].as_u64().unwrap(), f.to_string());
            }
        }
    }
    assert_eq!(finishes.get(&0).map(String::as_str), Some("length"));
    assert_eq!(finishes.get(&1).map(String::as_str), Some("abort"));
}

/// Defect 7: error messages name JSON types, not Rust ones, and carry no internal ids.
#[tokio::test]
async fn errors_speak_json_not_rust() {
    let s = app(FakeEngine::new());
    let mut body = chat_body("Hi", 2);
    body["max_tokens"] = json!(-1);
    let msg = assert_error(
        &post(&s, "/v1/chat/completions", &body).await,
        400,
        Some("max_tokens"),
    );
    let mut body = chat_body("Hi", 2);
    body["stream_options"] = json!(3);
    let msg2 = assert_error(
        &post(&s, "/v1/chat/completions", &body).await,
        400,
        Some("stream_options"),
    );
    let msg3 = assert_error(
        &post(&s, "/tokenize", &json!({"prompt": 3})).await,
        400,
        None,
    );
    for m in [&msg, &msg2, &msg3] {
        for rust in [
            "u32", "u64", "usize", "i64", "f32", "struct ", "enum ", "Option<",
        ] {
            assert!(!m.contains(rust), "{m}");
        }
    }
    assert!(msg2.contains("an object"), "{msg2}");
}
