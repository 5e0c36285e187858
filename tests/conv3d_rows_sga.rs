//! The conv3d row kernels' twins that bring the input voxels to the lanes by subgroup broadcasts
//! (shaders/conv3d_rows_sga.wgsl, src/ops/subgroup_broadcast.rs): on the four row families,
//! every forward tile (24, 16, 8 and 4 voxels; 4 and 2 channels per lane; 8 and 16 lanes) and
//! every weight-gradient tile (32 and 64 input channels; 4 and 2 output channels), through the
//! forward, the flipped-conv and sub-pixel input gradients, the fold of channels not in fours,
//! the split over taps and over voxels: bit for bit the entries they replace (the same FMAs in
//! the same order), forward and every gradient, each row kernel replaced by its twin and nothing
//! else changed; the forward against src/reference/conv3d.rs; which kernels ran under each
//! policy.

mod common;

use cads::ops::conv3d::{conv3d_with, ConvPath, RowsLanes};
use cads::ops::Conv3dConfig;
use cads::reference::conv3d as rc;
use cads::util::{Rng, F32_ACCUM};
use cads::{Gpu, Tensor};
use common::conv_check::w_shape;
use common::*;

const ALL: [ConvPath; 4] = [
    ConvPath::Rows(RowsLanes::Two),
    ConvPath::Rows(RowsLanes::Four),
    ConvPath::Rows(RowsLanes::FourDeep),
    ConvPath::Rows(RowsLanes::Wide),
];
const TWIN_SHADER: &str = "conv3d_rows_sga::";

fn gpu_with(policy: &str) -> Gpu {
    let gpu = fresh_gpu();
    gpu.set_tune_settings(memo_tuning(&[("subgroup_broadcast", policy)]));
    gpu
}

/// (input, Cout, config): every forward tile and input-gradient route of the row families.
fn cases() -> Vec<([usize; 5], usize, Conv3dConfig)> {
    vec![
        // 420 output voxels, batch 2: the 16-, 24- and (2 channels on 16 lanes) 24-voxel tiles
        // with a partial last tile; Cout 36 leaves lanes of the last workgroup idle.
        ([2, 5, 6, 7, 20], 36, Conv3dConfig::cube(3, 1, 1)),
        // 216 voxels: the 8-voxel tile; per-axis kernel, padding and dilation (flipped conv).
        (
            [1, 6, 7, 9, 4],
            8,
            Conv3dConfig {
                kernel: [3, 3, 2],
                stride: [1, 1, 1],
                padding: [2, 1, 1],
                dilation: [2, 1, 2],
                groups: 1,
            },
        ),
        // stride 2, odd sizes: the input gradient's sub-pixel classes on the row forward.
        ([2, 6, 8, 7, 16], 32, Conv3dConfig::cube(3, 2, 1)),
        // k = s: 4 output voxels, the 4-voxel tile (groups of 4 lanes).
        ([1, 8, 4, 8, 8], 16, Conv3dConfig::cube(4, 4, 0)),
        // Cout 72 fills 16 lanes of 4 channels (24 voxels deep on `rows_w16`).
        ([2, 5, 5, 6, 8], 72, Conv3dConfig::cube(3, 1, 1)),
        // Cin 3: the forward through the fold of kernel axes into channels.
        ([1, 6, 6, 6, 3], 8, Conv3dConfig::cube(3, 1, 1)),
        // 8 output voxels, 125 taps: the forward splits over taps.
        ([1, 6, 6, 6, 8], 8, Conv3dConfig::cube(5, 2, 1)),
        // Cin 64 (the 64-channel weight tile on `rows`), 2048 output voxels: the weight
        // gradient splits over voxels, whose count is not a multiple of the 8 per iteration
        // in the last chunk.
        ([1, 8, 16, 15, 64], 8, Conv3dConfig::cube(3, 1, 1)),
    ]
}

/// Forward with bias and the gradients of x, w and b on `gpu`, with the kernels that ran.
fn forward_and_grads(
    gpu: &Gpu,
    path: ConvPath,
    (x, w, b, g): (&[f32], &[f32], &[f32], &[f32]),
    (x_shape, w_shape, cfg): ([usize; 5], [usize; 5], Conv3dConfig),
) -> ([Vec<f32>; 4], Vec<String>) {
    ran(gpu, || {
        let tx = Tensor::from_slice(gpu, x, &x_shape)
            .unwrap()
            .requires_grad_(true);
        let tw = Tensor::from_slice(gpu, w, &w_shape)
            .unwrap()
            .requires_grad_(true);
        let tb = Tensor::from_slice(gpu, b, &[w_shape[4]])
            .unwrap()
            .requires_grad_(true);
        let y = conv3d_with(&tx, &tw, Some(&tb), &cfg, path).unwrap();
        let grads = y
            .backward_with(&Tensor::from_slice(gpu, g, y.shape()).unwrap())
            .unwrap();
        let of = |t: &Tensor| grads.get(t).unwrap().to_vec().unwrap();
        [y.to_vec().unwrap(), of(&tx), of(&tw), of(&tb)]
    })
}

