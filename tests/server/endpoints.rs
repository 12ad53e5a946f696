//! Basic endpoints: models, health, version.

use super::common::*;
use super::shapes::*;
use serde_json::json;

#[test]
fn models_lists_the_served_model() {
    let s = shared();
    let r = get(&s.url("/v1/models")).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{v}");
    let m = &data[0];
    assert_eq!(m["id"], NAME);
    assert_eq!(m["object"], "model");
    let created = m["created"].as_u64().expect("created is an integer");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        created > now - 3600 && created <= now + 5,
        "created {created}"
    );
    assert_eq!(m["owned_by"], "lantern");
    assert_eq!(m["root"], json!(model_dir().display().to_string()));
    assert_eq!(m["max_model_len"], 512);
}

#[test]
fn health_and_version() {
    let s = shared();
    let r = get(&s.url("/health")).unwrap();
    assert_eq!(r.status, 200);
    let r = get(&s.url("/version")).unwrap();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn vllm_spellings_positional_model_ping_render_and_generation_config() {
    // `--generation-config DIR`: the defaults of DIR/generation_config.json.
    let gen_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("gen-config-{}", std::process::id()));
    std::fs::create_dir_all(&gen_dir).unwrap();
    std::fs::write(
        gen_dir.join("generation_config.json"),
        r#"{"temperature": 0.6, "top_k": 7, "top_p": 0.9, "eos_token_id": 2}"#,
    )
    .unwrap();
    let model = model_dir();
    let s = try_start_model(
        &[model.to_str().unwrap()],
        &[
            "--generation-config",
            gen_dir.to_str().unwrap(),
            "--tensor-parallel-size",
            "1",
            "--trust-remote-code",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get(&s.url("/ping")).unwrap().status, 200);
    let mut body = chat_body("Hello", 5);
    body.as_object_mut().unwrap().remove("temperature");
    let r = post_ok(&s.url("/v1/chat/completions/render"), &body);
    let sp = &r["sampling_params"];
    assert!(
        (sp["temperature"].as_f64().unwrap() - 0.6).abs() < 1e-6,
        "{r}"
    );
    assert_eq!(sp["top_k"], 7);
    assert_eq!(sp["max_tokens"], 5);
    // The rendered ids are what /tokenize gives for the same messages.
    let t = post_ok(
        &s.url("/tokenize"),
        &json!({"messages": body["messages"], "add_generation_prompt": true}),
    );
    assert_eq!(r["token_ids"], t["tokens"]);
    drop(s);
    let _ = std::fs::remove_dir_all(&gen_dir);
    // vLLM flags with values Lantern does not support stop start-up with a clear message.
    for (flags, needle) in [
        (&["--tensor-parallel-size", "2"][..], "not supported yet"),
        (&["--quantization", "awq"][..], "not supported yet"),
        (&["--speculative-config", "{}"][..], "does not support yet"),
        (&["--kv-cache-dtype", "fp8"][..], "not supported yet"),
    ] {
        let e = try_start(flags).err().expect("start-up must fail");
        assert!(e.contains(needle), "{flags:?}: {e}");
    }
}

/// KV-cache events from the outside: a bad `--kv-events-config` stops start-up naming the
/// key; the debug routes exist only with `--enable-debug-endpoints`; with events on, cached
/// blocks show up there with the sequence number of the last published batch, and a reset
/// empties the cache. (The events themselves are checked by a subscriber decoding with
/// vLLM's classes: `scripts/kv_events_check.py`.)
#[test]
fn kv_events_config_and_debug_endpoints() {
    let on = r#"{"enable_kv_cache_events":true,"endpoint":"tcp://*:0"}"#;
    for (flags, needle) in [
        (
            &[
                "--kv-events-config",
                r#"{"enable_kv_cache_events":true,"topics":"x"}"#,
            ][..],
            "unknown field `topics`",
        ),
        (
            &[
                "--kv-events-config",
                r#"{"enable_kv_cache_events":true,"publisher":"kafka"}"#,
            ],
            "unknown variant `kafka`",
        ),
        (
            &[
                "--kv-events-config",
                r#"{"enable_kv_cache_events":true,"endpoint":"inproc://kv"}"#,
            ],
            "inproc://",
        ),
        (
            &["--kv-events-config", "enable"],
            "not a valid KVEventsConfig",
        ),
        (
            &["--kv-events-config", on, "--no-enable-prefix-caching"],
            "needs prefix caching",
        ),
    ] {
        let e = try_start(flags).err().expect("start-up must fail");
        assert!(e.contains(needle), "{flags:?}: {e}");
    }
    let plain = shared();
    assert_eq!(
        get(&plain.url("/debug/kv_cache_blocks")).unwrap().status,
        404
    );
    assert_eq!(
        post_raw(&plain.url("/reset_prefix_cache"), "", &[])
            .unwrap()
            .status,
        404
    );

    let sock = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kv-events-{}.sock", std::process::id()));
    let cfg = json!({"enable_kv_cache_events": true, "endpoint": format!("ipc://{}", sock.display()), "topic": "kv@test@tiny"});
    let s = start(&[
        "--enable-debug-endpoints",
        "--kv-events-config",
        &cfg.to_string(),
    ]);
    let blocks = |s: &Server| {
        let r = get(&s.url("/debug/kv_cache_blocks")).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };
    let b = blocks(&s);
    assert_eq!(b["num_blocks"], 0, "{b}");
    assert_eq!(b["kv_events_enabled"], true);
    assert!(b["last_event_seq"].is_null(), "{b}");
    // 40 prompt tokens = 2 full blocks of 16, cached once computed.
    let prompt: Vec<u32> = (0..40).map(|i| 10 + i).collect();
    post_ok(
        &s.url("/v1/completions"),
        &json!({"model": NAME, "prompt": prompt, "max_tokens": 2, "temperature": 0}),
    );
    let b = blocks(&s);
    assert_eq!(b["block_size"], 16);
    assert_eq!(b["num_blocks"], 2, "{b}");
    assert_eq!(b["block_hashes"].as_array().unwrap().len(), 2);
    let seq = b["last_event_seq"].as_u64().expect("a batch was published");
    let r = post_raw(&s.url("/reset_prefix_cache"), "", &[]).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["reset"], true);
    let b = blocks(&s);
    assert_eq!(b["num_blocks"], 0, "{b}");
    assert_eq!(
        b["last_event_seq"].as_u64(),
        Some(seq + 1),
        "AllBlocksCleared"
    );
    assert_eq!(b["kv_events_dropped"], 0);
    let m = get(&s.url("/metrics")).unwrap().body;
    assert!(
        m.lines()
            .any(|l| l.starts_with("lantern_kv_events_dropped_total{") && l.ends_with(" 0")),
        "{m}"
    );
    drop(s);
    let _ = std::fs::remove_file(&sock);
}
