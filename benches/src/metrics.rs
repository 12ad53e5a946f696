//! Per-request records and the figures computed from them.
//!
//! Percentiles use linear interpolation between closest ranks (numpy's default):
//! for sorted `x` of length `n`, `h = (n-1)·p/100`, value `x[⌊h⌋] + (h-⌊h⌋)(x[⌊h⌋+1]-x[⌊h⌋])`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::args::Slo;
use crate::client::ServerTiming;

/// Everything measured about one request. Times are seconds; `*_s` offsets are from the
/// start of the measured run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Position in the dataset.
    pub index: usize,
    /// `model` sent (base model or adapter).
    pub model: String,
    /// Prompt tokens (dataset count).
    pub prompt_len: usize,
    /// `max_tokens` requested.
    pub max_tokens: usize,
    /// Planned arrival offset.
    pub scheduled_s: f64,
    /// When the request actually arrived at the client's dispatcher.
    pub arrival_s: f64,
    /// When it was sent (after waiting for a `--max-concurrency` slot).
    pub start_s: f64,
    /// Client-side queueing: `start_s - arrival_s`.
    pub client_queue_s: f64,
    /// Completed without error.
    pub success: bool,
    /// Failure class (counted in the report).
    pub error_kind: Option<String>,
    /// Failure details.
    pub error: Option<String>,
    /// Time to first content chunk.
    pub ttft_s: Option<f64>,
    /// Time per output token after the first: `(e2el - ttft) / (output_tokens - 1)`.
    pub tpot_s: Option<f64>,
    /// Gaps between content chunks.
    pub itl_s: Vec<f64>,
    /// Send to end of stream (or failure).
    pub e2el_s: f64,
    /// Output tokens (usage, or content chunks when usage is missing).
    pub output_tokens: usize,
    /// Whether `output_tokens` came from the usage chunk.
    pub output_tokens_from_usage: bool,
    /// `usage.prompt_tokens` as the server counted it (includes chat template tokens).
    pub server_prompt_tokens: Option<usize>,
    /// Content-carrying chunks received.
    pub content_chunks: usize,
    /// Characters generated.
    pub generated_chars: usize,
    /// Lantern server-side timing, when reported.
    pub server_timing: Option<ServerTiming>,
}

/// Summary of one latency distribution, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Number of samples.
    pub count: usize,
    /// Mean.
    pub mean: f64,
    /// Median (P50).
    pub median: f64,
    /// Population standard deviation.
    pub std: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Requested percentiles, `(p, value)`.
    pub percentiles: Vec<(f64, f64)>,
}

impl Stats {
    /// Value at percentile `p` when it was requested.
    pub fn at(&self, p: f64) -> Option<f64> {
        self.percentiles
            .iter()
            .find(|(q, _)| (q - p).abs() < 1e-9)
            .map(|(_, v)| *v)
    }
}

/// Numpy-style linear-interpolation percentile of sorted data (`p` in [0, 100]).
/// Empty input gives 0.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        1 => sorted[0],
        n => {
            let h = (n - 1) as f64 * (p / 100.0).clamp(0.0, 1.0);
            let lo = h.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
        }
    }
}

/// Summary of `values` (any unit), with the given percentiles.
pub fn stats(values: &[f64], ps: &[f64]) -> Stats {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Stats {
            percentiles: ps.iter().map(|p| (*p, 0.0)).collect(),
            ..Stats::default()
        };
    }
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    Stats {
        count: v.len(),
        mean,
        median: percentile(&v, 50.0),
        std: var.sqrt(),
        min: v[0],
        max: v[v.len() - 1],
        percentiles: ps.iter().map(|p| (*p, percentile(&v, *p))).collect(),
    }
}

fn ms(xs: impl IntoIterator<Item = f64>) -> Vec<f64> {
    xs.into_iter().map(|x| x * 1000.0).collect()
}

