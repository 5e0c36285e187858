//! PyTorch ↔ cads weight layouts, written once (import, export, safetensors files, converters).
//!
//! cads stores every weight in the layout its kernel reads fastest (channels-last, output
//! channel fastest); PyTorch stores output-major. Every weight kind is one permutation of three
//! blocks, with T = product of the kernel extents (T = 1 for Linear):
//!
//! | kind              | PyTorch                          | cads                          |
//! |-------------------|----------------------------------|-------------------------------|
//! | `Linear`          | `[out, in]`                      | `[in, out]`                   |
//! | `Conv3d`          | `[Cout, Cin/g, kD, kH, kW]`      | `[kD, kH, kW, Cin/g, Cout]`   |
//! | `Conv2d`          | `[Cout, Cin/g, kH, kW]`          | `[kH, kW, Cin/g, Cout]` or `[1, kH, kW, Cin/g, Cout]` |
//! | `ConvTranspose3d` | `[Cin, Cout, kD, kH, kW]`        | `[kD, kH, kW, Cin, Cout]`     |
//! | `Plain`           | same shape, same order           | same                          |
//!
//! so with A, B the two channel axes in PyTorch order,
//!   conv / linear:  `cads[t, b, a] = torch[a, b, t]`  (a = Cout, b = Cin/g)
//!   transposed:     `cads[t, a, b] = torch[a, b, t]`  (a = Cin,  b = Cout)
//! The layout travels with each named tensor (`nn::StateEntry`), so nothing is guessed from a
//! rank: a 5-D cads weight may be a Conv3d, a Conv2d run as a D = 1 conv, or a transposed conv.

use crate::error::{Error, Result};

/// How a cads tensor is laid out relative to its PyTorch counterpart (see the module table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Identical in both (biases, LayerNorm weights, buffers, 1-D tensors).
    Plain,
    /// `nn.Linear.weight`.
    Linear,
    /// `nn.Conv3d.weight`.
    Conv3d,
    /// `nn.Conv2d.weight`; the cads tensor may carry a leading D = 1 axis.
    Conv2d,
    /// `nn.ConvTranspose3d.weight`.
    ConvTranspose3d,
}

/// The blocks of a weight: (kernel extents, first PyTorch channel axis, second PyTorch channel
/// axis), all read off the cads shape.
struct Blocks {
    kernel: Vec<usize>,
    a: usize,
    b: usize,
}

impl Layout {
    const OP: &'static str = "pytorch_layout";

    /// Split a cads shape into blocks, checking the rank this kind allows.
    fn blocks(self, cads: &[usize]) -> Result<Option<Blocks>> {
        let bad = |want: &str| {
            Err(Error::shape(
                Self::OP,
                format!("a cads {self:?} weight {want}"),
                cads,
            ))
        };
        Ok(Some(match (self, cads) {
            (Layout::Plain, _) => return Ok(None),
            (Layout::Linear, &[i, o]) => Blocks {
                kernel: vec![],
                a: o,
                b: i,
            },
            (Layout::Linear, _) => return bad("[in, out]"),
            (Layout::Conv3d, &[kd, kh, kw, ci, co]) => Blocks {
                kernel: vec![kd, kh, kw],
                a: co,
                b: ci,
            },
            (Layout::Conv3d, _) => return bad("[kD, kH, kW, Cin/g, Cout]"),
            (Layout::Conv2d, &[1, kh, kw, ci, co]) | (Layout::Conv2d, &[kh, kw, ci, co]) => {
                Blocks {
                    kernel: vec![kh, kw],
                    a: co,
                    b: ci,
                }
            }
            (Layout::Conv2d, _) => return bad("[kH, kW, Cin/g, Cout] or [1, kH, kW, Cin/g, Cout]"),
            (Layout::ConvTranspose3d, &[kd, kh, kw, ci, co]) => Blocks {
                kernel: vec![kd, kh, kw],
                a: ci,
                b: co,
            },
            (Layout::ConvTranspose3d, _) => return bad("[kD, kH, kW, Cin, Cout]"),
        }))
    }

    /// The PyTorch shape of a tensor whose cads shape is `cads`.
    pub fn pytorch_shape(self, cads: &[usize]) -> Result<Vec<usize>> {
        Ok(match self.blocks(cads)? {
            None => cads.to_vec(),
            Some(Blocks { kernel, a, b }) => [vec![a, b], kernel].concat(),
        })
    }

    /// Whether cads's order of the two channel blocks is (b, a) (conv, linear) rather than
    /// (a, b) (transposed conv): `cads[t, ·, ·]`.
    fn swaps(self) -> bool {
        !matches!(self, Layout::ConvTranspose3d)
    }

    /// Row-major PyTorch data → cads data, for a tensor of cads shape `cads`.
    pub fn from_pytorch(self, cads: &[usize], torch: &[f32]) -> Result<Vec<f32>> {
        self.permute(cads, torch, true)
    }

    /// cads data of shape `cads` → row-major PyTorch data (shape [`Layout::pytorch_shape`]).
    pub fn to_pytorch(self, cads: &[usize], data: &[f32]) -> Result<Vec<f32>> {
        self.permute(cads, data, false)
    }

