//! The training curves as a PNG, drawn by a small rasteriser of our own (no font, no plotting
//! crate): two panels side by side, 400×300 pixels each.
//!
//! - left: mean training loss per epoch (black), y from 0 to the largest loss;
//! - right: validation Dice per foreground class (colours in class order: [`CLASS_COLOURS`],
//!   cycling) and their mean (black), y from 0 to 1, with grey grid lines at 0.25, 0.5, 0.75.
//!
//! x runs over the epochs in both. The numbers themselves are in `metrics.jsonl`.

use crate::error::{Error, Result};

/// Line colours of the foreground classes 1, 2, … (RGB), repeated when there are more classes.
pub const CLASS_COLOURS: [[u8; 3]; 8] = [
    [230, 25, 75],
    [60, 180, 75],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [128, 128, 0],
];

const PANEL_W: usize = 400;
const PANEL_H: usize = 300;
const MARGIN: usize = 20;

struct Canvas {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Canvas {
        Canvas {
            width,
            height,
            rgb: vec![255; width * height * 3],
        }
    }

    fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    /// A 2-pixel-wide line by DDA (one step per pixel along the longer axis).
    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: [u8; 3]) {
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as usize;
        for s in 0..=steps {
            let t = s as f64 / steps as f64;
            let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                self.put(x.round() as i64 + dx, y.round() as i64 + dy, c);
            }
        }
    }
}

/// One panel's plot area, mapping (epoch, value) to pixels.
struct Panel {
    left: f64,
    epochs: usize,
    y_max: f64,
}

impl Panel {
    fn px(&self, epoch: usize, v: f64) -> (f64, f64) {
        let w = (PANEL_W - 2 * MARGIN) as f64;
        let h = (PANEL_H - 2 * MARGIN) as f64;
        let x = self.left + MARGIN as f64 + w * epoch as f64 / (self.epochs.max(2) - 1) as f64;
        let y = MARGIN as f64 + h * (1.0 - (v / self.y_max).clamp(0.0, 1.0));
        (x, y)
    }

    fn frame(&self, c: &mut Canvas) {
        let k = [0, 0, 0];
        let (x0, y0) = (self.left + MARGIN as f64, MARGIN as f64);
        let (x1, y1) = (
            self.left + (PANEL_W - MARGIN) as f64,
            (PANEL_H - MARGIN) as f64,
        );
        c.line((x0, y1), (x1, y1), k);
        c.line((x0, y0), (x0, y1), k);
    }

    fn series(&self, c: &mut Canvas, values: &[f64], colour: [u8; 3]) {
        for (e, pair) in values.windows(2).enumerate() {
            if pair.iter().all(|v| v.is_finite()) {
                c.line(self.px(e, pair[0]), self.px(e + 1, pair[1]), colour);
            }
        }
        if values.len() == 1 && values[0].is_finite() {
            let (x, y) = self.px(0, values[0]);
            c.line((x - 2.0, y), (x + 2.0, y), colour);
        }
    }
}

/// Encode the curves: `loss[e]` the mean training loss of epoch e, `dice[e][k]` the validation
/// Dice of foreground class k + 1 at epoch e (NaN where not measured).
pub fn curves_png(loss: &[f64], dice: &[Vec<f64>]) -> Result<Vec<u8>> {
    let op = "curves_png";
    if loss.len() != dice.len() {
        return Err(Error::invalid(
            op,
            "one Dice row per epoch of loss",
            format!("{} losses, {} Dice rows", loss.len(), dice.len()),
        ));
    }
    let mut canvas = Canvas::new(2 * PANEL_W, PANEL_H);
    let epochs = loss.len();
    let y_max = loss
        .iter()
        .cloned()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(1e-6);
    let left = Panel {
        left: 0.0,
        epochs,
        y_max,
    };
    left.frame(&mut canvas);
    left.series(&mut canvas, loss, [0, 0, 0]);
    let right = Panel {
        left: PANEL_W as f64,
        epochs,
        y_max: 1.0,
    };
    for g in [0.25, 0.5, 0.75, 1.0] {
        canvas.line(
            right.px(0, g),
            right.px(epochs.max(2) - 1, g),
            [200, 200, 200],
        );
    }
    right.frame(&mut canvas);
    let classes = dice.iter().map(Vec::len).max().unwrap_or(0);
    for k in 0..classes {
        let series: Vec<f64> = dice
            .iter()
            .map(|r| *r.get(k).unwrap_or(&f64::NAN))
            .collect();
        right.series(&mut canvas, &series, CLASS_COLOURS[k % CLASS_COLOURS.len()]);
    }
    let mean: Vec<f64> = dice
        .iter()
        .map(|r| {
            if r.is_empty() {
                f64::NAN
            } else {
                r.iter().sum::<f64>() / r.len() as f64
            }
        })
        .collect();
    right.series(&mut canvas, &mean, [0, 0, 0]);
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, canvas.width as u32, canvas.height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let bad = |e: png::EncodingError| Error::invalid(op, "a PNG encoding", e.to_string());
        let mut writer = enc.write_header().map_err(bad)?;
        writer.write_image_data(&canvas.rgb).map_err(bad)?;
        writer.finish().map_err(bad)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_decodable_png_with_class_colours() {
        let loss = [1.5, 1.0, 0.7, 0.6];
        let dice = vec![
            vec![0.1, 0.0],
            vec![0.4, 0.2],
            vec![0.6, 0.5],
            vec![0.8, 0.7],
        ];
        let bytes = curves_png(&loss, &dice).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (800, 300));
        let has = |c: [u8; 3]| buf.chunks(3).any(|p| p == c);
        assert!(has(CLASS_COLOURS[0]) && has(CLASS_COLOURS[1]) && has([0, 0, 0]));
        assert!(curves_png(&loss, &dice[..2]).is_err());
    }
}
