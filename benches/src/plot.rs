//! `--plot FILE.svg`: latency percentile curves (TTFT, TPOT, ITL, E2EL) and per-second
//! throughput / concurrency timelines, written as hand-made SVG (no plotting deps).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::metrics::{percentile, token_events, RequestRecord};
use crate::report::BenchResult;

const W: f64 = 1000.0;
const PANEL_H: f64 = 280.0;
const MARGIN_L: f64 = 70.0;
const MARGIN_R: f64 = 20.0;
const MARGIN_T: f64 = 34.0;
const MARGIN_B: f64 = 46.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) giving about `n` ticks over `span`.
pub fn nice_step(span: f64, n: usize) -> f64 {
    if !(span.is_finite() && span > 0.0) {
        return 1.0;
    }
    let raw = span / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Tick label with as many decimals as the step needs.
fn fmt_tick(v: f64, step: f64) -> String {
    let decimals = if step > 0.0 && step < 1.0 {
        (-step.log10().floor()) as usize
    } else {
        0
    };
    format!("{v:.decimals$}")
}

struct Series<'a> {
    points: Vec<(f64, f64)>,
    color: &'a str,
    label: &'a str,
}

#[allow(clippy::too_many_arguments)]
fn panel(
    out: &mut String,
    x0: f64,
    y0: f64,
    w: f64,
    h: f64,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series<'_>],
    x_max: f64,
) {
    let pw = w - MARGIN_L - MARGIN_R;
    let ph = h - MARGIN_T - MARGIN_B;
    let (left, top) = (x0 + MARGIN_L, y0 + MARGIN_T);
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="14" font-weight="bold" text-anchor="middle">{}</text>"#,
        left + pw / 2.0,
        y0 + 20.0,
        esc(title)
    );
    let y_max_data = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let y_step = nice_step(if y_max_data > 0.0 { y_max_data } else { 1.0 }, 5);
    let y_max = ((y_max_data / y_step).ceil() * y_step).max(y_step);
    let x_max = if x_max > 0.0 { x_max } else { 1.0 };
    let x_step = nice_step(x_max, 10);
    let sx = |x: f64| left + x / x_max * pw;
    let sy = |y: f64| top + ph - y / y_max * ph;
    // Grid and ticks.
    let mut t = 0.0;
    while t <= y_max + y_step * 1e-9 {
        let y = sy(t);
        let _ = writeln!(
            out,
            r##"<line x1="{left:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            left + pw,
            left - 6.0,
            y + 4.0,
            fmt_tick(t, y_step)
        );
        t += y_step;
    }
    let mut t = 0.0;
    while t <= x_max + x_step * 1e-9 {
        let x = sx(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#444"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"##,
            top + ph,
            top + ph + 4.0,
            top + ph + 16.0,
            fmt_tick(t, x_step)
        );
        t += x_step;
    }
    // Axes.
    let _ = writeln!(
        out,
        r##"<line x1="{left:.1}" y1="{top:.1}" x2="{left:.1}" y2="{:.1}" stroke="#444"/><line x1="{left:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#444"/>"##,
        top + ph,
        top + ph,
        left + pw,
        top + ph
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
        left + pw / 2.0,
        y0 + h - 8.0,
        esc(xlabel)
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate({:.1},{:.1}) rotate(-90)" font-size="12" text-anchor="middle">{}</text>"#,
        x0 + 16.0,
        top + ph / 2.0,
        esc(ylabel)
    );
    if series.iter().all(|s| s.points.is_empty()) {
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="13" fill="#888" text-anchor="middle">no data</text>"##,
            left + pw / 2.0,
            top + ph / 2.0
        );
        return;
    }
    for (i, s) in series.iter().enumerate() {
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.8" points="{}"/>"#,
            s.color,
            pts.join(" ")
        );
        let ly = top + 14.0 + 15.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="2"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
            left + 10.0,
            left + 28.0,
            s.color,
            left + 32.0,
            ly + 4.0,
            esc(s.label)
        );
    }
}