    fn permute(self, cads: &[usize], src: &[f32], into_cads: bool) -> Result<Vec<f32>> {
        let n: usize = cads.iter().product();
        if src.len() != n {
            return Err(Error::shape(
                Self::OP,
                format!("{n} values for cads shape {cads:?} ({self:?})"),
                format!("{} values", src.len()),
            ));
        }
        let Some(Blocks { kernel, a, b }) = self.blocks(cads)? else {
            return Ok(src.to_vec());
        };
        let taps: usize = kernel.iter().product();
        let mut out = vec![0.0; n];
        for ia in 0..a {
            for ib in 0..b {
                for t in 0..taps {
                    // torch[a, b, t]
                    let torch = (ia * b + ib) * taps + t;
                    // cads[t, b, a] (conv, linear) or cads[t, a, b] (transposed conv)
                    let ours = if self.swaps() {
                        (t * b + ib) * a + ia
                    } else {
                        (t * a + ia) * b + ib
                    };
                    if into_cads {
                        out[ours] = src[torch];
                    } else {
                        out[torch] = src[ours];
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize) -> Vec<f32> {
        (0..n).map(|i| i as f32).collect()
    }

    #[test]
    fn round_trip_every_layout() {
        let cases: [(Layout, &[usize]); 7] = [
            (Layout::Plain, &[5]),
            (Layout::Linear, &[3, 7]),
            (Layout::Conv3d, &[2, 3, 1, 4, 5]),
            (Layout::Conv2d, &[3, 2, 4, 5]),
            (Layout::Conv2d, &[1, 3, 2, 4, 5]),
            (Layout::ConvTranspose3d, &[2, 1, 3, 4, 6]),
            (Layout::Conv3d, &[3, 3, 3, 1, 6]),
        ];
        for (layout, shape) in cases {
            let n: usize = shape.iter().product();
            let data = ramp(n);
            let torch = layout.to_pytorch(shape, &data).unwrap();
            assert_eq!(
                layout.from_pytorch(shape, &torch).unwrap(),
                data,
                "{layout:?}"
            );
            let pt = layout.pytorch_shape(shape).unwrap();
            assert_eq!(pt.iter().product::<usize>(), n);
        }
    }

    /// One element per layout, its index worked out by hand from the table.
    #[test]
    fn hand_checked_elements() {
        // Linear: torch [out 7, in 3]; torch[5, 2] = 5·3 + 2 = 17 → cads [in, out][2, 5] = 2·7 + 5.
        let w = Layout::Linear.from_pytorch(&[3, 7], &ramp(21)).unwrap();
        assert_eq!(Layout::Linear.pytorch_shape(&[3, 7]).unwrap(), vec![7, 3]);
        assert_eq!(w[2 * 7 + 5], 17.0);
        // Conv3d: torch [Co 5, Ci 4, 2, 3, 1]; torch[3, 1, 1, 2, 0] = ((3·4 + 1)·6 + 1·3 + 2) = 83
        // → cads [kD 2, kH 3, kW 1, Ci 4, Co 5][1, 2, 0, 1, 3] = ((1·3 + 2)·4 + 1)·5 + 3 = 108.
        let s = [2, 3, 1, 4, 5];
        assert_eq!(
            Layout::Conv3d.pytorch_shape(&s).unwrap(),
            vec![5, 4, 2, 3, 1]
        );
        let w = Layout::Conv3d.from_pytorch(&s, &ramp(120)).unwrap();
        assert_eq!(w[108], 83.0);
        // Conv2d stored as [1, kH 3, kW 2, Ci 4, Co 5]; torch [5, 4, 3, 2]; torch[4, 2, 1, 1] =
        // ((4·4 + 2)·3 + 1)·2 + 1 = 111 → cads[0, 1, 1, 2, 4] = ((1·2 + 1)·4 + 2)·5 + 4 = 74.
        let s = [1, 3, 2, 4, 5];
        assert_eq!(Layout::Conv2d.pytorch_shape(&s).unwrap(), vec![5, 4, 3, 2]);
        let w = Layout::Conv2d.from_pytorch(&s, &ramp(120)).unwrap();
        assert_eq!(w[74], 111.0);
        // ConvTranspose3d: cads [kD 2, kH 1, kW 3, Ci 4, Co 6]; torch [4, 6, 2, 1, 3];
        // torch[1, 2, 0, 0, 1] = (1·6 + 2)·6 + 1 = 49 → cads[0, 0, 1, 1, 2] = (1·4 + 1)·6 + 2 = 32.
        let s = [2, 1, 3, 4, 6];
        assert_eq!(
            Layout::ConvTranspose3d.pytorch_shape(&s).unwrap(),
            vec![4, 6, 2, 1, 3]
        );
        let w = Layout::ConvTranspose3d
            .from_pytorch(&s, &ramp(144))
            .unwrap();
        assert_eq!(w[32], 49.0);
        // Plain is a copy.
        assert_eq!(
            Layout::Plain.from_pytorch(&[3], &[1.0, 2.0, 3.0]).unwrap(),
            vec![1.0, 2.0, 3.0]
        );
    }

    #[test]
    fn a_shape_that_does_not_fit_the_kind_is_an_error() {
        assert!(matches!(
            Layout::Linear.pytorch_shape(&[2, 3, 4]),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(Layout::Conv2d.pytorch_shape(&[2, 3, 3, 4, 5]).is_err());
        assert!(Layout::Conv3d
            .from_pytorch(&[1, 1, 1, 2, 2], &[0.0; 3])
            .is_err());
    }
}
