//! `ChatTemplate` against renderings made by transformers' `apply_chat_template`.
//!
//! * `tests/fixtures/tokenizer-reference.json`: the tiny ChatML template of
//!   `tests/fixtures/tiny-llama` (written by `tests/fixtures/generate.py`).
//! * `tests/data/chat_templates/cases.json`: the real Qwen3 and Llama 3 templates from
//!   `tests/data/tokenizers/` plus the test templates in `tests/data/chat_templates/`
//!   (written by `scripts/gen_chat_template_fixtures.py`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use lantern_server::chat_template::{ChatTemplate, ChatTemplateError};
use serde_json::{json, Map, Value};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read_json(relative: &str) -> Value {
    let path = repo_root().join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{} is not JSON: {err}", path.display()))
}

/// A template source: the `chat_template` of a tokenizer_config.json, or a template file.
fn template_source(relative: &str) -> String {
    if relative.ends_with(".json") {
        read_json(relative)["chat_template"]
            .as_str()
            .unwrap_or_else(|| panic!("{relative} has no string `chat_template`"))
            .to_owned()
    } else {
        let path = repo_root().join(relative);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
    }
}

fn no_extra() -> Map<String, Value> {
    Map::new()
}

fn render_one(source: &str, messages: &[Value]) -> Result<String, ChatTemplateError> {
    ChatTemplate::new(source, None, None)
        .expect("template compiles")
        .render(messages, None, false, &no_extra())
}

fn render_str(source: &str) -> String {
    render_one(source, &[]).expect("template renders")
}

#[test]
fn tiny_chatml_matches_transformers() {
    let reference = read_json("tests/fixtures/tokenizer-reference.json");
    let config = read_json("tests/fixtures/tiny-llama/tokenizer_config.json");
    let template = ChatTemplate::new(
        config["chat_template"].as_str().expect("chat_template"),
        config["bos_token"].as_str().map(str::to_owned),
        config["eos_token"].as_str().map(str::to_owned),
    )
    .expect("tiny template compiles");
    let cases = reference["chat_cases"].as_array().expect("chat_cases");
    assert!(!cases.is_empty());
    for case in cases {
        let messages = case["messages"].as_array().expect("messages");
        let agp = case["add_generation_prompt"]
            .as_bool()
            .expect("add_generation_prompt");
        let rendered = template
            .render(messages, None, agp, &no_extra())
            .expect("renders");
        assert_eq!(
            rendered,
            case["rendered"].as_str().expect("rendered"),
            "add_generation_prompt={agp}"
        );
    }
}

