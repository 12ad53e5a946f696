//! The wire format of successful answers, from scripted engine events: exact bodies and
//! SSE chunk sequences, the streamed and collected paths agreeing, and what reaches the
//! engine.

use super::fake::{delta, finished, FakeEngine};
use super::*;
use lantern_engine::{
    EngineSnapshot, FinishReason, LoraId, RequestEvent, StepStats, StopReason, TokenLogprob,
};

fn tok(e: &FakeEngine, id: u32) -> String {
    use lantern_server::Generate;
    e.tokenizer().decode(&[id], false).unwrap()
}

/// Masked compact JSON of every `data:` payload but `[DONE]`, which must end the stream.
fn chunks(r: &Resp) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    let mut data = sse_data(&r.body);
    assert_eq!(data.pop().as_deref(), Some("[DONE]"), "{:?}", r.body);
    data.iter()
        .map(|d| masked(serde_json::from_str(d).unwrap()).to_string())
        .collect()
}

const USAGE_4_2_1: &str = r#""usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6,"prompt_tokens_details":{"cached_tokens":1}}"#;
const TIMING: &str = r#""lantern_timing":{"queue_s":0,"prefill_s":0,"decode_s":0}"#;

#[tokio::test]
async fn completion_body_is_exact() {
    let engine = FakeEngine::new();
    engine.then(Ok(vec![
        delta(0, 9, " ok", None),
        finished(0, FinishReason::Length, None, "!", (4, 2, 1)),
    ]));
    let s = app(engine.clone());
    let v = post_ok(
        &s,
        "/v1/completions",
        &completion_body(json!([1, 2, 3, 4]), 2),
    )
    .await;
    assert_eq!(
        masked(v).to_string(),
        format!(
            r#"{{"id":"cmpl-X","object":"text_completion","created":0,"model":"tiny","choices":[{{"index":0,"text":" ok!","logprobs":null,"finish_reason":"length","stop_reason":null}}],{USAGE_4_2_1},{TIMING}}}"#
        )
    );
    let (prompt, params) = &engine.submitted()[0];
    assert_eq!(prompt, &[1, 2, 3, 4]);
    assert_eq!(params.max_tokens, Some(2));
}

#[tokio::test]
async fn chat_body_is_exact() {
    let engine = FakeEngine::new();
    engine.then(Ok(vec![
        delta(0, 9, " ok", Some(vec![(9, -0.25), (10, -1.5)])),
        finished(
            0,
            FinishReason::Stop,
            Some(StopReason::StopString("\n".into())),
            "",
            (4, 2, 1),
        ),
    ]));
    let s = app(engine.clone());
    let mut body = chat_body("Hello", 8);
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(2);
    body["max_completion_tokens"] = json!(5);
    let v = post_ok(&s, "/v1/chat/completions", &body).await;
    let (t9, t10) = (tok(&engine, 9), tok(&engine, 10));
    let entry = |t: &str, l: f64| json!({"token": t, "logprob": l, "bytes": t.as_bytes()});
    let mut first = entry(&t9, -0.25);
    first["top_logprobs"] = json!([entry(&t9, -0.25), entry(&t10, -1.5)]);
    let want = json!({
        "id": "chatcmpl-X", "object": "chat.completion", "created": 0, "model": "tiny",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": " ok", "refusal": null, "tool_calls": []},
            "logprobs": {"content": [first]},
            "finish_reason": "stop",
            "stop_reason": "\n",
        }],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6,
                  "prompt_tokens_details": {"cached_tokens": 1}},
        "lantern_timing": {"queue_s": 0, "prefill_s": 0, "decode_s": 0},
    });
    assert_eq!(masked(v).to_string(), want.to_string());
    // What reached the engine: the templated prompt, max_completion_tokens over max_tokens.
    let (prompt, params) = &engine.submitted()[0];
    let text = engine_text(&engine, prompt);
    assert_eq!(
        text,
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(params.max_tokens, Some(5));
    assert_eq!(params.logprobs, Some(2));
}

