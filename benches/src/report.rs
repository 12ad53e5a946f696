//! The result document (`--result-json`), the plain-text table, and `--compare`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::metrics::{Metrics, RequestRecord, Stats, Timeline};
use crate::structured::StructuredStats;

/// Everything one run produced; this is what `--result-json` writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchResult {
    /// Always `lantern-bench`.
    pub tool: String,
    /// Crate version that wrote the file.
    pub version: String,
    /// `--label`.
    pub label: Option<String>,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix_s: u64,
    /// Base URL benchmarked.
    pub base_url: String,
    /// Model name sent (when no adapter overrides it).
    pub model: String,
    /// Where prompt token counts came from.
    pub tokenizer: String,
    /// The command-line configuration.
    pub config: Value,
    /// Warm-up requests sent before measuring, and how many of them failed.
    pub warmup_requests: usize,
    /// Failed warm-up requests.
    pub warmup_failed: usize,
    /// Every figure.
    pub metrics: Metrics,
    /// `--structured-output`: the preset and the server's mask time per token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured: Option<StructuredStats>,
    /// Per-second series.
    pub timeline: Timeline,
    /// Every measured request.
    pub requests: Vec<RequestRecord>,
}

/// `YYYYMMDD-HHMMSS` (UTC) of a Unix time: the form of `vllm bench serve`'s `date`.
fn chrono_free_date(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// `p99` for 99, `p99.9` for 99.9 (how `vllm bench serve` names its percentile keys).
fn p_word(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("p{}", p as i64)
    } else {
        format!("p{p}")
    }
}

impl BenchResult {
    /// The keys of `vllm bench serve`'s result file (vLLM 0.34, `vllm/benchmarks/serve.py`),
    /// so dashboards and comparison scripts built for vLLM read ours unchanged: run facts,
    /// totals and throughputs, per-request lists (seconds, as vLLM writes them) and
    /// `{mean,median,std,pNN}_{ttft,tpot,itl,e2el}_ms`.
    pub fn vllm_keys(&self) -> serde_json::Map<String, Value> {
        let m = &self.metrics;
        let c = &self.config;
        let mut o = serde_json::Map::new();
        let date = chrono_free_date(self.started_unix_s);
        let backend = match c.get("endpoint").and_then(Value::as_str) {
            Some("chat") => "openai-chat",
            _ => "openai",
        };
        let ok: Vec<&RequestRecord> = self.requests.iter().collect();
        let entries: Vec<(&str, Value)> = vec![
            ("date", json!(date)),
            ("backend", json!(backend)),
            ("model_id", json!(self.model)),
            ("tokenizer_id", json!(self.tokenizer)),
            (
                "num_prompts",
                c.get("num_prompts").cloned().unwrap_or(Value::Null),
            ),
            (
                "request_rate",
                c.get("request_rate").cloned().unwrap_or(Value::Null),
            ),
            (
                "burstiness",
                c.get("burstiness").cloned().unwrap_or(Value::Null),
            ),
            (
                "max_concurrency",
                c.get("max_concurrency").cloned().unwrap_or(Value::Null),
            ),
            ("duration", json!(m.duration_s)),
            ("completed", json!(m.completed)),
            ("failed", json!(m.failed)),
            ("total_input_tokens", json!(m.total_input_tokens)),
            ("total_output_tokens", json!(m.total_output_tokens)),
            ("request_throughput", json!(m.request_throughput)),
            ("request_goodput", json!(m.request_goodput)),
            ("output_throughput", json!(m.output_throughput)),
            ("total_token_throughput", json!(m.total_token_throughput)),
            ("max_output_tokens_per_s", json!(m.peak_output_throughput)),
            ("max_concurrent_requests", json!(m.peak_concurrent_requests)),
            (
                "input_lens",
                json!(ok.iter().map(|r| r.prompt_len).collect::<Vec<_>>()),
            ),
            (
                "output_lens",
                json!(ok
                    .iter()
                    .map(|r| if r.success { r.output_tokens } else { 0 })
                    .collect::<Vec<_>>()),
            ),
            (
                "ttfts",
                json!(ok
                    .iter()
                    .map(|r| r.ttft_s.unwrap_or(0.0))
                    .collect::<Vec<_>>()),
            ),
            (
                "itls",
                json!(ok.iter().map(|r| r.itl_s.clone()).collect::<Vec<_>>()),
            ),
            (
                "latencies",
                json!(ok.iter().map(|r| r.e2el_s).collect::<Vec<_>>()),
            ),
            (
                "start_times",
                json!(ok.iter().map(|r| r.start_s).collect::<Vec<_>>()),
            ),
            (
                "queue_times",
                json!(ok.iter().map(|r| r.client_queue_s).collect::<Vec<_>>()),
            ),
            (
                "errors",
                json!(ok
                    .iter()
                    .map(|r| r.error.clone().unwrap_or_default())
                    .collect::<Vec<_>>()),
            ),
        ];
        for (k, v) in entries {
            o.insert(k.to_string(), v);
        }
        for (name, st) in [
            ("ttft", &m.ttft_ms),
            ("tpot", &m.tpot_ms),
            ("itl", &m.itl_ms),
            ("e2el", &m.e2el_ms),
        ] {
            o.insert(format!("mean_{name}_ms"), json!(st.mean));
            o.insert(format!("median_{name}_ms"), json!(st.median));
            o.insert(format!("std_{name}_ms"), json!(st.std));
            for (p, v) in &st.percentiles {
                o.insert(format!("{}_{name}_ms", p_word(*p)), json!(v));
            }
        }
        o
    }

