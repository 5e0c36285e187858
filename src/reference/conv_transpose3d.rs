//! Reference for src/ops/conv_transpose3d.rs, written as the scatter that defines a transposed
//! convolution: every input voxel i and tap k add x[i]·w[k] to output i·s − p + k·dil.

use super::Array;
use crate::ops::config::ConvTranspose3dConfig;

fn out_dims(dhw: [usize; 3], c: &ConvTranspose3dConfig) -> [usize; 3] {
    let mut o = [0; 3];
    for a in 0..3 {
        o[a] = (dhw[a] - 1) * c.stride[a]
            + c.dilation[a] * (c.kernel[a] - 1)
            + c.output_padding[a]
            + 1
            - 2 * c.padding[a];
    }
    o
}

/// Visit every (n, input voxel, tap, output voxel inside the output).
fn for_each_pair(
    x_shape: &[usize],
    c: &ConvTranspose3dConfig,
    mut f: impl FnMut(usize, [usize; 3], [usize; 3], [usize; 3]),
) {
    let (n, dhw) = (x_shape[0], [x_shape[1], x_shape[2], x_shape[3]]);
    let out = out_dims(dhw, c);
    for b in 0..n {
        for i0 in 0..dhw[0] {
            for i1 in 0..dhw[1] {
                for i2 in 0..dhw[2] {
                    for k0 in 0..c.kernel[0] {
                        for k1 in 0..c.kernel[1] {
                            for k2 in 0..c.kernel[2] {
                                let i = [i0, i1, i2];
                                let k = [k0, k1, k2];
                                let mut o = [0usize; 3];
                                let mut inside = true;
                                for a in 0..3 {
                                    let v = (i[a] * c.stride[a] + k[a] * c.dilation[a]) as isize
                                        - c.padding[a] as isize;
                                    inside &= v >= 0 && (v as usize) < out[a];
                                    o[a] = v.max(0) as usize;
                                }
                                if inside {
                                    f(b, i, k, o);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// y for x `[N, D, H, W, Ci]`, w `[kD, kH, kW, Ci, Co]` (no bias).
pub fn conv_transpose3d(x: &Array, w: &Array, c: &ConvTranspose3dConfig) -> Array {
    let (ci, co) = (w.shape[3], w.shape[4]);
    let out = out_dims([x.shape[1], x.shape[2], x.shape[3]], c);
    let mut y = Array::zeros(&[x.shape[0], out[0], out[1], out[2], co]);
    for_each_pair(&x.shape, c, |b, i, k, o| {
        for a in 0..ci {
            let xv = x.data[x.ravel(&[b, i[0], i[1], i[2], a])];
            for e in 0..co {
                let yi = y.ravel(&[b, o[0], o[1], o[2], e]);
                y.data[yi] += xv * w.data[w.ravel(&[k[0], k[1], k[2], a, e])];
            }
        }
    });
    y
}

/// (dL/dx, dL/dw) given dL/dy = g.
pub fn conv_transpose3d_backward(
    x: &Array,
    w: &Array,
    c: &ConvTranspose3dConfig,
    g: &Array,
) -> (Array, Array) {
    let (ci, co) = (w.shape[3], w.shape[4]);
    let mut gx = Array::zeros(&x.shape);
    let mut gw = Array::zeros(&w.shape);
    for_each_pair(&x.shape, c, |b, i, k, o| {
        for a in 0..ci {
            let xi = x.ravel(&[b, i[0], i[1], i[2], a]);
            for e in 0..co {
                let gv = g.data[g.ravel(&[b, o[0], o[1], o[2], e])];
                let wi = w.ravel(&[k[0], k[1], k[2], a, e]);
                gx.data[xi] += gv * w.data[wi];
                gw.data[wi] += gv * x.data[xi];
            }
        }
    });
    (gx, gw)
}
