//! Horizontal bar charts as PNG, for `cads bench --report`: one row per bar (label on the left,
//! the value printed at the bar's end), a value axis with round tick values underneath, an
//! optional reference line (1.0 for ratios), a colour per series with a legend.
//!
//! Text is drawn with a built-in 3×5 bitmap font scaled ×2 (upper case, digits and the
//! punctuation that case names use), so the crate needs nothing beyond `png` to write a chart.

use crate::error::{Error, Result};

/// One bar.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    /// Index into [`BarChart::series`] (its colour).
    pub series: usize,
}

/// A chart: title, value unit, series names and bars (top to bottom).
#[derive(Clone, Debug, PartialEq)]
pub struct BarChart {
    pub title: String,
    /// Axis caption, e.g. `"speed ratio (peer ms / cads ms)"`.
    pub axis: String,
    pub series: Vec<String>,
    pub bars: Vec<Bar>,
    /// A vertical line at this value (1.0 on ratio charts: parity with the peer).
    pub reference: Option<f64>,
}

/// Glyph pixel size (font units) and the scale it is drawn at.
const GLYPH_W: usize = 3;
const GLYPH_H: usize = 5;
const SCALE: usize = 2;
/// Advance per character and per text line, in pixels.
const CHAR_W: usize = (GLYPH_W + 1) * SCALE;
const LINE_H: usize = (GLYPH_H + 3) * SCALE;

const BACKGROUND: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [20, 20, 20];
const GRID: [u8; 3] = [220, 220, 220];
const REFERENCE: [u8; 3] = [200, 30, 30];
/// Series colours (cycled).
const PALETTE: [[u8; 3]; 4] = [
    [52, 101, 164],
    [237, 150, 50],
    [90, 160, 90],
    [150, 90, 170],
];

/// The 3×5 glyph of `c` as five rows of three bits (bit 2 = left column); lower case draws as
/// upper case, unknown characters as a checker pattern.
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_uppercase() {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [3, 4, 4, 4, 3],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [3, 4, 5, 5, 3],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'J' => [1, 1, 1, 5, 2],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [2, 5, 5, 5, 2],
        'P' => [6, 5, 6, 4, 4],
        'Q' => [2, 5, 5, 6, 3],
        'R' => [6, 5, 6, 5, 5],
        'S' => [3, 4, 2, 1, 6],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        'Z' => [7, 1, 2, 4, 7],
        ' ' => [0, 0, 0, 0, 0],
        '.' => [0, 0, 0, 0, 2],
        ',' => [0, 0, 0, 2, 4],
        '-' => [0, 0, 7, 0, 0],
        '_' => [0, 0, 0, 0, 7],
        '/' => [1, 1, 2, 4, 4],
        '%' => [5, 1, 2, 4, 5],
        ':' => [0, 2, 0, 2, 0],
        '=' => [0, 7, 0, 7, 0],
        '+' => [0, 2, 7, 2, 0],
        '(' => [2, 4, 4, 4, 2],
        ')' => [2, 1, 1, 1, 2],
        '[' => [6, 4, 4, 4, 6],
        ']' => [3, 1, 1, 1, 3],
        '<' => [1, 2, 4, 2, 1],
        '>' => [4, 2, 1, 2, 4],
        _ => [5, 2, 5, 2, 5],
    }
}

/// An RGB canvas.
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
            rgb: BACKGROUND.repeat(width * height),
        }
    }

    /// Fill the rectangle [x0, x1) × [y0, y1), clipped to the canvas.
    fn fill(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, color: [u8; 3]) {
        for y in y0.min(self.height)..y1.min(self.height) {
            for x in x0.min(self.width)..x1.min(self.width) {
                let i = 3 * (y * self.width + x);
                self.rgb[i..i + 3].copy_from_slice(&color);
            }
        }
    }

    /// Draw `text` with its top-left corner at (x, y).
    fn text(&mut self, x: usize, y: usize, text: &str, color: [u8; 3]) {
        for (n, c) in text.chars().enumerate() {
            let gx = x + n * CHAR_W;
            for (row, bits) in glyph(c).iter().enumerate() {
                for col in 0..GLYPH_W {
                    if bits >> (GLYPH_W - 1 - col) & 1 == 1 {
                        let px = gx + col * SCALE;
                        let py = y + row * SCALE;
                        self.fill(px, py, px + SCALE, py + SCALE, color);
                    }
                }
            }
        }
    }
}