#[tokio::test]
async fn chat_prompts_join_text_parts_and_continue_the_final_message() {
    let engine = FakeEngine::new();
    let s = app(engine.clone());
    let mut body = chat_body("x", 2);
    body["messages"] = json!([{"role": "user", "content": [
        {"type": "text", "text": "first"}, {"type": "text", "text": "second"}]}]);
    post_ok(&s, "/v1/chat/completions", &body).await;
    let text = engine_text(&engine, &engine.submitted()[0].0);
    assert!(text.contains("first\nsecond"), "{text:?}");
    // continue_final_message: no end-of-turn after the assistant's text, no new turn.
    body["messages"] = json!([
        {"role": "user", "content": "Tell a story"},
        {"role": "assistant", "content": "Once upon a"}
    ]);
    body["continue_final_message"] = json!(true);
    post_ok(&s, "/v1/chat/completions", &body).await;
    let text = engine_text(&engine, &engine.submitted()[1].0);
    assert!(
        text.ends_with("<|im_start|>assistant\nOnce upon a"),
        "{text:?}"
    );
    body["add_generation_prompt"] = json!(true);
    assert_error(
        &post(&s, "/v1/chat/completions", &body).await,
        400,
        Some("continue_final_message"),
    );
    body["add_generation_prompt"] = json!(false);
    body["messages"] = json!([{"role": "user", "content": "Hi"}]);
    assert_error(
        &post(&s, "/v1/chat/completions", &body).await,
        400,
        Some("continue_final_message"),
    );
}

fn engine_text(e: &FakeEngine, ids: &[u32]) -> String {
    use lantern_server::Generate;
    e.tokenizer().decode(ids, false).unwrap()
}