#[test]
fn real_and_test_templates_match_transformers() {
    let document = read_json("tests/data/chat_templates/cases.json");
    let cases = document["cases"].as_array().expect("cases");
    assert!(
        cases.len() >= 15,
        "expected the full case list, got {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let source = template_source(
            case["template_source_file"]
                .as_str()
                .expect("template_source_file"),
        );
        let template = ChatTemplate::new(
            &source,
            case["bos_token"].as_str().map(str::to_owned),
            case["eos_token"].as_str().map(str::to_owned),
        )
        .unwrap_or_else(|err| panic!("{name}: {err}"));
        let messages = case["messages"].as_array().expect("messages");
        let tools = case["tools"].as_array().map(Vec::as_slice);
        let agp = case["add_generation_prompt"]
            .as_bool()
            .expect("add_generation_prompt");
        let kwargs = case["kwargs"].as_object().cloned().unwrap_or_default();
        let result = template.render(messages, tools, agp, &kwargs);

        if let Some(expected_error) = case.get("expected_error").and_then(Value::as_str) {
            match result {
                Err(ChatTemplateError::Render(message)) if message == expected_error => {}
                other => failures.push(format!(
                    "{name}: expected Render({expected_error:?}), got {other:?}"
                )),
            }
            continue;
        }
        let mut expected = case["expected"].as_str().expect("expected").to_owned();
        if let Some(date) = case.get("date_placeholder") {
            let format = date["format"].as_str().expect("format");
            let today = chrono::Local::now().format(format).to_string();
            expected = expected.replace(date["placeholder"].as_str().expect("placeholder"), &today);
        }
        match result {
            Ok(rendered) if rendered == expected => {}
            Ok(rendered) => failures.push(format!(
                "{name}: rendering differs\n--- expected\n{expected}\n--- got\n{rendered}\n---"
            )),
            Err(err) => failures.push(format!("{name}: {err}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn raise_exception_is_a_render_error_with_the_message() {
    let err = render_one("{{ raise_exception('x') }}", &[]).unwrap_err();
    match err {
        ChatTemplateError::Render(message) => assert_eq!(message, "x"),
        other => panic!("expected Render, got {other:?}"),
    }
    // Raised deep inside loops and conditions, with a computed message.
    let source = "{% for m in messages %}{% if m.role == 'user' and loop.index0 % 2 != 0 %}\
                  {{ raise_exception('Conversation roles must alternate, got ' ~ m.role ~ ' at ' ~ loop.index0) }}\
                  {% endif %}{% endfor %}";
    let messages = [
        json!({"role": "user", "content": "a"}),
        json!({"role": "user", "content": "b"}),
    ];
    match render_one(source, &messages) {
        Err(ChatTemplateError::Render(message)) => {
            assert_eq!(message, "Conversation roles must alternate, got user at 1")
        }
        other => panic!("expected Render, got {other:?}"),
    }
}

#[test]
fn syntax_errors_are_reported_at_load() {
    for source in [
        "{% for m in messages %}",
        "{{ messages[0 }}",
        "{% if %}{% endif %}",
        "{% endfor %}",
    ] {
        match ChatTemplate::new(source, None, None) {
            Err(ChatTemplateError::Syntax(message)) => assert!(!message.is_empty()),
            other => panic!("{source:?}: expected Syntax, got {other:?}"),
        }
    }
}

#[test]
fn other_render_failures_are_render_errors() {
    // Attribute of an undefined value: Jinja2 raises UndefinedError here as well.
    let err = render_one(
        "{{ messages[0].content.missing.deeper }}",
        &[json!({"role": "user", "content": "x"})],
    )
    .unwrap_err();
    assert!(matches!(err, ChatTemplateError::Render(_)), "{err:?}");
    let err = render_one("{{ foo | no_such_filter }}", &[]).unwrap_err();
    assert!(
        matches!(err, ChatTemplateError::Render(ref m) if m.contains("no_such_filter")),
        "{err:?}"
    );
}

#[test]
fn tojson_is_python_json_dumps() {
    let messages = [json!({
        "role": "user",
        "content": "x",
        "zeta": {"b": 1, "a": [true, null, 1.0, 2.5, 1e-5, 1e16, 123456789, -0.0]},
        "html": "<script>&'\"</script>",
        "text": "ünï 東京 \u{1F600}\u{1}\t",
    })];
    let render = |expr: &str| render_one(&format!("{{{{ {expr} }}}}"), &messages).expect("renders");
    assert_eq!(
        render("messages[0].zeta | tojson"),
        r#"{"b": 1, "a": [true, null, 1.0, 2.5, 1e-05, 1e+16, 123456789, -0.0]}"#
    );
    assert_eq!(
        render("messages[0].html | tojson"),
        r#""<script>&'\"</script>""#
    );
    assert_eq!(
        render("messages[0].text | tojson"),
        "\"ünï 東京 \u{1F600}\\u0001\\t\""
    );
    assert_eq!(
        render("messages[0].text | tojson(ensure_ascii=true)"),
        r#""\u00fcn\u00ef \u6771\u4eac \ud83d\ude00\u0001\t""#
    );
    assert_eq!(render("messages[0].zeta | tojson(indent=1)"), "{\n \"b\": 1,\n \"a\": [\n  true,\n  null,\n  1.0,\n  2.5,\n  1e-05,\n  1e+16,\n  123456789,\n  -0.0\n ]\n}");
    assert_eq!(
        render("messages[0].zeta | tojson(sort_keys=true)"),
        r#"{"a": [true, null, 1.0, 2.5, 1e-05, 1e+16, 123456789, -0.0], "b": 1}"#
    );
    assert_eq!(
        render("{'k': [], 'm': {}} | tojson(indent=2)"),
        "{\n  \"k\": [],\n  \"m\": {}\n}"
    );
    assert_eq!(
        render("[1, [2]] | tojson(separators=(',', ':'))"),
        "[1,[2]]"
    );
    assert_eq!(
        render("'tab\\there' | tojson(indent='\\t')"),
        r#""tab\there""#
    );
    assert!(matches!(
        render_one("{{ nothing | tojson }}", &[]),
        Err(ChatTemplateError::Render(_))
    ));
}

#[test]
fn values_print_like_python() {
    assert_eq!(
        render_str(
            "{{ none }}|{{ true }}|{{ false }}|{{ 3 }}|{{ 0.1 }}|{{ 1e20 }}|{{ undefined_var }}"
        ),
        "None|True|False|3|0.1|1e+20|"
    );
    assert_eq!(
        render_str("{{ ['a', \"it's\", 1, none, {'x': true}] }}"),
        r#"['a', "it's", 1, None, {'x': True}]"#
    );
    assert_eq!(render_str("{{ none | string }}-{{ 'a\\nb' }}"), "None-a\nb");
}

#[test]
fn python_methods_loop_controls_and_slicing() {
    let messages = [
        json!({"role": "system", "content": "  sys  "}),
        json!({"role": "user", "content": "<tool_response>hi</tool_response>"}),
        json!({"role": "assistant", "content": "<think>\nhmm\n</think>\n\nanswer"}),
    ];
    let source = "{%- for m in messages[::-1] %}{% if m.role == 'system' %}{% break %}{% endif %}\
                  {% if m.role == 'user' %}{% continue %}{% endif %}{{ m.role }};{% endfor %}|\
                  {{ messages[0].content.strip() }}|{{ messages[0].content.lstrip() }}|{{ messages[0].content.rstrip() }}|\
                  {{ messages[1].content.startswith('<tool_response>') and messages[1].content.endswith('</tool_response>') }}|\
                  {{ messages[2].content.split('</think>')[-1].lstrip('\\n') }}|\
                  {{ messages[2].content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') }}|\
                  {{ 'a b'.replace(' ', '_').upper() }}|{{ 'AB'.lower() }}|{{ 'ab cd'.title() }}|\
                  {% for k, v in messages[0].items() %}{{ k }}={{ v }},{% endfor %}|{{ messages[0].get('name', 'anon') }}|\
                  {% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}|\
                  {{ messages[0].content is string }}{{ messages[0] is mapping }}{{ messages[0] is string }}|\
                  {{ messages[1:] | length }}{{ messages[-1].role }}";
    assert_eq!(
        render_one(source, &messages).expect("renders"),
        "assistant;|sys|sys  |  sys|True|answer|hmm|A_B|ab|Ab Cd|role=system,content=  sys  ,|anon|3|TrueTrueFalse|2assistant"
    );
}

#[test]
fn whitespace_control_matches_hf() {
    // trim_blocks + lstrip_blocks, and a single trailing newline of the template is dropped.
    let source = "{% for m in messages %}\n    {% if true %}\n{{ m.role }}\n    {% endif %}\n{% endfor %}\nend\n";
    let messages = [
        json!({"role": "user", "content": ""}),
        json!({"role": "assistant", "content": ""}),
    ];
    assert_eq!(
        render_one(source, &messages).expect("renders"),
        "user\nassistant\nend"
    );
}

#[test]
fn variables_follow_hf() {
    let template = ChatTemplate::new(
        "{{ bos_token }}|{{ eos_token }}|{{ tools is none }}|{{ tools is defined }}|{{ documents is none }}|\
         {{ add_generation_prompt }}|{{ enable_thinking is defined and enable_thinking is false }}|{{ custom }}|\
         {% for t in tools or [] %}{{ t.function.name }}{% endfor %}",
        Some("<s>".to_owned()),
        Some("</s>".to_owned()),
    )
    .expect("compiles");
    let mut extra = Map::new();
    extra.insert("enable_thinking".to_owned(), json!(false));
    extra.insert("custom".to_owned(), json!({"k": [1]}));
    assert_eq!(
        template.render(&[], None, true, &extra).expect("renders"),
        "<s>|</s>|True|True|True|True|True|{'k': [1]}|"
    );
    let tools = [json!({"type": "function", "function": {"name": "f"}})];
    assert_eq!(
        template
            .render(&[], Some(&tools), false, &no_extra())
            .expect("renders"),
        "<s>|</s>|False|True|True|False|False||f"
    );
    // extra overrides special tokens (HF: kwargs win) but not the request's own fields.
    let mut extra = Map::new();
    extra.insert("bos_token".to_owned(), json!("[BOS]"));
    assert!(template
        .render(&[], None, false, &extra)
        .expect("renders")
        .starts_with("[BOS]|"));
    for reserved in ["messages", "tools", "add_generation_prompt"] {
        let mut extra = Map::new();
        extra.insert(reserved.to_owned(), json!(1));
        match template.render(&[], None, false, &extra) {
            Err(ChatTemplateError::Render(message)) => {
                assert!(message.contains(reserved), "{message}")
            }
            other => panic!("{reserved}: expected Render, got {other:?}"),
        }
    }
    // Without bos/eos the variables are undefined (HF leaves out tokens the tokenizer lacks).
    let template = ChatTemplate::new(
        "{{ bos_token is defined }}{{ eos_token is defined }}",
        None,
        None,
    )
    .expect("compiles");
    assert_eq!(
        template
            .render(&[], None, false, &no_extra())
            .expect("renders"),
        "FalseFalse"
    );
}

#[test]
fn messages_are_normalized_from_openai_shape() {
    let messages = [
        json!({"role": "user", "content": [{"type": "text", "text": "a"}, {"text": "b"}], "name": null}),
        json!({"role": "assistant", "content": null, "reasoning": "why",
               "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{\"z\": 1, \"a\": \"é\"}"}},
                              {"id": "2", "type": "function", "function": {"name": "g", "arguments": "[1]"}}]}),
    ];
    let source = "{% for m in messages %}{{ m | tojson }}\n{% endfor %}";
    assert_eq!(
        render_one(source, &messages).expect("renders"),
        "{\"role\": \"user\", \"content\": \"a\\nb\"}\n\
         {\"thinking\": \"why\", \"role\": \"assistant\", \"content\": \"\", \"reasoning\": \"why\", \"tool_calls\": \
         [{\"id\": \"1\", \"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": {\"z\": 1, \"a\": \"é\"}}}, \
         {\"id\": \"2\", \"type\": \"function\", \"function\": {\"name\": \"g\", \"arguments\": \"[1]\"}}], \"reasoning_content\": \"why\"}\n"
    );
    let bad =
        [json!({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]})];
    match render_one(source, &bad) {
        Err(ChatTemplateError::Render(message)) => {
            assert!(message.contains("messages[0].content[0]"), "{message}")
        }
        other => panic!("expected Render, got {other:?}"),
    }
    match render_one(source, &[json!("just a string")]) {
        Err(ChatTemplateError::Render(message)) => {
            assert!(message.contains("messages[0]"), "{message}")
        }
        other => panic!("expected Render, got {other:?}"),
    }
}

