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
    assert_eq!(ticks(100.0, 10.0).len(), 11);
    assert_eq!(ticks(9.3, 1.0).last(), Some(&9.0));
    let t = ticks(0.3, 0.1);
    assert_eq!(t.len(), 4, "{t:?}");
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
fn runs_break_where_the_line_turns_back() {
    let px = |p: &(f64, f64)| (p.0.round() as i32, p.1.round() as i32);
    // A curve: one run.
    let curve: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, (i * i) as f64)).collect();
    assert_eq!(runs(&curve, px), vec![&curve[..]]);
    // A step line, up and down within one pixel column: two runs meeting at the top.
    let steps = [(0.0, 0.0), (5.0, 0.0), (5.2, 3.0), (5.3, 1.0), (9.0, 1.0)];
    assert_eq!(runs(&steps, px), vec![&steps[..3], &steps[2..]]);
    // Points on the same pixel are no turn; a single point is one run.
    let same = [(0.0, 0.0), (0.1, 0.1), (3.0, 0.0)];
    assert_eq!(runs(&same, px), vec![&same[..]]);
    assert_eq!(runs(&same[..1], px).len(), 1);
    assert_eq!(runs(&[], px).len(), 1);
}

fn result(model: &str, recs: Vec<RequestRecord>, duration_s: f64) -> BenchResult {
    let m = compute(&recs, duration_s, &[50.0, 99.0], None);
    BenchResult {
        tool: "lantern-bench".into(),
        version: "0".into(),
        label: None,
        started_unix_s: 0,
        base_url: "http://x".into(),
        model: model.into(),
        tokenizer: "local".into(),
        config: serde_json::json!({}),
        warmup_requests: 0,
        warmup_failed: 0,
        metrics: m,
        structured: None,
        timeline: timeline(&recs, duration_s),
        requests: recs,
    }
}

/// A result with `n` requests whose latencies spread out.
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
    result("HuggingFaceTB/SmolLM2-135M-Instruct", recs, 9.0)
}

#[test]
fn figure_has_the_six_panels() {
    let fig = figure(&synthetic(64));
    assert!(fig
        .header
        .contains("SmolLM2-135M-Instruct · 64 ok / 0 failed"));
    let titles: Vec<&str> = fig
        .latency
        .iter()
        .chain(&fig.timelines)
        .map(|p| p.title.as_str())
        .collect();
    for (t, want) in titles.iter().zip([
        "TTFT percentiles (P50 ",
        "TPOT percentiles (P50 ",
        "ITL percentiles (P50 ",
        "E2EL percentiles (P50 ",
        "Output token throughput (0.5 s buckets)",
        "Requests in flight",
    ]) {
        assert!(t.starts_with(want), "{t}");
    }
    assert_eq!(fig.latency[0].ylabel, "TTFT (ms)");
    assert_eq!(fig.latency[3].series[0].points.len(), 201);
    assert_eq!(fig.timelines[1].series[0].label, "in flight");
    let peak = fig.timelines[1].series[0]
        .points
        .iter()
        .map(|p| p.1)
        .fold(0.0, f64::max);
    assert!(peak >= 1.0);
}

