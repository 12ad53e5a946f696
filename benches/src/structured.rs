//! `--structured-output`: the request fields of each preset, and the server's mask time
//! per token, read from Lantern's `/metrics` (`lantern_structured_mask_seconds`) before
//! and after the measured run.

use crate::args::StructuredPreset;
use crate::http::{join_url, HttpClient};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::path::Path;

/// The request fields that constrain the output. The built-in JSON schema needs at least
/// `output_len` array items, so outputs run to `max_tokens` like unconstrained ones.
pub fn request_fields(
    preset: StructuredPreset,
    schema_file: Option<&Path>,
    output_len: usize,
) -> Result<Map<String, Value>> {
    let v = match preset {
        StructuredPreset::JsonSchema => {
            let schema = match schema_file {
                Some(p) => {
                    let text = std::fs::read_to_string(p)
                        .with_context(|| format!("--json-schema: cannot read {}", p.display()))?;
                    let v: Value = serde_json::from_str(&text)
                        .with_context(|| format!("--json-schema: {} is not JSON", p.display()))?;
                    if !v.is_object() {
                        bail!("--json-schema: {} is not a JSON schema object", p.display());
                    }
                    v
                }
                None => json!({
                    "type": "object",
                    "properties": {
                        "notes": {
                            "type": "array",
                            "items": {"type": "string", "maxLength": 24},
                            "minItems": output_len.max(1)
                        }
                    },
                    "required": ["notes"]
                }),
            };
            json!({"response_format": {
                "type": "json_schema",
                "json_schema": {"name": "bench", "schema": schema}
            }})
        }
        StructuredPreset::JsonObject => json!({"response_format": {"type": "json_object"}}),
        StructuredPreset::Regex => json!({"structured_outputs": {"regex": "([a-z]{1,8} )+"}}),
        StructuredPreset::Choice => json!({"structured_outputs": {
            "choice": ["positive", "negative", "neutral", "mixed"]
        }}),
    };
    match v {
        Value::Object(m) => Ok(m),
        _ => bail!("internal: structured-output fields are not an object"),
    }
}

/// Cumulative mask-time counters of the server.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MaskCounters {
    pub seconds: f64,
    pub count: u64,
}

/// Sums `lantern_structured_mask_seconds_{sum,count}` over every label set of a
/// Prometheus text exposition; `None` when the server has no such family.
pub fn parse_mask_counters(text: &str) -> Option<MaskCounters> {
    let mut out = MaskCounters::default();
    let mut found = false;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let base = name.split('{').next().unwrap_or(name);
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        match base {
            "lantern_structured_mask_seconds_sum" => {
                out.seconds += v;
                found = true;
            }
            "lantern_structured_mask_seconds_count" => {
                out.count += v as u64;
                found = true;
            }
            _ => {}
        }
    }
    found.then_some(out)
}

/// The server's counters now (`None` if `/metrics` is unavailable or lacks them).
pub async fn scrape(client: &HttpClient, base_url: &str) -> Option<MaskCounters> {
    let (status, body) = client.get(&join_url(base_url, "/metrics")).await.ok()?;
    if !status.is_success() {
        return None;
    }
    parse_mask_counters(std::str::from_utf8(&body).ok()?)
}

/// What the report says about structured outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StructuredStats {
    pub preset: StructuredPreset,
    /// Masks the server computed during the measured run (one per constrained token);
    /// `None` when its `/metrics` has no mask histogram (not Lantern, or unreachable).
    pub masks: Option<u64>,
    /// Mean time to compute one mask, in milliseconds.
    pub mask_ms_per_token: Option<f64>,
}

impl StructuredStats {
    pub fn new(
        preset: StructuredPreset,
        before: Option<MaskCounters>,
        after: Option<MaskCounters>,
    ) -> Self {
        let delta = before.zip(after).map(|(b, a)| MaskCounters {
            seconds: a.seconds - b.seconds,
            count: a.count.saturating_sub(b.count),
        });
        Self {
            preset,
            masks: delta.map(|d| d.count),
            mask_ms_per_token: delta
                .filter(|d| d.count > 0)
                .map(|d| d.seconds * 1e3 / d.count as f64),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_from_the_exposition() {
        let text = "# HELP lantern_structured_mask_seconds x.\n\
            # TYPE lantern_structured_mask_seconds histogram\n\
            lantern_structured_mask_seconds_sum{model_name=\"m\"} 0.25\n\
            lantern_structured_mask_seconds_count{model_name=\"m\"} 500\n\
            lantern_structured_mask_seconds_bucket{model_name=\"m\",le=\"+Inf\"} 500\n\
            lantern_generation_tokens_total{model_name=\"m\"} 9\n";
        let c = parse_mask_counters(text).unwrap();
        assert_eq!(c.count, 500);
        assert!((c.seconds - 0.25).abs() < 1e-12);
        assert_eq!(
            parse_mask_counters("lantern_generation_tokens_total 3\n"),
            None
        );
        let s = StructuredStats::new(
            StructuredPreset::Regex,
            Some(MaskCounters {
                seconds: 0.05,
                count: 100,
            }),
            Some(c),
        );
        assert_eq!(s.masks, Some(400));
        assert!((s.mask_ms_per_token.unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(
            StructuredStats::new(StructuredPreset::Regex, None, Some(c)).masks,
            None
        );
    }

    #[test]
    fn presets_build_request_fields() {
        let m = request_fields(StructuredPreset::JsonSchema, None, 64).unwrap();
        assert_eq!(
            m["response_format"]["json_schema"]["schema"]["properties"]["notes"]["minItems"],
            64
        );
        let m = request_fields(StructuredPreset::Choice, None, 64).unwrap();
        assert!(m["structured_outputs"]["choice"].is_array());
        assert!(request_fields(
            StructuredPreset::JsonSchema,
            Some(Path::new("/nonexistent.json")),
            8
        )
        .is_err());
    }
}