#[test]
fn strftime_now_formats_the_local_time() {
    let year = chrono::Local::now().format("%Y").to_string();
    let rendered = render_str("{{ strftime_now('%Y') }}|{{ strftime_now('%d %b %Y') | length }}");
    // Allow for the year turning over between the two clock reads.
    let (got_year, len) = rendered.split_once('|').expect("separator");
    assert!(
        got_year == year || got_year.parse::<i32>().ok() == year.parse::<i32>().ok().map(|y| y + 1),
        "{rendered}"
    );
    assert_eq!(len, "11");
    assert!(matches!(
        render_one("{{ strftime_now('%Q') }}", &[]),
        Err(ChatTemplateError::Render(_))
    ));
}

#[test]
fn template_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ChatTemplate>();
    let template = std::sync::Arc::new(
        ChatTemplate::new("{{ messages[0].content }}", None, None).expect("compiles"),
    );
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let template = template.clone();
            std::thread::spawn(move || {
                let messages = [json!({"role": "user", "content": format!("m{i}")})];
                template
                    .render(&messages, None, false, &Map::new())
                    .expect("renders")
            })
        })
        .collect();
    for (i, handle) in handles.into_iter().enumerate() {
        assert_eq!(handle.join().expect("thread"), format!("m{i}"));
    }
}

#[test]
fn generation_blocks_render_their_body() {
    let source = "{% for m in messages %}\n{% if m.role == 'assistant' %}\n  {%- generation -%}\n  [{{ m.content }}]\n  {%+ endgeneration %}\n{% else %}{{ m.content }}{% endif %}\n{% endfor %}{# {% generation %} in a comment #}";
    let messages = [
        json!({"role": "user", "content": "q"}),
        json!({"role": "assistant", "content": "a"}),
    ];
    assert_eq!(render_one(source, &messages).unwrap(), "q[a]\n  ");
}
