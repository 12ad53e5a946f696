//! Tool calling and reasoning through the HTTP layer: scripted model output (real Qwen-style
//! Hermes and thinking text) in, OpenAI `tool_calls` / `reasoning_content` out, collected
//! and streamed; forced tool choices become grammar constraints on the submitted request.

use super::fake::{delta, finished, FakeEngine};
use super::*;
use lantern_engine::{FinishReason, StructuredOutput};
use lantern_parsers::reasoning::ReasoningParserKind;
use lantern_parsers::tool::ToolParserKind;
use lantern_server::tools::ToolConfig;
use lantern_server::Generate;

/// A server whose chat template is the real Qwen3 one (tools, thinking).
fn qwen3_app(e: FakeEngine, config: ServerConfig) -> Arc<AppState<FakeEngine>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/tokenizers/qwen3/tokenizer_config.json"
    );
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let template = ChatTemplate::new(
        cfg["chat_template"].as_str().unwrap(),
        None,
        Some("<|im_end|>".into()),
    )
    .unwrap();
    let state = Arc::new(AppState::new(config));
    state
        .ready
        .set(Ready {
            engine: e,
            template: Some(template),
            served_names: vec![NAME.to_string()],
            root: "/models/qwen3".to_string(),
            sampling_defaults: Default::default(),
            prompt_byte_cap: Default::default(),
        })
        .unwrap();
    state
}

fn hermes() -> ServerConfig {
    ServerConfig {
        tools: ToolConfig {
            auto: true,
            parser: Some(ToolParserKind::Hermes),
        },
        ..Default::default()
    }
}

fn qwen3_reasoning() -> ServerConfig {
    ServerConfig {
        reasoning_parser: Some(ReasoningParserKind::Qwen3),
        ..hermes()
    }
}

fn weather_tools() -> Value {
    json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
                },
                "required": ["city"]
            }
        }
    }, {
        "type": "function",
        "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}
    }])
}

fn tool_body(stream: bool) -> Value {
    let mut b = chat_body("Weather in Paris and Tokyo?", 64);
    b["tools"] = weather_tools();
    b["stream"] = json!(stream);
    b
}

/// Scripts `pieces` as the model's output (one delta each), finishing with `reason`.
fn script(e: &FakeEngine, pieces: &[&str], reason: FinishReason) {
    let mut events: Vec<_> = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| delta(0, 10 + i as u32, p, None))
        .collect();
    events.push(finished(0, reason, None, "", (5, pieces.len(), 0)));
    e.then(Ok(events));
}

/// Real Qwen2.5/Qwen3 output: some text, then two parallel Hermes calls.
const HERMES_OUT: &str = "I'll check both.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Tokyo\"}}\n</tool_call>";

/// The output cut into small pieces the way tokens arrive (markers split too).
fn pieces(s: &str, k: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(k).map(|c| c.iter().collect()).collect()
}

#[tokio::test]
async fn hermes_calls_become_tool_calls() {
    let e = FakeEngine::new();
    script(&e, &[HERMES_OUT], FinishReason::Stop);
    let s = app_with(e.clone(), hermes());
    let v = post_ok(&s, "/v1/chat/completions", &tool_body(false)).await;
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "tool_calls", "{v}");
    let m = &c["message"];
    assert_eq!(m["content"], "I'll check both.", "{v}");
    let calls = m["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{v}");
    for (call, args) in calls.iter().zip([
        json!({"city": "Paris", "unit": "celsius"}),
        json!({"city": "Tokyo"}),
    ]) {
        assert!(call["id"].as_str().unwrap().starts_with("chatcmpl-tool-"));
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        let a: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(a, args);
    }
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    // The prompt carried the tools (the template got them).
    assert_eq!(e.submitted().len(), 1);
}