    /// Writes the document as pretty JSON: Lantern's own keys, then `vllm bench serve`'s
    /// ([`Self::vllm_keys`]).
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let mut doc = serde_json::to_value(self).context("serializing the result")?;
        if let Value::Object(o) = &mut doc {
            for (k, v) in self.vllm_keys() {
                o.entry(k).or_insert(v);
            }
        }
        let text = serde_json::to_string_pretty(&doc).context("serializing the result")?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("--result-json: cannot create {}", dir.display()))?;
        }
        std::fs::write(path, text)
            .with_context(|| format!("--result-json: cannot write {}", path.display()))
    }
}

const WIDTH: usize = 50;

fn line(out: &mut String, label: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{label:<40} {value}");
}

fn title(out: &mut String, t: &str, fill: char) {
    let n = WIDTH.saturating_sub(t.chars().count());
    let left = n / 2;
    let f = |k| std::iter::repeat_n(fill, k).collect::<String>();
    let _ = writeln!(out, "{}{}{}", f(left), t, f(n - left));
}

fn pct_label(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("P{}", p as u64)
    } else {
        format!("P{p}")
    }
}

fn stats_block(out: &mut String, heading: &str, short: &str, s: &Stats) {
    title(out, heading, '-');
    line(
        out,
        &format!("Mean {short} (ms):"),
        format!("{:.2}", s.mean),
    );
    line(
        out,
        &format!("Median {short} (ms):"),
        format!("{:.2}", s.median),
    );
    for (p, v) in &s.percentiles {
        if (*p - 50.0).abs() < 1e-9 {
            continue;
        }
        line(
            out,
            &format!("{} {short} (ms):", pct_label(*p)),
            format!("{v:.2}"),
        );
    }
}

