//! Naive CPU twins of every GPU op, in f64: the specification the kernels are tested against.
//! Written to be read, not to be fast. Each file mirrors one file of `src/ops/`.

pub mod attention;
pub mod cast;
pub mod conv3d;
pub mod conv_transpose3d;
pub mod drr;
pub mod dw_mlp;
pub mod elementwise;
pub mod ema;
pub mod gelu_linear;
pub mod gradcheck;
pub mod loss;
pub mod loss_scale;
pub mod matmul;
pub mod matmul_f16;
pub mod norm;
pub mod normalized_linear;
pub mod optim;
pub mod pool;
pub mod pvt;
pub mod reduce;
pub mod resample;
pub mod softmax;

/// A dense row-major f64 array with a shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub data: Vec<f64>,
    pub shape: Vec<usize>,
}

impl Array {
    pub fn new(data: Vec<f64>, shape: &[usize]) -> Self {
        assert_eq!(
            data.len(),
            shape.iter().product::<usize>(),
            "reference Array: data/shape"
        );
        Array {
            data,
            shape: shape.to_vec(),
        }
    }
    pub fn zeros(shape: &[usize]) -> Self {
        Array::new(vec![0.0; shape.iter().product()], shape)
    }
    pub fn from_f32(data: &[f32], shape: &[usize]) -> Self {
        Array::new(data.iter().map(|&v| v as f64).collect(), shape)
    }
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }
    /// Row-major element strides: `stride[d] = Π_{e > d} shape[e]`.
    pub fn strides(&self) -> Vec<usize> {
        let mut s = vec![1usize; self.shape.len()];
        for d in (0..self.shape.len().saturating_sub(1)).rev() {
            s[d] = s[d + 1] * self.shape[d + 1];
        }
        s
    }
    /// Multi-index of a flat index.
    pub fn unravel(&self, mut i: usize) -> Vec<usize> {
        let mut idx = vec![0; self.shape.len()];
        for d in (0..self.shape.len()).rev() {
            idx[d] = i % self.shape[d];
            i /= self.shape[d];
        }
        idx
    }
    /// Flat index of a multi-index.
    pub fn ravel(&self, idx: &[usize]) -> usize {
        idx.iter().zip(self.strides()).map(|(i, s)| i * s).sum()
    }
}