/// Pixel width of `text`.
fn text_width(text: &str) -> usize {
    text.chars().count() * CHAR_W
}

/// Round tick values covering [0, max]: a step of 1, 2 or 5 × 10^k giving at most ~6 ticks.
pub fn ticks(max: f64) -> Vec<f64> {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let count = (max / step).ceil() as usize;
    (0..=count).map(|i| i as f64 * step).collect()
}

/// A value as a tick or bar label: few digits, no trailing zeros.
pub fn short_number(v: f64) -> String {
    let text = if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// The chart as PNG bytes. Errors on a chart without bars or with a negative or non-finite
/// value (nothing meaningful to draw).
pub fn render_png(chart: &BarChart) -> Result<Vec<u8>> {
    if chart.bars.is_empty() {
        return Err(Error::invalid(
            "bench report",
            "a chart with bars",
            chart.title.clone(),
        ));
    }
    if let Some(b) = chart
        .bars
        .iter()
        .find(|b| !(b.value.is_finite() && b.value >= 0.0))
    {
        return Err(Error::invalid(
            "bench report",
            "finite, non-negative bar values",
            format!("{} = {}", b.label, b.value),
        ));
    }
    let max_value = chart
        .bars
        .iter()
        .map(|b| b.value)
        .chain(chart.reference)
        .fold(0.0, f64::max);
    let ticks = ticks(max_value);
    let axis_max = *ticks.last().expect("ticks() returns at least one value");
    let margin = 12;
    let label_w = chart
        .bars
        .iter()
        .map(|b| text_width(&b.label))
        .max()
        .unwrap_or(0);
    let plot_x0 = margin + label_w + 8;
    let plot_w = 520;
    let value_w = text_width("0000.00") + 8;
    let width = plot_x0 + plot_w + value_w + margin;
    let legend_rows = if chart.series.len() > 1 {
        chart.series.len()
    } else {
        0
    };
    let plot_y0 = margin + LINE_H * (1 + legend_rows) + 6;
    let plot_h = chart.bars.len() * LINE_H;
    let height = plot_y0 + plot_h + 6 + 2 * LINE_H + margin;
    let mut c = Canvas::new(width.max(text_width(&chart.title) + 2 * margin), height);

    c.text(margin, margin, &chart.title, INK);
    for (i, name) in chart.series.iter().enumerate().take(legend_rows) {
        let y = margin + LINE_H * (1 + i);
        c.fill(margin, y, margin + 10, y + 10, PALETTE[i % PALETTE.len()]);
        c.text(margin + 16, y, name, INK);
    }
    let x_of = |v: f64| plot_x0 + ((v / axis_max) * plot_w as f64).round() as usize;
    for &t in &ticks {
        let x = x_of(t);
        c.fill(x, plot_y0, x + 1, plot_y0 + plot_h, GRID);
        let label = short_number(t);
        let lx = x.saturating_sub(text_width(&label) / 2);
        c.text(lx, plot_y0 + plot_h + 6, &label, INK);
    }
    c.fill(plot_x0, plot_y0, plot_x0 + 1, plot_y0 + plot_h, INK);
    c.fill(
        plot_x0,
        plot_y0 + plot_h,
        plot_x0 + plot_w + 1,
        plot_y0 + plot_h + 1,
        INK,
    );
    for (row, bar) in chart.bars.iter().enumerate() {
        let y = plot_y0 + row * LINE_H;
        c.text(
            margin + label_w - text_width(&bar.label),
            y + 3,
            &bar.label,
            INK,
        );
        let x1 = x_of(bar.value);
        c.fill(
            plot_x0 + 1,
            y + 2,
            x1.max(plot_x0 + 2),
            y + LINE_H - 2,
            PALETTE[bar.series % PALETTE.len()],
        );
        c.text(x1 + 4, y + 3, &short_number(bar.value), INK);
    }
    if let Some(r) = chart.reference {
        let x = x_of(r);
        c.fill(x, plot_y0, x + 2, plot_y0 + plot_h, REFERENCE);
    }
    let axis_y = plot_y0 + plot_h + 6 + LINE_H;
    c.text(plot_x0, axis_y, &chart.axis, INK);
    encode(&c)
}

fn encode(c: &Canvas) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let err =
        |e: png::EncodingError| Error::invalid("bench report", "a PNG encoding", e.to_string());
    let mut encoder = png::Encoder::new(&mut bytes, c.width as u32, c.height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(err)?;
    writer.write_image_data(&c.rgb).map_err(err)?;
    writer.finish().map_err(err)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(
            ticks(1.0),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert_eq!(ticks(43.0), vec![0.0, 10.0, 20.0, 30.0, 40.0, 50.0]);
        assert_eq!(ticks(0.0), ticks(1.0));
        let t = ticks(2.7);
        assert!(*t.last().unwrap() >= 2.7 && t.len() <= 7, "{t:?}");
    }

    #[test]
    fn short_numbers_drop_trailing_zeros() {
        assert_eq!(short_number(1.0), "1");
        assert_eq!(short_number(0.5), "0.5");
        assert_eq!(short_number(1.25), "1.25");
        assert_eq!(short_number(38.7), "38.7");
        assert_eq!(short_number(1234.5), "1234");
    }

    #[test]
    fn every_character_of_case_names_has_a_glyph() {
        let unknown = glyph('\u{7f}');
        for c in "abcdefghijklmnopqrstuvwxyz0123456789 ._-/%:=+()[]<>,".chars() {
            assert_ne!(glyph(c), unknown, "{c:?} draws as the unknown pattern");
        }
    }

    #[test]
    fn a_chart_decodes_back_with_bars_in_their_series_colour_and_ink_for_text() {
        let chart = BarChart {
            title: "matmul vs burn".into(),
            axis: "ratio".into(),
            series: vec!["burn".into(), "torch".into()],
            bars: vec![
                Bar {
                    label: "matmul/1024".into(),
                    value: 1.2,
                    series: 0,
                },
                Bar {
                    label: "conv3d/c32".into(),
                    value: 0.4,
                    series: 1,
                },
            ],
            reference: Some(1.0),
        };
        let png_bytes = render_png(&chart).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let rgb = &buf[..info.buffer_size()];
        let count = |color: [u8; 3]| rgb.chunks(3).filter(|p| *p == color).count();
        // The longer bar (1.2 of an axis up to 1.2) has more pixels of its colour than 0.4's,
        // in proportion 3:1 within the rounding of the ends (plus its legend swatch of 100 px).
        let (first, second) = (count(PALETTE[0]) - 100, count(PALETTE[1]) - 100);
        let ratio = first as f64 / second as f64;
        assert!((ratio - 3.0).abs() < 0.2, "{first} vs {second} px");
        assert!(count(INK) > 500, "text and axes drawn");
        assert!(count(REFERENCE) > 0, "the reference line is drawn");
    }

    #[test]
    fn an_empty_or_negative_chart_is_an_error() {
        let mut chart = BarChart {
            title: "t".into(),
            axis: "a".into(),
            series: vec!["s".into()],
            bars: vec![],
            reference: None,
        };
        assert!(render_png(&chart).is_err());
        chart.bars.push(Bar {
            label: "x".into(),
            value: -1.0,
            series: 0,
        });
        assert!(render_png(&chart).is_err());
    }
}