/// Every figure of the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Successful requests.
    pub completed: usize,
    /// Failed requests.
    pub failed: usize,
    /// Failure class -> count.
    pub failure_reasons: BTreeMap<String, usize>,
    /// Wall time of the measured run (first send scheduled to last response).
    pub duration_s: f64,
    /// Prompt tokens of successful requests.
    pub total_input_tokens: usize,
    /// Output tokens of successful requests.
    pub total_output_tokens: usize,
    /// Successful requests per second.
    pub request_throughput: f64,
    /// Requests meeting every SLO per second (when `--slo` is given).
    pub request_goodput: Option<f64>,
    /// Requests meeting every SLO.
    pub good_requests: Option<usize>,
    /// Output tokens per second.
    pub output_throughput: f64,
    /// Input + output tokens per second.
    pub total_token_throughput: f64,
    /// Most output tokens in any 1-second window, per second.
    pub peak_output_throughput: f64,
    /// Most requests in flight at once (sweep over [start, end) intervals).
    pub peak_concurrent_requests: usize,
    /// Time to first token (ms).
    pub ttft_ms: Stats,
    /// Time per output token, excluding the first (ms).
    pub tpot_ms: Stats,
    /// Inter-token latency (ms), over all chunk gaps of all requests.
    pub itl_ms: Stats,
    /// End-to-end latency (ms).
    pub e2el_ms: Stats,
    /// Client-side queueing for a concurrency slot (ms).
    pub client_queue_ms: Stats,
    /// Lantern server queue time (ms), when reported.
    pub server_queue_ms: Option<Stats>,
    /// Lantern server prefill time (ms), when reported.
    pub server_prefill_ms: Option<Stats>,
    /// Lantern server decode time (ms), when reported.
    pub server_decode_ms: Option<Stats>,
    /// Successful requests whose output token count came from chunk counting.
    pub requests_without_usage: usize,
    /// Per-`model` breakdown (LoRA adapters), present when requests used more than one
    /// model name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_model: BTreeMap<String, ModelSummary>,
}

/// Figures of the requests sent to one `model` (adapter).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// Successful requests.
    pub completed: usize,
    /// Failed requests.
    pub failed: usize,
    /// Output tokens of successful requests.
    pub output_tokens: usize,
    /// Mean TTFT (ms).
    pub ttft_ms_mean: f64,
    /// P99 TTFT (ms).
    pub ttft_ms_p99: f64,
    /// Mean TPOT (ms).
    pub tpot_ms_mean: f64,
    /// Mean E2EL (ms).
    pub e2el_ms_mean: f64,
}

fn per_model(records: &[RequestRecord]) -> BTreeMap<String, ModelSummary> {
    let mut groups: BTreeMap<&str, Vec<&RequestRecord>> = BTreeMap::new();
    for r in records {
        groups.entry(r.model.as_str()).or_default().push(r);
    }
    if groups.len() < 2 {
        return BTreeMap::new();
    }
    groups
        .into_iter()
        .map(|(name, rs)| {
            let ok: Vec<&&RequestRecord> = rs.iter().filter(|r| r.success).collect();
            let ttft = stats(&ms(ok.iter().filter_map(|r| r.ttft_s)), &[99.0]);
            let summary = ModelSummary {
                completed: ok.len(),
                failed: rs.len() - ok.len(),
                output_tokens: ok.iter().map(|r| r.output_tokens).sum(),
                ttft_ms_mean: ttft.mean,
                ttft_ms_p99: ttft.at(99.0).unwrap_or(0.0),
                tpot_ms_mean: stats(&ms(ok.iter().filter_map(|r| r.tpot_s)), &[]).mean,
                e2el_ms_mean: stats(&ms(ok.iter().map(|r| r.e2el_s)), &[]).mean,
            };
            (name.to_string(), summary)
        })
        .collect()
}

/// TPOT of one request: `(e2el - ttft) / (out - 1)` when it produced more than one token.
pub fn tpot(e2el_s: f64, ttft_s: Option<f64>, output_tokens: usize) -> Option<f64> {
    let ttft = ttft_s?;
    (output_tokens > 1).then(|| (e2el_s - ttft) / (output_tokens - 1) as f64)
}

/// Whether a successful request meets every SLO that is set. TPOT of a request with at
/// most one token counts as 0; a request without a first token misses a TTFT SLO.
pub fn meets_slo(r: &RequestRecord, slo: &Slo) -> bool {
    if !r.success {
        return false;
    }
    if let Some(bound) = slo.ttft_ms {
        match r.ttft_s {
            Some(t) if t * 1000.0 <= bound => {}
            _ => return false,
        }
    }
    if let Some(bound) = slo.tpot_ms {
        if r.tpot_s.unwrap_or(0.0) * 1000.0 > bound {
            return false;
        }
    }
    if let Some(bound) = slo.e2el_ms {
        if r.e2el_s * 1000.0 > bound {
            return false;
        }
    }
    true
}