#[tokio::test]
async fn chat_stream_chunks_are_exact() {
    let engine = FakeEngine::new();
    engine.then(Ok(vec![
        delta(0, 9, " ok", None),
        // No text and no logprobs: no chunk.
        delta(0, 10, "", None),
        finished(
            0,
            FinishReason::Stop,
            Some(StopReason::StopToken(7)),
            "!",
            (4, 2, 1),
        ),
    ]));
    let s = app(engine);
    let mut body = chat_body("Hello", 8);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let got = chunks(&post(&s, "/v1/chat/completions", &body).await);
    let head = r#"{"id":"chatcmpl-X","object":"chat.completion.chunk","created":0,"model":"tiny""#;
    let want = [
        format!(
            r#"{head},"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#
        ),
        format!(
            r#"{head},"choices":[{{"index":0,"delta":{{"content":" ok"}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#
        ),
        format!(
            r#"{head},"choices":[{{"index":0,"delta":{{"content":"!"}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#
        ),
        format!(
            r#"{head},"choices":[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"stop","stop_reason":7}}],"usage":null}}"#
        ),
        format!(r#"{head},"choices":[],{USAGE_4_2_1},{TIMING}}}"#),
    ];
    assert_eq!(got, want);
}

#[tokio::test]
async fn completion_stream_without_include_usage_has_no_usage_key() {
    let engine = FakeEngine::new();
    engine.then(Ok(vec![
        delta(0, 9, " ok", None),
        finished(0, FinishReason::Length, None, "", (4, 1, 0)),
    ]));
    let s = app(engine);
    let mut body = completion_body(json!("Hi"), 1);
    body["stream"] = json!(true);
    body["echo"] = json!(true);
    let got = chunks(&post(&s, "/v1/completions", &body).await);
    let head = r#"{"id":"cmpl-X","object":"text_completion","created":0,"model":"tiny""#;
    let want = [
        // `echo` without logprobs: the prompt text first.
        format!(
            r#"{head},"choices":[{{"index":0,"text":"Hi","logprobs":null,"finish_reason":null}}]}}"#
        ),
        format!(
            r#"{head},"choices":[{{"index":0,"text":" ok","logprobs":null,"finish_reason":null}}]}}"#
        ),
        format!(
            r#"{head},"choices":[{{"index":0,"text":"","logprobs":null,"finish_reason":"length","stop_reason":null}}]}}"#
        ),
    ];
    assert_eq!(got, want);
}

/// Two prompts x n=2 with `echo` and `logprobs`: the chunks of each choice, concatenated,
/// equal the collected response (text, and logprobs with character offsets).
#[tokio::test]
async fn streamed_and_collected_completions_agree() {
    let engine = FakeEngine::new();
    let prompt_lps = |ids: &[u32]| {
        RequestEvent::PromptLogprobs(
            ids.iter()
                .enumerate()
                .map(|(j, &id)| {
                    (j > 0).then(|| TokenLogprob {
                        token_id: id,
                        logprob: -1.0 - j as f32,
                        top: vec![(id, -1.0 - j as f32), (11, -4.0)],
                    })
                })
                .collect(),
        )
    };
    let script = |ids: &[u32]| {
        vec![
            prompt_lps(ids),
            delta(0, 9, " ok", Some(vec![(9, -0.25), (12, -2.0)])),
            delta(1, 10, "", Some(vec![(10, -0.5)])),
            delta(0, 13, "", Some(vec![(13, -0.75)])),
            delta(1, 14, " yes", Some(vec![(14, -0.125)])),
            finished(0, FinishReason::Length, None, "", (ids.len(), 2, 0)),
            finished(
                1,
                FinishReason::Stop,
                Some(StopReason::StopToken(2)),
                "!",
                (ids.len(), 2, 0),
            ),
        ]
    };
    let p0 = vec![5u32, 6, 7];
    let p1 = vec![8u32, 9];
    // Prompts are submitted in order; collected first, then streamed.
    for _ in 0..2 {
        engine.then(Ok(script(&p0))).then(Ok(script(&p1)));
    }
    let s = app(engine);
    let mut body = completion_body(json!([p0, p1]), 2);
    body["n"] = json!(2);
    body["echo"] = json!(true);
    body["logprobs"] = json!(2);
    let collected = post_ok(&s, "/v1/completions", &body).await;
    let choices = collected["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    // Prompt tokens once per prompt, completion tokens of every choice.
    assert_eq!(collected["usage"]["prompt_tokens"], 5);
    assert_eq!(collected["usage"]["completion_tokens"], 8);

    body["stream"] = json!(true);
    let r = post(&s, "/v1/completions", &body).await;
    let mut texts = vec![String::new(); 4];
    let mut lps =
        vec![json!({"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}); 4];
    let mut finish = vec![Value::Null; 4];
    let mut stop = vec![Value::Null; 4];
    for d in chunks(&r) {
        let v: Value = serde_json::from_str(&d).unwrap();
        let c = &v["choices"][0];
        let i = c["index"].as_u64().unwrap() as usize;
        texts[i].push_str(c["text"].as_str().unwrap());
        if !c["logprobs"].is_null() {
            for k in ["tokens", "token_logprobs", "top_logprobs", "text_offset"] {
                let add = c["logprobs"][k].as_array().unwrap().clone();
                lps[i][k].as_array_mut().unwrap().extend(add);
            }
        }
        if !c["finish_reason"].is_null() {
            finish[i] = c["finish_reason"].clone();
            stop[i] = c["stop_reason"].clone();
        }
    }
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["text"], texts[i], "choice {i}");
        assert_eq!(c["logprobs"], lps[i], "choice {i}");
        assert_eq!(c["finish_reason"], finish[i], "choice {i}");
        assert_eq!(c["stop_reason"], stop[i], "choice {i}");
    }
    // The echoed prompt's first token has no logprob.
    assert!(choices[2]["logprobs"]["token_logprobs"][0].is_null());
    assert_eq!(choices[1]["stop_reason"], 2);
    assert_eq!(choices[3]["finish_reason"], "stop");
}

#[tokio::test]
async fn chat_n_streams_every_choice() {
    let s = app(FakeEngine::new());
    let mut body = chat_body("Hi", 1);
    body["n"] = json!(3);
    body["stream"] = json!(true);
    let got = chunks(&post(&s, "/v1/chat/completions", &body).await);
    // Role chunk, content chunk and finish chunk for each of the three choices.
    assert_eq!(got.len(), 9, "{got:?}");
    for i in 0..3 {
        let of_i: Vec<&String> = got
            .iter()
            .filter(|c| c.contains(&format!(r#""index":{i},"#)))
            .collect();
        assert_eq!(of_i.len(), 3, "{got:?}");
        assert!(of_i[0].contains(r#""role":"assistant""#));
        assert!(of_i[2].contains(r#""finish_reason":"length""#));
    }
}

#[tokio::test]
async fn models_and_lora_admin() {
    let engine = FakeEngine::new();
    let s = app(engine.clone());
    let r = get(&s, "/v1/models").await;
    assert_eq!(r.status, 200);
    let created = s.created;
    assert_eq!(
        r.body,
        format!(
            r#"{{"object":"list","data":[{{"id":"tiny","object":"model","created":{created},"owned_by":"lantern","root":"/models/tiny","parent":null,"max_model_len":512}}]}}"#
        )
    );
    let load = |name: &str, path: &str| json!({"lora_name": name, "lora_path": path});
    let r = post(&s, "/v1/load_lora_adapter", &load("ada", "owner/adapter-a")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "Success: LoRA adapter 'ada' added successfully.");
    let r = post(&s, "/v1/load_lora_adapter", &load("ada", "owner/adapter-a")).await;
    let msg = assert_error(&r, 400, Some("lora_name"));
    assert_eq!(msg, "The lora adapter 'ada' has already been loaded.");
    let r = post(&s, "/v1/load_lora_adapter", &load(NAME, "owner/adapter-a")).await;
    assert_error(&r, 400, Some("lora_name"));
    let r = post(&s, "/v1/load_lora_adapter", &json!({"lora_name": "y"})).await;
    let msg = assert_error(&r, 400, None);
    assert_eq!(msg, "Both 'lora_name' and 'lora_path' must be provided.");
    let r = get(&s, "/v1/models").await.json();
    assert_eq!(r["data"][1]["id"], "ada");
    assert_eq!(r["data"][1]["parent"], NAME);
    assert_eq!(r["data"][1]["root"], "owner/adapter-a");
    assert_eq!(r["data"][1]["created"], 1_700_000_000);
    // The adapter's name selects it.
    let mut body = completion_body(json!("Hi"), 2);
    body["model"] = json!("ada");
    post_ok(&s, "/v1/completions", &body).await;
    assert_eq!(engine.submitted()[0].1.lora_id, Some(LoraId(1)));
    let r = post(&s, "/v1/unload_lora_adapter", &json!({"lora_name": "ada"})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "Success: LoRA adapter 'ada' removed successfully.");
    let r = post(&s, "/v1/unload_lora_adapter", &json!({"lora_name": "ada"})).await;
    let msg = assert_error(&r, 404, Some("lora_name"));
    assert_eq!(msg, "The lora adapter 'ada' cannot be found.");
    let r = post(&s, "/v1/unload_lora_adapter", &json!({})).await;
    assert_error(&r, 400, Some("lora_name"));
    let r = post(&s, "/v1/completions", &body).await;
    let msg = assert_error(&r, 404, Some("model"));
    assert_eq!(msg, "The model `ada` does not exist.");
}

#[tokio::test]
async fn tokenize_and_detokenize() {
    let engine = FakeEngine::new();
    let s = app(engine.clone());
    let r = post(&s, "/tokenize", &json!({"prompt": "Hello world"})).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    let ids: Vec<u32> = serde_json::from_value(v["tokens"].clone()).unwrap();
    assert_eq!(
        r.body,
        format!(
            r#"{{"count":{},"max_model_len":512,"tokens":{}}}"#,
            ids.len(),
            v["tokens"]
        )
    );
    let r = post(
        &s,
        "/tokenize",
        &json!({"prompt": "Hello world", "return_token_strs": true, "model": NAME}),
    )
    .await;
    let v = r.json();
    assert_eq!(
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["count", "max_model_len", "tokens", "token_strs"]
    );
    assert_eq!(v["token_strs"].as_array().unwrap().len(), ids.len());
    let r = post(&s, "/detokenize", &json!({"tokens": ids})).await;
    assert_eq!(r.body, r#"{"prompt":"Hello world"}"#);
    // Chat messages through the template (generation prompt on by default).
    let r = post(
        &s,
        "/tokenize",
        &json!({"messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    let ids: Vec<u32> = serde_json::from_value(r.json()["tokens"].clone()).unwrap();
    assert_eq!(
        engine_text(&engine, &ids),
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[tokio::test]
async fn health_version_and_metrics() {
    let engine = FakeEngine::new();
    engine.set_snapshot(EngineSnapshot {
        last_step: StepStats {
            num_running: 3,
            num_waiting: 2,
            kv_blocks_used: 10,
            ..Default::default()
        },
        kv_blocks_total: 40,
        generation_tokens_total: 77,
        finished_abort: 5,
        ..Default::default()
    });
    let s = app(engine);
    let r = get(&s, "/health").await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, r#"{"status":"ok"}"#)
    );
    let r = get(&s, "/version").await;
    assert_eq!(
        r.body,
        format!(r#"{{"version":"{}"}}"#, env!("CARGO_PKG_VERSION"))
    );
    post_ok(&s, "/v1/completions", &completion_body(json!("Hi"), 1)).await;
    let r = get(&s, "/metrics").await;
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    for line in [
        "# HELP lantern_requests_total HTTP requests by endpoint and status code.",
        "# TYPE lantern_requests_total counter",
        r#"lantern_requests_total{model_name="tiny",endpoint="/v1/completions",status="200"} 1"#,
        r#"lantern_num_requests_running{model_name="tiny"} 3"#,
        r#"lantern_num_requests_waiting{model_name="tiny"} 2"#,
        r#"lantern_kv_cache_usage_perc{model_name="tiny"} 0.25"#,
        r#"lantern_generation_tokens_total{model_name="tiny"} 77"#,
        r#"lantern_request_finished_total{model_name="tiny",finished_reason="abort"} 5"#,
        r#"lantern_time_to_first_token_seconds_bucket{model_name="tiny",le="0.005"} 1"#,
        r#"lantern_time_to_first_token_seconds_count{model_name="tiny"} 1"#,
    ] {
        assert!(
            r.body.lines().any(|l| l == line),
            "{line} not in\n{}",
            r.body
        );
    }
    assert!(!r.body.contains("# EOF"));
}
