//! A small software rasterizer for the plot: an RGB [`Canvas`] that implements
//! [`Surface`] (anti-aliased thick polylines, filled rectangles, text from the embedded
//! bitmap font in [`crate::font`]) and encodes itself as an 8-bit RGB PNG.

use crate::font::{self, ADVANCE, ASCENT, GLYPH_H, GLYPH_W};
use crate::plot::{Anchor, Rgb, Surface, Text};

/// An RGB image; drawing calls take plot units, multiplied by `scale` into pixels.
pub struct Canvas {
    width: usize,
    height: usize,
    scale: f64,
    pixels: Vec<u8>,
}

impl Canvas {
    /// A white canvas of `w` x `h` plot units at `scale` pixels per unit.
    pub fn new(w: f64, h: f64, scale: f64) -> Self {
        let width = (w * scale).ceil().max(1.0) as usize;
        let height = (h * scale).ceil().max(1.0) as usize;
        Canvas {
            width,
            height,
            scale,
            pixels: vec![255; width * height * 3],
        }
    }

    /// Blends `c` over pixel `(x, y)` with opacity `a` in [0, 1]; off-canvas is a no-op.
    fn blend(&mut self, x: i64, y: i64, c: Rgb, a: f32) {
        if x < 0 || y < 0 || x as usize >= self.width || y as usize >= self.height || a <= 0.0 {
            return;
        }
        let i = (y as usize * self.width + x as usize) * 3;
        let a = a.min(1.0);
        for (k, v) in [c.0, c.1, c.2].into_iter().enumerate() {
            let old = f32::from(self.pixels[i + k]);
            self.pixels[i + k] = (old + (f32::from(v) - old) * a).round() as u8;
        }
    }

    /// Fills whole pixels `[x0, x1) x [y0, y1)` (pixel coordinates, clipped).
    fn fill_px(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb) {
        let (x0, x1) = (x0.max(0), x1.min(self.width as i64));
        let (y0, y1) = (y0.max(0), y1.min(self.height as i64));
        for y in y0..y1 {
            for x in x0..x1 {
                self.blend(x, y, c, 1.0);
            }
        }
    }

    /// The PNG file: signature, IHDR (8-bit RGB), one zlib IDAT with filter 0 rows, IEND.
    pub fn encode_png(&self) -> Vec<u8> {
        let row = self.width * 3;
        let mut raw = Vec::with_capacity(self.height * (row + 1));
        for line in self.pixels.chunks_exact(row) {
            raw.push(0);
            raw.extend_from_slice(line);
        }
        let mut ihdr = Vec::with_capacity(13);
        ihdr.extend_from_slice(&(self.width as u32).to_be_bytes());
        ihdr.extend_from_slice(&(self.height as u32).to_be_bytes());
        // Bit depth 8, colour type 2 (RGB), deflate, adaptive filtering, no interlace.
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut out = PNG_SIGNATURE.to_vec();
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(
            &mut out,
            b"IDAT",
            &miniz_oxide::deflate::compress_to_vec_zlib(&raw, 6),
        );
        chunk(&mut out, b"IEND", &[]);
        out
    }
}

/// Read-back for tests.
#[cfg(test)]
impl Canvas {
    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// The colour of pixel `(x, y)`, if it is on the canvas.
    pub fn pixel(&self, x: usize, y: usize) -> Option<Rgb> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y * self.width + x) * 3;
        Some(Rgb(self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]))
    }
}

pub const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
};