/// Times (offsets from the run start) and token weights of each content chunk of a
/// successful request; a request's output tokens are spread evenly over its chunks.
pub(crate) fn token_events(records: &[RequestRecord]) -> Vec<(f64, f64)> {
    let mut ev = Vec::new();
    for r in records.iter().filter(|r| r.success) {
        let Some(ttft) = r.ttft_s else { continue };
        let chunks = r.itl_s.len() + 1;
        let w = r.output_tokens as f64 / chunks as f64;
        let mut t = r.start_s + ttft;
        ev.push((t, w));
        for gap in &r.itl_s {
            t += gap;
            ev.push((t, w));
        }
    }
    ev.sort_by(|a, b| a.0.total_cmp(&b.0));
    ev
}

/// Most output tokens received in any window `[t, t + 1 s)`.
pub fn peak_output_throughput(records: &[RequestRecord]) -> f64 {
    let ev = token_events(records);
    let mut best = 0.0f64;
    let mut sum = 0.0;
    let mut lo = 0;
    for hi in 0..ev.len() {
        sum += ev[hi].1;
        while ev[hi].0 - ev[lo].0 >= 1.0 {
            sum -= ev[lo].1;
            lo += 1;
        }
        best = best.max(sum);
    }
    best
}

/// Most requests in flight at once over half-open `[start, start + e2el)` intervals.
pub fn peak_concurrency(records: &[RequestRecord]) -> usize {
    let mut ev: Vec<(f64, i32)> = Vec::with_capacity(records.len() * 2);
    for r in records {
        ev.push((r.start_s, 1));
        ev.push((r.start_s + r.e2el_s, -1));
    }
    // Departures before arrivals at the same instant.
    ev.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut cur, mut best) = (0i32, 0i32);
    for (_, d) in ev {
        cur += d;
        best = best.max(cur);
    }
    usize::try_from(best).unwrap_or(0)
}

/// Per-second series for plots: output tokens received and requests in flight.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// Output tokens received in second `i` of the run.
    pub output_tokens_per_s: Vec<f64>,
    /// Requests in flight at any point of second `i`.
    pub running_requests: Vec<usize>,
}

/// Builds the per-second series over `duration_s`.
pub fn timeline(records: &[RequestRecord], duration_s: f64) -> Timeline {
    let n = (duration_s.max(0.0).ceil() as usize).max(1);
    let mut tokens = vec![0.0; n];
    for (t, w) in token_events(records) {
        let i = (t.max(0.0) as usize).min(n - 1);
        tokens[i] += w;
    }
    let mut running = vec![0usize; n];
    for r in records {
        let a = (r.start_s.max(0.0) as usize).min(n - 1);
        let b = ((r.start_s + r.e2el_s).max(0.0).ceil() as usize).clamp(a + 1, n);
        for slot in &mut running[a..b] {
            *slot += 1;
        }
    }
    Timeline {
        output_tokens_per_s: tokens,
        running_requests: running,
    }
}

/// Computes every figure from the records of a run that lasted `duration_s`.
pub fn compute(
    records: &[RequestRecord],
    duration_s: f64,
    ps: &[f64],
    slo: Option<&Slo>,
) -> Metrics {
    let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.success).collect();
    let mut failure_reasons = BTreeMap::new();
    for r in records.iter().filter(|r| !r.success) {
        let k = r.error_kind.clone().unwrap_or_else(|| "unknown".into());
        *failure_reasons.entry(k).or_insert(0) += 1;
    }
    let total_input: usize = ok.iter().map(|r| r.prompt_len).sum();
    let total_output: usize = ok.iter().map(|r| r.output_tokens).sum();
    let dur = if duration_s > 0.0 {
        duration_s
    } else {
        f64::MIN_POSITIVE
    };
    let good = slo.map(|s| ok.iter().filter(|r| meets_slo(r, s)).count());
    let server = |f: fn(&ServerTiming) -> Option<f64>| -> Option<Stats> {
        let v: Vec<f64> = ok
            .iter()
            .filter_map(|r| r.server_timing.as_ref().and_then(f))
            .map(|x| x * 1000.0)
            .collect();
        (!v.is_empty()).then(|| stats(&v, ps))
    };
    Metrics {
        completed: ok.len(),
        failed: records.len() - ok.len(),
        failure_reasons,
        duration_s,
        total_input_tokens: total_input,
        total_output_tokens: total_output,
        request_throughput: ok.len() as f64 / dur,
        request_goodput: good.map(|g| g as f64 / dur),
        good_requests: good,
        output_throughput: total_output as f64 / dur,
        total_token_throughput: (total_input + total_output) as f64 / dur,
        peak_output_throughput: peak_output_throughput(records),
        peak_concurrent_requests: peak_concurrency(
            &ok.iter().map(|r| (*r).clone()).collect::<Vec<_>>(),
        ),
        ttft_ms: stats(&ms(ok.iter().filter_map(|r| r.ttft_s)), ps),
        tpot_ms: stats(&ms(ok.iter().filter_map(|r| r.tpot_s)), ps),
        itl_ms: stats(&ms(ok.iter().flat_map(|r| r.itl_s.iter().copied())), ps),
        e2el_ms: stats(&ms(ok.iter().map(|r| r.e2el_s)), ps),
        client_queue_ms: stats(&ms(records.iter().map(|r| r.client_queue_s)), ps),
        server_queue_ms: server(|t| t.queue_s),
        server_prefill_ms: server(|t| t.prefill_s),
        server_decode_ms: server(|t| t.decode_s),
        requests_without_usage: ok.iter().filter(|r| !r.output_tokens_from_usage).count(),
        per_model: per_model(records),
    }
}

