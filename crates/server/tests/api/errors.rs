//! Validation and error answers: every one is `{"error": {...}}` with the right status,
//! `type` and `param`, and none reaches the engine.

use super::fake::FakeEngine;
use super::*;
use lantern_engine::{EngineError, RequestEvent, SubmitError};

#[tokio::test]
async fn error_malformed_json() {
    let s = app(FakeEngine::new());
    for path in ["/v1/completions", "/v1/chat/completions"] {
        let r = post_raw(&s, path, r#"{"model": "tiny", "prompt": "#).await;
        assert_error(&r, 400, None);
        let r = post_raw(&s, path, "not json at all").await;
        assert_error(&r, 400, None);
    }
}

#[tokio::test]
async fn error_wrong_type_names_the_field() {
    let s = app(FakeEngine::new());
    let r = post_raw(
        &s,
        "/v1/completions",
        r#"{"model": "tiny", "prompt": "x", "temperature": "hot"}"#,
    )
    .await;
    let msg = assert_error(&r, 400, Some("temperature"));
    assert!(msg.contains("temperature"), "{msg}");
    let r = post_raw(
        &s,
        "/v1/chat/completions",
        r#"{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}"#,
    )
    .await;
    assert_error(&r, 400, Some("temperature"));
    let r = post_raw(
        &s,
        "/v1/completions",
        r#"{"model": "tiny", "prompt": "x", "max_tokens": "ten"}"#,
    )
    .await;
    assert_error(&r, 400, Some("max_tokens"));
    let r = post_raw(
        &s,
        "/v1/chat/completions",
        r#"{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stop": 7}"#,
    )
    .await;
    assert_error(&r, 400, Some("stop"));
    let r = post_raw(&s, "/v1/completions", r#"{"model": "tiny"}"#).await;
    let msg = assert_error(&r, 400, Some("prompt"));
    assert!(msg.contains("prompt"), "{msg}");
}

#[tokio::test]
async fn error_out_of_range() {
    let engine = FakeEngine::new();
    let s = app(engine.clone());
    let mut body = completion_body(json!("x"), 4);
    body["top_p"] = json!(2);
    let msg = assert_error(
        &post(&s, "/v1/completions", &body).await,
        400,
        Some("top_p"),
    );
    assert!(
        msg.contains("top_p") && msg.contains("<= 1") && msg.contains('2'),
        "{msg}"
    );
    let mut body = chat_body("x", 4);
    body["temperature"] = json!(3.5);
    let msg = assert_error(
        &post(&s, "/v1/chat/completions", &body).await,
        400,
        Some("temperature"),
    );
    assert!(
        msg.contains("between 0 and 2") && msg.contains("3.5"),
        "{msg}"
    );
    let mut body = completion_body(json!("x"), 4);
    body["n"] = json!(0);
    assert_error(&post(&s, "/v1/completions", &body).await, 400, Some("n"));
    let body = completion_body(json!([100000]), 4);
    let msg = assert_error(
        &post(&s, "/v1/completions", &body).await,
        400,
        Some("prompt"),
    );
    assert!(msg.contains("100000") && msg.contains("512"), "{msg}");
    assert!(
        engine.submitted().is_empty(),
        "a refused request was submitted"
    );
}

#[tokio::test]
async fn error_unknown_model() {
    let s = app(FakeEngine::new());
    let mut body = completion_body(json!("x"), 4);
    body["model"] = json!("no-such-model");
    let msg = assert_error(
        &post(&s, "/v1/completions", &body).await,
        404,
        Some("model"),
    );
    assert!(msg.contains("no-such-model"), "{msg}");
    let mut body = chat_body("x", 4);
    body["model"] = json!("gpt-4o");
    assert_error(
        &post(&s, "/v1/chat/completions", &body).await,
        404,
        Some("model"),
    );
    let r = post(&s, "/tokenize", &json!({"model": "nope", "prompt": "x"})).await;
    assert_error(&r, 404, Some("model"));
}

#[tokio::test]
async fn error_images_in_chat() {
    let s = app(FakeEngine::new());
    let body = json!({
        "model": NAME,
        "max_tokens": 4,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ]}],
    });
    let msg = assert_error(
        &post(&s, "/v1/chat/completions", &body).await,
        400,
        Some("messages"),
    );
    assert!(msg.contains("image_url"), "{msg}");
    // Text parts alone are fine.
    let body = json!({
        "model": NAME,
        "max_tokens": 2,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    });
    post_ok(&s, "/v1/chat/completions", &body).await;
}

