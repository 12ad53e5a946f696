//! `--plot FILE.svg|FILE.png`: the figure of one run.
//!
//! What is plotted: a header line (model, requests ok / failed, request and output token
//! throughput) over four latency panels, TTFT, TPOT, ITL and E2EL in ms against the
//! percentile (0 to 100 in steps of 0.5, P50 and P99 in each title), and two timelines
//! over the run: output tokens/s in buckets of a "nice" width, and the exact number of
//! requests in flight. Each panel has a title, axis labels and a legend; a latency panel
//! without a successful request says "no data". The format follows the file's extension
//! (`.svg` or `.png`, any case).
//!
//! Who draws it: the [`plotters`] crate. `figure` gathers the panels from a result, and
//! one drawing function runs on plotters' SVG backend (1000 x 1086) and on its bitmap
//! backend at `PNG_SCALE` (2) times that size; the `png` crate encodes the bitmap as 8-bit
//! RGB.
//!
//! Font: text in the PNG is rasterized by plotters' `ab_glyph` feature from DejaVu Sans
//! 2.35 (regular weight only; bold titles fall back to it), embedded with `include_bytes!`
//! from `benches/assets/DejaVuSans.ttf`, so the PNG does not depend on the fonts installed
//! (no fontconfig, no freetype). DejaVu Sans is under the Bitstream Vera and Arev font
//! licences (permissive: use, copy, modify and redistribute with the notice kept; DejaVu's
//! own changes are public domain), reproduced in `benches/assets/LICENSE_DEJAVU`. The SVG
//! names the `sans-serif` family and leaves the font to the viewer; the embedded font
//! only measures its text (title fitting, legend box).

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::metrics::{percentile, token_events, RequestRecord};
use crate::report::BenchResult;

/// Figure layout in plot units (SVG pixels).
const W: f64 = 1000.0;
const HEADER_H: f64 = 50.0;
const PANEL_H: f64 = 280.0;
/// The two timelines are a little less tall than the latency panels.
const TIMELINE_H: f64 = PANEL_H * 0.85;
/// Left of the plot area: the y axis title and the tick labels, from the panel's edge.
const MARGIN_L: f64 = 70.0;
/// Room left of the y axis title (its glyphs reach a little beyond the text box).
const MARGIN_YDESC: f64 = 8.0;
/// Above the title.
const MARGIN_T: f64 = 4.0;
const MARGIN_R: f64 = 20.0;
const MARGIN_B: f64 = 46.0;
/// Device pixels per plot unit in the PNG (a 2000-pixel-wide image).
const PNG_SCALE: f64 = 2.0;