#[cfg(test)]
pub(crate) fn record(start: f64, ttft: f64, itl: &[f64], tokens: usize) -> RequestRecord {
    let e2el = ttft + itl.iter().sum::<f64>();
    RequestRecord {
        index: 0,
        model: "m".into(),
        prompt_len: 10,
        max_tokens: tokens,
        scheduled_s: start,
        arrival_s: start,
        start_s: start,
        client_queue_s: 0.0,
        success: true,
        error_kind: None,
        error: None,
        ttft_s: Some(ttft),
        tpot_s: tpot(e2el, Some(ttft), tokens),
        itl_s: itl.to_vec(),
        e2el_s: e2el,
        output_tokens: tokens,
        output_tokens_from_usage: true,
        server_prompt_tokens: None,
        content_chunks: itl.len() + 1,
        generated_chars: 0,
        server_timing: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn percentiles_match_numpy_linear() {
        // np.percentile([1,2,3,4], [0,25,50,90,99,100]) = [1, 1.75, 2.5, 3.7, 3.97, 4]
        let x = [1.0, 2.0, 3.0, 4.0];
        for (p, want) in [
            (0.0, 1.0),
            (25.0, 1.75),
            (50.0, 2.5),
            (90.0, 3.7),
            (99.0, 3.97),
            (100.0, 4.0),
        ] {
            assert!(
                close(percentile(&x, p), want),
                "p{p}: {}",
                percentile(&x, p)
            );
        }
        // np.percentile([15,20,35,40,50], [40, 95]) = [29.0, 48.0]
        let y = [15.0, 20.0, 35.0, 40.0, 50.0];
        assert!(close(percentile(&y, 40.0), 29.0));
        assert!(close(percentile(&y, 95.0), 48.0));
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn stats_sorts_and_summarizes() {
        // np.mean/median/std([10, 1, 7, 3]) = 5.25, 5.0, 3.491060010942235
        let s = stats(&[10.0, 1.0, 7.0, 3.0], &[50.0, 90.0, 99.0]);
        assert!(close(s.mean, 5.25));
        assert!(close(s.median, 5.0));
        assert!((s.std - 3.491_060_010_942_235).abs() < 1e-12);
        // np.percentile([1,3,7,10], 90) = 9.1 ; 99 -> 9.91
        assert!(close(s.at(90.0).unwrap(), 9.1));
        assert!(close(s.at(99.0).unwrap(), 9.91));
        assert_eq!((s.min, s.max, s.count), (1.0, 10.0, 4));
        let e = stats(&[], &[99.0]);
        assert_eq!(e.count, 0);
        assert_eq!(e.at(99.0), Some(0.0));
    }

    #[test]
    fn tpot_definition() {
        assert!(close(tpot(1.0, Some(0.1), 10).unwrap(), 0.1));
        assert_eq!(tpot(1.0, Some(0.1), 1), None);
        assert_eq!(tpot(1.0, None, 5), None);
    }

    #[test]
    fn goodput_counts_requests_meeting_all_slos() {
        // ttft 100 ms, tpot (0.1+0.1)/2 = 100 ms, e2el 300 ms
        let a = record(0.0, 0.1, &[0.1, 0.1], 3);
        // ttft 500 ms, tpot 10 ms, e2el 520 ms
        let b = record(0.0, 0.5, &[0.01, 0.01], 3);
        let mut c = record(0.0, 0.05, &[0.01], 2);
        c.success = false;
        c.error_kind = Some("http 500".into());
        let recs = vec![a, b, c];
        let slo: Slo = "ttft=200".parse().unwrap();
        let m = compute(&recs, 2.0, &[50.0], Some(&slo));
        assert_eq!(m.good_requests, Some(1));
        assert!(close(m.request_goodput.unwrap(), 0.5));
        let slo: Slo = "tpot=50".parse().unwrap();
        assert_eq!(
            compute(&recs, 2.0, &[50.0], Some(&slo)).good_requests,
            Some(1)
        );
        let slo: Slo = "ttft=1000,e2el=400".parse().unwrap();
        assert_eq!(
            compute(&recs, 2.0, &[50.0], Some(&slo)).good_requests,
            Some(1)
        );
        let slo: Slo = "ttft=1000,tpot=1000,e2el=1000".parse().unwrap();
        assert_eq!(
            compute(&recs, 2.0, &[50.0], Some(&slo)).good_requests,
            Some(2)
        );
        assert_eq!(m.failure_reasons.get("http 500"), Some(&1));
        assert_eq!((m.completed, m.failed), (2, 1));
        assert_eq!(m.total_output_tokens, 6);
        assert!(close(m.output_throughput, 3.0));
        assert!(close(m.total_token_throughput, 13.0));
        // ITLs of successful requests only: [100, 100, 10, 10] ms.
        assert_eq!(m.itl_ms.count, 4);
        assert!(close(m.itl_ms.mean, 55.0));
        assert!(m.per_model.is_empty(), "one model: no breakdown");
    }

    #[test]
    fn per_model_breakdown() {
        let mut a = record(0.0, 0.1, &[0.1], 2);
        a.model = "ad-a".into();
        let mut b = record(0.0, 0.3, &[0.1], 2);
        b.model = "ad-b".into();
        let mut c = b.clone();
        c.success = false;
        let m = compute(&[a, b, c], 1.0, &[50.0], None);
        assert_eq!(m.per_model.len(), 2);
        let pb = &m.per_model["ad-b"];
        assert_eq!((pb.completed, pb.failed, pb.output_tokens), (1, 1, 2));
        assert!(close(pb.ttft_ms_mean, 300.0));
        assert!(close(m.per_model["ad-a"].e2el_ms_mean, 200.0));
    }

    #[test]
    fn peak_throughput_uses_a_sliding_one_second_window() {
        // 5 tokens at 0.0..0.4, then 3 tokens at 0.9, 1.0, 1.1 (one per chunk).
        let a = record(0.0, 0.0, &[0.1, 0.1, 0.1, 0.1], 5);
        let b = record(0.9, 0.0, &[0.1, 0.1], 3);
        let peak = peak_output_throughput(&[a.clone(), b.clone()]);
        // Window [0.0, 1.0) holds 5 + 1 (0.9) = 6; [0.4, 1.4) holds 0.4, 0.9, 1.0, 1.1 = 4.
        assert!(close(peak, 6.0), "{peak}");
        // Tokens spread over chunks: 10 tokens in 2 chunks -> weight 5 each.
        let c = record(0.0, 0.1, &[0.2], 10);
        assert!(close(peak_output_throughput(&[c]), 10.0));
        assert_eq!(
            peak_concurrency(&[a.clone(), b]),
            1,
            "a ends at 0.4, b starts at 0.9"
        );
        let f = record(0.2, 0.0, &[0.1], 2);
        assert_eq!(peak_concurrency(&[a, f]), 2);
        // Back-to-back requests do not overlap.
        let d = record(0.0, 0.5, &[], 1);
        let e = record(0.5, 0.5, &[], 1);
        assert_eq!(peak_concurrency(&[d, e]), 1);
    }

    #[test]
    fn timeline_buckets_tokens() {
        let a = record(0.0, 0.2, &[0.5, 0.5], 3);
        let t = timeline(&[a], 2.0);
        assert_eq!(t.output_tokens_per_s, vec![2.0, 1.0]);
        assert_eq!(t.running_requests, vec![1, 1]);
    }
}
