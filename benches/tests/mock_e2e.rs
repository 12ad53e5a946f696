//! End-to-end: the whole benchmark against an in-process mock OpenAI SSE server
//! (`lantern_bench::mock`, which splits SSE events across TCP writes), and `--embedded`
//! against the `lantern-bench-mock` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use clap::Parser;
use lantern_bench::mock::{self, MockConfig, MockServer};
use lantern_bench::{run_collect, BenchArgs, BenchResult};
use serde_json::Value;

const FIRST_TOKEN_DELAY_MS: u64 = 30;
const TOKEN_GAP_MS: u64 = 8;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn parse(args: &[&str]) -> BenchArgs {
    let mut v = vec!["bench"];
    v.extend_from_slice(args);
    Cli::try_parse_from(v).unwrap().args
}

async fn start_mock() -> MockServer {
    mock::start(MockConfig {
        first_token_delay: Duration::from_millis(FIRST_TOKEN_DELAY_MS),
        token_gap: Duration::from_millis(TOKEN_GAP_MS),
    })
    .await
    .unwrap()
}

fn tokenizer_path() -> String {
    format!(
        "{}/../tests/fixtures/tiny-llama/tokenizer.json",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lantern-bench-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn check_plausible(r: &BenchResult, n: usize, out_len: usize) {
    let m = &r.metrics;
    assert_eq!(m.completed, n, "failures: {:?}", m.failure_reasons);
    assert_eq!(m.failed, 0);
    assert_eq!(m.total_output_tokens, n * out_len);
    assert_eq!(r.requests.len(), n);
    // TTFT is at least the mock's first-token delay, and not absurd.
    assert!(
        m.ttft_ms.min >= FIRST_TOKEN_DELAY_MS as f64 * 0.9,
        "ttft min {}",
        m.ttft_ms.min
    );
    assert!(m.ttft_ms.max < 5_000.0, "ttft max {}", m.ttft_ms.max);
    // ITL: one gap per token after the first; the median sits near the mock's gap.
    assert_eq!(m.itl_ms.count, n * (out_len - 1));
    assert!(
        m.itl_ms.median >= TOKEN_GAP_MS as f64 * 0.8,
        "itl median {}",
        m.itl_ms.median
    );
    assert!(m.itl_ms.median < 200.0, "itl median {}", m.itl_ms.median);
    assert!(m.tpot_ms.mean >= TOKEN_GAP_MS as f64 * 0.8 && m.tpot_ms.mean < 200.0);
    let min_e2el = (FIRST_TOKEN_DELAY_MS + TOKEN_GAP_MS * (out_len as u64 - 1)) as f64 * 0.9;
    assert!(m.e2el_ms.min >= min_e2el, "e2el min {}", m.e2el_ms.min);
    for rec in &r.requests {
        assert!(rec.success);
        assert!(rec.output_tokens_from_usage);
        assert_eq!(rec.content_chunks, out_len);
        assert!(rec.e2el_s >= rec.ttft_s.unwrap());
    }
    // Lantern's timing extension was read from the usage chunk.
    let q = m.server_queue_ms.as_ref().unwrap();
    assert_eq!(q.count, n);
    assert!((q.mean - 2.0).abs() < 1e-9);
    assert!((m.server_decode_ms.as_ref().unwrap().mean - 50.0).abs() < 1e-9);
    assert!(m.peak_output_throughput > 0.0);
}

#[tokio::test]
async fn completions_token_ids_with_concurrency_warmup_and_files() {
    let mock = start_mock().await;
    let base = format!("http://127.0.0.1:{}", mock.port);
    let json_path = tmp("run.json");
    let svg_path = tmp("run.svg");
    let tok = tokenizer_path();
    let args = parse(&[
        "--base-url",
        &base,
        "--model",
        "mock-model",
        "--tokenizer",
        &tok,
        "--dataset",
        "random",
        "--input-len",
        "16",
        "--output-len",
        "10",
        "--num-prompts",
        "8",
        "--max-concurrency",
        "4",
        "--warmup",
        "2",
        "--ignore-eos",
        "--seed",
        "3",
        "--slo",
        "ttft=10000,e2el=20000",
        "--disable-progress",
        "--result-json",
        json_path.to_str().unwrap(),
        "--plot",
        svg_path.to_str().unwrap(),
    ]);
    let result = run_collect(args.clone()).await.unwrap();
    check_plausible(&result, 8, 10);
    let m = &result.metrics;
    assert_eq!(m.total_input_tokens, 8 * 16);
    assert_eq!(m.good_requests, Some(8));
    assert!(
        m.peak_concurrent_requests <= 4,
        "cap respected: {}",
        m.peak_concurrent_requests
    );
    // 8 requests at once through 4 slots: the second wave waited on the client.
    assert!(
        m.client_queue_ms.max >= FIRST_TOKEN_DELAY_MS as f64 * 0.9,
        "{:?}",
        m.client_queue_ms
    );
    assert_eq!(result.warmup_requests, 2);

    // Bodies: token-id prompts of exact length, streaming with usage, ignore_eos.
    let bodies = mock.bodies();
    assert_eq!(bodies.len(), 10, "2 warm-up + 8 measured");
    for (path, b) in &bodies {
        assert_eq!(path, "/v1/completions");
        assert_eq!(b["prompt"].as_array().unwrap().len(), 16);
        assert_eq!(b["max_tokens"], 10);
        assert_eq!(b["stream"], true);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["ignore_eos"], true);
        assert_eq!(b["model"], "mock-model");
    }

    // Files: the table, the JSON with every record, the SVG, and --compare against it.
    lantern_bench::emit(&args, &result).unwrap();
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(doc["requests"].as_array().unwrap().len(), 8);
    assert_eq!(doc["metrics"]["completed"], 8);
    assert_eq!(doc["config"]["num_prompts"], 8);
    assert!(doc["requests"][0]["itl_s"].as_array().unwrap().len() == 9);
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("TTFT percentiles"));
    let mut again = args.clone();
    again.compare = Some(json_path.clone());
    again.result_json = None;
    again.plot = None;
    lantern_bench::emit(&again, &result).unwrap();
    let _ = std::fs::remove_file(&json_path);
    let _ = std::fs::remove_file(&svg_path);
}