/// The vLLM-style plain-text table.
pub fn render_table(r: &BenchResult, max_concurrency: Option<usize>, rate: &str) -> String {
    let m = &r.metrics;
    let mut out = String::new();
    title(&mut out, " Serving Benchmark Result ", '=');
    line(&mut out, "Successful requests:", m.completed);
    line(&mut out, "Failed requests:", m.failed);
    for (reason, n) in &m.failure_reasons {
        line(&mut out, &format!("  {reason}:"), n);
    }
    if let Some(c) = max_concurrency {
        line(&mut out, "Maximum request concurrency:", c);
    }
    line(&mut out, "Request rate configured (RPS):", rate);
    line(
        &mut out,
        "Benchmark duration (s):",
        format!("{:.2}", m.duration_s),
    );
    line(&mut out, "Total input tokens:", m.total_input_tokens);
    line(&mut out, "Total generated tokens:", m.total_output_tokens);
    line(
        &mut out,
        "Request throughput (req/s):",
        format!("{:.2}", m.request_throughput),
    );
    if let Some(g) = m.request_goodput {
        line(&mut out, "Request goodput (req/s):", format!("{g:.2}"));
    }
    line(
        &mut out,
        "Output token throughput (tok/s):",
        format!("{:.2}", m.output_throughput),
    );
    line(
        &mut out,
        "Peak output token throughput (tok/s):",
        format!("{:.2}", m.peak_output_throughput),
    );
    line(
        &mut out,
        "Peak concurrent requests:",
        m.peak_concurrent_requests,
    );
    line(
        &mut out,
        "Total token throughput (tok/s):",
        format!("{:.2}", m.total_token_throughput),
    );
    stats_block(&mut out, "Time to First Token", "TTFT", &m.ttft_ms);
    stats_block(
        &mut out,
        "Time per Output Token (excl. 1st token)",
        "TPOT",
        &m.tpot_ms,
    );
    stats_block(&mut out, "Inter-token Latency", "ITL", &m.itl_ms);
    stats_block(&mut out, "End-to-end Latency", "E2EL", &m.e2el_ms);
    if max_concurrency.is_some() || m.client_queue_ms.max > 0.0 {
        stats_block(
            &mut out,
            "Client Queueing Time",
            "queue",
            &m.client_queue_ms,
        );
    }
    if let Some(s) = &m.server_queue_ms {
        stats_block(&mut out, "Server Queue Time (Lantern)", "queue", s);
    }
    if let Some(s) = &m.server_prefill_ms {
        stats_block(&mut out, "Server Prefill Time (Lantern)", "prefill", s);
    }
    if let Some(s) = &m.server_decode_ms {
        stats_block(&mut out, "Server Decode Time (Lantern)", "decode", s);
    }
    if !m.per_model.is_empty() {
        title(&mut out, "Per Model (adapter)", '-');
        let _ = writeln!(
            out,
            "{:<20}{:>6}{:>6}{:>10}{:>10}{:>10}{:>10}",
            "model", "ok", "fail", "TTFT ms", "P99 TTFT", "TPOT ms", "E2EL ms"
        );
        for (name, s) in &m.per_model {
            let short: String = name.chars().take(19).collect();
            let _ = writeln!(
                out,
                "{short:<20}{:>6}{:>6}{:>10.2}{:>10.2}{:>10.2}{:>10.2}",
                s.completed,
                s.failed,
                s.ttft_ms_mean,
                s.ttft_ms_p99,
                s.tpot_ms_mean,
                s.e2el_ms_mean
            );
        }
    }
    if let Some(st) = &r.structured {
        title(&mut out, "Structured Outputs", '-');
        line(
            &mut out,
            "Constraint:",
            serde_json::to_value(st.preset)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        );
        match (st.masks, st.mask_ms_per_token) {
            (Some(n), Some(ms)) => {
                line(&mut out, "Masks computed (server):", n);
                line(
                    &mut out,
                    "Mean mask time per token (ms):",
                    format!("{ms:.4}"),
                );
            }
            (Some(n), None) => line(&mut out, "Masks computed (server):", n),
            _ => line(
                &mut out,
                "Mask time per token:",
                "n/a (no Lantern /metrics)",
            ),
        }
    }
    let _ = writeln!(out, "{}", "=".repeat(WIDTH));
    if m.requests_without_usage > 0 {
        let _ = writeln!(
            out,
            "note: {} requests had no usage chunk; their output tokens were counted as content chunks",
            m.requests_without_usage
        );
    }
    out
}

/// One row of `--compare`.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// Metric name.
    pub name: String,
    /// Old value.
    pub old: f64,
    /// New value.
    pub new: f64,
    /// `new - old`.
    pub abs: f64,
    /// `(new - old) / old * 100` (None when old is 0).
    pub pct: Option<f64>,
    /// Whether the change is an improvement (throughput up, latency down).
    pub better: Option<bool>,
}

fn get(v: &Value, path: &str) -> Option<f64> {
    let mut cur = v;
    for key in path.split('.') {
        cur = cur.get(key)?;
    }
    cur.as_f64()
}

fn stat_pct(v: &Value, metric: &str, p: f64) -> Option<f64> {
    v.get(metric)?
        .get("percentiles")?
        .as_array()?
        .iter()
        .find_map(|pair| {
            let a = pair.as_array()?;
            let q = a.first()?.as_f64()?;
            ((q - p).abs() < 1e-9).then(|| a.get(1)?.as_f64()).flatten()
        })
}