#[tokio::test]
async fn hermes_calls_stream_as_tool_call_deltas() {
    let e = FakeEngine::new();
    let ps = pieces(HERMES_OUT, 3);
    script(
        &e,
        &ps.iter().map(String::as_str).collect::<Vec<_>>(),
        FinishReason::Stop,
    );
    let s = app_with(e, hermes());
    let r = post(&s, "/v1/chat/completions", &tool_body(true)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let data = sse_data(&r.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let mut content = String::new();
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finish = None;
    for d in &data[..data.len() - 1] {
        let v: Value = serde_json::from_str(d).unwrap();
        let c = &v["choices"][0];
        if let Some(f) = c["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
        let delta = &c["delta"];
        if let Some(t) = delta["content"].as_str() {
            content.push_str(t);
        }
        for tc in delta["tool_calls"].as_array().into_iter().flatten() {
            let i = tc["index"].as_u64().unwrap() as usize;
            if let Some(id) = tc["id"].as_str() {
                assert_eq!(i, calls.len(), "calls start in order: {d}");
                assert_eq!(tc["type"], "function");
                let name = tc["function"]["name"]
                    .as_str()
                    .expect("the name comes first");
                calls.push((id.to_string(), name.to_string(), String::new()));
            } else {
                assert!(tc["function"].get("name").is_none(), "{d}");
            }
            if let Some(a) = tc["function"]["arguments"].as_str() {
                calls[i].2.push_str(a);
            }
        }
    }
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    assert!(
        !content.contains('<') && !content.contains('{'),
        "markup leaked: {content:?}"
    );
    assert_eq!(content.trim(), "I'll check both.");
    assert_eq!(calls.len(), 2);
    let args: Vec<Value> = calls
        .iter()
        .map(|c| serde_json::from_str(&c.2).unwrap())
        .collect();
    assert_eq!(args[0], json!({"city": "Paris", "unit": "celsius"}));
    assert_eq!(args[1], json!({"city": "Tokyo"}));
}

#[tokio::test]
async fn plain_answers_stay_content_and_parallel_false_keeps_one_call() {
    let e = FakeEngine::new();
    script(&e, &["It is sunny."], FinishReason::Stop);
    script(&e, &[HERMES_OUT], FinishReason::Stop);
    let s = app_with(e, hermes());
    let v = post_ok(&s, "/v1/chat/completions", &tool_body(false)).await;
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["choices"][0]["message"]["content"], "It is sunny.");
    assert_eq!(v["choices"][0]["message"]["tool_calls"], json!([]));
    let mut b = tool_body(false);
    b["parallel_tool_calls"] = json!(false);
    let v = post_ok(&s, "/v1/chat/completions", &b).await;
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn auto_needs_the_server_flags_and_none_drops_the_tools() {
    let e = FakeEngine::new();
    let s = app(e.clone());
    let r = post(&s, "/v1/chat/completions", &tool_body(false)).await;
    let msg = assert_error(&r, 400, Some("tool_choice"));
    assert!(msg.contains("--enable-auto-tool-choice"), "{msg}");
    // "none": no tools in the prompt (Qwen3's template prints them in a system turn).
    let e = FakeEngine::new();
    let s = qwen3_app(e.clone(), hermes());
    post_ok(&s, "/v1/chat/completions", &tool_body(false)).await;
    let mut b = tool_body(false);
    b["tool_choice"] = json!("none");
    post_ok(&s, "/v1/chat/completions", &b).await;
    let sub = e.submitted();
    let text = |ids: &[u32]| e.tokenizer().decode(ids, false).unwrap();
    assert!(text(&sub[0].0).contains("get_weather"));
    assert!(!text(&sub[1].0).contains("get_weather"));
    // A tool result in the conversation renders as Qwen3 expects.
    let mut b = tool_body(false);
    b["messages"] = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}
        }]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"}
    ]);
    post_ok(&s, "/v1/chat/completions", &b).await;
    let t = text(&e.submitted()[2].0);
    assert!(
        t.contains("<tool_response>\n18C, sunny\n</tool_response>"),
        "{t}"
    );
    assert!(
        t.contains(r#"{"name": "get_weather", "arguments": {"city": "Paris"}}"#),
        "{t}"
    );
}

