//! Resampling to a target spacing on the GPU gives the CPU result (same grid, affine, values):
//! trilinear for images, nearest for labels.

mod common;

use cads::data::phantom::{phantom, PhantomConfig};
use cads::data::preprocess::{resample_to_spacing, Interp};
use cads::pretrain::resample_to_spacing_gpu;
use cads::util::F32_ACCUM;
use common::*;

#[test]
fn gpu_spacing_resample_matches_the_cpu_one() {
    let gpu = gpu();
    let cfg = PhantomConfig {
        dims: [37, 29, 11],
        spacing_mm: [0.8, 0.9, 2.5],
        ..PhantomConfig::default()
    };
    let (ct, labels) = phantom(&cfg).unwrap();
    for (vol, interp, target) in [
        (&ct, Interp::Linear, [1.0, 1.0, 1.0]),
        (&labels, Interp::Nearest, [1.0, 1.0, 1.0]),
        (&ct, Interp::Linear, [0.5, 1.7, 3.1]),
    ] {
        let cpu = resample_to_spacing(vol, target, interp).unwrap();
        let gpu_vol = resample_to_spacing_gpu(&gpu, vol, target, interp).unwrap();
        assert_eq!(gpu_vol.dims, cpu.dims);
        assert_eq!(gpu_vol.affine, cpu.affine);
        assert_eq!(gpu_vol.datatype, cpu.datatype);
        let want: Vec<f64> = cpu.data.iter().map(|&v| v as f64).collect();
        // HU values up to ~1000: an absolute tolerance scaled to them.
        let tol = cads::util::Tolerance {
            abs: 1e-2,
            rel: F32_ACCUM.rel,
        };
        assert_close(
            &format!("{interp:?} to {target:?}"),
            &gpu_vol.data,
            &want,
            tol,
        );
    }
    assert!(resample_to_spacing_gpu(&gpu, &ct, [0.0, 1.0, 1.0], Interp::Linear).is_err());
}

#[test]
fn a_volume_over_one_binding_is_resampled_in_slabs() {
    // LIDC-IDRI-0001 as f32 is 139 MB, over lavapipe's 128 MiB storage binding.
    let gpu = gpu();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/cxr.nii.gz");
    assert!(
        std::path::Path::new(path).exists(),
        "{path} is missing: run scripts/fetch-sample-data.sh"
    );
    let ct = cads::data::read_nifti(path).unwrap();
    let target = [2.0, 2.0, 2.0];
    let cpu = resample_to_spacing(&ct, target, Interp::Linear).unwrap();
    let gpu_vol = resample_to_spacing_gpu(&gpu, &ct, target, Interp::Linear).unwrap();
    assert_eq!(gpu_vol.dims, cpu.dims);
    let want: Vec<f64> = cpu.data.iter().map(|&v| v as f64).collect();
    let tol = cads::util::Tolerance {
        abs: 1e-2,
        rel: F32_ACCUM.rel,
    };
    assert_close("LIDC at 2 mm", &gpu_vol.data, &want, tol);
}
