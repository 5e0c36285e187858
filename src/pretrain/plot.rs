//! `loss.png`: a small line-plot rasteriser of our own on the `png` crate we already depend on
//! (a plotting crate would bring fonts and a drawing stack for one curve). The loss per step in
//! light grey, its moving average (window ≈ steps/50) in dark blue, a frame and a faint grid of
//! 5 × 4 cells; no text — the numbers are in `metrics.jsonl`, the plot shows the shape.

use crate::error::{Error, Result};
use std::path::Path;

const W: usize = 640;
const H: usize = 360;
const MARGIN: usize = 24;

/// (iteration, loss) points in order.
#[derive(Clone, Debug, Default)]
pub struct PlotSeries {
    pub points: Vec<(u64, f32)>,
}

impl PlotSeries {
    pub fn push(&mut self, iteration: u64, loss: f32) {
        self.points.push((iteration, loss));
    }
}

struct Canvas {
    rgb: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if (0..W as i64).contains(&x) && (0..H as i64).contains(&y) {
            let i = 3 * (y as usize * W + x as usize);
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }
    /// Bresenham's line.
    fn line(&mut self, (mut x0, mut y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3]) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let mut err = dx + dy;
        loop {
            self.set(x0, y0, c);
            if x0 == x1 && y0 == y1 {
                return;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x0 += sx;
            }
            if e2 <= dx {
                err += dx;
                y0 += sy;
            }
        }
    }
}

/// Rasterise the series to an RGB image `[H, W, 3]` (exposed for tests).
pub fn render_loss_plot(series: &PlotSeries) -> Vec<u8> {
    let mut c = Canvas {
        rgb: vec![255; W * H * 3],
    };
    let (x0, y0, x1, y1) = (
        MARGIN as i64,
        MARGIN as i64,
        (W - MARGIN) as i64,
        (H - MARGIN) as i64,
    );
    let grid = [225, 225, 225];
    for k in 1..5 {
        let x = x0 + (x1 - x0) * k / 5;
        c.line((x, y0), (x, y1), grid);
    }
    for k in 1..4 {
        let y = y0 + (y1 - y0) * k / 4;
        c.line((x0, y), (x1, y), grid);
    }
    let frame = [60, 60, 60];
    c.line((x0, y0), (x1, y0), frame);
    c.line((x1, y0), (x1, y1), frame);
    c.line((x1, y1), (x0, y1), frame);
    c.line((x0, y1), (x0, y0), frame);
    let pts: Vec<(u64, f32)> = series
        .points
        .iter()
        .copied()
        .filter(|p| p.1.is_finite())
        .collect();
    if pts.is_empty() {
        return c.rgb;
    }
    let (lo, hi) = pts
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let (first, last) = (pts[0].0, pts[pts.len() - 1].0);
    let xs = (last - first).max(1) as f64;
    let to_px = |(it, v): (u64, f32)| -> (i64, i64) {
        let x = x0 as f64 + (x1 - x0 - 2) as f64 * (it - first) as f64 / xs + 1.0;
        let y = y1 as f64 - 1.0 - (y1 - y0 - 2) as f64 * ((v - lo) / span) as f64;
        (x.round() as i64, y.round() as i64)
    };
    let raw = [170, 170, 170];
    for w in pts.windows(2) {
        c.line(to_px(w[0]), to_px(w[1]), raw);
    }
    let window = (pts.len() / 50).max(1);
    let mut smooth = Vec::with_capacity(pts.len());
    let mut sum = 0.0f64;
    for (i, p) in pts.iter().enumerate() {
        sum += p.1 as f64;
        if i >= window {
            sum -= pts[i - window].1 as f64;
        }
        smooth.push((p.0, (sum / (i + 1).min(window) as f64) as f32));
    }
    let blue = [20, 60, 160];
    for w in smooth.windows(2) {
        let (a, b) = (to_px(w[0]), to_px(w[1]));
        c.line(a, b, blue);
        c.line((a.0, a.1 + 1), (b.0, b.1 + 1), blue);
    }
    c.rgb
}

/// Render and write `path` atomically (a reader never sees half a PNG).
pub fn write_loss_plot(path: &Path, series: &PlotSeries) -> Result<()> {
    let op = "write_loss_plot";
    let rgb = render_loss_plot(series);
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, W as u32, H as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|e| Error::invalid(op, "a PNG header", e))?;
        w.write_image_data(&rgb)
            .map_err(|e| Error::invalid(op, "PNG image data", e))?;
    }
    crate::nn::state_file::write_atomically(op, &path.display().to_string(), &bytes)
}
