//! [`resample_to_spacing`](crate::data::preprocess::resample_to_spacing) on the GPU, for CT
//! volumes whose CPU resampling would be slow (the CADS preparation resamples every CT to 1 mm).
//! It lives here rather than in `data` because `data` is host-only.

use crate::data::preprocess::{spacing_geometry, Interp};
use crate::data::volume::Volume;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::Tensor;

/// [`resample_to_spacing`](crate::data::preprocess::resample_to_spacing) on the GPU (`ops::resample_scaled`): the same grid, affine and
/// sampling (voxel 0 fixed, source coordinate `o · new/old spacing` clamped to the volume;
/// trilinear for images, nearest for labels), for volumes whose CPU resampling would be slow.
pub fn resample_to_spacing_gpu(
    gpu: &Gpu,
    vol: &Volume,
    target_mm: [f64; 3],
    interp: Interp,
) -> Result<Volume> {
    let op = "resample_to_spacing_gpu";
    let (ratio, dims, affine, datatype) = spacing_geometry(op, vol, target_mm, interp)?;
    // Volume data is [X, Y, Z] with x fastest, i.e. row-major [D = Z, H = Y, W = X].
    let [nx, ny, nz] = vol.dims;
    let plane = nx * ny;
    let out_plane = dims[0] * dims[1];
    // Volumes over one storage binding go through in z-slabs: output slices [oz0, oz1) read input
    // slices [floor(oz0·r), floor((oz1 − 1)·r) + 2) ∩ [0, nz), which hold every tap they need.
    let max_floats = (gpu.max_binding_bytes() / 4) as usize;
    let in_slices_per_out = ratio[2].ceil() as usize + 1;
    let max_out_slices = (max_floats / plane.max(1)).saturating_sub(2) / in_slices_per_out.max(1);
    let max_out_slices = max_out_slices.min(max_floats / out_plane.max(1));
    if max_out_slices == 0 {
        return Err(Error::TooLarge {
            op,
            bytes: (plane * 4 * 3) as u64,
            limit: gpu.max_binding_bytes(),
            which: "max_storage_buffer_binding_size (a few z-slices)",
        });
    }
    let mut data = Vec::with_capacity(dims.iter().product());
    let mut oz0 = 0;
    while oz0 < dims[2] {
        let oz1 = (oz0 + max_out_slices).min(dims[2]);
        let z0 = ((oz0 as f64 * ratio[2]).floor() as usize).min(nz - 1);
        let z1 = (((oz1 - 1) as f64 * ratio[2]).floor() as usize + 2).min(nz);
        let slab = Tensor::from_slice(
            gpu,
            &vol.data[z0 * plane..z1 * plane],
            &[1, z1 - z0, ny, nx, 1],
        )?;
        let out = gpu.no_grad(|| {
            crate::ops::resample::resample_scaled_from(
                &slab,
                [oz1 - oz0, dims[1], dims[0]],
                [ratio[2], ratio[1], ratio[0]],
                [oz0 as f64 * ratio[2] - z0 as f64, 0.0, 0.0],
                interp == Interp::Linear,
            )
        })?;
        data.extend(out.to_vec()?);
        oz0 = oz1;
    }
    Volume::new(data, dims, affine, datatype)
}
