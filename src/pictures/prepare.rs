//! One picture made into a model's frame, the same way for training, evaluation, predict and serve:
//! a run trained on pictures records its `--fit`, and every command that feeds it a picture fits it the
//! same way, so the network sees at inference what it saw in training.
//!
//! - `none`: a plain resize to the frame (triangle filter), no inversion: right for photos.
//! - `digits`, `fashion`: grey frames only; the MNIST-style preparation of [`crate::preprocess`] (dark on
//!   light inverted, ink cropped, scaled and centred by mass).
//! - `auto`: a picture of exactly the frame's size is used as it is; otherwise a grey frame takes the
//!   MNIST-style preparation (digits, or fashion for Fashion-MNIST's classes) and a colour frame a plain
//!   resize.
//!
//! A grey picture read into a 3-channel frame has its grey repeated in each channel; a colour picture
//! read into a 1-channel frame is converted to grey (BT.709 luma, the `image` crate's), with
//! transparency counted as paper.

use crate::frame::Frame;
use crate::preprocess::{self, Framing, Invert};
use anyhow::{Context, Result, bail};
use image::{DynamicImage, imageops};

/// A picture in its frame: `channels * rows * cols` bytes, channel-major.
pub struct Prepared {
    pub bytes: Vec<u8>,
    /// Whether dark-on-light was turned into light-on-dark (MNIST-style framing only).
    pub inverted: bool,
    /// The framing applied (never `Auto`).
    pub framing: Framing,
    /// Why a prediction for it may mean little (content too small to be a digit).
    pub warning: Option<String>,
}

impl Prepared {
    /// The bytes as network inputs, pixel / 255.
    pub fn unit_pixels(&self) -> Vec<f32> {
        self.bytes.iter().map(|&p| p as f32 / 255.0).collect()
    }

    /// A picture to look at (`--show-input`): grey, or RGB for a colour frame.
    pub fn image(&self, frame: Frame) -> Option<DynamicImage> {
        let (w, h) = (frame.cols as u32, frame.rows as u32);
        if frame.channels == 1 {
            return image::GrayImage::from_raw(w, h, self.bytes.clone()).map(DynamicImage::ImageLuma8);
        }
        let plane = (w * h) as usize;
        let rgb = image::RgbImage::from_fn(w, h, |x, y| {
            let at = (y * w + x) as usize;
            image::Rgb([self.bytes[at], self.bytes[plane + at], self.bytes[2 * plane + at]])
        });
        Some(DynamicImage::ImageRgb8(rgb))
    }
}

/// Decodes a picture held in memory, turned upright as a JPEG's EXIF orientation says.
pub fn decode(bytes: &[u8]) -> Result<DynamicImage> {
    let reader = image::io::Reader::new(std::io::Cursor::new(bytes)).with_guessed_format().context("cannot read")?;
    let mut decoded = reader.decode().map_err(|e| anyhow::anyhow!("not a readable image: {e}"))?;
    if let Some(value) = crate::orientation::jpeg_orientation(bytes) {
        decoded = crate::orientation::apply(decoded, value);
    }
    Ok(decoded)
}

/// Refuses a fit the frame cannot take: the MNIST-style preparations work on grey frames.
pub fn check_fit(frame: Frame, fit: Framing) -> Result<()> {
    if frame.channels != 1 && matches!(fit, Framing::Digits | Framing::Fashion) {
        bail!("--fit {fit} works on grey frames (1xHxW); a {frame} frame takes --fit none or auto (a plain resize)");
    }
    Ok(())
}

/// `picture` in `frame`, fitted as `fit` says; `class_names` pick the MNIST-style framing of `auto`.
pub fn prepare(picture: &DynamicImage, frame: Frame, fit: Framing, class_names: &[String]) -> Result<Prepared> {
    check_fit(frame, fit)?;
    let (rows, cols) = (frame.rows as u32, frame.cols as u32);
    if picture.width() == 0 || picture.height() == 0 {
        bail!("the image is empty");
    }
    let at_frame_size = picture.width() == cols && picture.height() == rows;
    let plain = fit == Framing::AsIs || (fit == Framing::Auto && (at_frame_size || frame.channels != 1));
    if plain {
        return Ok(Prepared {
            bytes: resized_bytes(picture, frame),
            inverted: false,
            framing: Framing::AsIs,
            warning: None,
        });
    }
    let grey = preprocess::flatten_alpha(picture);
    let fitted = preprocess::to_model_input(&grey, rows, cols, class_names, fit, Invert::Auto)?;
    Ok(Prepared {
        bytes: fitted.image.into_raw(),
        inverted: fitted.inverted,
        framing: fitted.framing,
        warning: fitted.warning,
    })
}

/// The picture resized to the frame (when its size differs), in the frame's channels, channel-major.
fn resized_bytes(picture: &DynamicImage, frame: Frame) -> Vec<u8> {
    let (rows, cols) = (frame.rows as u32, frame.cols as u32);
    let resize = |image: DynamicImage| {
        if image.width() == cols && image.height() == rows {
            image
        } else {
            image.resize_exact(cols, rows, imageops::FilterType::Triangle)
        }
    };
    if frame.channels == 1 {
        return resize(DynamicImage::ImageLuma8(preprocess::flatten_alpha(picture))).into_luma8().into_raw();
    }
    let rgb = resize(DynamicImage::ImageRgb8(picture.to_rgb8())).into_rgb8();
    let plane = (rows * cols) as usize;
    let mut bytes = vec![0u8; 3 * plane];
    for (at, pixel) in rgb.pixels().enumerate() {
        for channel in 0..3 {
            bytes[channel * plane + at] = pixel[channel];
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_stays_colour_channel_major_and_grey_is_repeated_or_converted() {
        let red = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(4, 2, image::Rgb([200, 10, 30])));
        let frame = Frame { channels: 3, rows: 2, cols: 4 };
        let prepared = prepare(&red, frame, Framing::Auto, &[]).unwrap();
        assert_eq!(prepared.bytes, [vec![200u8; 8], vec![10; 8], vec![30; 8]].concat());
        let grey = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(4, 2, image::Luma([77])));
        assert_eq!(prepare(&grey, frame, Framing::AsIs, &[]).unwrap().bytes, vec![77u8; 24]);
        let as_grey = prepare(&red, Frame::grey(2, 4), Framing::Auto, &[]).unwrap();
        assert_eq!(as_grey.bytes.len(), 8);
        assert!(as_grey.bytes.iter().all(|&p| p == red.to_luma8().get_pixel(0, 0)[0]));
        let resized = prepare(&red, Frame { channels: 3, rows: 8, cols: 8 }, Framing::Auto, &[]).unwrap();
        assert_eq!(resized.bytes.len(), 3 * 64);
        let err = prepare(&red, frame, Framing::Digits, &[]).err().unwrap().to_string();
        assert!(err.contains("--fit digits works on grey frames"), "{err}");
    }
}
