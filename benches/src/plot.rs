//! `--plot FILE.svg|FILE.png`: latency percentile curves (TTFT, TPOT, ITL, E2EL) and
//! per-second throughput / concurrency timelines, with no plotting dependencies.
//!
//! The figure is drawn once, by [`draw`], onto a [`Surface`]: [`SvgWriter`] turns the
//! calls into SVG elements, [`crate::raster::Canvas`] rasterizes them for PNG, so the
//! two formats cannot drift apart.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::metrics::{percentile, token_events, RequestRecord};
use crate::raster::Canvas;
use crate::report::BenchResult;

const W: f64 = 1000.0;
const PANEL_H: f64 = 280.0;
const MARGIN_L: f64 = 70.0;
const MARGIN_R: f64 = 20.0;
const MARGIN_T: f64 = 34.0;
const MARGIN_B: f64 = 46.0;
/// Device pixels per plot unit in the PNG (a 2000-pixel-wide image).
const PNG_SCALE: f64 = 2.0;

/// An sRGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    pub const BLACK: Rgb = Rgb(0, 0, 0);
    pub const WHITE: Rgb = Rgb(255, 255, 255);
    const GRID: Rgb = Rgb(0xe4, 0xe4, 0xe4);
    const AXIS: Rgb = Rgb(0x44, 0x44, 0x44);
    const MUTED: Rgb = Rgb(0x88, 0x88, 0x88);
}

impl std::fmt::Display for Rgb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

/// One text item; `(x, y)` is the anchor point on the baseline, in plot units.
#[derive(Debug, Clone, Copy)]
pub struct Text<'a> {
    pub x: f64,
    pub y: f64,
    pub size: f64,
    pub bold: bool,
    pub anchor: Anchor,
    /// Rotated -90 degrees about `(x, y)`: reads bottom to top.
    pub vertical: bool,
    pub color: Rgb,
    /// Room for the text in plot units; a renderer with coarse font sizes (the PNG)
    /// steps the size down to fit it. SVG fonts are proportional and ignore it.
    pub max_width: f64,
    pub s: &'a str,
}

impl<'a> Text<'a> {
    fn new(x: f64, y: f64, size: f64, anchor: Anchor, s: &'a str) -> Self {
        Text {
            x,
            y,
            size,
            bold: false,
            anchor,
            vertical: false,
            color: Rgb::BLACK,
            max_width: f64::INFINITY,
            s,
        }
    }
    fn bold(self) -> Self {
        Text { bold: true, ..self }
    }
    fn max_width(self, max_width: f64) -> Self {
        Text { max_width, ..self }
    }
}

