//! `/v1/chat/completions`: streamed vs non-streamed, logprobs.

use super::common::*;
use super::shapes::*;
use serde_json::{json, Value};

#[test]
fn chat_stream_matches_non_stream() {
    let s = shared();
    let body = chat_body("Tell me a story about a fox.", 24);
    let v = post_ok(&s.url("/v1/chat/completions"), &body);
    check_chat_shape(&v);
    let choice = &v["choices"][0];
    let content = choice["message"]["content"].as_str().unwrap();
    let finish = choice["finish_reason"].as_str().unwrap();
    assert!(choice["logprobs"].is_null());
    let usage = &v["usage"];
    let completion_tokens = usage["completion_tokens"].as_u64().unwrap();
    assert!((1..=24).contains(&completion_tokens));
    if finish == "length" {
        assert_eq!(completion_tokens, 24);
    }

    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    sbody["stream_options"] = json!({"include_usage": true});
    let chunks = stream_chunks(&s.url("/v1/chat/completions"), &sbody);
    let (scontent, sfinish, susage) = check_chat_stream(&chunks, true);
    assert_eq!(scontent, content);
    assert_eq!(sfinish, finish);
    let susage = susage.unwrap();
    assert_eq!(susage["prompt_tokens"], usage["prompt_tokens"]);
    assert_eq!(susage["completion_tokens"], usage["completion_tokens"]);
    assert_eq!(susage["total_tokens"], usage["total_tokens"]);
    let cached = susage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .expect("prompt_tokens_details.cached_tokens");
    assert_eq!(cached % 16, 0);

    // Without include_usage: no usage field, no usage chunk.
    sbody["stream_options"] = json!({"include_usage": false});
    let chunks = stream_chunks(&s.url("/v1/chat/completions"), &sbody);
    let (scontent, sfinish, _) = check_chat_stream(&chunks, false);
    assert_eq!(scontent, content);
    assert_eq!(sfinish, finish);
}

#[test]
fn chat_logprobs() {
    let s = shared();
    let mut body = chat_body("Hello there", 8);
    body["ignore_eos"] = json!(true);
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(2);
    let v = post_ok(&s.url("/v1/chat/completions"), &body);
    check_chat_shape(&v);
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 8);
    for e in content {
        let tok = e["token"].as_str().unwrap();
        let lp = e["logprob"].as_f64().unwrap();
        assert!(lp <= 0.0);
        let bytes: Vec<u8> = e["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(bytes, tok.as_bytes());
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2, "{e}");
        let l0 = top[0]["logprob"].as_f64().unwrap();
        let l1 = top[1]["logprob"].as_f64().unwrap();
        assert!(l0 >= l1);
        assert!(top
            .iter()
            .all(|t| t["token"].is_string() && t["bytes"].is_array()));
        // Greedy: the chosen token is the best one.
        assert_eq!(top[0]["token"], json!(tok));
        assert!((l0 - lp).abs() < 1e-6);
    }

    // logprobs without top_logprobs: empty alternatives.
    body["top_logprobs"] = Value::Null;
    let v = post_ok(&s.url("/v1/chat/completions"), &body);
    for e in v["choices"][0]["logprobs"]["content"].as_array().unwrap() {
        assert_eq!(e["top_logprobs"], json!([]));
    }

    // Streaming: every generated token's logprob arrives in some chunk.
    body["top_logprobs"] = json!(2);
    body["stream"] = json!(true);
    let chunks = stream_chunks(&s.url("/v1/chat/completions"), &body);
    let n: usize = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array())
        .map(Vec::len)
        .sum();
    assert_eq!(n, 8);

    // top_logprobs without logprobs is refused.
    let mut bad = chat_body("Hello", 4);
    bad["top_logprobs"] = json!(2);
    let r = post(&s.url("/v1/chat/completions"), &bad);
    assert_error(&r, 400, Some("top_logprobs"));
}

