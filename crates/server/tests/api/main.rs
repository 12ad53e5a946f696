//! In-process tests of the HTTP layer: the real router over a scripted engine
//! ([`FakeEngine`], no model), driven with `tower::ServiceExt::oneshot`. Validation,
//! errors, auth, limits and the exact wire format of responses and SSE chunks live here;
//! `tests/server` at the repository root keeps what needs the real binary and model.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod errors;
mod fake;
mod hardening;
mod responses;
mod tools;
mod vllm;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use fake::FakeEngine;
use http_body_util::BodyExt;
use lantern_server::chat_template::ChatTemplate;
use lantern_server::{router, AppState, Ready, ServerConfig};
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

/// The served model name.
const NAME: &str = "tiny";

/// A ChatML template like the tiny fixture's.
const TEMPLATE: &str = "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/// A loaded server over `engine` with `config`.
fn app_with(engine: FakeEngine, config: ServerConfig) -> Arc<AppState<FakeEngine>> {
    let state = Arc::new(AppState::new(config));
    let template = ChatTemplate::new(TEMPLATE, None, Some("<|im_end|>".into())).unwrap();
    state
        .ready
        .set(Ready {
            engine,
            template: Some(template),
            served_names: vec![NAME.to_string()],
            root: "/models/tiny".to_string(),
            sampling_defaults: Default::default(),
            prompt_byte_cap: Default::default(),
        })
        .unwrap();
    state
}

fn app(engine: FakeEngine) -> Arc<AppState<FakeEngine>> {
    app_with(engine, ServerConfig::default())
}

#[derive(Debug)]
struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status, self.body
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request through a fresh router over `state`.
async fn send<G: lantern_server::Generate>(
    state: &Arc<AppState<G>>,
    method: Method,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Resp {
    let mut req = Request::builder().method(method).uri(path);
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(match body {
            Some(b) => Body::from(b.to_string()),
            None => Body::empty(),
        })
        .unwrap();
    let resp = router(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn get<G: lantern_server::Generate>(state: &Arc<AppState<G>>, path: &str) -> Resp {
    send(state, Method::GET, path, None, &[]).await
}

async fn post_raw<G: lantern_server::Generate>(
    state: &Arc<AppState<G>>,
    path: &str,
    body: &str,
) -> Resp {
    send(state, Method::POST, path, Some(body), &[]).await
}

async fn post<G: lantern_server::Generate>(
    state: &Arc<AppState<G>>,
    path: &str,
    body: &Value,
) -> Resp {
    post_raw(state, path, &body.to_string()).await
}

/// POSTs and expects 200 with a JSON body.
async fn post_ok<G: lantern_server::Generate>(
    state: &Arc<AppState<G>>,
    path: &str,
    body: &Value,
) -> Value {
    let r = post(state, path, body).await;
    assert_eq!(r.status, 200, "POST {path} {body}: {}", r.body);
    r.json()
}

/// The `data:` payloads of an SSE body, in order.
fn sse_data(body: &str) -> Vec<String> {
    let mut p = lantern_bench::SseParser::new();
    let mut events = p.feed(body.as_bytes());
    events.extend(p.finish());
    events
        .into_iter()
        .map(|e| match e {
            lantern_bench::SseEvent::Data { data, .. } => data,
            lantern_bench::SseEvent::Done => "[DONE]".to_string(),
        })
        .collect()
}

/// Checks the OpenAI error shape, status, `type` and `param`; returns the message.
fn assert_error(r: &Resp, status: u16, param: Option<&str>) -> String {
    assert_eq!(r.status.as_u16(), status, "body: {}", r.body);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/json"),
        "error content-type {:?}",
        r.header("content-type")
    );
    let v = r.json();
    let e = &v["error"];
    let obj = e
        .as_object()
        .unwrap_or_else(|| panic!("no error object: {v}"));
    assert_eq!(
        obj.keys().collect::<Vec<_>>(),
        ["message", "type", "param", "code"],
        "{v}"
    );
    let msg = e["message"].as_str().expect("message is a string");
    assert!(!msg.is_empty());
    assert_eq!(e["code"], json!(status), "{v}");
    match param {
        Some(p) => assert_eq!(e["param"], json!(p), "{v}"),
        None => assert!(e["param"].is_null(), "{v}"),
    }
    let want_ty = match status {
        400 | 405 | 413 => "invalid_request_error",
        401 => "authentication_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 => "service_unavailable",
        _ => "server_error",
    };
    assert_eq!(e["type"], want_ty, "{v}");
    msg.to_string()
}

fn completion_body(prompt: Value, max_tokens: usize) -> Value {
    json!({"model": NAME, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
}

fn chat_body(content: &str, max_tokens: usize) -> Value {
    json!({
        "model": NAME,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

/// `body` with the random id and the clock replaced, for exact comparisons.
fn masked(mut v: Value) -> Value {
    if let Some(id) = v.get("id").and_then(Value::as_str) {
        let (prefix, hex) = id.rsplit_once('-').expect("an id with a prefix");
        assert_eq!(hex.len(), 32, "{id}");
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        v["id"] = json!(format!("{prefix}-X"));
    }
    if v.get("created").is_some() {
        assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
        v["created"] = json!(0);
    }
    if let Some(t) = v.get_mut("lantern_timing") {
        for k in ["queue_s", "prefill_s", "decode_s"] {
            assert!(t[k].as_f64().unwrap() >= 0.0, "{t}");
            t[k] = json!(0);
        }
    }
    v
}