#[test]
fn svg_has_every_series_and_label() {
    let recs = vec![
        record(0.0, 0.1, &[0.02, 0.03], 3),
        record(0.5, 0.2, &[0.01], 2),
    ];
    let r = result("a<b>&c", recs, 1.0);
    let svg = render_svg(&r).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(
        svg.contains(r#"width="1000" height="1086""#),
        "{}",
        &svg[..200]
    );
    assert!(svg.contains("a&lt;b&gt;&amp;c"));
    // Plotters writes each text on a line of its own.
    let texts = |svg: &str| -> Vec<String> {
        svg.lines()
            .filter(|l| !l.starts_with('<'))
            .map(str::to_owned)
            .collect()
    };
    let t = texts(&svg);
    for want in [
        "TTFT percentiles (P50 ",
        "ITL percentiles (P50 ",
        "E2EL percentiles (P50 ",
        "TPOT percentiles (P50 ",
        "Output token throughput (",
    ] {
        assert!(t.iter().any(|l| l.starts_with(want)), "{want}");
    }
    for want in [
        "Requests in flight",
        "percentile",
        "time since start (s)",
        "tokens/s",
        "requests",
        "TTFT (ms)",
        "E2EL (ms)",
        // Legends.
        "TTFT",
        "TPOT",
        "ITL",
        "E2EL",
        "output tok/s",
        "in flight",
    ] {
        assert!(t.iter().any(|l| l == want), "{want}");
    }
    assert!(!svg.contains("no data"));
    // Every series is a polyline in its own colour (the curve and its legend line).
    for c in COLORS {
        let stroke = format!(r##"stroke="#{:02X}{:02X}{:02X}""##, c.0, c.1, c.2);
        let n = svg
            .lines()
            .filter(|l| l.starts_with("<polyline") && l.contains(&stroke))
            .count();
        assert!(n >= 2, "{stroke}: {n}");
    }
    // The percentile curves have 201 points.
    let longest = svg
        .lines()
        .filter(|l| l.starts_with("<polyline"))
        .map(|l| l.matches(',').count())
        .max();
    assert_eq!(longest, Some(201));
    // An empty result says so in the latency panels (the timelines draw zeros).
    let mut empty = r.clone();
    empty.requests.clear();
    let t = texts(&render_svg(&empty).unwrap());
    assert_eq!(t.iter().filter(|l| *l == "no data").count(), 4);
    let dir = std::env::temp_dir();
    assert!(write_plot(&dir.join("x.txt"), &r).is_err());
    assert!(write_plot(&dir.join("x"), &r).is_err());
    assert!(check_path(Path::new("a/b.PNG")).is_ok());
    assert!(check_path(Path::new("b.Svg")).is_ok());
    assert!(check_path(Path::new("b.jpg")).is_err());
}

/// Width, height and RGB pixels of a PNG written by [`render_png`].
fn decode_png(bytes: &[u8]) -> (usize, usize, Vec<u8>) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut px = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut px).unwrap();
    assert_eq!(
        (info.color_type, info.bit_depth),
        (png::ColorType::Rgb, png::BitDepth::Eight)
    );
    px.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, px)
}

#[test]
fn png_has_the_same_figure() {
    let r = synthetic(64);
    let png = render_png(&r).unwrap();
    let (w, h, px) = decode_png(&png);
    let (fw, fh) = figure_size();
    assert_eq!(
        (w, h),
        ((fw * PNG_SCALE) as usize, (fh * PNG_SCALE) as usize)
    );
    let count = |c: RGBColor| px.chunks_exact(3).filter(|p| *p == [c.0, c.1, c.2]).count();
    // Every series' colour is drawn (curves and legend lines), and the text is black.
    for c in COLORS {
        assert!(count(c) > 100, "{c:?}");
    }
    assert!(count(BLACK) > 5000, "{}", count(BLACK));
    // The header row (above the first panel) has ink: the title text.
    let header_ink = px[..(w * 3) * (HEADER_H * PNG_SCALE) as usize]
        .chunks_exact(3)
        .filter(|p| *p != [255, 255, 255])
        .count();
    assert!(header_ink > 500, "{header_ink}");
    // An empty result still renders ("no data" panels).
    let mut empty = r.clone();
    empty.requests.clear();
    let (ew, _, epx) = decode_png(&render_png(&empty).unwrap());
    assert_eq!(ew, w);
    let muted = epx
        .chunks_exact(3)
        .filter(|p| *p == [MUTED.0, MUTED.1, MUTED.2])
        .count();
    assert!(muted > 50, "{muted}");
    // write_plot dispatches on the extension.
    let dir = std::env::temp_dir().join(format!("lantern-bench-plot-{}", std::process::id()));
    let path = dir.join("plot.png");
    write_plot(&path, &r).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), png);
    let svg = dir.join("plot.svg");
    write_plot(&svg, &r).unwrap();
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes `plot.png` and `plot.svg` of a synthetic run to look at:
/// `cargo test -p lantern-bench --lib -- --ignored example_plots --nocapture`.
#[test]
#[ignore = "writes files to look at"]
fn example_plots() {
    let dir = std::env::temp_dir().join("lantern-bench-plot-example");
    let r = synthetic(200);
    for name in ["plot.png", "plot.svg"] {
        write_plot(&dir.join(name), &r).unwrap();
        println!("{}", dir.join(name).display());
    }
}
