//! Loading PyTorch weights (a state dict converted to safetensors by
//! scripts/convert_cads_checkpoint.py, or a file written by `nn::save_safetensors`) into the
//! encoder. The work is the generic, strict-by-default `nn::load_safetensors`: names are the
//! authors' (see the module docs of `models::pvt`), and each tensor's layout comes with its
//! name (`nn::Layout`), so a Conv2d of the image path is never mistaken for a Conv3d.

use super::PvtEncoder;
use crate::error::Result;
use crate::nn::{self, LoadOptions, LoadReport};

impl PvtEncoder {
    /// Load a safetensors file by name with `options` (`LoadOptions::strict()` for an exact
    /// match; see [`PvtEncoder::checkpoint_options`] for the authors' checkpoints).
    pub fn load_safetensors(&self, path: &str, options: &LoadOptions) -> Result<LoadReport> {
        nn::load_safetensors(self, path, options)
    }

    /// As [`PvtEncoder::load_safetensors`] from bytes in memory (`path` names them in errors).
    /// Every key and shape is checked before anything is written, so a bad file changes no
    /// weight.
    pub fn load_safetensors_bytes(
        &self,
        bytes: &[u8],
        path: &str,
        options: &LoadOptions,
    ) -> Result<LoadReport> {
        nn::load_safetensors_bytes(self, bytes, path, options)
    }

    /// Options for one network of the authors' training checkpoint (`teacher` or `student`,
    /// converted with its `module.` prefix dropped): take the `backbone.` keys, skip the DINO
    /// heads (every other key), and, when this encoder was built without the image path, skip
    /// the image path's `_2D` tensors. Anything else must match exactly.
    pub fn checkpoint_options(&self) -> LoadOptions {
        let options = LoadOptions::strict().take_prefix("backbone.");
        if self.stem_image.is_some() {
            options
        } else {
            options.skip_containing("_2D")
        }
    }
}
