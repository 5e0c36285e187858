//! The LIDC-IDRI-0001 segmentation dataset of `docs/segmentation-lidc.md`: the organ label map's
//! 118 structure ids merged into a few large classes, the CT and labels reduced in-plane, and the
//! volume cut into cranio-caudal slabs, training slabs and held-out ones, written as an nnU-Net raw
//! folder.
//!
//! Run: `cargo run --release --example lidc_slabs -- data/cxr.nii.gz data/mask.nii.gz \
//!       data/structures.csv OUT [--factor 4] [--slab 16] [--val 1,5]`
//!
//! Writes under OUT:
//! - `dataset/dataset.json`, `dataset/imagesTr/*_0000.nii.gz`, `dataset/labelsTr/*.nii.gz`: the
//!   training slabs (`lidc_tr_zAAA-BBB`, A..B the slice range of the original CT, inclusive) and
//!   the held-out slabs (`lidc_va_zAAA-BBB`), named so that the held-out ones sort last:
//!   `cads segment train` holds out the last `--val-fraction` of the cases by name, so
//!   `--val-fraction = held-out / all` holds out exactly them.
//! - `dataset/imagesTs/`, `dataset/labelsTs/`: the held-out slabs again, for `segment predict`
//!   and `segment evaluate`.
//! - `pretrain_ct/`: the training slabs at the CT's own resolution (HU, int16), the input of
//!   `cads pretrain`, which resamples them to 1 mm itself. The held-out slabs are not in it.
//!
//! Geometry. In-plane reduction by `f` is a box mean over f × f voxels (the image) and a
//! majority vote over the same block (the labels; ties go to the smaller class id). The new
//! voxel (i', j', k) covers old voxels f·i' .. f·i' + f − 1, so its centre lies at old voxel
//! coordinate (f·i' + (f − 1)/2, f·j' + (f − 1)/2, k): the new affine is
//! `A' = A · [[f, 0, 0, (f−1)/2], [0, f, 0, (f−1)/2], [0, 0, 1, k₀], [0, 0, 0, 1]]` for a slab
//! starting at slice k₀. Slices (the third voxel axis, cranio-caudal for this axial CT) are never
//! resampled. The label map must lie on the CT's grid (checked).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cads::data::{check_label_grid, read_volume, write_nifti, Affine, Datatype, Volume};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The class of every label id (index = id), and the structure names merged into each class.
type MergeTable = (Vec<u8>, BTreeMap<String, Vec<String>>);

/// The merged classes: (name, which structure names of structures.csv belong to it).
const CLASSES: [(&str, &[&str]); 7] = [
    ("lungs", &["lung_*"]),
    ("liver", &["liver"]),
    ("spleen", &["spleen"]),
    (
        "kidneys",
        &[
            "kidney_right",
            "kidney_left",
            "kidney_cyst_left",
            "kidney_cyst_right",
        ],
    ),
    ("stomach", &["stomach"]),
    ("heart", &["heart"]),
    ("vertebrae", &["vertebrae_*", "sacrum"]),
];

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// Map every label id of structures.csv (`group,original_idx,structure,id`) to its merged class
/// (0 for structures outside the label set).
fn merge_table(csv: &Path) -> Res<MergeTable> {
    let text = std::fs::read_to_string(csv)?;
    let mut table = vec![0u8; 256];
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let fields: Vec<&str> = line.trim().split(',').collect();
        if fields.len() != 4 {
            return Err(format!(
                "{}:{}: expected 4 fields, got {line:?}",
                csv.display(),
                n + 1
            )
            .into());
        }
        let (name, id) = (fields[2], fields[3].parse::<usize>()?);
        if id >= 256 {
            return Err(format!(
                "{}: id {id} does not fit the uint8 label map",
                csv.display()
            )
            .into());
        }
        for (c, (class, patterns)) in CLASSES.iter().enumerate() {
            if patterns.iter().any(|p| matches(p, name)) {
                table[id] = (c + 1) as u8;
                members
                    .entry(class.to_string())
                    .or_default()
                    .push(name.to_string());
            }
        }
    }
    for (class, _) in CLASSES {
        if !members.contains_key(class) {
            return Err(format!("{}: no structure for class {class}", csv.display()).into());
        }
    }
    Ok((table, members))
}