const GRID: RGBColor = RGBColor(0xe4, 0xe4, 0xe4);
const AXIS: RGBColor = RGBColor(0x44, 0x44, 0x44);
const MUTED: RGBColor = RGBColor(0x88, 0x88, 0x88);
/// Series colours: TTFT, TPOT, ITL, E2EL, output tok/s, in flight.
const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// DejaVu Sans 2.35, regular (see the module doc for its licence).
static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Registers the embedded font as plotters' `sans-serif` family, once per process.
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, DEJAVU_SANS).is_ok()
    });
    if ok {
        Ok(())
    } else {
        bail!("--plot: the embedded font DejaVuSans.ttf does not parse")
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

/// One line on a panel.
#[derive(Debug, Clone)]
struct Series {
    points: Vec<(f64, f64)>,
    color: RGBColor,
    label: &'static str,
}

/// One panel: what its axes say and what it draws; x runs over `[0, x_max]`.
#[derive(Debug, Clone)]
struct Panel {
    title: String,
    xlabel: &'static str,
    ylabel: String,
    x_max: f64,
    series: Vec<Series>,
}

/// The content of the figure, whatever the format.
#[derive(Debug, Clone)]
struct Figure {
    header: String,
    /// TTFT, TPOT, ITL, E2EL: two rows of two.
    latency: Vec<Panel>,
    /// Output token throughput, then requests in flight: full width.
    timelines: Vec<Panel>,
}

/// Size of the figure in plot units.
fn figure_size() -> (f64, f64) {
    (W, HEADER_H + 2.0 * PANEL_H + 2.0 * TIMELINE_H)
}

/// The panels of the figure for a result.
fn figure(r: &BenchResult) -> Figure {
    let m = &r.metrics;
    let header = format!(
        "lantern bench — {} · {} ok / {} failed · {:.2} req/s · {:.1} out tok/s",
        r.model, m.completed, m.failed, m.request_throughput, m.output_throughput
    );
    let latency = latency_values(&r.requests)
        .into_iter()
        .zip(COLORS)
        .map(|((name, values), color)| {
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
            Panel {
                title: format!("{name} percentiles{sub}"),
                xlabel: "percentile",
                ylabel: format!("{name} (ms)"),
                x_max: 100.0,
                series: vec![Series {
                    points: curve,
                    color,
                    label: name,
                }],
            }
        })
        .collect();
    let span = r
        .requests
        .iter()
        .map(|q| q.start_s + q.e2el_s)
        .fold(r.metrics.duration_s, f64::max);
    let (tokens, bucket) = throughput_steps(&r.requests, span);
    let timelines = vec![
        Panel {
            title: format!(
                "Output token throughput ({} s buckets)",
                fmt_tick(bucket, bucket)
            ),
            xlabel: "time since start (s)",
            ylabel: "tokens/s".into(),
            x_max: span,
            series: vec![Series {
                points: tokens,
                color: COLORS[4],
                label: "output tok/s",
            }],
        },
        Panel {
            title: "Requests in flight".into(),
            xlabel: "time since start (s)",
            ylabel: "requests".into(),
            x_max: span,
            series: vec![Series {
                points: in_flight_steps(&r.requests),
                color: COLORS[5],
                label: "in flight",
            }],
        },
    ];
    Figure {
        header,
        latency,
        timelines,
    }
}

/// An axis over `[0, max]` with its tick positions given: plotters' own `with_key_points`
/// has no label formatter for `f64`, and the ticks are the "nice" steps computed here.
struct TickAxis {
    inner: plotters::coord::types::RangedCoordf64,
    ticks: Vec<f64>,
}

impl TickAxis {
    fn new(max: f64, step: f64) -> Self {
        TickAxis {
            inner: (0.0..max).into(),
            ticks: ticks(max, step),
        }
    }
}

impl Ranged for TickAxis {
    // The labels come from the mesh's label formatter (`fmt_tick`).
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: plotters::coord::ranged1d::KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Bold points only: grid lines and labels at the ticks, no light lines.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

/// `0, step, 2 step, ...` up to `max` (and a hair over, for rounding).
fn ticks(max: f64, step: f64) -> Vec<f64> {
    (0..=10_000)
        .map(|i| i as f64 * step)
        .take_while(|t| *t <= max + step * 1e-9)
        .collect()
}

/// Text of `css_px` CSS pixels at scale `k`. Plotters' font size is about 1.24 times the
/// CSS size (its SVG backend writes `font-size` = size / 1.24).
fn text_style(css_px: f64, k: f64, style: FontStyle) -> TextStyle<'static> {
    FontDesc::new(FontFamily::SansSerif, css_px * 1.24 * k, style).color(&BLACK)
}

/// `style`, shrunk if `s` would be wider than `max_w` pixels on `area`.
fn fit<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    s: &str,
    style: TextStyle<'static>,
    max_w: f64,
) -> DrawResult<TextStyle<'static>, DB> {
    let (w, _) = area.estimate_text_size(s, &style)?;
    if f64::from(w) <= max_w || w == 0 {
        return Ok(style);
    }
    let size = style.font.get_size() * max_w / f64::from(w);
    Ok(FontDesc::new(FontFamily::SansSerif, size, style.font.get_style()).color(&BLACK))
}

/// Splits a line into runs that never turn back by more than 90 degrees in pixel space
/// (`to_px` maps a point to its pixel). Plotters outlines a thick line as one polygon, and
/// at such a turn (a step line going up and down again within one pixel column) the
/// outline folds over itself and leaves hatching; runs meet at the turning point. A line
/// without such turns is one run; there is always at least one.
fn runs(points: &[(f64, f64)], to_px: impl Fn(&(f64, f64)) -> (i32, i32)) -> Vec<&[(f64, f64)]> {
    let mut out = Vec::new();
    let (mut start, mut last) = (0, 0);
    let mut last_px = None::<(i32, i32)>;
    let mut last_dir = None::<(i64, i64)>;
    for (i, pt) in points.iter().enumerate() {
        let px = to_px(pt);
        let Some(prev) = last_px else {
            last_px = Some(px);
            continue;
        };
        if px == prev {
            continue;
        }
        let dir = (i64::from(px.0 - prev.0), i64::from(px.1 - prev.1));
        if let Some(d) = last_dir {
            if d.0 * dir.0 + d.1 * dir.1 < 0 {
                out.push(&points[start..=last]);
                start = last;
            }
        }
        (last, last_px, last_dir) = (i, Some(px), Some(dir));
    }
    out.push(&points[start..]);
    out
}