/// CRC-32 (ISO 3309 / ITU-T V.42, as PNG uses).
pub fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, &b| {
        CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// Distance from `p` to the segment `a`-`b`.
fn dist_to_segment(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (cx, cy) = (a.0 + t * dx, a.1 + t * dy);
    ((p.0 - cx).powi(2) + (p.1 - cy).powi(2)).sqrt()
}

impl Surface for Canvas {
    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: Rgb) {
        let s = self.scale;
        let px = |v: f64| (v * s).round() as i64;
        self.fill_px(px(x), px(y), px(x + w), px(y + h), fill);
    }

    /// Strokes the polyline with round joins and caps. Coverage is the maximum over
    /// segments (so joints are not blended twice), then blended once.
    fn polyline(&mut self, pts: &[(f64, f64)], color: Rgb, width: f64) {
        let s = self.scale;
        let pts: Vec<(f64, f64)> = pts
            .iter()
            .map(|&(x, y)| (x * s, y * s))
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        let Some(&first) = pts.first() else {
            return;
        };
        let hw = (width * s / 2.0).max(0.5);
        let pad = hw + 1.0;
        let clip_x = |v: f64| (v.floor().max(0.0) as usize).min(self.width);
        let clip_y = |v: f64| (v.floor().max(0.0) as usize).min(self.height);
        let (mut lo, mut hi) = (first, first);
        for p in &pts {
            lo = (lo.0.min(p.0), lo.1.min(p.1));
            hi = (hi.0.max(p.0), hi.1.max(p.1));
        }
        let (bx0, by0) = (clip_x(lo.0 - pad), clip_y(lo.1 - pad));
        let (bx1, by1) = (clip_x(hi.0 + pad + 1.0), clip_y(hi.1 + pad + 1.0));
        if bx0 >= bx1 || by0 >= by1 {
            return;
        }
        let bw = bx1 - bx0;
        let mut cov = vec![0f32; bw * (by1 - by0)];
        let segments: Vec<((f64, f64), (f64, f64))> = if pts.len() == 1 {
            vec![(first, first)]
        } else {
            pts.windows(2).map(|w| (w[0], w[1])).collect()
        };
        for (a, b) in segments {
            let x0 = clip_x(a.0.min(b.0) - pad).max(bx0);
            let x1 = clip_x(a.0.max(b.0) + pad + 1.0).min(bx1);
            let y0 = clip_y(a.1.min(b.1) - pad).max(by0);
            let y1 = clip_y(a.1.max(b.1) + pad + 1.0).min(by1);
            for y in y0..y1 {
                for x in x0..x1 {
                    let d = dist_to_segment((x as f64 + 0.5, y as f64 + 0.5), a, b);
                    let c = (hw + 0.5 - d).clamp(0.0, 1.0) as f32;
                    let slot = &mut cov[(y - by0) * bw + (x - bx0)];
                    *slot = slot.max(c);
                }
            }
        }
        for (i, &c) in cov.iter().enumerate() {
            if c > 0.0 {
                let (x, y) = (bx0 + i % bw, by0 + i / bw);
                self.blend(x as i64, y as i64, color, c);
            }
        }
    }

    /// Text from the 5x7 font at an integer scale near `size` (smaller if it would not
    /// fit `max_width`); bold text is struck twice, one pixel apart.
    fn text(&mut self, t: &Text<'_>) {
        let bold = i64::from(t.bold);
        let n = t.s.chars().count() as i64;
        let len = |k: i64| (n * ADVANCE as i64 - (ADVANCE - GLYPH_W) as i64).max(0) * k + bold;
        let mut k = ((t.size * self.scale / 10.0).round() as i64).max(1);
        while k > 1 && len(k) as f64 > t.max_width * self.scale {
            k -= 1;
        }
        let len = len(k);
        let along0 = match t.anchor {
            Anchor::Start => 0,
            Anchor::Middle => -len / 2,
            Anchor::End => -len,
        };
        let (ax, ay) = (
            (t.x * self.scale).round() as i64,
            (t.y * self.scale).round() as i64,
        );
        // Horizontal text stays on the canvas when it can.
        let along0 = if t.vertical {
            along0
        } else {
            let left = (ax + along0).clamp(0, (self.width as i64 - len).max(0));
            left - ax
        };
        let top = -(ASCENT as i64) * k;
        for (i, c) in t.s.chars().enumerate() {
            let glyph = font::glyph(c);
            let base = along0 + i as i64 * ADVANCE as i64 * k;
            for (row, bits) in glyph.iter().enumerate().take(GLYPH_H) {
                for col in 0..GLYPH_W {
                    if bits & (1 << (GLYPH_W - 1 - col)) == 0 {
                        continue;
                    }
                    // (u, v): along the text and down from its top, in pixels.
                    let u = base + col as i64 * k;
                    let v = top + row as i64 * k;
                    let (x0, y0, x1, y1) = if t.vertical {
                        // Rotated -90 degrees: along the text is up, down is right.
                        (ax + v, ay - u - k - bold, ax + v + k, ay - u)
                    } else {
                        (ax + u, ay + v, ax + u + k + bold, ay + v + k)
                    };
                    self.fill_px(x0, y0, x1, y1, t.color);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    /// A decoded 8-bit RGB PNG: width, height, pixels. Checks the signature, every
    /// chunk's CRC, the IHDR fields, the inflated size and that every row uses filter 0.
    pub(crate) fn decode_png(png: &[u8]) -> (usize, usize, Vec<u8>) {
        assert_eq!(png[..8], PNG_SIGNATURE);
        let mut at = 8;
        let (mut w, mut h) = (0, 0);
        let mut idat = Vec::new();
        let mut kinds = Vec::new();
        while at < png.len() {
            let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
            let body = &png[at + 4..at + 8 + len];
            let crc = u32::from_be_bytes(png[at + 8 + len..at + 12 + len].try_into().unwrap());
            assert_eq!(crc32(body), crc, "chunk CRC");
            let (kind, data) = body.split_at(4);
            match kind {
                b"IHDR" => {
                    w = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                    h = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                    assert_eq!(data[8..], [8, 2, 0, 0, 0]);
                }
                b"IDAT" => idat.extend_from_slice(data),
                _ => {}
            }
            kinds.push(String::from_utf8(kind.to_vec()).unwrap());
            at += 12 + len;
        }
        assert_eq!(at, png.len());
        assert_eq!(kinds.first().map(String::as_str), Some("IHDR"));
        assert_eq!(kinds.last().map(String::as_str), Some("IEND"));
        let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&idat).unwrap();
        assert_eq!(raw.len(), h * (1 + w * 3));
        let mut pixels = Vec::with_capacity(w * h * 3);
        for row in raw.chunks_exact(1 + w * 3) {
            assert_eq!(row[0], 0, "filter byte");
            pixels.extend_from_slice(&row[1..]);
        }
        (w, h, pixels)
    }

    fn at(w: usize, pixels: &[u8], x: usize, y: usize) -> Rgb {
        let i = (y * w + x) * 3;
        Rgb(pixels[i], pixels[i + 1], pixels[i + 2])
    }

    #[test]
    fn crc32_known_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b"IEND"), 0xae42_6082);
    }

    #[test]
    fn png_round_trip_with_known_pixels() {
        let red = Rgb(200, 10, 20);
        let blue = Rgb(0, 0, 255);
        // 2 pixels per unit: a 60 x 40 image.
        let mut c = Canvas::new(30.0, 20.0, 2.0);
        c.rect(1.0, 1.0, 4.0, 3.0, red); // pixels [2, 10) x [2, 8)
        c.line((0.0, 15.0), (30.0, 15.0), blue, 2.0); // rows 28..32 fully covered
        c.line((20.0, 0.0), (20.0, 10.0), Rgb::BLACK, 1.0);
        let (w, h, px) = decode_png(&c.encode_png());
        assert_eq!((w, h), (60, 40));
        assert_eq!((c.width(), c.height()), (60, 40));
        assert_eq!(at(w, &px, 5, 5), red);
        assert_eq!(at(w, &px, 2, 2), red);
        assert_eq!(at(w, &px, 10, 8), Rgb::WHITE);
        assert_eq!(at(w, &px, 1, 5), Rgb::WHITE);
        for x in [3, 30, 59] {
            assert_eq!(at(w, &px, x, 29), blue);
            assert_eq!(at(w, &px, x, 30), blue);
        }
        assert_eq!(at(w, &px, 30, 25), Rgb::WHITE);
        assert_eq!(at(w, &px, 39, 10), Rgb::BLACK);
        assert_eq!(at(w, &px, 40, 10), Rgb::BLACK);
        assert_eq!(at(w, &px, 45, 10), Rgb::WHITE);
        // An anti-aliased diagonal: its pixels are between the two colours.
        let mut d = Canvas::new(20.0, 20.0, 1.0);
        d.line((0.0, 0.0), (20.0, 13.0), Rgb::BLACK, 1.0);
        let grey = (0..20)
            .flat_map(|y| (0..20).map(move |x| (x, y)))
            .filter_map(|(x, y)| d.pixel(x, y))
            .filter(|p| p.0 > 0 && p.0 < 255)
            .count();
        assert!(grey > 0);
        // Off-canvas drawing is clipped, not a panic.
        d.line((-50.0, -50.0), (500.0, 70.0), Rgb::BLACK, 3.0);
        d.rect(-5.0, 15.0, 100.0, 100.0, red);
        d.text(&Text {
            x: -40.0,
            y: 200.0,
            size: 40.0,
            bold: true,
            anchor: Anchor::End,
            vertical: true,
            color: red,
            max_width: f64::INFINITY,
            s: "off the edge",
        });
        assert_eq!(d.pixel(19, 19), Some(red));
        assert_eq!(d.pixel(20, 0), None);
    }

    fn ink(c: &Canvas) -> Vec<(usize, usize)> {
        (0..c.height())
            .flat_map(|y| (0..c.width()).map(move |x| (x, y)))
            .filter(|&(x, y)| c.pixel(x, y) != Some(Rgb::WHITE))
            .collect()
    }

    #[test]
    fn text_renders_ink_where_anchored() {
        let t = |anchor, vertical| Text {
            x: 50.0,
            y: 50.0,
            size: 10.0,
            bold: false,
            anchor,
            vertical,
            color: Rgb::BLACK,
            max_width: f64::INFINITY,
            s: "Ag M",
        };
        let mut c = Canvas::new(100.0, 100.0, 1.0);
        c.text(&t(Anchor::Start, false));
        let px = ink(&c);
        assert!(!px.is_empty());
        // "Ag M" at scale 1: 4 * 6 - 1 = 23 wide, 7 rows above the baseline and the
        // descender of 'g' one row below it.
        let (xmin, xmax) = (px.iter().map(|p| p.0).min(), px.iter().map(|p| p.0).max());
        let (ymin, ymax) = (px.iter().map(|p| p.1).min(), px.iter().map(|p| p.1).max());
        assert_eq!((xmin, xmax), (Some(50), Some(72)));
        assert_eq!((ymin, ymax), (Some(43), Some(50)));
        assert!(px.iter().all(|&(x, y)| c.pixel(x, y) == Some(Rgb::BLACK)));

        let mut m = Canvas::new(100.0, 100.0, 1.0);
        m.text(&t(Anchor::Middle, false));
        let px = ink(&m);
        let xmin = px.iter().map(|p| p.0).min().unwrap();
        let xmax = px.iter().map(|p| p.0).max().unwrap();
        assert!(
            (xmin + xmax) / 2 == 50 || (xmin + xmax) / 2 == 49,
            "{xmin} {xmax}"
        );

        // Vertical: reads upwards, glyph tops to the left of the anchor's x.
        let mut v = Canvas::new(100.0, 100.0, 1.0);
        v.text(&t(Anchor::Start, true));
        let px = ink(&v);
        let (xmin, xmax) = (px.iter().map(|p| p.0).min(), px.iter().map(|p| p.0).max());
        let (ymin, ymax) = (px.iter().map(|p| p.1).min(), px.iter().map(|p| p.1).max());
        assert_eq!((xmin, xmax), (Some(43), Some(50)));
        assert_eq!((ymin, ymax), (Some(27), Some(49)));

        // Scale 2 and bold: more ink.
        let mut b = Canvas::new(100.0, 100.0, 2.0);
        b.text(&Text {
            bold: true,
            ..t(Anchor::Start, false)
        });
        assert!(ink(&b).len() > 4 * ink(&c).len());
        // Too little room: back to scale 1.
        let mut f = Canvas::new(100.0, 100.0, 2.0);
        f.text(&Text {
            max_width: 20.0,
            ..t(Anchor::Start, false)
        });
        assert_eq!(ink(&f).len(), ink(&c).len());
    }
}
