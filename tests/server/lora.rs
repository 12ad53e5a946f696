//! Multi-LoRA (issue 6): adapters from tests/fixtures/tiny-llama/lora-{a,b}, references
//! from transformers + peft (generate.py).

use super::common::*;
use super::shapes::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::Duration;

fn adapter_dir(name: &str) -> PathBuf {
    model_dir().join(name)
}

fn adapter_ref(name: &str) -> Value {
    let p = adapter_dir(name).join("reference.json");
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).unwrap()
}

/// Prompt `i` of an adapter's reference and its 33 greedy tokens.
fn adapter_case(name: &str, i: usize) -> (Vec<u32>, Vec<u32>) {
    let r = adapter_ref(name);
    (ids(&r["prompts"][i]), ids(&r["greedy"][i]))
}

/// Greedy token ids of one completion of `prompt` through `model`.
fn greedy_ids(s: &Server, model: &str, prompt: &[u32], max_tokens: usize) -> Vec<u32> {
    let mut body = completion_body(json!(prompt), max_tokens);
    body["model"] = json!(model);
    body["ignore_eos"] = json!(true);
    body["logprobs"] = json!(0);
    body["return_tokens_as_token_ids"] = json!(true);
    let v = post_ok(&s.url("/v1/completions"), &body);
    completion_token_ids(&v["choices"][0])
}

fn lora_flag(name: &str, dir: &str) -> String {
    format!("{name}={}", adapter_dir(dir).display())
}

#[test]
fn lora_adapters_match_peft_alone_and_mixed_in_one_batch() {
    let a = lora_flag("ada", "lora-a");
    let b = lora_flag("bob", "lora-b");
    let s = start(&[
        "--lora",
        &a,
        "--lora-modules",
        &b,
        "--max-loras",
        "2",
        "--max-lora-rank",
        "8",
    ]);
    // /v1/models lists both adapters with the base model as parent.
    let models = get(&s.url("/v1/models")).unwrap().json();
    let data = models["data"].as_array().unwrap();
    let ids_listed: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids_listed, vec![NAME, "ada", "bob"], "{models}");
    assert_eq!(data[0]["parent"], Value::Null);
    for m in &data[1..] {
        assert_eq!(m["parent"], NAME, "{m}");
        assert_eq!(m["object"], "model");
    }
    // Alone: each adapter equals peft's greedy continuation token for token.
    for (model, dir) in [("ada", "lora-a"), ("bob", "lora-b")] {
        for i in 0..2 {
            let (prompt, want) = adapter_case(dir, i);
            assert_eq!(
                greedy_ids(&s, model, &prompt, want.len()),
                want,
                "{model} prompt {i}"
            );
        }
    }
    // Mixed: base + adapter a + adapter b concurrently, several prompts each; every
    // request must still equal its own reference.
    let barrier = Arc::new(Barrier::new(9));
    let s = Arc::new(s);
    let handles: Vec<_> = (0..9)
        .map(|k| {
            let s = s.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let i = k / 3;
                let (model, prompt, want) = match k % 3 {
                    0 => (NAME, ref_prompt(i), ref_greedy(i)),
                    1 => {
                        let (p, w) = adapter_case("lora-a", i);
                        ("ada", p, w)
                    }
                    _ => {
                        let (p, w) = adapter_case("lora-b", i);
                        ("bob", p, w)
                    }
                };
                barrier.wait();
                let got = greedy_ids(&s, model, &prompt, want.len());
                assert_eq!(got, want, "{model} prompt {i} in a mixed batch");
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let m = wait_idle(&s, Duration::from_secs(30));
    assert!(metric(&m, "lantern_lora_slot_loads_total", &[]).unwrap() >= 2.0);
}

#[test]
fn lora_one_slot_three_adapters_interleaved_all_match() {
    // One device slot, one adapter in host memory, three adapters (the third is lora-a
    // again under another name): every switch swaps the slot and most re-read from disk.
    let a = lora_flag("a1", "lora-a");
    let b = lora_flag("b", "lora-b");
    let c = lora_flag("a2", "lora-a");
    let s = Arc::new(start(&[
        "--lora",
        &a,
        "--lora",
        &b,
        "--lora",
        &c,
        "--max-loras",
        "1",
        "--max-cpu-loras",
        "1",
        "--max-lora-rank",
        "8",
    ]));
    let barrier = Arc::new(Barrier::new(10));
    let handles: Vec<_> = (0..10)
        .map(|k| {
            let s = s.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let i = k % 2;
                let (model, dir) = match k % 4 {
                    0 => ("a1", "lora-a"),
                    1 => ("b", "lora-b"),
                    2 => ("a2", "lora-a"),
                    _ => (NAME, ""),
                };
                let (prompt, want) = if dir.is_empty() {
                    (ref_prompt(i), ref_greedy(i))
                } else {
                    adapter_case(dir, i)
                };
                barrier.wait();
                let got = greedy_ids(&s, model, &prompt, 16);
                assert_eq!(got, want[..16].to_vec(), "{model} prompt {i} (request {k})");
            })
        })
        .collect();
    // vLLM's LoRA info while they run: one slot, so at most one adapter running at a time.
    let mut running_seen = BTreeSet::new();
    let mut waiting_seen = BTreeSet::new();
    while handles.iter().any(|h| !h.is_finished()) {
        let (running, waiting) = lora_info(&s, "1");
        assert!(
            running.len() <= 1,
            "running {running:?}, waiting {waiting:?}"
        );
        waiting_seen.extend(waiting);
        running_seen.extend(running);
        std::thread::sleep(Duration::from_millis(2));
    }
    for h in handles {
        h.join().unwrap();
    }
    let names = ["a1", "b", "a2"];
    assert!(running_seen
        .iter()
        .chain(&waiting_seen)
        .all(|a| names.contains(&a.as_str())));
    let m = wait_idle(&s, Duration::from_secs(30));
    assert_eq!(lora_info(&s, "1"), (vec![], vec![]));
    let slot_loads = metric(&m, "lantern_lora_slot_loads_total", &[]).unwrap();
    let disk_loads = metric(&m, "lantern_lora_disk_loads_total", &[]).unwrap();
    assert!(slot_loads >= 3.0, "slot loads {slot_loads}");
    // 3 at startup, then re-reads because only one adapter fits in host memory.
    assert!(disk_loads >= 5.0, "disk loads {disk_loads}");
    assert_eq!(metric(&m, "lantern_loras_in_host_memory", &[]), Some(1.0));
}