#[test]
fn response_format_json_schema_constrains_the_reply_and_bad_schemas_are_400() {
    let s = shared();
    let schema = json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 12},
            "rainy": {"type": "boolean"}
        },
        "required": ["city", "rainy"],
        "additionalProperties": false
    });
    let mut body = chat_body("What is the weather in Paris? Answer in JSON.", 120);
    body["response_format"] = json!({
        "type": "json_schema",
        "json_schema": {"name": "weather", "schema": schema, "strict": true}
    });
    for stream in [false, true] {
        let content = if stream {
            let mut sbody = body.clone();
            sbody["stream"] = json!(true);
            let chunks = stream_chunks(&s.url("/v1/chat/completions"), &sbody);
            let (content, finish, _) = check_chat_stream(&chunks, false);
            assert_eq!(finish, "stop");
            content
        } else {
            let v = post_ok(&s.url("/v1/chat/completions"), &body);
            check_chat_shape(&v);
            assert_eq!(v["choices"][0]["finish_reason"], "stop");
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let reply: Value =
            serde_json::from_str(&content).unwrap_or_else(|e| panic!("{e}: {content}"));
        assert!(
            reply["city"].as_str().unwrap().chars().count() <= 12,
            "{reply}"
        );
        assert!(reply["rainy"].is_boolean(), "{reply}");
        assert_eq!(reply.as_object().unwrap().len(), 2, "{reply}");
    }
    // The completions endpoint takes vLLM's structured_outputs.
    let mut cbody = completion_body(json!("The answer is"), 8);
    cbody["structured_outputs"] = json!({"choice": ["yes", "no"]});
    let v = post_ok(&s.url("/v1/completions"), &cbody);
    let text = v["choices"][0]["text"].as_str().unwrap();
    assert!(text == "yes" || text == "no", "{text:?}");
    // A schema the grammar engine cannot enforce is refused before queueing, naming the field.
    body["response_format"]["json_schema"]["schema"] = json!({"type": "string", "format": "color"});
    let r = post(&s.url("/v1/chat/completions"), &body);
    let msg = assert_error(&r, 400, Some("response_format"));
    assert!(msg.contains("color"), "{msg}");
}

/// A Qwen3-style chat template (tools listed, `enable_thinking: false` closes the thinking
/// block in the prompt), short enough for the tiny model's 512-token context; written to a
/// file for `--chat-template`.
fn qwen3_style_template_file() -> std::path::PathBuf {
    let src = "{%- if tools %}<|im_start|>system\ntools:{% for t in tools %} {{ t.function.name }}{% endfor %}<|im_end|>\n{%- endif %}\n\
{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\n\
{%- if add_generation_prompt %}<|im_start|>assistant\n\
{%- if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}\n\
{%- endif %}";
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("qwen3-style-template-{}.jinja", std::process::id()));
    std::fs::write(&path, src).unwrap();
    path
}

#[test]
fn tool_and_reasoning_flags_serve_forced_calls_and_bad_flags_stop_start_up() {
    let template = qwen3_style_template_file();
    let s = start(&[
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
        "--reasoning-parser",
        "qwen3",
        "--chat-template",
        template.to_str().unwrap(),
    ]);
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 10}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "required": ["city", "days"],
        "additionalProperties": false
    }}}]);
    let mut body = chat_body("Weather in Paris for three days?", 80);
    body["tools"] = tools;
    body["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
    // Thinking off: the template closes the thinking block, so the call is constrained
    // from the first token.
    body["chat_template_kwargs"] = json!({"enable_thinking": false});
    for stream in [false, true] {
        let args = if stream {
            let mut sbody = body.clone();
            sbody["stream"] = json!(true);
            let mut args = String::new();
            let mut finish = None;
            for c in stream_chunks(&s.url("/v1/chat/completions"), &sbody) {
                let ch = &c["choices"][0];
                if let Some(f) = ch["finish_reason"].as_str() {
                    finish = Some(f.to_string());
                }
                for tc in ch["delta"]["tool_calls"].as_array().into_iter().flatten() {
                    args.push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
                }
            }
            assert_eq!(finish.as_deref(), Some("stop"));
            args
        } else {
            let v = post_ok(&s.url("/v1/chat/completions"), &body);
            let c = &v["choices"][0];
            assert_eq!(c["finish_reason"], "stop", "{v}");
            assert!(c["message"]["content"].is_null(), "{v}");
            let calls = c["message"]["tool_calls"].as_array().unwrap();
            assert_eq!(calls.len(), 1, "{v}");
            assert_eq!(calls[0]["function"]["name"], "get_weather");
            calls[0]["function"]["arguments"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let a: Value = serde_json::from_str(&args).unwrap_or_else(|e| panic!("{e}: {args}"));
        assert!(a["city"].as_str().unwrap().chars().count() <= 10, "{a}");
        assert!((1..=7).contains(&a["days"].as_i64().unwrap()), "{a}");
    }
    drop(s);
    let _ = std::fs::remove_file(&template);
    for (flags, needle) in [
        (&["--tool-call-parser", "nope"][..], "hermes"),
        (&["--reasoning-parser", "nope"][..], "deepseek_r1"),
        (&["--enable-auto-tool-choice"][..], "--tool-call-parser"),
    ] {
        let e = try_start(flags).err().expect("start-up must fail");
        assert!(e.contains(needle), "{flags:?}: {e}");
    }
}
