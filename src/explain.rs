//! `predict --explain DIR`: where the model looked, as a picture a person can check.
//!
//! For the Vision Transformer, the class token's attention rolled out over the blocks (Abnar & Zuidema,
//! "Quantifying Attention Flow in Transformers", 2020: each block's head-mean attention plus the
//! identity for the residual, multiplied through), one value per patch. For the MLP, the linear model
//! and the CNN, input-gradient saliency (Simonyan et al., 2013): |∂ logit of the predicted class / ∂ pixel|.
//! Either map is scaled to [0, 1] per image and written beside the image the network saw: the input on
//! the left, the map laid over it in red on the right, each pixel drawn 8x8.

use crate::run_dir::LoadedRun;
use crate::vit::{self, Vit};
use anyhow::{Context, Result, ensure};
use std::path::Path;
use tch::{Kind, Tensor, nn, nn::ModuleT};

/// Every pixel of the picture becomes a square of this side.
const SCALE: u32 = 8;

/// Where the model looked for each of `images` `[N, rows, cols]` in [0, 1]: `[N, rows, cols]` in [0, 1].
pub fn maps(run: &LoadedRun, images: &Tensor) -> Result<Tensor> {
    let images = images.to_device(run.model.vs.device());
    let map = match &run.config.model.vit {
        Some(config) => attention_rollout(run, config, &images)?,
        None => saliency(&run.model.net, &images)?,
    };
    Ok(map.to_device(tch::Device::Cpu))
}

/// The class token's rolled-out attention over the patches, each patch's value spread over its pixels.
fn attention_rollout(run: &LoadedRun, config: &vit::VitConfig, images: &Tensor) -> Result<Tensor> {
    let model = &run.config.model;
    // The same ViT, its weights copied, so that its attention weights can be read.
    let mut vs = nn::VarStore::new(run.model.vs.device());
    let vit = Vit::new(&vs.root(), config, model.frame(), model.num_classes, 0.0);
    vs.copy(&run.model.vs).context("copying the run's weights into the ViT that explains")?;
    let (_, maps) = tch::no_grad(|| vit.forward_with_attention(images));
    let rolled = vit::rollout(&maps)?;
    let (rows, cols) = vit.grid(config.patch);
    let n = images.size().first().copied().unwrap_or(0);
    Ok(rolled
        .f_view([n, rows, cols])?
        .f_repeat_interleave_self_int(config.patch, Some(1), None)?
        .f_repeat_interleave_self_int(config.patch, Some(2), None)?)
}

/// |gradient of the predicted class's logit with respect to each pixel|, scaled to [0, 1] per image.
fn saliency(net: &nn::SequentialT, images: &Tensor) -> Result<Tensor> {
    let x = images.detach().set_requires_grad(true);
    let logits = net.forward_t(&x, false);
    let predicted = logits.f_argmax(-1, true)?;
    let score = logits.f_gather(1, &predicted, false)?.f_sum(Kind::Float)?;
    let gradient = Tensor::f_run_backward(&[score], &[&x], false, false)?;
    let magnitude = gradient.first().context("no input gradient")?.f_abs()?;
    let largest = magnitude.f_amax(&[1i64, 2][..], true)?.f_clamp_min(1e-12)?;
    Ok(magnitude.f_div(&largest)?)
}

/// Writes `path`: the input `pixels` (rows × cols in [0, 1]) and, beside it, `map` in red over a dimmed
/// copy, both drawn [`SCALE`] times larger.
pub fn write_png(path: &Path, pixels: &[f32], map: &[f32], rows: u32, cols: u32) -> Result<()> {
    ensure!(pixels.len() == map.len() && pixels.len() == (rows * cols) as usize, "picture and map sizes differ");
    let (width, height) = (2 * cols * SCALE + SCALE, rows * SCALE);
    let mut picture = image::RgbImage::new(width, height);
    for (x, y, rgb) in picture.enumerate_pixels_mut() {
        let (column, row) = ((x % (cols * SCALE + SCALE)) / SCALE, y / SCALE);
        if column >= cols {
            *rgb = image::Rgb([255, 255, 255]); // the gap between the two
            continue;
        }
        let i = (row * cols + column) as usize;
        let ink = (pixels[i].clamp(0.0, 1.0) * 255.0) as u8;
        *rgb = if x < cols * SCALE {
            image::Rgb([ink, ink, ink])
        } else {
            let heat = map[i].clamp(0.0, 1.0);
            let base = pixels[i].clamp(0.0, 1.0) * 0.35;
            let channel = |v: f32| (v.clamp(0.0, 1.0) * 255.0) as u8;
            image::Rgb([channel(base + heat), channel(base + heat * heat * 0.6), channel(base)])
        };
    }
    crate::files::write_atomically(path, |tmp| Ok(picture.save_with_format(tmp, image::ImageFormat::Png)?))
}