/// Points `(percentile, value)` for p = 0, 0.5, ..., 100.
pub fn percentile_curve(values_ms: &[f64]) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = values_ms
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    if v.is_empty() {
        return vec![];
    }
    v.sort_by(f64::total_cmp);
    (0..=200)
        .map(|i| i as f64 / 2.0)
        .map(|p| (p, percentile(&v, p)))
        .collect()
}

fn latency_values(records: &[RequestRecord]) -> [(&'static str, Vec<f64>); 4] {
    let ok = || records.iter().filter(|r| r.success);
    [
        (
            "TTFT",
            ok().filter_map(|r| r.ttft_s).map(|x| x * 1e3).collect(),
        ),
        (
            "TPOT",
            ok().filter_map(|r| r.tpot_s).map(|x| x * 1e3).collect(),
        ),
        (
            "ITL",
            ok().flat_map(|r| r.itl_s.iter().map(|x| x * 1e3)).collect(),
        ),
        ("E2EL", ok().map(|r| r.e2el_s * 1e3).collect()),
    ]
}

/// Output tokens/s in buckets of a "nice" width (about 40 over `span`), as a step
/// line; returns the points and the bucket width.
pub fn throughput_steps(records: &[RequestRecord], span: f64) -> (Vec<(f64, f64)>, f64) {
    let w = nice_step(span, 40).max(0.001);
    let n = ((span / w).ceil() as usize).max(1);
    let mut sums = vec![0.0; n];
    for (t, tokens) in token_events(records) {
        let i = ((t.max(0.0) / w) as usize).min(n - 1);
        sums[i] += tokens;
    }
    let mut pts = Vec::with_capacity(2 * n);
    for (i, s) in sums.iter().enumerate() {
        let v = s / w;
        pts.push((i as f64 * w, v));
        pts.push((((i + 1) as f64 * w).min(span.max(w)), v));
    }
    (pts, w)
}

/// Exact number of requests in flight over time, as a step line.
pub fn in_flight_steps(records: &[RequestRecord]) -> Vec<(f64, f64)> {
    let mut ev: Vec<(f64, i64)> = records
        .iter()
        .flat_map(|r| [(r.start_s, 1), (r.start_s + r.e2el_s, -1)])
        .collect();
    ev.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut pts = vec![(0.0, 0.0)];
    let mut cur = 0i64;
    for (t, d) in ev {
        pts.push((t, cur as f64));
        cur += d;
        pts.push((t, cur as f64));
    }
    pts
}

/// The SVG document for a result.
pub fn render_svg(r: &BenchResult) -> String {
    let rows_h = 2.0 * PANEL_H + 2.0 * PANEL_H * 0.85;
    let h = 50.0 + rows_h;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let m = &r.metrics;
    let header = format!(
        "lantern bench — {} · {} ok / {} failed · {:.2} req/s · {:.1} out tok/s",
        r.model, m.completed, m.failed, m.request_throughput, m.output_throughput
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="30" font-size="16" font-weight="bold" text-anchor="middle">{}</text>"#,
        W / 2.0,
        esc(&header)
    );
    let colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];
    for (i, (name, values)) in latency_values(&r.requests).into_iter().enumerate() {
        let curve = percentile_curve(&values);
        let sub = if curve.is_empty() {
            String::new()
        } else {
            let mut v = values.clone();
            v.sort_by(f64::total_cmp);
            format!(
                " (P50 {:.1} ms, P99 {:.1} ms)",
                percentile(&v, 50.0),
                percentile(&v, 99.0)
            )
        };
        let (col, row) = (i % 2, i / 2);
        panel(
            &mut out,
            col as f64 * W / 2.0,
            50.0 + row as f64 * PANEL_H,
            W / 2.0,
            PANEL_H,
            &format!("{name} percentiles{sub}"),
            "percentile",
            &format!("{name} (ms)"),
            &[Series {
                points: curve,
                color: colors[i],
                label: name,
            }],
            100.0,
        );
    }
    let span = r
        .requests
        .iter()
        .map(|q| q.start_s + q.e2el_s)
        .fold(r.metrics.duration_s, f64::max);
    let (tokens, bucket) = throughput_steps(&r.requests, span);
    let y_base = 50.0 + 2.0 * PANEL_H;
    panel(
        &mut out,
        0.0,
        y_base,
        W,
        PANEL_H * 0.85,
        &format!(
            "Output token throughput ({} s buckets)",
            fmt_tick(bucket, bucket)
        ),
        "time since start (s)",
        "tokens/s",
        &[Series {
            points: tokens,
            color: "#9467bd",
            label: "output tok/s",
        }],
        span,
    );
    panel(
        &mut out,
        0.0,
        y_base + PANEL_H * 0.85,
        W,
        PANEL_H * 0.85,
        "Requests in flight",
        "time since start (s)",
        "requests",
        &[Series {
            points: in_flight_steps(&r.requests),
            color: "#8c564b",
            label: "in flight",
        }],
        span,
    );
    out.push_str("</svg>\n");
    out
}