#[test]
fn lora_load_and_unload_over_http() {
    let root = model_dir().display().to_string();
    let s = start(&[
        "--enable-lora",
        "--max-lora-rank",
        "8",
        "--max-loras",
        "2",
        "--lora-root",
        &root,
    ]);
    let load = |name: &str, path: &str| {
        post(
            &s.url("/v1/load_lora_adapter"),
            &json!({"lora_name": name, "lora_path": path}),
        )
    };
    let unload = |name: &str| {
        post(
            &s.url("/v1/unload_lora_adapter"),
            &json!({ "lora_name": name }),
        )
    };
    let (prompt, want) = adapter_case("lora-a", 0);
    // Unknown adapter: 404 like an unknown model.
    let mut body = completion_body(json!(prompt), 4);
    body["model"] = json!("ada");
    let r = post(&s.url("/v1/completions"), &body);
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(
        r.json()["error"]["message"],
        "The model `ada` does not exist."
    );

    let path_a = adapter_dir("lora-a").display().to_string();
    let r = load("ada", &path_a);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "Success: LoRA adapter 'ada' added successfully.");
    let r = load("ada", &path_a);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "The lora adapter 'ada' has already been loaded."
    );
    let models = get(&s.url("/v1/models")).unwrap().json();
    let ada = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "ada")
        .cloned()
        .unwrap_or_else(|| panic!("ada not listed: {models}"));
    assert_eq!(ada["parent"], NAME);
    assert_eq!(ada["root"], json!(path_a));
    assert_eq!(greedy_ids(&s, "ada", &prompt, want.len()), want);

    // A path relative to the root works too.
    let r = load("ada-rel", "lora-a");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(unload("ada-rel").status, 200);

    // Paths outside the roots get one answer whether they exist or not (issue 14,
    // defect 7): no server paths, no OS error text.
    let outside = std::env::temp_dir().display().to_string();
    let escape = format!("{root}/../..");
    let mut answers = Vec::new();
    for p in [
        "/nonexistent/adapter/dir",
        outside.as_str(),
        escape.as_str(),
        "../x",
    ] {
        let r = load("x", p);
        assert_eq!(r.status, 400, "{p}: {}", r.body);
        assert_eq!(r.json()["error"]["param"], "lora_path", "{}", r.body);
        answers.push(r.json()["error"]["message"].clone());
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    let msg = answers[0].as_str().unwrap();
    assert!(msg.contains("--lora-root"), "{msg}");
    assert!(
        !msg.contains("os error") && !msg.contains('/') || msg.contains("owner/name"),
        "{msg}"
    );
    assert!(
        !msg.contains("nonexistent") && !msg.contains(&outside),
        "{msg}"
    );
    // Inside the root, a broken adapter is named by its file, not the server's path.
    let r = load("noconf", &format!("{root}/lora-a/.."));
    assert_eq!(r.status, 400, "{}", r.body);
    let m = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        m.contains("adapter_config.json") && !m.contains(&root) && !m.contains("os error"),
        "{m}"
    );

    // Refused adapters name the problem.
    let r = load(
        "dora",
        &adapter_dir("lora-unsupported-dora").display().to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("DoRA") || r.body.contains("use_dora"),
        "{}",
        r.body
    );
    let r = load(
        "mts",
        &adapter_dir("lora-modules-to-save").display().to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("modules_to_save"), "{}", r.body);
    let r = load("big", &adapter_dir("lora-b").display().to_string());
    assert_eq!(r.status, 200, "rank 8 fits --max-lora-rank 8: {}", r.body);
    let r = post(&s.url("/v1/load_lora_adapter"), &json!({"lora_name": "y"}));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "Both 'lora_name' and 'lora_path' must be provided."
    );
    let r = load(NAME, &path_a);
    assert_eq!(r.status, 400, "the base model's name: {}", r.body);

    // Unload while a request is in flight: it finishes; new requests get 404.
    let mut long = completion_body(json!(prompt), 200);
    long["model"] = json!("ada");
    long["ignore_eos"] = json!(true);
    long["stream"] = json!(true);
    let mut sse = stream(&s.url("/v1/completions"), &long);
    let first = sse.next_data().expect("a first chunk");
    assert!(first.contains("\"choices\""), "{first}");
    let r = unload("ada");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "Success: LoRA adapter 'ada' removed successfully.");
    let r = post(&s.url("/v1/completions"), &body);
    assert_eq!(r.status, 404, "{}", r.body);
    let mut finish = None;
    while let Some(d) = sse.next_data() {
        if d == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(&d).unwrap();
        if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    assert_eq!(
        finish.as_deref(),
        Some("length"),
        "the in-flight request finished"
    );
    let r = unload("ada");
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json()["error"]["message"],
        "The lora adapter 'ada' cannot be found."
    );
    let models = get(&s.url("/v1/models")).unwrap().json();
    assert!(!models.to_string().contains("\"ada\""), "{models}");
    // Loading the same name again works and serves the same weights.
    assert_eq!(load("ada", &path_a).status, 200);
    assert_eq!(greedy_ids(&s, "ada", &prompt, want.len()), want);
    wait_idle(&s, Duration::from_secs(30));
}