#[tokio::test]
async fn structured_output_fields_map_to_one_constraint() {
    use lantern_engine::StructuredOutput as S;
    let engine = FakeEngine::new();
    let s = app(engine.clone());
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let cases: Vec<(Value, Option<(S, &str)>)> = vec![
        (json!({"response_format": {"type": "text"}}), None),
        (
            json!({"response_format": {"type": "json_object"}}),
            Some((S::JsonObject, "response_format")),
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}),
            Some((S::JsonSchema(schema.clone()), "response_format")),
        ),
        (
            json!({"structured_outputs": {"choice": ["a", "b"]}}),
            Some((
                S::Choice(vec!["a".into(), "b".into()]),
                "structured_outputs",
            )),
        ),
        (
            json!({"structured_outputs": {"json": schema.to_string()}}),
            Some((S::JsonSchema(schema.clone()), "structured_outputs")),
        ),
        (
            json!({"guided_regex": "[0-9]+", "guided_decoding_backend": "guidance"}),
            Some((S::Regex("[0-9]+".into()), "guided_regex")),
        ),
        (
            json!({"guided_grammar": "start: \"x\""}),
            Some((S::Lark("start: \"x\"".into()), "guided_grammar")),
        ),
        // structured_outputs wins; the older guided_* fields are then ignored (vLLM).
        (
            json!({"structured_outputs": {"regex": "a+"}, "guided_json": schema}),
            Some((S::Regex("a+".into()), "structured_outputs")),
        ),
    ];
    for (i, (extra, want)) in cases.into_iter().enumerate() {
        for path in ["/v1/chat/completions", "/v1/completions"] {
            let mut body = if path.contains("chat") {
                chat_body("Hello", 2)
            } else {
                completion_body(json!("Hello"), 2)
            };
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            post_ok(&s, path, &body).await;
            let got = engine.submitted().last().unwrap().1.structured.clone();
            let got = got.map(|r| (r.spec, r.field));
            assert_eq!(got, want.clone(), "case {i} on {path}");
        }
    }
}

#[tokio::test]
async fn bad_structured_output_requests_name_the_field() {
    let s = app(FakeEngine::new());
    let cases = [
        (
            json!({"response_format": {"type": "structural_tag"}}),
            "response_format",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
            "response_format",
        ),
        (
            json!({"structured_outputs": {"json": 3}}),
            "structured_outputs",
        ),
        (
            json!({"structured_outputs": {"choice": []}}),
            "structured_outputs",
        ),
        (
            json!({"structured_outputs": {"whitespace_pattern": " "}}),
            "structured_outputs",
        ),
        (json!({"structured_outputs": "x"}), "structured_outputs"),
        (
            json!({"guided_whitespace_pattern": " *"}),
            "guided_whitespace_pattern",
        ),
        (
            json!({"guided_decoding_backend": "xgrammar"}),
            "guided_decoding_backend",
        ),
        (json!({"guided_choice": []}), "guided_choice"),
        (
            json!({"structured_outputs": {"regex": "a"}, "response_format": {"type": "json_object"}}),
            "structured_outputs",
        ),
        (
            json!({"guided_regex": "a", "guided_choice": ["b"]}),
            "guided_regex",
        ),
    ];
    for (extra, field) in cases {
        let mut body = chat_body("Hello", 4);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let msg = assert_error(
            &post(&s, "/v1/chat/completions", &body).await,
            400,
            Some(field),
        );
        assert!(msg.contains(field), "{extra}: {msg}");
    }
}

