//! vLLM drop-in surface of the HTTP layer: `/ping`, the render endpoints, and request
//! defaults from the model's generation config.

use super::fake::FakeEngine;
use super::*;
use lantern_server::defaults::SamplingDefaults;

#[tokio::test]
async fn ping_answers_get_and_post_like_health() {
    let s = app(FakeEngine::new());
    assert_eq!(get(&s, "/ping").await.status, 200);
    assert_eq!(post_raw(&s, "/ping", "").await.status, 200);
}

#[tokio::test]
async fn chat_render_returns_the_tokens_a_chat_request_submits() {
    let e = FakeEngine::new();
    let s = app(e.clone());
    let mut body = chat_body("Hello there", 7);
    body["response_format"] = json!({"type": "json_object"});
    body["seed"] = json!(3);
    let r = post_ok(&s, "/v1/chat/completions/render", &body).await;
    // Nothing was generated.
    assert!(e.submitted().is_empty());
    post_ok(&s, "/v1/chat/completions", &body).await;
    let (ids, _) = &e.submitted()[0];
    let want: Vec<u64> = ids.iter().map(|&i| u64::from(i)).collect();
    assert_eq!(r["token_ids"], json!(want));
    assert!(r["request_id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(r["model"], NAME);
    let sp = &r["sampling_params"];
    assert_eq!(sp["max_tokens"], 7);
    assert_eq!(sp["temperature"], 0.0);
    assert_eq!(sp["seed"], 3);
    assert_eq!(sp["n"], 1);
    assert_eq!(sp["structured_outputs"], json!({"json_object": true}));
    assert!(sp["logit_bias"].is_null());
    // Without max_tokens: what the context leaves.
    let mut body = chat_body("Hello there", 7);
    body.as_object_mut().unwrap().remove("max_tokens");
    let r = post_ok(&s, "/v1/chat/completions/render", &body).await;
    let n = r["token_ids"].as_array().unwrap().len();
    assert_eq!(
        r["sampling_params"]["max_tokens"],
        json!(fake::MAX_MODEL_LEN - n)
    );
    // Bad input is the same 400 as on the generation endpoint.
    let mut bad = chat_body("x", 4);
    bad["top_p"] = json!(7);
    let r = post(&s, "/v1/chat/completions/render", &bad).await;
    assert_error(&r, 400, Some("top_p"));
}

#[tokio::test]
async fn completions_render_gives_one_request_per_prompt() {
    let s = app(FakeEngine::new());
    let body = completion_body(json!([[9, 8], [5, 6, 7]]), 4);
    let r = post_ok(&s, "/v1/completions/render", &body).await;
    let v = r.as_array().unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[1]["token_ids"], json!([5, 6, 7]));
    let id0 = v[0]["request_id"].as_str().unwrap();
    assert!(id0.starts_with("cmpl-") && id0.ends_with("-0"), "{id0}");
    assert_eq!(v[0]["sampling_params"]["max_tokens"], 4);
}

#[tokio::test]
async fn generation_config_fills_only_unset_fields() {
    let e = FakeEngine::new();
    let s = Arc::new(AppState::new(ServerConfig::default()));
    s.ready
        .set(Ready {
            engine: e.clone(),
            template: Some(ChatTemplate::new(TEMPLATE, None, None).unwrap()),
            served_names: vec![NAME.to_string()],
            root: "/m".into(),
            sampling_defaults: SamplingDefaults {
                temperature: Some(0.7),
                top_k: Some(20),
                top_p: Some(0.8),
                repetition_penalty: Some(1.05),
                max_tokens: Some(9),
                ..Default::default()
            },
            prompt_byte_cap: Default::default(),
        })
        .unwrap();
    let mut body = chat_body("Hi", 4);
    let o = body.as_object_mut().unwrap();
    o.remove("temperature");
    o.remove("max_tokens");
    post_ok(&s, "/v1/chat/completions", &body).await;
    let mut body = chat_body("Hi", 4);
    body["top_k"] = json!(-1);
    post_ok(&s, "/v1/chat/completions", &body).await;
    let sub = e.submitted();
    let p = &sub[0].1;
    assert_eq!(p.sampling.temperature, 0.7);
    assert_eq!(p.sampling.top_k, 20);
    assert_eq!(p.sampling.top_p, 0.8);
    assert_eq!(p.sampling.repetition_penalty, 1.05);
    assert_eq!(p.max_tokens, Some(9));
    // The request's own values win (temperature 0, max_tokens 4, top_k -1 = off).
    let p = &sub[1].1;
    assert_eq!(p.sampling.temperature, 0.0);
    assert_eq!(p.max_tokens, Some(4));
    assert_eq!(p.sampling.top_k, 0);
    assert_eq!(p.sampling.top_p, 0.8);
}
