//! Response checks shared by the test modules: OpenAI response and stream shapes,
//! error bodies, request bodies.

use super::common::*;
use serde_json::{json, Value};

/// Token ids from completion logprobs requested with `return_tokens_as_token_ids`.
pub fn completion_token_ids(choice: &Value) -> Vec<u32> {
    choice["logprobs"]["tokens"]
        .as_array()
        .unwrap_or_else(|| panic!("no logprobs.tokens in {choice}"))
        .iter()
        .map(|t| {
            let s = t.as_str().unwrap();
            s.strip_prefix("token_id:")
                .unwrap_or_else(|| panic!("token {s:?} is not `token_id:N`"))
                .parse()
                .unwrap()
        })
        .collect()
}

pub fn assert_error(r: &Resp, status: u16, param: Option<&str>) -> String {
    assert_eq!(r.status, status, "body: {}", r.body);
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
    for k in ["message", "type", "param", "code"] {
        assert!(obj.contains_key(k), "error lacks `{k}`: {v}");
    }
    let msg = e["message"].as_str().expect("message is a string");
    assert!(!msg.is_empty());
    assert!(e["type"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(e["code"], json!(status), "{v}");
    match param {
        Some(p) => assert_eq!(e["param"], json!(p), "{v}"),
        None => assert!(e["param"].is_null(), "{v}"),
    }
    let ty = e["type"].as_str().unwrap();
    let want_ty = match status {
        400 | 413 => "invalid_request_error",
        401 => "authentication_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 => "service_unavailable",
        _ => ty,
    };
    assert_eq!(ty, want_ty, "{v}");
    msg.to_string()
}

pub fn completion_body(prompt: Value, max_tokens: usize) -> Value {
    json!({"model": NAME, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
}

pub fn chat_body(content: &str, max_tokens: usize) -> Value {
    json!({
        "model": NAME,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

/// The greedy completion text of the reference text prompt (16 tokens).
pub fn greedy_text() -> String {
    let v = post_ok(
        &shared().url("/v1/completions"),
        &completion_body(json!(text_prompt_ids()), 16),
    );
    v["choices"][0]["text"].as_str().unwrap().to_string()
}

pub fn check_completion_shape(v: &Value) {
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"), "{v}");
    assert_eq!(v["object"], "text_completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], NAME);
    let u = &v["usage"];
    let (p, c, t) = (
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
        u["total_tokens"].as_u64().unwrap(),
    );
    assert_eq!(p + c, t, "{u}");
    assert!(u["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .is_some());
    for c in v["choices"].as_array().unwrap() {
        assert!(c["text"].is_string(), "{c}");
        assert!(c.get("logprobs").is_some());
        assert!(matches!(
            c["finish_reason"].as_str(),
            Some("stop" | "length")
        ));
    }
}

pub fn check_chat_shape(v: &Value) {
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"), "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], NAME);
    let choices = v["choices"].as_array().unwrap();
    assert!(!choices.is_empty());
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], json!(i));
        assert_eq!(c["message"]["role"], "assistant");
        assert!(c["message"]["content"].is_string());
        let refusal = c["message"].get("refusal");
        assert!(
            refusal.is_some_and(Value::is_null),
            "refusal: null is required: {v}"
        );
        assert!(matches!(
            c["finish_reason"].as_str(),
            Some("stop" | "length")
        ));
    }
    let u = &v["usage"];
    assert_eq!(
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap(),
        u["total_tokens"].as_u64().unwrap()
    );
}

/// Checks the chunks of a chat stream and returns (content, finish_reason, usage chunk).
pub fn check_chat_stream(chunks: &[Value], include_usage: bool) -> (String, String, Option<Value>) {
    assert!(!chunks.is_empty());
    let id = chunks[0]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("chatcmpl-"));
    let first = &chunks[0]["choices"][0];
    assert_eq!(first["index"], 0);
    assert_eq!(
        first["delta"]["role"], "assistant",
        "first chunk {}",
        chunks[0]
    );
    let mut content = String::new();
    let mut finish = None;
    let mut usage = None;
    for (k, c) in chunks.iter().enumerate() {
        assert_eq!(c["id"], json!(id), "all chunks share the id");
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], NAME);
        assert!(c["created"].as_u64().is_some());
        let choices = c["choices"].as_array().unwrap();
        if choices.is_empty() {
            assert!(
                include_usage,
                "a chunk without choices without include_usage: {c}"
            );
            assert!(usage.is_none(), "two usage chunks");
            assert_eq!(k, chunks.len() - 1, "the usage chunk is the last one");
            usage = Some(c["usage"].clone());
            continue;
        }
        if include_usage {
            assert!(
                c["usage"].is_null(),
                "usage must be null before the end: {c}"
            );
        } else {
            assert!(c.get("usage").is_none(), "usage without include_usage: {c}");
        }
        assert_eq!(choices.len(), 1);
        let ch = &choices[0];
        assert!(finish.is_none(), "a chunk after the finish chunk: {c}");
        if let Some(t) = ch["delta"]["content"].as_str() {
            content.push_str(t);
        }
        if let Some(f) = ch["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    let finish = finish.expect("a chunk with finish_reason");
    assert_eq!(usage.is_some(), include_usage);
    (content, finish, usage)
}

/// Checks the chunks of a completions stream; returns (text per index, finish per index).
pub fn check_completion_stream(chunks: &[Value]) -> (Vec<String>, Vec<String>, Option<Value>) {
    let mut texts: Vec<String> = Vec::new();
    let mut finishes: Vec<Option<String>> = Vec::new();
    let mut usage = None;
    let id = chunks[0]["id"].as_str().unwrap().to_string();
    for c in chunks {
        assert_eq!(c["id"], json!(id));
        assert_eq!(c["object"], "text_completion");
        assert_eq!(c["model"], NAME);
        let choices = c["choices"].as_array().unwrap();
        if choices.is_empty() {
            usage = Some(c["usage"].clone());
            continue;
        }
        for ch in choices {
            let i = ch["index"].as_u64().unwrap() as usize;
            if texts.len() <= i {
                texts.resize(i + 1, String::new());
                finishes.resize(i + 1, None);
            }
            assert!(finishes[i].is_none(), "text after finish: {c}");
            texts[i].push_str(ch["text"].as_str().unwrap());
            if let Some(f) = ch["finish_reason"].as_str() {
                finishes[i] = Some(f.to_string());
            }
        }
    }
    let finishes = finishes
        .into_iter()
        .map(|f| f.expect("every choice finishes"))
        .collect();
    (texts, finishes, usage)
}