#[tokio::test]
async fn unsupported_fields_name_themselves() {
    let s = app(FakeEngine::new());
    let mut body = chat_body("Hello", 4);
    body["top_logprobs"] = json!(2);
    assert_error(
        &post(&s, "/v1/chat/completions", &body).await,
        400,
        Some("top_logprobs"),
    );
    let mut body = chat_body("Hello", 4);
    body["tool_choice"] = json!("required");
    assert_error(
        &post(&s, "/v1/chat/completions", &body).await,
        400,
        Some("tool_choice"),
    );
    let mut body = completion_body(json!("x"), 4);
    body["suffix"] = json!("y");
    assert_error(
        &post(&s, "/v1/completions", &body).await,
        400,
        Some("suffix"),
    );
    for prompt in [json!([]), json!([[]])] {
        let body = completion_body(prompt, 4);
        assert_error(
            &post(&s, "/v1/completions", &body).await,
            400,
            Some("prompt"),
        );
    }
    let r = post(&s, "/detokenize", &json!({"tokens": [512]})).await;
    let msg = assert_error(&r, 400, Some("tokens"));
    assert!(msg.contains("512"), "{msg}");
}

#[tokio::test]
async fn unknown_route_is_404() {
    let s = app(FakeEngine::new());
    assert_error(&get(&s, "/nope").await, 404, None);
    assert_error(&post_raw(&s, "/v1/embeddingz", "{}").await, 404, None);
}

