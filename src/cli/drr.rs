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
    /// CT volume in HU: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) or a DICOM series folder.
    pub input: String,
    /// The DICOM SeriesInstanceUID to read from a folder holding several series.
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
    if args.window.as_ref().is_some_and(|w| w.len() != 2) {
        return Err(Error::invalid(
            "cads drr",
            "--window lo,hi",
            "another count of values",
        ));
    }
    let gpu = Gpu::with_choice(choice)?;
    let (grid, hu) = read_ct(&args.input, args.series.as_deref())?;
    let (img, h, w) = if args.cads {
        (
            preset::cads_view(&gpu, &grid, &hu)?,
            preset::CADS_SIZE,
            preset::CADS_SIZE,
        )
    } else {
        let intensity = if args.beer_lambert {
            Intensity::Attenuation {
                mu_water_per_mm: args.mu_water,
            }
        } else {
            Intensity::ShiftedHu
        };
        let volume = Volume::from_host(&gpu, grid, &intensity.from_hu(&hu)?)?;
        let geometry = Geometry {
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
        };
        let r = &args.rotation_deg;
        let t = &args.translation_mm;
        let pose = Pose::from_degrees([r[0], r[1], r[2]], [t[0], t[1], t[2]]);
        let poses = drr::pose_tensor(&gpu, &[pose])?;
        let projector = match args.projector {
            ProjectorArg::Siddon => Projector::Siddon,
            ProjectorArg::Trilinear => Projector::Trilinear {
                step_mm: args.step_mm,
            },
        };
        let mut out = gpu.no_grad(|| drr::render(&volume, &poses, &geometry, projector))?;
        if args.beer_lambert {
            out = gpu.no_grad(|| drr::beer_lambert(&out))?;
        }
        (out.to_vec()?, args.height, args.width)
    };
    let window = if args.bits == 16 {
        None
    } else if let Some(w) = &args.window {
        Some((w[0], w[1]))
    } else {
        Some(io::value_range(&img)?)
    };
    io::write_png(&args.output, &img, h, w, window)?;
    println!("wrote {} ({h}×{w}, {}-bit)", args.output, args.bits);
    Ok(())
}

/// A CT in HU through the data layer's one entry point (any format it reads), as the DRR engine's
/// grid: tensor `[D, H, W] = [Z, Y, X]` (x fastest, the volume's own order) and the voxel → world
/// affine rows.
fn read_ct(path: &str, series: Option<&str>) -> Result<(drr::VolumeGrid, Vec<f32>)> {
    let opts = cads::data::ReadOptions {
        series_uid: series.map(str::to_string),
    };
    let vol = cads::data::read_volume_with(path, &opts)?;
    let grid = cads::pretrain::drr_cache::drr_grid(&vol);
    Ok((grid, vol.data))
}