/// Draws one panel on `area` at `k` pixels per plot unit.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: &Panel,
    k: f64,
) -> DrawResult<(), DB> {
    let px = |v: f64| (v * k).round().max(1.0) as u32;
    let (w, _) = area.dim_in_pixel();
    // The title may use the panel's width less the difference between the left and
    // right margins, and some padding.
    let room = f64::from(w) - (MARGIN_L - MARGIN_R + 20.0) * k;
    let title = fit(area, &p.title, text_style(14.0, k, FontStyle::Bold), room)?;
    let y_max_data = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let y_step = nice_step(if y_max_data > 0.0 { y_max_data } else { 1.0 }, 5);
    let y_max = ((y_max_data / y_step).ceil() * y_step).max(y_step);
    let x_max = if p.x_max > 0.0 { p.x_max } else { 1.0 };
    let x_step = nice_step(x_max, 10);
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, title)
        .margin_top(px(MARGIN_T))
        .margin_left(px(MARGIN_YDESC))
        .margin_right(px(MARGIN_R))
        .x_label_area_size(px(MARGIN_B))
        .y_label_area_size(px(MARGIN_L - MARGIN_YDESC))
        .build_cartesian_2d(TickAxis::new(x_max, x_step), TickAxis::new(y_max, y_step))?;
    let x_fmt = |v: &f64| fmt_tick(*v, x_step);
    let y_fmt = |v: &f64| fmt_tick(*v, y_step);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .bold_line_style(GRID.stroke_width(px(1.0)))
        .axis_style(AXIS.stroke_width(px(1.0)))
        .set_all_tick_mark_size(px(4.0))
        .label_style(text_style(11.0, k, FontStyle::Normal))
        .axis_desc_style(text_style(12.0, k, FontStyle::Normal))
        .x_desc(p.xlabel)
        .y_desc(p.ylabel.as_str())
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .draw()?;
    if p.series.iter().all(|s| s.points.is_empty()) {
        let style = text_style(13.0, k, FontStyle::Normal)
            .color(&MUTED)
            .pos(Pos::new(HPos::Center, VPos::Center));
        chart.draw_series(std::iter::once(Text::new(
            "no data",
            (x_max / 2.0, y_max / 2.0),
            style,
        )))?;
        return Ok(());
    }
    for s in &p.series {
        let legend = s.color.stroke_width(px(2.0));
        let len = px(18.0) as i32;
        let area = chart.plotting_area();
        let pieces = runs(&s.points, |pt| area.map_coordinate(pt));
        for (i, run) in pieces.into_iter().enumerate() {
            let line = chart.draw_series(LineSeries::new(
                run.iter().copied(),
                s.color.stroke_width(px(1.8)),
            ))?;
            if i == 0 {
                line.label(s.label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + len, y)], legend));
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .margin(px(8.0))
        .legend_area_size(px(24.0))
        .label_font(text_style(11.0, k, FontStyle::Normal))
        .background_style(WHITE.mix(0.85))
        .border_style(GRID)
        .draw()
}

/// Draws the whole figure on `root` at `k` pixels per plot unit.
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    fig: &Figure,
    k: f64,
) -> DrawResult<(), DB> {
    let px = |v: f64| (v * k).round() as i32;
    root.fill(&WHITE)?;
    let header = text_style(16.0, k, FontStyle::Bold);
    let header = fit(root, &fig.header, header, (W - 20.0) * k)?;
    root.draw(&Text::new(
        fig.header.as_str(),
        (px(W / 2.0), px(HEADER_H / 2.0)),
        header.pos(Pos::new(HPos::Center, VPos::Center)),
    ))?;
    let (_, body) = root.split_vertically(px(HEADER_H));
    let (latency, timelines) = body.split_vertically(px(2.0 * PANEL_H));
    for (area, p) in latency.split_evenly((2, 2)).iter().zip(&fig.latency) {
        draw_panel(area, p, k)?;
    }
    for (area, p) in timelines.split_evenly((2, 1)).iter().zip(&fig.timelines) {
        draw_panel(area, p, k)?;
    }
    Ok(())
}

/// The SVG document for a result.
fn render_svg(r: &BenchResult) -> Result<String> {
    register_font()?;
    let fig = figure(r);
    let (w, h) = figure_size();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (w as u32, h as u32)).into_drawing_area();
        draw(&root, &fig, 1.0).map_err(|e| anyhow!("--plot: drawing the SVG: {e}"))?;
        root.present()
            .map_err(|e| anyhow!("--plot: drawing the SVG: {e}"))?;
    }
    Ok(out)
}

/// Pixel size of the PNG.
fn png_size() -> (u32, u32) {
    let (w, h) = figure_size();
    ((w * PNG_SCALE) as u32, (h * PNG_SCALE) as u32)
}

/// The PNG file for a result: the same figure, drawn at [`PNG_SCALE`].
fn render_png(r: &BenchResult) -> Result<Vec<u8>> {
    register_font()?;
    let fig = figure(r);
    let (w, h) = png_size();
    let mut rgb = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        draw(&root, &fig, PNG_SCALE).map_err(|e| anyhow!("--plot: drawing the PNG: {e}"))?;
        root.present()
            .map_err(|e| anyhow!("--plot: drawing the PNG: {e}"))?;
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().context("--plot: encoding the PNG")?;
    writer
        .write_image_data(&rgb)
        .context("--plot: encoding the PNG")?;
    writer.finish().context("--plot: encoding the PNG")?;
    Ok(out)
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
        Format::Svg => render_svg(r)?.into_bytes(),
        Format::Png => render_png(r)?,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--plot: cannot create {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("--plot: cannot write {}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
