//! `cads inspect <file> [--series UID] [--json] [--labels]`: shape, spacing, orientation,
//! datatype, affine and value range of a volume (NIfTI, NRRD or a DICOM series, through
//! `data::read_volume`); for a labelmap (integer datatype, or `--labels`) the distinct labels with
//! their voxel counts.

use cads::data::orientation::orientation_code;
use cads::data::{read_typed_volume_with, ReadOptions, TypedVolume};
use cads::Result;

/// Everything `inspect` reports, computed once for both output forms. The volume stays in its
/// stored datatype (an int16 CT at 2 bytes per voxel): statistics and label counts are streamed
/// over it, never over an f32 copy.
struct Report {
    path: String,
    vol: TypedVolume,
    orientation: String,
    min: f64,
    max: f64,
    mean: f64,
    /// (label, voxel count), when reported as a labelmap.
    labels: Option<Vec<(f32, usize)>>,
}

pub fn run(path: &str, series: Option<&str>, json: bool, labels: bool) -> Result<()> {
    let opts = ReadOptions {
        series_uid: series.map(str::to_string),
    };
    let vol = read_typed_volume_with(path, &opts)?;
    let (min, max, mean) = vol.stats();
    let is_labels = labels
        || vol.datatype().is_integer() && (max - min) <= 65535.0 && is_labelmap_like(min, &vol);
    let report = Report {
        path: path.to_string(),
        orientation: orientation_code(&vol.affine),
        labels: is_labels.then(|| vol.label_counts()),
        vol,
        min,
        max,
        mean,
    };
    if json {
        out!("{}", to_json(&report));
    } else {
        print_text(&report);
    }
    Ok(())
}

/// An integer volume is reported as a labelmap when it has few distinct non-negative values (a CT
/// stored as int16 has thousands and negative HU). The count stops at 1001, so it costs no memory
/// beyond that set.
fn is_labelmap_like(min: f64, vol: &TypedVolume) -> bool {
    min >= 0.0 && vol.count_distinct_up_to(1000).is_some()
}

/// The `--json` object; keys in this order, labels only for a labelmap.
#[derive(serde::Serialize)]
struct JsonReport<'a> {
    path: &'a str,
    shape: [usize; 3],
    spacing_mm: [f64; 3],
    orientation: &'a str,
    datatype: &'a str,
    affine: [[f64; 4]; 4],
    min: f64,
    max: f64,
    mean: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<Vec<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label_voxels: Option<Vec<usize>>,
}

/// serde_json's compact output with `", "` and `": "` separators, and numbers in Rust's
/// shortest round-trip `Display` form (`2`, not `2.0`, for a spacing of 2 mm) — the format this
/// command has always printed. serde_json writes NaN/Inf as `null` before reaching `write_f64`.
struct SpacedFormatter;

impl serde_json::ser::Formatter for SpacedFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.begin_array_value(writer, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
    fn write_f64<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        value: f64,
    ) -> std::io::Result<()> {
        write!(writer, "{value}")
    }
}

fn to_json(r: &Report) -> String {
    let v = &r.vol;
    let report = JsonReport {
        path: &r.path,
        shape: v.dims,
        spacing_mm: v.spacing,
        orientation: &r.orientation,
        datatype: v.datatype().name(),
        affine: v.affine,
        min: r.min,
        max: r.max,
        mean: r.mean,
        labels: r
            .labels
            .as_ref()
            .map(|l| l.iter().map(|(label, _)| *label as f64).collect()),
        label_voxels: r
            .labels
            .as_ref()
            .map(|l| l.iter().map(|(_, count)| *count).collect()),
    };
    let mut out = Vec::new();
    serde::Serialize::serialize(
        &report,
        &mut serde_json::Serializer::with_formatter(&mut out, SpacedFormatter),
    )
    .expect("numbers and strings always serialize");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

fn print_text(r: &Report) {
    let v = &r.vol;
    out!("file:        {}", r.path);
    out!(
        "shape:       {} x {} x {} (X, Y, Z voxels)",
        v.dims[0],
        v.dims[1],
        v.dims[2]
    );
    out!(
        "spacing:     {:.4} x {:.4} x {:.4} mm",
        v.spacing[0],
        v.spacing[1],
        v.spacing[2]
    );
    out!("orientation: {}", r.orientation);
    out!("datatype:    {}", v.datatype());
    out!("affine:");
    for row in &v.affine {
        out!(
            "  [{:>10.4} {:>10.4} {:>10.4} {:>10.4}]",
            row[0],
            row[1],
            row[2],
            row[3]
        );
    }
    out!(
        "range:       min {} max {} mean {:.3}",
        r.min,
        r.max,
        r.mean
    );
    if let Some(labels) = &r.labels {
        let nonzero = labels.iter().filter(|(l, _)| *l != 0.0).count();
        out!(
            "labels:      {} distinct ({} non-zero)",
            labels.len(),
            nonzero
        );
        for (l, c) in labels {
            out!("  {l:>6}: {c} voxels");
        }
    }
}