#[tokio::test]
async fn chat_with_server_tokenizer_lora_and_failures() {
    let mock = start_mock().await;
    let base = format!("http://127.0.0.1:{}", mock.port);
    // No --model (taken from /v1/models) and no --tokenizer (server /tokenize).
    let args = parse(&[
        "--base-url",
        &base,
        "--endpoint",
        "chat",
        "--dataset",
        "lora",
        "--lora-models",
        "ad-a,ad-b",
        "--input-len",
        "12",
        "--output-len",
        "6",
        "--num-prompts",
        "8",
        "--request-rate",
        "200",
        "--disable-progress",
    ]);
    let result = run_collect(args).await.unwrap();
    check_plausible(&result, 8, 6);
    assert_eq!(result.model, "mock-model");
    let bodies = mock.bodies();
    assert_eq!(bodies.len(), 8);
    for (path, b) in &bodies {
        assert_eq!(path, "/v1/chat/completions");
        let model = b["model"].as_str().unwrap();
        assert!(model == "ad-a" || model == "ad-b");
        let text = b["messages"][0]["content"].as_str().unwrap();
        assert_eq!(
            mock::tokenize(text).len(),
            12,
            "exact prompt length via /tokenize"
        );
    }
    // Arrivals were spread out (rate 200/s over 8 requests -> last at 40 ms).
    let last = result
        .requests
        .iter()
        .map(|r| r.scheduled_s)
        .fold(0.0, f64::max);
    assert!((last - 0.04).abs() < 1e-9, "{last}");

    // A broken adapter: its requests fail with a counted reason, the rest succeed.
    let args = parse(&[
        "--base-url",
        &base,
        "--model",
        "mock-model",
        "--tokenizer",
        &tokenizer_path(),
        "--dataset",
        "lora",
        "--lora-models",
        "ok,broken",
        "--input-len",
        "8",
        "--output-len",
        "4",
        "--num-prompts",
        "8",
        "--seed",
        "1",
        "--disable-progress",
    ]);
    let result = run_collect(args).await.unwrap();
    let m = &result.metrics;
    let broken = result
        .requests
        .iter()
        .filter(|r| r.model == "broken")
        .count();
    assert!(
        broken > 0 && broken < 8,
        "seed 1 picks both adapters ({broken})"
    );
    assert_eq!(m.failed, broken);
    assert_eq!(m.completed, 8 - broken);
    assert_eq!(m.failure_reasons.get("http 404"), Some(&broken));
    assert_eq!(m.per_model["broken"].failed, broken);
    assert_eq!(m.per_model["ok"].completed, 8 - broken);
    let failed = result.requests.iter().find(|r| !r.success).unwrap();
    assert!(failed
        .error
        .as_deref()
        .unwrap()
        .contains("adapter `broken` not found"));
}

#[tokio::test]
async fn unreachable_server_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let args = parse(&[
        "--base-url",
        &format!("http://127.0.0.1:{port}"),
        "--num-prompts",
        "2",
        "--disable-progress",
    ]);
    let err = run_collect(args).await.err().unwrap();
    let msg = format!("{err:#}");
    assert!(msg.contains("cannot reach"), "{msg}");
}

#[tokio::test]
async fn embedded_starts_benchmarks_and_stops_the_server() {
    let bin = env!("CARGO_BIN_EXE_lantern-bench-mock");
    let log = tmp("serve.log");
    let args = parse(&[
        "--embedded",
        "--server-bin",
        bin,
        "--serve-log",
        log.to_str().unwrap(),
        "--serve-args",
        "--first-token-ms 30 --token-gap-ms 8",
        "--tokenizer",
        &tokenizer_path(),
        "--input-len",
        "8",
        "--output-len",
        "5",
        "--num-prompts",
        "8",
        "--disable-progress",
        "--health-timeout",
        "30",
        "--",
        "--ignored-by-mock",
        "x",
    ]);
    let result = run_collect(args).await.unwrap();
    check_plausible(&result, 8, 5);
    assert!(result.base_url.starts_with("http://127.0.0.1:"));
    assert_eq!(
        result.model, "mock-model",
        "model from /v1/models of the embedded server"
    );
    // The server was stopped: its port no longer accepts connections.
    let addr = result.base_url.trim_start_matches("http://").to_string();
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(&addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "embedded server still listening on {addr}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("listening on http://127.0.0.1:"), "{text}");
    let _ = std::fs::remove_file(&log);
}