/// The twin's profiler name of a `conv3d_rows::` kernel (`_sga` before any `[LANES=16]`); any
/// other kernel's name unchanged.
fn twin_name(kernel: &str) -> String {
    match kernel.strip_prefix("conv3d_rows::") {
        Some(rest) => {
            let (entry, lanes) = rest.split_at(rest.find('[').unwrap_or(rest.len()));
            format!("{TWIN_SHADER}{entry}_sga{lanes}")
        }
        None => kernel.to_string(),
    }
}

/// Panics naming `what` and the first element whose bits differ (or the lengths).
fn assert_same_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: element {i} is {} against {}", got[i], want[i]);
    }
}

#[test]
fn twins_are_the_row_forward_bit_for_bit_and_match_the_reference() {
    let twins = gpu_with("always");
    let entries = gpu_with("never");
    assert!(
        twins.features().subgroups && twins.adapter().subgroup_min_size >= 8,
        "the test adapter must have subgroups of 8 lanes or more (lavapipe: 8)"
    );
    let mut rng = Rng::new(181);
    for (x_shape, cout, cfg) in cases() {
        let ws = w_shape(&x_shape, cout, &cfg);
        let x = rng.vec_uniform(x_shape.iter().product(), -1.0, 1.0);
        let w = rng.vec_uniform(ws.iter().product(), -1.0, 1.0);
        let b = rng.vec_uniform(cout, -1.0, 1.0);
        let want = rc::conv3d(
            &cads::reference::Array::from_f32(&x, &x_shape),
            &cads::reference::Array::from_f32(&w, &ws),
            Some(&cads::reference::Array::from_f32(&b, &[cout])),
            &cfg,
        );
        let g = rng.vec_uniform(want.data.len(), -1.0, 1.0);
        for path in ALL {
            let what = format!("{} {x_shape:?}→{cout} {cfg:?}", path.name());
            let data = (&x[..], &w[..], &b[..], &g[..]);
            let (got, ran_twins) = forward_and_grads(&twins, path, data, (x_shape, ws, cfg));
            assert!(
                ran_twins.iter().any(|k| k.starts_with(TWIN_SHADER)),
                "{what}: {ran_twins:?}"
            );
            let (base, ran_entries) = forward_and_grads(&entries, path, data, (x_shape, ws, cfg));
            assert!(
                !ran_entries.iter().any(|k| k.starts_with(TWIN_SHADER)),
                "{what}: {ran_entries:?}"
            );
            // Each row kernel that ran without twins ran as its twin, and no other: the runs'
            // row kernels, renamed to their twins, agree. (A product inside the pass, such as
            // the patchify input gradient, runs the matmul twins under the same policy.)
            let rows = |names: &[String], prefix: &str| {
                let mut v: Vec<String> = names
                    .iter()
                    .filter(|k| k.starts_with(prefix))
                    .map(|k| twin_name(k))
                    .collect();
                v.sort();
                v
            };
            assert_eq!(
                rows(&ran_twins, TWIN_SHADER),
                rows(&ran_entries, "conv3d_rows::"),
                "{what}"
            );
            for (i, part) in ["forward", "grad x", "grad w", "grad b"].iter().enumerate() {
                assert_same_bits(&got[i], &base[i], &format!("{what}: {part}"));
            }
            assert_close(&format!("{what} forward"), &got[0], &want.data, F32_ACCUM);
        }
    }
}

#[test]
fn auto_runs_the_twins_on_cpu_adapters_and_never_runs_none() {
    let mut rng = Rng::new(183);
    let (x_shape, cout, cfg) = ([1, 6, 6, 6, 8], 16, Conv3dConfig::cube(3, 1, 1));
    let ws = w_shape(&x_shape, cout, &cfg);
    for policy in ["auto", "never"] {
        let gpu = gpu_with(policy);
        let cpu = gpu.adapter().device_type == wgpu::DeviceType::Cpu;
        let can = gpu.features().subgroups && gpu.adapter().subgroup_min_size >= 8;
        let x = random_param(&gpu, &mut rng, &x_shape, -1.0, 1.0).1;
        let w = random_param(&gpu, &mut rng, &ws, -1.0, 1.0).1;
        let (y, ran) = ran(&gpu, || conv3d_with(&x, &w, None, &cfg, ALL[1]));
        y.unwrap();
        assert_eq!(
            ran.iter().any(|k| k.starts_with(TWIN_SHADER)),
            policy == "auto" && cpu && can,
            "{policy} on {:?}: {ran:?}",
            gpu.adapter().device_type
        );
    }
}