/// The affine of the reduced slab starting at slice `k0` (module docs).
fn slab_affine(a: &Affine, f: usize, k0: usize) -> Affine {
    let c = (f as f64 - 1.0) / 2.0;
    let mut out = *a;
    for r in 0..3 {
        out[r][0] = a[r][0] * f as f64;
        out[r][1] = a[r][1] * f as f64;
        out[r][3] = a[r][0] * c + a[r][1] * c + a[r][2] * k0 as f64 + a[r][3];
    }
    out
}

/// Slices `k0..k1` of the CT (box mean) and of the merged labels (majority vote), reduced by `f`
/// in-plane.
fn reduce_slab(
    ct: &Volume,
    labels: &[u8],
    f: usize,
    k0: usize,
    k1: usize,
    classes: usize,
) -> Res<(Volume, Volume)> {
    let [nx, ny, _] = ct.dims;
    let (mx, my) = (nx / f, ny / f);
    let mut image = Vec::with_capacity(mx * my * (k1 - k0));
    let mut label = Vec::with_capacity(image.capacity());
    let mut votes = vec![0usize; classes + 1];
    for k in k0..k1 {
        for j in 0..my {
            for i in 0..mx {
                let mut sum = 0.0f64;
                votes.iter_mut().for_each(|v| *v = 0);
                for dj in 0..f {
                    for di in 0..f {
                        let at = ct.index(f * i + di, f * j + dj, k);
                        sum += ct.data[at] as f64;
                        votes[labels[at] as usize] += 1;
                    }
                }
                image.push((sum / (f * f) as f64).round() as f32);
                // First maximum: ties go to the smaller class id.
                let best = (0..votes.len()).fold(0, |b, c| if votes[c] > votes[b] { c } else { b });
                label.push(best as f32);
            }
        }
    }
    let affine = slab_affine(&ct.affine, f, k0);
    let dims = [mx, my, k1 - k0];
    Ok((
        Volume::new(image, dims, affine, Datatype::Int16)?,
        Volume::new(label, dims, affine, Datatype::Uint8)?,
    ))
}

/// Slices `k0..k1` at the CT's own resolution (the pretraining input).
fn native_slab(ct: &Volume, k0: usize, k1: usize) -> Res<Volume> {
    let plane = ct.dims[0] * ct.dims[1];
    let data = ct.data[k0 * plane..k1 * plane].to_vec();
    let affine = slab_affine(&ct.affine, 1, k0);
    Ok(Volume::new(
        data,
        [ct.dims[0], ct.dims[1], k1 - k0],
        affine,
        Datatype::Int16,
    )?)
}

struct Args {
    ct: PathBuf,
    mask: PathBuf,
    structures: PathBuf,
    out: PathBuf,
    factor: usize,
    slab: usize,
    val: Vec<usize>,
}

fn parse_args() -> Res<Args> {
    let usage = "usage: lidc_slabs CT MASK STRUCTURES.csv OUT [--factor 4] [--slab 16] [--val 1,5]";
    let mut positional = Vec::new();
    let (mut factor, mut slab, mut val) = (4, 16, vec![1, 5]);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{a} needs a value; {usage}"))
        };
        match a.as_str() {
            "--factor" => factor = value()?.parse()?,
            "--slab" => slab = value()?.parse()?,
            "--val" => {
                val = value()?
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()?
            }
            _ => positional.push(PathBuf::from(a)),
        }
    }
    let [ct, mask, structures, out]: [PathBuf; 4] =
        positional.try_into().map_err(|_| usage.to_string())?;
    if factor == 0 || slab == 0 || val.is_empty() {
        return Err(format!("--factor, --slab >= 1 and at least one --val slab; {usage}").into());
    }
    Ok(Args {
        ct,
        mask,
        structures,
        out,
        factor,
        slab,
        val,
    })
}