/// Key metrics of two `metrics` objects, with absolute and relative changes.
/// Metrics missing from either side are skipped.
pub fn compare(old: &Value, new: &Value) -> Vec<Delta> {
    let mut rows: Vec<(String, Option<f64>, Option<f64>, bool)> = Vec::new();
    for (name, higher_better) in [
        ("request_throughput", true),
        ("request_goodput", true),
        ("output_throughput", true),
        ("total_token_throughput", true),
        ("peak_output_throughput", true),
    ] {
        rows.push((name.into(), get(old, name), get(new, name), higher_better));
    }
    for metric in ["ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"] {
        for stat in ["mean", "median"] {
            let path = format!("{metric}.{stat}");
            rows.push((path.clone(), get(old, &path), get(new, &path), false));
        }
        for p in [90.0, 99.0] {
            rows.push((
                format!("{metric}.{}", pct_label(p).to_lowercase()),
                stat_pct(old, metric, p),
                stat_pct(new, metric, p),
                false,
            ));
        }
    }
    rows.into_iter()
        .filter_map(|(name, o, n, higher_better)| {
            let (old, new) = (o?, n?);
            let abs = new - old;
            let pct = (old != 0.0).then(|| abs / old * 100.0);
            let better = (abs != 0.0).then_some((abs > 0.0) == higher_better);
            Some(Delta {
                name,
                old,
                new,
                abs,
                pct,
                better,
            })
        })
        .collect()
}

/// Reads `--compare FILE` and renders the delta table against `new`.
pub fn compare_file(path: &Path, new: &BenchResult) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--compare: cannot read {}", path.display()))?;
    let old: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "--compare: {} is not JSON (expected a --result-json file)",
            path.display()
        )
    })?;
    let old_metrics = old.get("metrics").with_context(|| {
        format!(
            "--compare: {} has no `metrics` (expected a --result-json file)",
            path.display()
        )
    })?;
    let new_metrics = serde_json::to_value(&new.metrics).context("serializing metrics")?;
    Ok(render_compare(
        &compare(old_metrics, &new_metrics),
        &path.display().to_string(),
    ))
}

