//! `/metrics` of a serving binary: Prometheus text with a TYPE for every family.

use super::common::*;
use super::shapes::*;
use serde_json::json;
use std::collections::{BTreeSet, HashMap};

#[test]
fn metrics_are_prometheus_text() {
    let s = shared();
    // At least one finished request, so the request counters and histograms have data.
    post_ok(
        &s.url("/v1/completions"),
        &completion_body(json!(text_prompt()), 4),
    );
    let r = get(&s.url("/metrics")).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let samples = parse_prometheus(&r.body);
    // Every sample belongs to a family declared with # TYPE.
    let mut types = HashMap::new();
    for line in r.body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            assert!(
                matches!(
                    ty,
                    "counter" | "gauge" | "histogram" | "summary" | "untyped"
                ),
                "{line}"
            );
            assert!(
                types.insert(name.to_string(), ty.to_string()).is_none(),
                "{line}"
            );
        }
    }
    for smp in &samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suf| {
                smp.name
                    .strip_suffix(suf)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(&smp.name);
        assert!(types.contains_key(family), "{} has no # TYPE", smp.name);
    }
    let names: BTreeSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "lantern_time_to_first_token_seconds_bucket",
        "lantern_num_requests_running",
        "lantern_prefix_cache_hits_total",
        "lantern_requests_total",
        "lantern_kv_cache_usage_perc",
        "lantern_request_finished_total",
    ] {
        assert!(names.contains(want), "{want} missing from /metrics");
    }
    // Histogram buckets are cumulative and end with +Inf == _count.
    let buckets: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "lantern_time_to_first_token_seconds_bucket")
        .collect();
    assert!(buckets.windows(2).all(|w| w[0].value <= w[1].value));
    let inf = metric(
        &samples,
        "lantern_time_to_first_token_seconds_bucket",
        &[("le", "+Inf")],
    )
    .unwrap();
    let count = metric(&samples, "lantern_time_to_first_token_seconds_count", &[]).unwrap();
    assert_eq!(inf, count);
    assert!(count >= 1.0);
    assert!(
        metric(
            &samples,
            "lantern_requests_total",
            &[
                ("endpoint", "/v1/completions"),
                ("status", "200"),
                ("model_name", NAME)
            ]
        )
        .unwrap()
            >= 1.0
    );
}