fn main() -> Res<()> {
    let a = parse_args()?;
    let ct = read_volume(&a.ct)?;
    let mask = read_volume(&a.mask)?;
    check_label_grid(&ct, &mask, &a.mask.display().to_string())?;
    let (table, members) = merge_table(&a.structures)?;
    let labels: Vec<u8> = mask
        .data
        .iter()
        .map(|&v| {
            if (0.0..256.0).contains(&v) {
                table[v as usize]
            } else {
                0
            }
        })
        .collect();
    let (f, depth) = (a.factor, ct.dims[2]);
    if ct.dims[0] % f != 0 || ct.dims[1] % f != 0 {
        return Err(format!("--factor {f} must divide the in-plane size {:?}", ct.dims).into());
    }
    // Slabs of a.slab slices; the held-out ones by index, the training ones merged into the
    // longest runs between them (thicker cases give the patch sampler more context).
    let slabs = depth.div_ceil(a.slab);
    if let Some(bad) = a.val.iter().find(|&&v| v >= slabs) {
        return Err(format!(
            "--val slab {bad}: the CT has only {slabs} slabs of {}",
            a.slab
        )
        .into());
    }
    let mut cases: Vec<(bool, usize, usize)> = Vec::new();
    for s in 0..slabs {
        let (k0, k1) = (s * a.slab, ((s + 1) * a.slab).min(depth));
        let held = a.val.contains(&s);
        match cases.last_mut() {
            Some((false, _, end)) if !held && *end == k0 => *end = k1,
            _ => cases.push((held, k0, k1)),
        }
    }
    let ds = a.out.join("dataset");
    for sub in ["imagesTr", "labelsTr", "imagesTs", "labelsTs"] {
        std::fs::create_dir_all(ds.join(sub))?;
    }
    std::fs::create_dir_all(a.out.join("pretrain_ct"))?;
    let classes = CLASSES.len();
    println!(
        "case                 slices   voxels        {}",
        CLASSES.map(|c| format!("{:>10}", c.0)).join("")
    );
    let (mut n_train, mut n_val) = (0, 0);
    for &(held, k0, k1) in &cases {
        let name = format!(
            "lidc_{}_z{k0:03}-{:03}",
            if held { "va" } else { "tr" },
            k1 - 1
        );
        let (image, label) = reduce_slab(&ct, &labels, f, k0, k1, classes)?;
        write_nifti(
            ds.join("imagesTr").join(format!("{name}_0000.nii.gz")),
            &image,
            None,
        )?;
        write_nifti(
            ds.join("labelsTr").join(format!("{name}.nii.gz")),
            &label,
            None,
        )?;
        if held {
            write_nifti(
                ds.join("imagesTs").join(format!("{name}_0000.nii.gz")),
                &image,
                None,
            )?;
            write_nifti(
                ds.join("labelsTs").join(format!("{name}.nii.gz")),
                &label,
                None,
            )?;
            n_val += 1;
        } else {
            write_nifti(
                a.out.join("pretrain_ct").join(format!("{name}.nii.gz")),
                &native_slab(&ct, k0, k1)?,
                None,
            )?;
            n_train += 1;
        }
        let mut counts = vec![0usize; classes + 1];
        label.data.iter().for_each(|&v| counts[v as usize] += 1);
        println!(
            "{name:<20} {k0:3}-{:<3}  {:?}  {}",
            k1 - 1,
            label.dims,
            counts[1..]
                .iter()
                .map(|c| format!("{c:>10}"))
                .collect::<String>()
        );
    }
    let mut labels_json = serde_json::Map::new();
    labels_json.insert("background".into(), 0.into());
    for (c, (name, _)) in CLASSES.iter().enumerate() {
        labels_json.insert(name.to_string(), (c + 1).into());
    }
    let dataset = serde_json::json!({
        "name": "LIDC-IDRI-0001 slabs",
        "description": format!(
            "LIDC-IDRI-0001 (The Cancer Imaging Archive, LIDC-IDRI collection, CC BY 3.0) with its organ label map; \
             {classes} merged classes, in-plane reduced {f}x (box mean / majority vote), cranio-caudal slabs of {} slices, \
             held-out slabs {:?} (named lidc_va_*, sorted last)", a.slab, a.val),
        "channel_names": {"0": "CT"},
        "labels": labels_json,
        "merged_structures": members,
        "numTraining": n_train + n_val,
        "numHeldOut": n_val,
        "file_ending": ".nii.gz",
    });
    std::fs::write(
        ds.join("dataset.json"),
        serde_json::to_string_pretty(&dataset)? + "\n",
    )?;
    println!(
        "wrote {} training and {n_val} held-out slabs under {} (train with --val-fraction {:.6})",
        n_train,
        ds.display(),
        n_val as f64 / (n_train + n_val) as f64
    );
    Ok(())
}