/// What the figure is drawn with; coordinates are plot units, y pointing down.
pub trait Surface {
    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: Rgb);
    fn polyline(&mut self, pts: &[(f64, f64)], color: Rgb, width: f64);
    fn line(&mut self, a: (f64, f64), b: (f64, f64), color: Rgb, width: f64) {
        self.polyline(&[a, b], color, width);
    }
    fn text(&mut self, t: &Text<'_>);
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Accumulates SVG elements.
pub struct SvgWriter {
    out: String,
}

impl SvgWriter {
    pub fn new(w: f64, h: f64) -> Self {
        SvgWriter {
            out: format!(
                r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif">"#
            ) + "\n",
        }
    }

    pub fn finish(mut self) -> String {
        self.out.push_str("</svg>\n");
        self.out
    }
}

fn stroke_width(width: f64) -> String {
    if width == 1.0 {
        String::new()
    } else {
        format!(r#" stroke-width="{width}""#)
    }
}

impl Surface for SvgWriter {
    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: Rgb) {
        let _ = writeln!(
            self.out,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{fill}"/>"#
        );
    }

    fn polyline(&mut self, pts: &[(f64, f64)], color: Rgb, width: f64) {
        let pts: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            self.out,
            r#"<polyline fill="none" stroke="{color}"{} points="{}"/>"#,
            stroke_width(width),
            pts.join(" ")
        );
    }

    fn line(&mut self, (x1, y1): (f64, f64), (x2, y2): (f64, f64), color: Rgb, width: f64) {
        let _ = writeln!(
            self.out,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{color}"{}/>"#,
            stroke_width(width)
        );
    }

    fn text(&mut self, t: &Text<'_>) {
        let anchor = match t.anchor {
            Anchor::Start => "",
            Anchor::Middle => r#" text-anchor="middle""#,
            Anchor::End => r#" text-anchor="end""#,
        };
        let weight = if t.bold { r#" font-weight="bold""# } else { "" };
        let fill = if t.color == Rgb::BLACK {
            String::new()
        } else {
            format!(r#" fill="{}""#, t.color)
        };
        let pos = if t.vertical {
            format!(
                r#"transform="translate({:.1},{:.1}) rotate(-90)""#,
                t.x, t.y
            )
        } else {
            format!(r#"x="{:.1}" y="{:.1}""#, t.x, t.y)
        };
        let _ = writeln!(
            self.out,
            r#"<text {pos} font-size="{}"{weight}{fill}{anchor}>{}</text>"#,
            t.size,
            esc(t.s)
        );
    }
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

/// Milliseconds for a title: a decimal below 1 s, whole milliseconds above.
fn fmt_ms(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

struct Series<'a> {
    points: Vec<(f64, f64)>,
    color: Rgb,
    label: &'a str,
}

/// Where a panel goes and what its axes say.
struct Frame<'a> {
    x0: f64,
    y0: f64,
    w: f64,
    h: f64,
    title: &'a str,
    xlabel: &'a str,
    ylabel: &'a str,
    x_max: f64,
}

fn panel(s: &mut impl Surface, f: &Frame<'_>, series: &[Series<'_>]) {
    let pw = f.w - MARGIN_L - MARGIN_R;
    let ph = f.h - MARGIN_T - MARGIN_B;
    let (left, top) = (f.x0 + MARGIN_L, f.y0 + MARGIN_T);
    let bottom = top + ph;
    let mid = left + pw / 2.0;
    // Centred on the plot area, the title may use the panel's width less the
    // difference between the left and right margins, and some padding.
    let title = Text::new(mid, f.y0 + 20.0, 14.0, Anchor::Middle, f.title);
    s.text(&title.bold().max_width(f.w - (MARGIN_L - MARGIN_R) - 20.0));
    let y_max_data = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let y_step = nice_step(if y_max_data > 0.0 { y_max_data } else { 1.0 }, 5);
    let y_max = ((y_max_data / y_step).ceil() * y_step).max(y_step);
    let x_max = if f.x_max > 0.0 { f.x_max } else { 1.0 };
    let x_step = nice_step(x_max, 10);
    let sx = |x: f64| left + x / x_max * pw;
    let sy = |y: f64| bottom - y / y_max * ph;
    // Grid and ticks.
    let mut t = 0.0;
    while t <= y_max + y_step * 1e-9 {
        let y = sy(t);
        s.line((left, y), (left + pw, y), Rgb::GRID, 1.0);
        let label = fmt_tick(t, y_step);
        s.text(&Text::new(left - 6.0, y + 4.0, 11.0, Anchor::End, &label));
        t += y_step;
    }
    let mut t = 0.0;
    while t <= x_max + x_step * 1e-9 {
        let x = sx(t);
        s.line((x, bottom), (x, bottom + 4.0), Rgb::AXIS, 1.0);
        let label = fmt_tick(t, x_step);
        s.text(&Text::new(x, bottom + 16.0, 11.0, Anchor::Middle, &label));
        t += x_step;
    }
    // Axes.
    s.line((left, top), (left, bottom), Rgb::AXIS, 1.0);
    s.line((left, bottom), (left + pw, bottom), Rgb::AXIS, 1.0);
    s.text(&Text::new(
        mid,
        f.y0 + f.h - 8.0,
        12.0,
        Anchor::Middle,
        f.xlabel,
    ));
    s.text(&Text {
        vertical: true,
        ..Text::new(f.x0 + 16.0, top + ph / 2.0, 12.0, Anchor::Middle, f.ylabel)
    });
    if series.iter().all(|s| s.points.is_empty()) {
        s.text(&Text {
            color: Rgb::MUTED,
            ..Text::new(mid, top + ph / 2.0, 13.0, Anchor::Middle, "no data")
        });
        return;
    }
    for (i, ser) in series.iter().enumerate() {
        let pts: Vec<(f64, f64)> = ser.points.iter().map(|&(x, y)| (sx(x), sy(y))).collect();
        s.polyline(&pts, ser.color, 1.8);
        let ly = top + 14.0 + 15.0 * i as f64;
        s.line((left + 10.0, ly), (left + 28.0, ly), ser.color, 2.0);
        s.text(&Text::new(
            left + 32.0,
            ly + 4.0,
            11.0,
            Anchor::Start,
            ser.label,
        ));
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

/// Size of the figure in plot units.
fn figure_size() -> (f64, f64) {
    (W, 50.0 + 2.0 * PANEL_H + 2.0 * PANEL_H * 0.85)
}

/// Draws the whole figure for a result.
pub fn draw(s: &mut impl Surface, r: &BenchResult) {
    let (w, h) = figure_size();
    s.rect(0.0, 0.0, w, h, Rgb::WHITE);
    let m = &r.metrics;
    let header = format!(
        "lantern bench — {} · {} ok / {} failed · {:.2} req/s · {:.1} out tok/s",
        r.model, m.completed, m.failed, m.request_throughput, m.output_throughput
    );
    let header = Text::new(W / 2.0, 30.0, 16.0, Anchor::Middle, &header);
    s.text(&header.bold().max_width(W - 20.0));
    let colors = [
        Rgb(0x1f, 0x77, 0xb4),
        Rgb(0xff, 0x7f, 0x0e),
        Rgb(0x2c, 0xa0, 0x2c),
        Rgb(0xd6, 0x27, 0x28),
    ];
    for (i, (name, values)) in latency_values(&r.requests).into_iter().enumerate() {
        let curve = percentile_curve(&values);
        let sub = if curve.is_empty() {
            String::new()
        } else {
            let mut v = values.clone();
            v.sort_by(f64::total_cmp);
            format!(
                " (P50 {} ms, P99 {} ms)",
                fmt_ms(percentile(&v, 50.0)),
                fmt_ms(percentile(&v, 99.0))
            )
        };
        let (col, row) = (i % 2, i / 2);
        panel(
            s,
            &Frame {
                x0: col as f64 * W / 2.0,
                y0: 50.0 + row as f64 * PANEL_H,
                w: W / 2.0,
                h: PANEL_H,
                title: &format!("{name} percentiles{sub}"),
                xlabel: "percentile",
                ylabel: &format!("{name} (ms)"),
                x_max: 100.0,
            },
            &[Series {
                points: curve,
                color: colors[i],
                label: name,
            }],
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
        s,
        &Frame {
            x0: 0.0,
            y0: y_base,
            w: W,
            h: PANEL_H * 0.85,
            title: &format!(
                "Output token throughput ({} s buckets)",
                fmt_tick(bucket, bucket)
            ),
            xlabel: "time since start (s)",
            ylabel: "tokens/s",
            x_max: span,
        },
        &[Series {
            points: tokens,
            color: Rgb(0x94, 0x67, 0xbd),
            label: "output tok/s",
        }],
    );
    panel(
        s,
        &Frame {
            x0: 0.0,
            y0: y_base + PANEL_H * 0.85,
            w: W,
            h: PANEL_H * 0.85,
            title: "Requests in flight",
            xlabel: "time since start (s)",
            ylabel: "requests",
            x_max: span,
        },
        &[Series {
            points: in_flight_steps(&r.requests),
            color: Rgb(0x8c, 0x56, 0x4b),
            label: "in flight",
        }],
    );
}

/// The SVG document for a result.
pub fn render_svg(r: &BenchResult) -> String {
    let (w, h) = figure_size();
    let mut svg = SvgWriter::new(w, h);
    draw(&mut svg, r);
    svg.finish()
}

/// The PNG file for a result: the same figure, rasterized at [`PNG_SCALE`].
pub fn render_png(r: &BenchResult) -> Vec<u8> {
    let (w, h) = figure_size();
    let mut canvas = Canvas::new(w, h, PNG_SCALE);
    draw(&mut canvas, r);
    canvas.encode_png()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Svg,
    Png,
}

fn format_of(path: &Path) -> Result<Format> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "svg" => Ok(Format::Svg),
        "png" => Ok(Format::Png),
        _ => bail!(
            "--plot writes SVG or PNG: name the file *.svg or *.png (got {})",
            path.display()
        ),
    }
}

/// Refuses a `--plot` file name whose extension is neither `.svg` nor `.png`.
pub fn check_path(path: &Path) -> Result<()> {
    format_of(path).map(|_| ())
}

/// Writes the plot as SVG or PNG, chosen by the file's extension.
pub fn write_plot(path: &Path, r: &BenchResult) -> Result<()> {
    let bytes = match format_of(path)? {
        Format::Svg => render_svg(r).into_bytes(),
        Format::Png => render_png(r),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--plot: cannot create {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("--plot: cannot write {}", path.display()))
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
        assert_eq!(fmt_ms(999.94), "999.9");
        assert_eq!(fmt_ms(17637.2), "17637");
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
        assert!(write_plot(&dir.join("x.txt"), &r).is_err());
        assert!(write_plot(&dir.join("x"), &r).is_err());
        assert!(check_path(Path::new("a/b.PNG")).is_ok());
        assert!(check_path(Path::new("b.Svg")).is_ok());
        assert!(check_path(Path::new("b.jpg")).is_err());
    }

    /// A result with `n` requests whose latencies spread out, for the PNG tests.
    fn synthetic(n: usize) -> BenchResult {
        let recs: Vec<RequestRecord> = (0..n)
            .map(|i| {
                let f = i as f64 / n as f64;
                let itl: Vec<f64> = (0..20)
                    .map(|j| 0.01 + 0.002 * ((i + j) % 7) as f64)
                    .collect();
                let mut r = record(f * 8.0, 0.05 + 0.3 * f * f, &itl, 21);
                r.index = i;
                r
            })
            .collect();
        let m = compute(&recs, 9.0, &[50.0, 99.0], None);
        BenchResult {
            tool: "lantern-bench".into(),
            version: "0".into(),
            label: None,
            started_unix_s: 0,
            base_url: "http://x".into(),
            model: "HuggingFaceTB/SmolLM2-135M-Instruct".into(),
            tokenizer: "local".into(),
            config: serde_json::json!({}),
            warmup_requests: 0,
            warmup_failed: 0,
            metrics: m,
            timeline: timeline(&recs, 9.0),
            requests: recs,
        }
    }

    #[test]
    fn png_has_the_same_figure() {
        let r = synthetic(64);
        let png = render_png(&r);
        let (w, h, px) = crate::raster::tests::decode_png(&png);
        let (fw, fh) = figure_size();
        assert_eq!(
            (w, h),
            ((fw * PNG_SCALE) as usize, (fh * PNG_SCALE) as usize)
        );
        let count = |c: Rgb| px.chunks_exact(3).filter(|p| *p == [c.0, c.1, c.2]).count();
        // Every series' colour is drawn (curves and legend lines), and the text is black.
        for c in [
            Rgb(0x1f, 0x77, 0xb4),
            Rgb(0xff, 0x7f, 0x0e),
            Rgb(0x2c, 0xa0, 0x2c),
            Rgb(0xd6, 0x27, 0x28),
            Rgb(0x94, 0x67, 0xbd),
            Rgb(0x8c, 0x56, 0x4b),
        ] {
            assert!(count(c) > 100, "{c}");
        }
        assert!(count(Rgb::BLACK) > 5000);
        // The header row (above the first panel) has ink: the title text.
        let header_ink = px[..(w * 3) * (50.0 * PNG_SCALE) as usize]
            .chunks_exact(3)
            .filter(|p| *p != [255, 255, 255])
            .count();
        assert!(header_ink > 500, "{header_ink}");
        // An empty result still renders ("no data" panels).
        let mut empty = r.clone();
        empty.requests.clear();
        assert_eq!(crate::raster::tests::decode_png(&render_png(&empty)).0, w);
        // write_plot dispatches on the extension.
        let path = std::env::temp_dir()
            .join(format!("lantern-bench-plot-{}", std::process::id()))
            .join("plot.png");
        write_plot(&path, &r).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), png);
        let _ = std::fs::remove_file(&path);
    }
}
