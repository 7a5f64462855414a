//! `--patch`, `--width`, `--depth`, `--heads`, `--mlp-ratio`: the Vision Transformer's flags, shared by
//! `train` and `describe` (clap's side of `crate::vit::VitFlags`).

use crate::vit::VitFlags;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct VitArgs {
    /// --arch vit: side of the square patches, which must divide the images' sides (default 7).
    #[arg(long, value_name = "PIXELS", value_parser = clap::value_parser!(i64).range(1..))]
    pub patch: Option<i64>,

    /// --arch vit: embedding width of the tokens (default 64).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
    pub width: Option<i64>,

    /// --arch vit: number of encoder blocks (default 4).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
    pub depth: Option<i64>,

    /// --arch vit: attention heads, which must divide --width (default 4).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
    pub heads: Option<i64>,

    /// --arch vit: the MLP's hidden width over --width (default 2).
    #[arg(long, value_name = "RATIO")]
    pub mlp_ratio: Option<f64>,
}

impl VitArgs {
    pub fn flags(&self) -> VitFlags {
        VitFlags {
            patch: self.patch,
            width: self.width,
            depth: self.depth,
            heads: self.heads,
            mlp_ratio: self.mlp_ratio,
        }
    }
}
