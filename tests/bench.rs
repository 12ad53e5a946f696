//! `lantern bench --embedded` end to end against the real server on a tiny model:
//! one command starts the server, runs the load, writes the report and stops the server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

#[test]
fn bench_embedded_against_a_tiny_model() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-e2e");
    std::fs::create_dir_all(&out).unwrap();
    let json = out.join("result.json");
    let svg = out.join("plot.svg");
    let _ = std::fs::remove_file(&json);
    let output = Command::new(env!("CARGO_BIN_EXE_lantern"))
        .args(["bench", "--embedded", "--model"])
        .arg(repo.join("tests/fixtures/tiny-llama"))
        .args([
            "--dataset",
            "random",
            "--input-len",
            "32",
            "--output-len",
            "8",
            "--num-prompts",
            "16",
            "--max-concurrency",
            "4",
            "--request-rate",
            "inf",
            "--ignore-eos",
            "--seed",
            "1",
            "--disable-progress",
            "--serve-args",
            "--kv-cache-memory 64MiB",
            "--result-json",
        ])
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("Serving Benchmark Result"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let m = &v["metrics"];
    assert_eq!(m["completed"], 16, "{m}");
    assert_eq!(m["failed"], 0, "{m}");
    assert_eq!(m["total_input_tokens"], 16 * 32);
    assert_eq!(m["total_output_tokens"], 16 * 8);
    assert!(m["ttft_ms"]["mean"].as_f64().unwrap() > 0.0);
    assert!(m["itl_ms"]["mean"].as_f64().unwrap() > 0.0);
    // Lantern's own per-request timing extension was read.
    assert!(m["server_prefill_ms"].is_object(), "{m}");
    assert_eq!(v["requests"].as_array().unwrap().len(), 16);
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") || plot.contains("<svg"));
}