/// Plain-text delta table.
pub fn render_compare(rows: &[Delta], old_name: &str) -> String {
    let mut out = String::new();
    title(&mut out, " Comparison ", '=');
    let _ = writeln!(out, "old: {old_name}");
    let _ = writeln!(
        out,
        "{:<26}{:>12}{:>12}{:>12}{:>10}",
        "metric", "old", "new", "delta", "delta %"
    );
    for d in rows {
        let pct = d
            .pct
            .map(|p| format!("{p:+.1}%"))
            .unwrap_or_else(|| "n/a".into());
        let mark = match d.better {
            Some(true) => " better",
            Some(false) => " worse",
            None => "",
        };
        let _ = writeln!(
            out,
            "{:<26}{:>12.2}{:>12.2}{:>+12.2}{:>10}{mark}",
            d.name, d.old, d.new, d.abs, pct
        );
    }
    let _ = writeln!(out, "{}", "=".repeat(WIDTH));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::metrics::{compute, record};
    use serde_json::json;

    fn result(metrics: Metrics) -> BenchResult {
        BenchResult {
            tool: "lantern-bench".into(),
            version: "0".into(),
            label: None,
            started_unix_s: 0,
            base_url: "http://x".into(),
            model: "m".into(),
            tokenizer: "local".into(),
            config: json!({}),
            warmup_requests: 0,
            warmup_failed: 0,
            metrics,
            structured: None,
            timeline: Timeline::default(),
            requests: vec![],
        }
    }

    #[test]
    fn vllm_bench_keys_are_written_beside_ours() {
        let recs = vec![
            record(0.0, 0.1, &[0.02, 0.03], 3),
            record(0.1, 0.2, &[0.05], 2),
        ];
        let mut r = result(compute(&recs, 1.0, &[50.0, 99.0, 99.9], None));
        r.requests = recs;
        r.started_unix_s = 1_764_938_096; // 2025-12-05 12:34:56 UTC
        r.config = json!({"endpoint": "chat", "num_prompts": 2, "max_concurrency": 4});
        let k = r.vllm_keys();
        assert_eq!(k["date"], "20251205-123456");
        assert_eq!(k["backend"], "openai-chat");
        assert_eq!(k["completed"], 2);
        assert_eq!(k["num_prompts"], 2);
        for key in [
            "median_ttft_ms",
            "p99_itl_ms",
            "p99.9_e2el_ms",
            "mean_tpot_ms",
            "std_ttft_ms",
        ] {
            assert!(k[key].is_number(), "{key}: {k:?}");
        }
        assert_eq!(k["output_throughput"], json!(r.metrics.output_throughput));
        assert_eq!(k["ttfts"], json!([0.1, 0.2]));
        assert_eq!(k["input_lens"].as_array().unwrap().len(), 2);
        let dir = std::env::temp_dir().join(format!("lantern-vllm-keys-{}", std::process::id()));
        let path = dir.join("r.json");
        r.write_json(&path).unwrap();
        let back: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(back["median_ttft_ms"].is_number() && back["metrics"].is_object());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn compare_deltas() {
        let old = json!({
            "request_throughput": 10.0,
            "output_throughput": 1000.0,
            "ttft_ms": {"mean": 100.0, "median": 90.0, "percentiles": [[50.0, 90.0], [99.0, 300.0]]},
        });
        let new = json!({
            "request_throughput": 12.0,
            "output_throughput": 900.0,
            "ttft_ms": {"mean": 80.0, "median": 90.0, "percentiles": [[50.0, 90.0], [99.0, 330.0]]},
        });
        let rows = compare(&old, &new);
        let find = |n: &str| rows.iter().find(|d| d.name == n).unwrap().clone();
        let rt = find("request_throughput");
        assert_eq!((rt.abs, rt.pct, rt.better), (2.0, Some(20.0), Some(true)));
        let ot = find("output_throughput");
        assert_eq!(
            (ot.abs, ot.pct, ot.better),
            (-100.0, Some(-10.0), Some(false))
        );
        let tm = find("ttft_ms.mean");
        assert_eq!(
            (tm.abs, tm.pct, tm.better),
            (-20.0, Some(-20.0), Some(true))
        );
        assert_eq!(find("ttft_ms.median").better, None);
        let p99 = find("ttft_ms.p99");
        assert!((p99.pct.unwrap() - 10.0).abs() < 1e-9);
        assert_eq!(p99.better, Some(false));
        assert!(
            rows.iter().all(|d| d.name != "tpot_ms.mean"),
            "missing metrics are skipped"
        );
        let text = render_compare(&rows, "old.json");
        assert!(text.contains("+20.0%"));
    }

    #[test]
    fn compare_round_trips_through_result_json() {
        let recs = vec![
            record(0.0, 0.1, &[0.02, 0.02], 3),
            record(0.1, 0.2, &[0.03], 2),
        ];
        let m = compute(&recs, 1.0, &[50.0, 99.0], None);
        let r = result(m.clone());
        let dir = std::env::temp_dir().join(format!("lantern-bench-test-{}", std::process::id()));
        let path = dir.join("old.json");
        r.write_json(&path).unwrap();
        let back: BenchResult =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back.metrics, m);
        let text = compare_file(&path, &r).unwrap();
        assert!(text.contains("ttft_ms.p99"));
        assert!(text.contains("+0.0%"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn table_has_vllm_headings() {
        let recs = vec![record(0.0, 0.1, &[0.02, 0.02], 3)];
        let mut m = compute(&recs, 1.0, &[50.0, 90.0, 95.0, 99.0], None);
        m.failure_reasons.insert("http 503".into(), 2);
        let text = render_table(&result(m), Some(4), "inf");
        assert!(text.starts_with("============ Serving Benchmark Result ============\n"));
        for needle in [
            "Successful requests:                     1\n",
            "  http 503:",
            "Maximum request concurrency:             4",
            "---------------Time to First Token----------------",
            "-----Time per Output Token (excl. 1st token)------",
            "---------------Inter-token Latency----------------",
            "----------------End-to-end Latency----------------",
            "P99 TTFT (ms):",
            "P95 ITL (ms):",
            "Median E2EL (ms):",
            "Peak output token throughput (tok/s):",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}
