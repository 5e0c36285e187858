//! PVTv2 encoder configuration (defaults: PVTv2-b1 as CADS uses it, ../shared/CADS.md).

use crate::error::{Error, Result};

/// Which input the encoder runs on. Linear layers, LayerNorms and depthwise convs are shared;
/// the stem, patch-embed and spatial-reduction convs exist once per modality.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Modality {
    /// CT volumes `[N, D, H, W, C]`.
    Volume,
    /// Radiographs (DRRs) `[N, H, W, C]`.
    Image,
}

/// Serialisable (serde) so a recipe config (`pretrain::CadsConfig`) can carry it in its JSON.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PvtConfig {
    pub in_channels: usize,
    /// Channels of the conv stem (its stride-2 output is the decoder's first skip).
    pub stem_channels: usize,
    pub embed_dims: [usize; 4],
    pub heads: [usize; 4],
    pub mlp_ratios: [usize; 4],
    pub depths: [usize; 4],
    pub sr_ratios: [usize; 4],
    /// Stochastic depth, linear from 0 over all blocks up to this rate.
    pub drop_path_rate: f32,
    /// Build the 2D-only parts (stem, patch embeds, SR convs for images).
    pub with_image_path: bool,
    /// Seed of the init: conv normal(0, sqrt(2 / fan_out)) with the authors' fan_out (see
    /// `models::pvt::ConvUnit`); Linear trunc_normal(0.02).
    pub seed: u64,
}

impl Default for PvtConfig {
    fn default() -> Self {
        PvtConfig {
            in_channels: 1,
            stem_channels: 64,
            embed_dims: [64, 128, 320, 512],
            heads: [1, 2, 5, 8],
            mlp_ratios: [8, 8, 4, 4],
            depths: [2, 2, 2, 2],
            sr_ratios: [8, 4, 2, 1],
            drop_path_rate: 0.1,
            with_image_path: true,
            seed: 0,
        }
    }
}

/// LayerNorm eps inside blocks and after stages.
pub const BLOCK_EPS: f32 = 1e-6;
/// LayerNorm eps of the patch embeddings and of the SR path; InstanceNorm eps of the stem.
pub const EMBED_EPS: f32 = 1e-5;
/// Stem activation slope.
pub const LEAKY_SLOPE: f32 = 0.01;

impl PvtConfig {
    /// PVTv2's structure at small widths: four stages of one block (embed dims 8 to 32, head
    /// dim 8), spatial reduction 2 in the first two stages, an 8-channel stem; the rest as the
    /// default. For tests and `cads check`: every kind of layer, in milliseconds.
    pub fn reduced() -> PvtConfig {
        PvtConfig {
            stem_channels: 8,
            embed_dims: [8, 16, 24, 32],
            heads: [1, 2, 3, 4],
            mlp_ratios: [2, 2, 2, 2],
            depths: [1, 1, 1, 1],
            sr_ratios: [2, 2, 1, 1],
            ..PvtConfig::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        let op = "PvtConfig";
        for s in 0..4 {
            let (c, h) = (self.embed_dims[s], self.heads[s]);
            if c == 0 || h == 0 || c % h != 0 {
                return Err(Error::invalid(
                    op,
                    format!("heads dividing embed dim at stage {}", s + 1),
                    format!("dim {c}, heads {h}"),
                ));
            }
            if ![4, 8, 16, 32, 64].contains(&(c / h)) {
                return Err(Error::invalid(op, "head dim in {4, 8, 16, 32, 64}", c / h));
            }
            if self.mlp_ratios[s] == 0 || self.sr_ratios[s] == 0 {
                return Err(Error::invalid(
                    op,
                    "mlp and sr ratios >= 1",
                    format!("stage {}", s + 1),
                ));
            }
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return Err(Error::invalid(
                op,
                "drop_path_rate in [0, 1)",
                self.drop_path_rate,
            ));
        }
        Ok(())
    }

    /// Total stride of stage 4 per axis (D, H, W): stem (2, 4, 4) then ×2 per stage.
    pub fn total_stride(&self) -> [usize; 3] {
        [16, 32, 32]
    }

    /// Drop-path rate of every block, linear over all blocks (timm's `torch.linspace(0, rate, n)`).
    pub fn drop_path_rates(&self) -> Vec<f32> {
        let n: usize = self.depths.iter().sum();
        (0..n)
            .map(|i| {
                if n > 1 {
                    self.drop_path_rate * i as f32 / (n - 1) as f32
                } else {
                    0.0
                }
            })
            .collect()
    }
}
