//! `cads drr <ct> -o out.png` (NIfTI, NRRD or a DICOM series): render a digitally reconstructed radiograph to a PNG.

use cads::drr::{self, io, preset, Beam, Geometry, Intensity, Pose, Projector, Volume};
use cads::gpu::AdapterChoice;
use cads::{Error, Gpu, Result};
use clap::{Args, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ProjectorArg {
    Siddon,
    Trilinear,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BeamArg {
    Cone,
    Parallel,
}

#[derive(Args, Debug)]
pub struct DrrArgs {
    /// CT volume in HU: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), a DICOM series folder or a
    /// DeepLesion series folder.
    pub input: String,
    /// The DICOM SeriesInstanceUID to read from a folder holding several series, or the
    /// sub-volume (FIRST-LAST slice numbers) of a DeepLesion series folder.
    #[arg(long)]
    pub series: Option<String>,
    /// Output PNG.
    #[arg(short, long)]
    pub output: String,
    #[arg(long, value_enum, default_value = "siddon")]
    pub projector: ProjectorArg,
    /// Trilinear sampling step (mm).
    #[arg(long, default_value_t = 1.0)]
    pub step_mm: f32,
    #[arg(long, value_enum, default_value = "cone")]
    pub beam: BeamArg,
    /// Detector rows and columns (pixels).
    #[arg(long, default_value_t = 200)]
    pub height: usize,
    #[arg(long, default_value_t = 200)]
    pub width: usize,
    /// Detector pixel pitch (mm).
    #[arg(long, default_value_t = 2.0)]
    pub pixel_mm: f64,
    /// Source-to-detector distance (mm).
    #[arg(long, default_value_t = 1020.0)]
    pub sdd_mm: f64,
    /// Source-to-isocentre distance (mm); the isocentre is the volume centre.
    #[arg(long, default_value_t = 850.0)]
    pub sid_mm: f64,
    /// Pose rotation rx,ry,rz in degrees (ZXY intrinsic: R = Rz·Rx·Ry).
    #[arg(long, value_delimiter = ',', num_args = 1, default_values_t = [0.0, 0.0, 0.0], allow_hyphen_values = true)]
    pub rotation_deg: Vec<f64>,
    /// Pose translation tx,ty,tz in mm.
    #[arg(long, value_delimiter = ',', num_args = 1, default_values_t = [0.0, 0.0, 0.0], allow_hyphen_values = true)]
    pub translation_mm: Vec<f64>,
    /// Beer–Lambert intensity exp(−∫μ), μ = max(0, μ_water(1 + HU/1000)), instead of ∫ max(0, HU + 1024).
    #[arg(long)]
    pub beer_lambert: bool,
    /// Water attenuation for --beer-lambert (1/mm).
    #[arg(long, default_value_t = 0.019)]
    pub mu_water: f32,
    /// The CADS view: parallel frontal, min-max to [−1, 1], 96×96 (ignores geometry flags).
    #[arg(long)]
    pub cads: bool,
    /// PNG bit depth: 8 (windowed) or 16 (min-max scaled).
    #[arg(long, default_value_t = 8)]
    pub bits: u8,
    /// 8-bit window lo,hi in image units (default: the image's min,max).
    #[arg(long, value_delimiter = ',', num_args = 1, allow_hyphen_values = true)]
    pub window: Option<Vec<f32>>,
}

/// Typed error unless the --window pair is finite with lo < hi (an 8-bit window of zero or
/// negative width maps every pixel to one value).
fn check_window(window: &[f32]) -> Result<(f32, f32)> {
    match window {
        [lo, hi] if lo.is_finite() && hi.is_finite() && lo < hi => Ok((*lo, *hi)),
        other => Err(Error::invalid(
            "cads drr",
            "--window lo,hi with finite lo < hi",
            format!("{other:?}"),
        )),
    }
}

/// The geometry the flags ask for, validated before any file is read or GPU acquired: source
/// in front of the detector (0 < sid < sdd), positive finite pixel pitch, detector size within
/// the engine's bounds (checked products), and a bounded trilinear sample count per ray.
fn geometry_from_args(args: &DrrArgs) -> Result<Geometry> {
    let op = "cads drr";
    if !(args.sid_mm.is_finite()
        && args.sdd_mm.is_finite()
        && 0.0 < args.sid_mm
        && args.sid_mm < args.sdd_mm)
    {
        return Err(Error::invalid(
            op,
            "0 < --sid-mm < --sdd-mm, both finite (the source lies between the isocentre's far side and the detector)",
            format!("--sid-mm {} --sdd-mm {}", args.sid_mm, args.sdd_mm),
        ));
    }
    if args
        .rotation_deg
        .iter()
        .chain(&args.translation_mm)
        .any(|v| !v.is_finite())
    {
        return Err(Error::invalid(
            op,
            "finite --rotation-deg and --translation-mm",
            format!("{:?}, {:?}", args.rotation_deg, args.translation_mm),
        ));
    }
    Ok(Geometry {
        beam: match args.beam {
            BeamArg::Cone => Beam::Cone,
            BeamArg::Parallel => Beam::Parallel,
        },
        ..Geometry::cone(
            args.height,
            args.width,
            args.pixel_mm,
            args.sdd_mm,
            args.sid_mm,
        )?
    })
}

pub fn run(choice: &AdapterChoice, args: &DrrArgs) -> Result<()> {
    if args.bits != 8 && args.bits != 16 {
        return Err(Error::invalid("cads drr", "--bits 8 or 16", args.bits));
    }
    if args.rotation_deg.len() != 3 || args.translation_mm.len() != 3 {
        return Err(Error::invalid(
            "cads drr",
            "--rotation-deg rx,ry,rz and --translation-mm tx,ty,tz",
            "another count of values",
        ));
    }
    let window = args.window.as_deref().map(check_window).transpose()?;
    // Every flag and the file's geometry are checked before the GPU is acquired, so bad input
    // fails fast and the same way on a machine without an adapter.
    let geometry = if args.cads {
        None
    } else {
        Some(geometry_from_args(args)?)
    };
    let (grid, hu, spacing) = read_ct(&args.input, args.series.as_deref())?;
    warn_if_labelmap(&args.input, &hu);
    // The file and its voxel size: the detector and the ray samples are sized from them, so an
    // absurd spacing's error says which file and which spacing asked for it.
    let input = format!("{} (voxel size {spacing:?} mm)", args.input);
    if args.cads {
        preset::frontal_parallel(&grid, 1.0).map_err(|e| e.in_file("cads drr", &input))?;
    }
    let projector = match args.projector {
        ProjectorArg::Siddon => Projector::Siddon,
        ProjectorArg::Trilinear => Projector::Trilinear {
            step_mm: args.step_mm,
        },
    };
    if let Some(g) = &geometry {
        drr::check_work(&grid, g, projector).map_err(|e| e.in_file("cads drr", &input))?;
    }
    let gpu = Gpu::with_choice(choice)?;
    let (img, h, w) = match geometry {
        None => (
            preset::cads_view(&gpu, &grid, &hu)?,
            preset::CADS_SIZE,
            preset::CADS_SIZE,
        ),
        Some(geometry) => {
            let intensity = if args.beer_lambert {
                Intensity::Attenuation {
                    mu_water_per_mm: args.mu_water,
                }
            } else {
                Intensity::ShiftedHu
            };
            let volume = Volume::from_host(&gpu, grid, &intensity.from_hu(&hu)?)?;
            let r = &args.rotation_deg;
            let t = &args.translation_mm;
            let pose = Pose::from_degrees([r[0], r[1], r[2]], [t[0], t[1], t[2]]);
            let poses = drr::pose_tensor(&gpu, &[pose])?;
            let mut out = gpu.no_grad(|| drr::render(&volume, &poses, &geometry, projector))?;
            if args.beer_lambert {
                out = gpu.no_grad(|| drr::beer_lambert(&out))?;
            }
            (out.to_vec()?, args.height, args.width)
        }
    };
    let window = if args.bits == 16 {
        None
    } else if let Some(w) = window {
        Some(w)
    } else {
        Some(io::value_range(&img)?)
    };
    io::write_png(&args.output, &img, h, w, window)?;
    out!("wrote {} ({h}×{w}, {}-bit)", args.output, args.bits);
    Ok(())
}

/// A CT in HU through the data layer's one entry point (any format it reads), as the DRR engine's
/// grid: tensor `[D, H, W] = [Z, Y, X]` (x fastest, the volume's own order) and the voxel → world
/// affine rows, and the voxel size (mm) for messages.
fn read_ct(path: &str, series: Option<&str>) -> Result<(drr::VolumeGrid, Vec<f32>, [f64; 3])> {
    let opts = cads::data::ReadOptions {
        series_uid: series.map(str::to_string),
    };
    let vol = cads::data::read_volume_with(path, &opts)?;
    let grid = cads::pretrain::drr_cache::drr_grid(&vol);
    Ok((grid, vol.data, vol.spacing))
}

/// A labelmap given where a CT is expected renders without error but means nothing: warn when
/// every value is a small non-negative integer and there are few distinct values (a CT in HU has
/// negative air and thousands of distinct values).
fn warn_if_labelmap(path: &str, hu: &[f32]) {
    const FEW: usize = 64;
    // One flag per possible label value 0..=65535; any other value means "not a label map".
    let mut seen = vec![false; 1 << 16];
    let mut distinct = 0usize;
    for &v in hu {
        if !((0.0..65536.0).contains(&v) && v.fract() == 0.0) {
            return;
        }
        let slot = &mut seen[v as usize];
        if !*slot {
            *slot = true;
            distinct += 1;
            if distinct > FEW {
                return;
            }
        }
    }
    eprintln!(
        "warning: {path} looks like a label map, not a CT in HU ({distinct} distinct non-negative integer values); the DRR integrates these values as given"
    );
}
