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