#[tokio::test]
async fn forced_choices_constrain_the_output_and_parse_it() {
    let e = FakeEngine::new();
    script(
        &e,
        &[
            r#"[{"name":"get_weather","parameters":{"city":"Paris"}},{"name":"get_time","parameters":{}}]"#,
        ],
        FinishReason::Stop,
    );
    script(
        &e,
        &[r#"{"city":"Oslo","unit":"celsius"}"#],
        FinishReason::Stop,
    );
    // Forced choices need no tool parser.
    let s = app(e.clone());
    let mut b = tool_body(false);
    b["tool_choice"] = json!("required");
    let v = post_ok(&s, "/v1/chat/completions", &b).await;
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "tool_calls", "{v}");
    assert!(c["message"]["content"].is_null(), "{v}");
    let calls = c["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls[0]["function"]["arguments"], r#"{"city":"Paris"}"#);
    assert_eq!(calls[1]["function"]["name"], "get_time");
    let (_, params) = &e.submitted()[0];
    let st = params.structured.as_ref().expect("a constraint");
    assert_eq!(st.field, "tools");
    let StructuredOutput::JsonSchema(schema) = &st.spec else {
        panic!("{st:?}")
    };
    assert_eq!(schema["type"], "array");
    assert_eq!(schema["minItems"], 1);

    let mut b = tool_body(false);
    b["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
    let v = post_ok(&s, "/v1/chat/completions", &b).await;
    let c = &v["choices"][0];
    // OpenAI reports `stop` for a forced named function.
    assert_eq!(c["finish_reason"], "stop", "{v}");
    let calls = c["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(
        calls[0]["function"]["arguments"],
        r#"{"city":"Oslo","unit":"celsius"}"#
    );
    let (_, params) = &e.submitted()[1];
    let StructuredOutput::JsonSchema(schema) = &params.structured.as_ref().unwrap().spec else {
        panic!()
    };
    assert_eq!(schema["required"], json!(["city"]));

    // A forced choice and response_format are two constraints.
    let mut b = tool_body(false);
    b["tool_choice"] = json!("required");
    b["response_format"] = json!({"type": "json_object"});
    assert_error(
        &post(&s, "/v1/chat/completions", &b).await,
        400,
        Some("tool_choice"),
    );
}

#[tokio::test]
async fn named_choice_streams_the_arguments() {
    let e = FakeEngine::new();
    script(&e, &["{\"city\":", "\"Rome\"}"], FinishReason::Stop);
    let s = app(e);
    let mut b = tool_body(true);
    b["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
    let r = post(&s, "/v1/chat/completions", &b).await;
    let mut args = String::new();
    let mut names = Vec::new();
    for d in sse_data(&r.body).iter().filter(|d| *d != "[DONE]") {
        let v: Value = serde_json::from_str(d).unwrap();
        for tc in v["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(n) = tc["function"]["name"].as_str() {
                names.push(n.to_string());
            }
            args.push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
        }
        assert!(
            v["choices"][0]["delta"]
                .get("content")
                .is_none_or(|c| c == ""),
            "{d}"
        );
    }
    assert_eq!(names, ["get_weather"]);
    assert_eq!(args, r#"{"city":"Rome"}"#);
}

const THINKING_OUT: &str =
    "<think>\nParis is in France. I know this.\n</think>\n\nThe capital of France is Paris.";

#[tokio::test]
async fn reasoning_is_split_out_collected_and_streamed() {
    let e = FakeEngine::new();
    script(&e, &[THINKING_OUT], FinishReason::Stop);
    let ps = pieces(THINKING_OUT, 2);
    script(
        &e,
        &ps.iter().map(String::as_str).collect::<Vec<_>>(),
        FinishReason::Stop,
    );
    script(&e, &[THINKING_OUT], FinishReason::Stop);
    let s = app_with(e, qwen3_reasoning());
    let b = chat_body("Capital of France?", 64);
    let v = post_ok(&s, "/v1/chat/completions", &b).await;
    let m = &v["choices"][0]["message"];
    assert_eq!(
        m["reasoning_content"], "\nParis is in France. I know this.\n",
        "{v}"
    );
    assert_eq!(m["reasoning"], m["reasoning_content"]);
    // As in vLLM, the text after `</think>` is the content as generated.
    assert_eq!(m["content"], "\n\nThe capital of France is Paris.");

    let mut b2 = b.clone();
    b2["stream"] = json!(true);
    let r = post(&s, "/v1/chat/completions", &b2).await;
    let (mut reasoning, mut content) = (String::new(), String::new());
    for d in sse_data(&r.body).iter().filter(|d| *d != "[DONE]") {
        let v: Value = serde_json::from_str(d).unwrap();
        let delta = &v["choices"][0]["delta"];
        reasoning.push_str(delta["reasoning_content"].as_str().unwrap_or(""));
        content.push_str(delta["content"].as_str().unwrap_or(""));
        assert!(!d.contains("<think>") && !d.contains("</think>"), "{d}");
    }
    assert_eq!(reasoning, "\nParis is in France. I know this.\n");
    assert_eq!(content, "\n\nThe capital of France is Paris.");

    // include_reasoning: false drops it.
    let mut b3 = b.clone();
    b3["include_reasoning"] = json!(false);
    let v = post_ok(&s, "/v1/chat/completions", &b3).await;
    let m = &v["choices"][0]["message"];
    assert!(m.get("reasoning_content").is_none(), "{v}");
    assert_eq!(m["content"], "\n\nThe capital of France is Paris.");
}

#[tokio::test]
async fn with_reasoning_a_constraint_starts_after_the_thinking() {
    let e = FakeEngine::new();
    let s = app_with(e.clone(), qwen3_reasoning());
    let mut b = chat_body("JSON please", 8);
    b["response_format"] = json!({"type": "json_object"});
    post_ok(&s, "/v1/chat/completions", &b).await;
    let end = e
        .tokenizer()
        .encode("</think>", false)
        .unwrap()
        .get_ids()
        .to_vec();
    let (_, params) = &e.submitted()[0];
    assert_eq!(
        params.structured.as_ref().unwrap().after.as_ref(),
        Some(&end)
    );
    // Without a reasoning parser the constraint applies from the start.
    let e = FakeEngine::new();
    let s = app_with(e.clone(), hermes());
    post_ok(&s, "/v1/chat/completions", &b).await;
    assert_eq!(e.submitted()[0].1.structured.as_ref().unwrap().after, None);
}

#[tokio::test]
async fn chat_echo_prepends_the_final_assistant_message() {
    let e = FakeEngine::new();
    let s = app(e);
    let mut b = chat_body("Count", 4);
    b["messages"] = json!([
        {"role": "user", "content": "Count to three"},
        {"role": "assistant", "content": "One, two,"}
    ]);
    b["continue_final_message"] = json!(true);
    b["add_generation_prompt"] = json!(false);
    b["echo"] = json!(true);
    let v = post_ok(&s, "/v1/chat/completions", &b).await;
    assert_eq!(v["choices"][0]["message"]["content"], "One, two, ok", "{v}");
    b["stream"] = json!(true);
    let r = post(&s, "/v1/chat/completions", &b).await;
    let mut content = String::new();
    for d in sse_data(&r.body).iter().filter(|d| *d != "[DONE]") {
        let v: Value = serde_json::from_str(d).unwrap();
        content.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
    }
    assert_eq!(content, "One, two, ok");
}

#[tokio::test]
async fn tokenize_renders_tools_like_chat() {
    let e = FakeEngine::new();
    let s = qwen3_app(e.clone(), hermes());
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let with = post_ok(
        &s,
        "/tokenize",
        &json!({"messages": msgs, "tools": weather_tools()}),
    )
    .await;
    let without = post_ok(&s, "/tokenize", &json!({"messages": msgs})).await;
    assert!(with["count"].as_u64() > without["count"].as_u64());
    // The same tokens a chat request with those tools submits.
    let mut b = chat_body("hi", 4);
    b["tools"] = weather_tools();
    post_ok(&s, "/v1/chat/completions", &b).await;
    let ids: Vec<u64> = e.submitted()[0].0.iter().map(|&i| u64::from(i)).collect();
    assert_eq!(with["tokens"], json!(ids));
}