#[tokio::test]
async fn api_key_is_required_on_v1() {
    let s = app_with(
        FakeEngine::new(),
        ServerConfig {
            api_key: Some("sekrit-KEY".into()),
            ..Default::default()
        },
    );
    let with = |auth: &'static str| [("authorization", auth)];
    assert_error(&get(&s, "/v1/models").await, 401, None);
    for wrong in ["Bearer wrong", "sekrit-KEY", "Bearer sekrit-KEY-and-more"] {
        let r = send(&s, Method::GET, "/v1/models", None, &with(wrong)).await;
        assert_error(&r, 401, None);
    }
    let r = send(
        &s,
        Method::GET,
        "/v1/models",
        None,
        &with("Bearer sekrit-KEY"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"][0]["id"], NAME);
    // POST endpoints too.
    let body = completion_body(json!("Hi"), 2).to_string();
    let r = post_raw(&s, "/v1/completions", &body).await;
    assert_error(&r, 401, None);
    let r = send(
        &s,
        Method::POST,
        "/v1/completions",
        Some(&body),
        &with("Bearer sekrit-KEY"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Operational endpoints stay open.
    assert_eq!(get(&s, "/health").await.status, 200);
    assert_eq!(get(&s, "/metrics").await.status, 200);
    assert_eq!(get(&s, "/version").await.status, 200);
    // Refusals are counted under the path that was asked for.
    let m = get(&s, "/metrics").await.body;
    assert!(
        m.contains(
            r#"lantern_requests_total{model_name="tiny",endpoint="/v1/models",status="401"} 4"#
        ),
        "{m}"
    );
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let s = app_with(
        FakeEngine::new(),
        ServerConfig {
            max_body_bytes: 1000,
            ..Default::default()
        },
    );
    let big = json!({"model": NAME, "prompt": "x".repeat(2000), "max_tokens": 2}).to_string();
    for path in ["/v1/completions", "/v1/chat/completions"] {
        let r = post_raw(&s, path, &big).await;
        let msg = assert_error(&r, 413, None);
        assert_eq!(msg, "request body too large");
    }
    // Small bodies still work.
    post_ok(&s, "/v1/completions", &completion_body(json!("Hi"), 2)).await;
}

#[tokio::test]
async fn queue_full_is_429_with_retry_after() {
    let engine = FakeEngine::new();
    engine.then(Err(SubmitError::Overloaded(
        "the waiting queue is full".into(),
    )));
    let s = app(engine);
    let r = post(&s, "/v1/completions", &completion_body(json!("Hi"), 2)).await;
    let msg = assert_error(&r, 429, None);
    assert_eq!(msg, "the waiting queue is full");
    let ra: u64 = r
        .header("retry-after")
        .expect("Retry-After on 429")
        .parse()
        .expect("Retry-After in seconds");
    assert!(ra >= 1);
    // The next request is served.
    post_ok(&s, "/v1/completions", &completion_body(json!("Hi"), 2)).await;
    let m = get(&s, "/metrics").await.body;
    for status in ["429", "200"] {
        let line = format!(
            r#"lantern_requests_total{{model_name="tiny",endpoint="/v1/completions",status="{status}"}} 1"#
        );
        assert!(m.contains(&line), "{line} not in\n{m}");
    }
}

#[tokio::test]
async fn engine_refusals_map_to_statuses() {
    let engine = FakeEngine::new();
    engine
        .then(Err(SubmitError::TooLong("too long for the context".into())))
        .then(Err(SubmitError::TooLong("too long for the context".into())))
        .then(Err(SubmitError::EngineStopped))
        .then(Err(SubmitError::UnknownAdapter))
        .then(Err(SubmitError::InvalidParam {
            field: "stop_token_ids".into(),
            message: "bad id".into(),
        }));
    let s = app(engine);
    let cmpl = completion_body(json!("Hi"), 2);
    // A too-long prompt is blamed on the endpoint's prompt field.
    assert_error(
        &post(&s, "/v1/completions", &cmpl).await,
        400,
        Some("prompt"),
    );
    assert_error(
        &post(&s, "/v1/chat/completions", &chat_body("Hi", 2)).await,
        400,
        Some("messages"),
    );
    let r = post(&s, "/v1/completions", &cmpl).await;
    assert_error(&r, 503, None);
    assert_eq!(r.header("retry-after"), Some("5"));
    assert_error(
        &post(&s, "/v1/completions", &cmpl).await,
        404,
        Some("model"),
    );
    assert_error(
        &post(&s, "/v1/completions", &cmpl).await,
        400,
        Some("stop_token_ids"),
    );
}

#[tokio::test]
async fn engine_failure_is_500_or_an_error_chunk() {
    let engine = FakeEngine::new();
    let fail = || Ok(vec![RequestEvent::Error(EngineError::Execution)]);
    engine.then(fail()).then(fail());
    let s = app(engine);
    let r = post(&s, "/v1/completions", &completion_body(json!("Hi"), 2)).await;
    let msg = assert_error(&r, 500, None);
    assert_eq!(msg, "the server failed to process this request");
    // Streaming: the status is already 200; the error is a chunk, then [DONE] (no usage).
    let mut body = chat_body("Hi", 2);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(&s, "/v1/chat/completions", &body).await;
    assert_eq!(r.status, 200);
    let data = sse_data(&r.body);
    assert_eq!(data.len(), 3, "{data:?}");
    assert_eq!(data[2], "[DONE]");
    assert_eq!(
        data[1],
        r#"{"error":{"message":"the server failed to process this request","type":"server_error","param":null,"code":500}}"#
    );
}

#[tokio::test]
async fn loading_and_shutting_down_are_503() {
    let s: Arc<AppState<FakeEngine>> = Arc::new(AppState::new(ServerConfig::default()));
    for path in ["/health", "/v1/models"] {
        let r = get(&s, path).await;
        let msg = assert_error(&r, 503, None);
        assert!(msg.contains("loading"), "{msg}");
        assert_eq!(r.header("retry-after"), Some("5"));
    }
    // Metrics answer while loading (engine gauges at zero, no model name yet).
    let r = get(&s, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r
        .body
        .contains("lantern_num_requests_running{model_name=\"\"} 0\n"));

    let s = app(FakeEngine::new());
    s.shutting_down
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let r = post(&s, "/v1/completions", &completion_body(json!("Hi"), 2)).await;
    let msg = assert_error(&r, 503, None);
    assert!(msg.contains("shutting down"), "{msg}");
    assert_error(&get(&s, "/health").await, 503, None);
}