/// Writes the SVG plot; only `.svg` is supported.
pub fn write_plot(path: &Path, r: &BenchResult) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ext != "svg" {
        bail!(
            "--plot writes SVG only: name the file *.svg (got {})",
            path.display()
        );
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--plot: cannot create {}", dir.display()))?;
    }
    std::fs::write(path, render_svg(r))
        .with_context(|| format!("--plot: cannot write {}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::metrics::{compute, record, timeline};

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(100.0, 10), 10.0);
        assert_eq!(nice_step(7.0, 5), 2.0);
        assert_eq!(nice_step(0.3, 5), 0.1);
        assert_eq!(nice_step(2300.0, 5), 500.0);
        assert_eq!(nice_step(0.0, 5), 1.0);
        assert_eq!(fmt_tick(0.5, 0.1), "0.5");
        assert_eq!(fmt_tick(0.25, 0.05), "0.25");
        assert_eq!(fmt_tick(1500.0, 500.0), "1500");
    }

    #[test]
    fn step_series() {
        // Two requests overlapping on [0.5, 1.0).
        let a = record(0.0, 0.2, &[0.8], 2);
        let b = record(0.5, 0.1, &[0.1], 2);
        let f = in_flight_steps(&[a.clone(), b.clone()]);
        let peak = f.iter().map(|p| p.1).fold(0.0, f64::max);
        assert_eq!(peak, 2.0);
        assert_eq!(f.last().unwrap().1, 0.0);
        let (pts, w) = throughput_steps(&[a, b], 1.0);
        assert_eq!(w, 0.05);
        // 4 tokens in total: the integral of the step line is 4.
        let area: f64 = pts.chunks(2).map(|c| (c[1].0 - c[0].0) * c[0].1).sum();
        assert!((area - 4.0).abs() < 1e-9, "{area}");
    }

    #[test]
    fn curve_is_monotone_and_spans_0_to_100() {
        let c = percentile_curve(&[5.0, 1.0, 3.0]);
        assert_eq!(c.len(), 201);
        assert_eq!(c[0], (0.0, 1.0));
        assert_eq!(c[200], (100.0, 5.0));
        assert!(c.windows(2).all(|w| w[1].1 >= w[0].1));
        assert!(percentile_curve(&[]).is_empty());
    }

    #[test]
    fn svg_is_well_formed_enough() {
        let recs = vec![
            record(0.0, 0.1, &[0.02, 0.03], 3),
            record(0.5, 0.2, &[0.01], 2),
        ];
        let m = compute(&recs, 1.0, &[50.0, 99.0], None);
        let r = BenchResult {
            tool: "lantern-bench".into(),
            version: "0".into(),
            label: None,
            started_unix_s: 0,
            base_url: "http://x".into(),
            model: "a<b>&c".into(),
            tokenizer: "local".into(),
            config: serde_json::json!({}),
            warmup_requests: 0,
            warmup_failed: 0,
            metrics: m,
            timeline: timeline(&recs, 1.0),
            requests: recs,
        };
        let svg = render_svg(&r);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a&lt;b&gt;&amp;c"));
        for t in [
            "TTFT percentiles",
            "ITL percentiles",
            "E2EL percentiles",
            "TPOT percentiles",
            "percentile",
            "tokens/s",
        ] {
            assert!(svg.contains(t), "{t}");
        }
        assert_eq!(svg.matches("<polyline").count(), 6);
        let dir = std::env::temp_dir();
        assert!(write_plot(&dir.join("x.png"), &r).is_err());
    }
}