#[test]
fn lora_prefix_cache_is_isolated_between_adapters() {
    let a = lora_flag("ada", "lora-a");
    let b = lora_flag("bob", "lora-b");
    let s = start(&[
        "--lora",
        &a,
        "--lora",
        &b,
        "--max-loras",
        "2",
        "--max-lora-rank",
        "8",
    ]);
    // A 131-token prompt (8 full blocks) sent to base, ada, bob, then again to each.
    let prompt = ref_prompt(3);
    let run = |model: &str| {
        let mut body = completion_body(json!(prompt), 8);
        body["model"] = json!(model);
        body["ignore_eos"] = json!(true);
        post_ok(&s.url("/v1/completions"), &body)
    };
    let cached = |v: &Value| {
        v["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0)
    };
    let base1 = run(NAME);
    let ada1 = run("ada");
    let bob1 = run("bob");
    assert_eq!(cached(&ada1), 0, "ada must not hit the base model's blocks");
    assert_eq!(
        cached(&bob1),
        0,
        "bob must not hit ada's or the base model's blocks"
    );
    let texts: BTreeSet<String> = [&base1, &ada1, &bob1]
        .iter()
        .map(|v| v["choices"][0]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        texts.len(),
        3,
        "three models, three different continuations"
    );
    for (model, first) in [(NAME, &base1), ("ada", &ada1), ("bob", &bob1)] {
        let again = run(model);
        assert!(
            cached(&again) >= 128,
            "{model} hits its own blocks: {}",
            again["usage"]
        );
        assert_eq!(
            again["choices"][0]["text"], first["choices"][0]["text"],
            "{model}"
        );
    }
}

#[test]
fn lora_endpoints_explain_that_lora_is_disabled() {
    let s = shared();
    let r = post(
        &s.url("/v1/load_lora_adapter"),
        &json!({"lora_name": "a", "lora_path": adapter_dir("lora-a")}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("--enable-lora"), "{}", r.body);
}

/// `vllm:lora_requests_info`'s running and waiting adapters (its `max_lora` must be
/// `max_lora`). Read from the raw line: `prometheus-parse` splits label values on commas.
fn lora_info(s: &Server, max_lora: &str) -> (Vec<String>, Vec<String>) {
    let body = get(&s.url("/metrics")).unwrap().body;
    let line = body
        .lines()
        .find(|l| l.starts_with("vllm:lora_requests_info{"))
        .expect("vllm:lora_requests_info");
    let label = |k: &str| {
        let start = line
            .find(&format!("{k}=\""))
            .unwrap_or_else(|| panic!("{k} in {line}"));
        let rest = &line[start + k.len() + 2..];
        rest[..rest.find('"').unwrap()].to_string()
    };
    assert_eq!(label("max_lora"), max_lora, "{line}");
    assert_eq!(label("engine"), "0", "{line}");
    assert_eq!(label("model_name"), NAME, "{line}");
    let list = |k: &str| {
        let v = label(k);
        v.split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    (list("running_lora_adapters"), list("waiting_lora_adapters"))
}
