//! Errors only the real binary can show (the engine's own limits and queue) and the
//! wiring of the flags behind errors (`--api-key`, `--max-request-body-bytes`). The HTTP
//! layer's validation and error answers are tested in-process in
//! `crates/server/tests/api`.

use super::common::*;
use super::shapes::*;
use serde_json::json;
use std::sync::{Arc, Barrier};
use std::time::Duration;

#[test]
fn error_context_too_long() {
    let s = shared();
    let prompt: Vec<u32> = (0..500).map(|i| 10 + (i % 400)).collect();
    let body = completion_body(json!(prompt), 100);
    let msg = assert_error(&post(&s.url("/v1/completions"), &body), 400, Some("prompt"));
    for n in ["512", "500", "100"] {
        assert!(msg.contains(n), "{msg} lacks {n}");
    }
    let long = "ab ".repeat(400);
    let body = chat_body(&long, 100);
    let msg = assert_error(
        &post(&s.url("/v1/chat/completions"), &body),
        400,
        Some("messages"),
    );
    assert!(msg.contains("512"), "{msg}");
    // Exactly at the limit is fine.
    let body = completion_body(json!(prompt[..496].to_vec()), 16);
    let v = post_ok(&s.url("/v1/completions"), &body);
    assert_eq!(v["usage"]["prompt_tokens"], 496);
}

#[test]
fn queue_full_is_429_with_retry_after() {
    let s = start(&["--max-num-seqs", "1", "--max-waiting-requests", "1"]);
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let url = s.url("/v1/completions");
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let b = barrier.clone();
            let url = url.clone();
            std::thread::spawn(move || {
                let body = json!({
                    "model": NAME, "prompt": "The quick brown fox", "max_tokens": 480,
                    "ignore_eos": true, "temperature": 0,
                });
                b.wait();
                post_raw(&url, &body.to_string(), &[]).expect("request")
            })
        })
        .collect();
    let resps: Vec<Resp> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = resps.iter().filter(|r| r.status == 200).count();
    let limited: Vec<&Resp> = resps.iter().filter(|r| r.status == 429).collect();
    assert_eq!(
        ok + limited.len(),
        n,
        "statuses: {:?}",
        resps.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(ok >= 1, "no request was served");
    assert!(!limited.is_empty(), "no request was refused with 429");
    for r in limited {
        assert_error(r, 429, None);
        let ra: u64 = r
            .header("retry-after")
            .expect("Retry-After on 429")
            .parse()
            .expect("Retry-After in seconds");
        assert!(ra >= 1);
    }
    for r in resps.iter().filter(|r| r.status == 200) {
        assert_eq!(r.json()["usage"]["completion_tokens"], 480);
    }
    let m = wait_idle(&s, Duration::from_secs(10));
    assert!(
        metric(
            &m,
            "lantern_requests_total",
            &[("endpoint", "/v1/completions"), ("status", "429")]
        )
        .unwrap()
            >= 1.0
    );
}

/// `--api-key` reaches the server (the full set of auth cases is in-process).
#[test]
fn api_key_is_required_on_v1() {
    let s = start(&["--api-key", "sekrit-KEY"]);
    let models = s.url("/v1/models");
    assert_error(&get(&models).unwrap(), 401, None);
    let r = get_with(&models, &[("Authorization", "Bearer sekrit-KEY")]).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"][0]["id"], NAME);
    // Operational endpoints stay open.
    assert_eq!(get(&s.url("/health")).unwrap().status, 200);
    assert_eq!(get(&s.url("/metrics")).unwrap().status, 200);
}

/// `--max-request-body-bytes` reaches the server (the 413 itself is tested in-process).
#[test]
fn body_over_the_limit_is_413() {
    let s = start(&["--max-request-body-bytes", "1000"]);
    let big = json!({"model": NAME, "prompt": "x".repeat(2000), "max_tokens": 2}).to_string();
    let r = post_raw(&s.url("/v1/completions"), &big, &[]).unwrap();
    assert_error(&r, 413, None);
    // Small bodies still work.
    post_ok(&s.url("/v1/completions"), &completion_body(json!("Hi"), 2));
}
