//! `cads inspect <file> [--series UID] [--json] [--labels]`: shape, spacing, orientation,
//! datatype, affine and value range of a volume (NIfTI, NRRD or a DICOM series, through
//! `data::read_volume`); for a labelmap (integer datatype, or `--labels`) the distinct labels with
//! their voxel counts.

use cads::data::orientation::orientation_code;
use cads::data::{read_volume_with, ReadOptions, Volume};
use cads::Result;

/// Everything `inspect` reports, computed once for both output forms.
struct Report {
    path: String,
    vol: Volume,
    orientation: String,
    min: f64,
    max: f64,
    mean: f64,
    /// (label, voxel count), when reported as a labelmap.
    labels: Option<Vec<(f32, usize)>>,
}

fn label_counts(vol: &Volume) -> Vec<(f32, usize)> {
    let mut sorted = vol.data.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let mut out: Vec<(f32, usize)> = Vec::new();
    for v in sorted {
        match out.last_mut() {
            Some((l, c)) if *l == v => *c += 1,
            _ => out.push((v, 1)),
        }
    }
    out
}

pub fn run(path: &str, series: Option<&str>, json: bool, labels: bool) -> Result<()> {
    let opts = ReadOptions {
        series_uid: series.map(str::to_string),
    };
    let vol = read_volume_with(path, &opts)?;
    let (min, max, mean) = vol.stats();
    let is_labels =
        labels || vol.datatype.is_integer() && (max - min) <= 65535.0 && is_labelmap_like(&vol);
    let report = Report {
        path: path.to_string(),
        orientation: orientation_code(&vol.affine),
        labels: is_labels.then(|| label_counts(&vol)),
        vol,
        min,
        max,
        mean,
    };
    if json {
        println!("{}", to_json(&report));
    } else {
        print_text(&report);
    }
    Ok(())
}

/// An integer volume is reported as a labelmap when it has few distinct non-negative values (a CT
/// stored as int16 has thousands and negative HU).
fn is_labelmap_like(vol: &Volume) -> bool {
    let (min, _, _) = vol.stats();
    min >= 0.0 && vol.distinct_values().len() <= 1000
}

fn fmt_f(v: f64) -> String {
    // Shortest round-tripping form; JSON has no NaN/Inf, and the reader refuses them anyway.
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn to_json(r: &Report) -> String {
    let v = &r.vol;
    let list = |x: &[f64]| x.iter().map(|&f| fmt_f(f)).collect::<Vec<_>>().join(", ");
    let affine = v
        .affine
        .iter()
        .map(|row| format!("[{}]", list(row)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = format!(
        "{{\"path\": {}, \"shape\": [{}, {}, {}], \"spacing_mm\": [{}], \"orientation\": {}, \"datatype\": {}, \"affine\": [{}], \"min\": {}, \"max\": {}, \"mean\": {}",
        json_str(&r.path),
        v.dims[0],
        v.dims[1],
        v.dims[2],
        list(&v.spacing),
        json_str(&r.orientation),
        json_str(v.datatype.name()),
        affine,
        fmt_f(r.min),
        fmt_f(r.max),
        fmt_f(r.mean)
    );
    if let Some(labels) = &r.labels {
        let l = labels
            .iter()
            .map(|(l, _)| fmt_f(*l as f64))
            .collect::<Vec<_>>()
            .join(", ");
        let c = labels
            .iter()
            .map(|(_, c)| c.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        s.push_str(&format!(", \"labels\": [{l}], \"label_voxels\": [{c}]"));
    }
    s.push('}');
    s
}

fn print_text(r: &Report) {
    let v = &r.vol;
    println!("file:        {}", r.path);
    println!(
        "shape:       {} x {} x {} (X, Y, Z voxels)",
        v.dims[0], v.dims[1], v.dims[2]
    );
    println!(
        "spacing:     {:.4} x {:.4} x {:.4} mm",
        v.spacing[0], v.spacing[1], v.spacing[2]
    );
    println!("orientation: {}", r.orientation);
    println!("datatype:    {}", v.datatype);
    println!("affine:");
    for row in &v.affine {
        println!(
            "  [{:>10.4} {:>10.4} {:>10.4} {:>10.4}]",
            row[0], row[1], row[2], row[3]
        );
    }
    println!(
        "range:       min {} max {} mean {:.3}",
        r.min, r.max, r.mean
    );
    if let Some(labels) = &r.labels {
        let nonzero = labels.iter().filter(|(l, _)| *l != 0.0).count();
        println!(
            "labels:      {} distinct ({} non-zero)",
            labels.len(),
            nonzero
        );
        for (l, c) in labels {
            println!("  {l:>6}: {c} voxels");
        }
    }
}
