//! Random shifts of the training pictures (`--random-shift P`): each picture of a step moved by up to P
//! pixels along each axis, the uncovered border filled with 0 (the background of MNIST's frames) — what
//! torchvision's `RandomCrop(size, padding=P)` and Keras's `RandomTranslation` do. A Transformer has no
//! convolution's built-in tolerance of small moves, so it learns it from the data.
//!
//! A new ViT run moves its pictures only where that loses nothing ([`ink_in_border`] under
//! [`LOST_INK_LIMIT`]): digit MNIST's digits sit inside an empty border, Fashion-MNIST's clothes fill
//! the frame, and moving them cost test accuracy (docs/vit.md).
//!
//! The moves are a pure function of the run's seed, the epoch and the example's index in the training
//! part, drawn once per epoch on libtorch's CPU generator: a resumed run, a CUDA run and every torchrun
//! shard see the same moves, and a Python script reproduces them (`torch.manual_seed(shift_seed(seed,
//! epoch)); torch.randint(-P, P + 1, (n, 2))`, rows then columns).

use crate::frame::Frame;
use anyhow::Result;
use tch::{Device, Kind, Tensor};

/// The most of the training pictures' ink that a default shift may push out of their frame: 0.1%.
/// Digit MNIST's training pictures have 0.02% of theirs in the outer one-pixel ring, Fashion-MNIST's 2.3%.
pub const LOST_INK_LIMIT: f64 = 0.001;

/// The share of the ink (the sum of the pixel values) of `images` (`[N, C·H·W]`) that lies in the outer
/// ring `pixels` wide of `frame`: what moves of up to `pixels` can push out of the frame. 0 for blank
/// pictures.
pub fn ink_in_border(images: &Tensor, frame: Frame, pixels: usize) -> Result<f64> {
    let ring = pixels as i64;
    // One pass, a slice of pictures at a time: widening all of them to 64 bits at once would copy the
    // whole training set (300 MB for MNIST) at the start of every run.
    let mut per_pixel = Tensor::zeros([images.size().last().copied().unwrap_or(0)], (Kind::Int64, images.device()));
    for slice in images.f_split(1024, 0)? {
        per_pixel = per_pixel.f_add(&slice.f_sum_dim_intlist(0, false, Kind::Int64)?)?;
    }
    let ink = per_pixel.f_view([frame.channels, frame.rows, frame.cols])?;
    let total = ink.f_sum(Kind::Double)?.f_double_value(&[])?;
    if total == 0.0 {
        return Ok(0.0);
    }
    let inside = if 2 * ring >= frame.rows.min(frame.cols) {
        0.0
    } else {
        ink.f_narrow(1, ring, frame.rows - 2 * ring)?
            .f_narrow(2, ring, frame.cols - 2 * ring)?
            .f_sum(Kind::Double)?
            .f_double_value(&[])?
    };
    Ok((total - inside) / total)
}

/// The moves of one epoch: `[n, 2]` Int64 (rows, columns), one per example of the training part.
pub struct EpochShifts {
    moves: Tensor,
    pixels: i64,
    frame: Frame,
}

/// The generator seed of an epoch's moves (another stream than the shuffle's, `training::shuffle_seed`).
pub fn shift_seed(seed: i64, epoch: usize) -> i64 {
    seed.wrapping_mul(1_000_033).wrapping_add(epoch as i64).wrapping_add(7_919)
}

impl EpochShifts {
    /// The moves of `epoch` for `examples` pictures of `frame`, up to `pixels` each way, on `device`.
    pub fn draw(seed: i64, epoch: usize, examples: i64, pixels: usize, frame: Frame, device: Device) -> EpochShifts {
        let pixels = pixels as i64;
        tch::manual_seed(shift_seed(seed, epoch));
        let moves = Tensor::randint_low(-pixels, pixels + 1, [examples, 2], (Kind::Int64, Device::Cpu));
        EpochShifts { moves: moves.to_device(device), pixels, frame }
    }

    /// `images` (`[B, C·H·W]` pixels, any kind) of the examples `rows`, each moved by its own move.
    pub fn apply(&self, images: &Tensor, rows: &Tensor) -> Result<Tensor> {
        let moves = self.moves.f_index_select(0, rows)?;
        shift(images, &moves, self.frame, self.pixels)
    }
}

/// Moves each picture of `images` (`[B, C·H·W]`) by its `(rows, columns)` of `moves` (`[B, 2]`, each
/// within `±pixels`): the picture's content goes down and right by positive amounts, zeros come in.
pub fn shift(images: &Tensor, moves: &Tensor, frame: Frame, pixels: i64) -> Result<Tensor> {
    let batch = images.size().first().copied().unwrap_or(0);
    let device = images.device();
    let pictures = images.f_view([batch, frame.channels, frame.rows, frame.cols])?;
    let padded = pictures.f_constant_pad_nd([pixels, pixels, pixels, pixels])?;
    // Output pixel (y, x) of a picture moved by (dy, dx) is input pixel (y - dy, x - dx): padded row
    // y - dy + pixels.
    let index = |n: i64| Tensor::arange(n, (Kind::Int64, device));
    let start = moves.f_neg()?.f_add_scalar(pixels)?; // [B, 2]
    let rows =
        start.f_select(1, 0)?.f_view([batch, 1, 1, 1])?.f_add(&index(frame.rows).f_view([1, 1, frame.rows, 1])?)?;
    let cols =
        start.f_select(1, 1)?.f_view([batch, 1, 1, 1])?.f_add(&index(frame.cols).f_view([1, 1, 1, frame.cols])?)?;
    let examples = index(batch).f_view([batch, 1, 1, 1])?;
    let channels = index(frame.channels).f_view([1, frame.channels, 1, 1])?;
    let moved = padded.f_index(&[Some(examples), Some(channels), Some(rows), Some(cols)])?;
    Ok(moved.f_reshape([batch, frame.channels * frame.rows * frame.cols])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ink_in_the_border_is_its_share_of_the_whole() {
        let frame = Frame { channels: 1, rows: 4, cols: 4 };
        let mut centre = [0u8; 16];
        centre[5] = 200; // row 1, column 1: inside the one-pixel ring
        centre[10] = 100;
        let inside = Tensor::from_slice(&centre).view([1, 16]);
        assert_eq!(ink_in_border(&inside, frame, 1).unwrap(), 0.0);
        assert_eq!(ink_in_border(&inside, frame, 2).unwrap(), 1.0, "a ring as wide as half the frame is all of it");
        let mut edge = centre;
        edge[0] = 100; // a corner
        let both = Tensor::from_slice(&[centre, edge].concat()).view([2, 16]);
        assert!((ink_in_border(&both, frame, 1).unwrap() - 100.0 / 700.0).abs() < 1e-12);
        assert_eq!(ink_in_border(&Tensor::zeros([3, 16], (Kind::Uint8, Device::Cpu)), frame, 1).unwrap(), 0.0);
        // Over several slices of pictures: the same share as summing them all at once.
        tch::manual_seed(3);
        let many = Tensor::randint(256, [2500, 16], (Kind::Uint8, Device::Cpu));
        let pictures = many.view([-1, 4, 4]).to_kind(Kind::Double);
        let whole = pictures.sum(Kind::Double).double_value(&[]);
        let centre = pictures.narrow(1, 1, 2).narrow(2, 1, 2).sum(Kind::Double).double_value(&[]);
        assert!((ink_in_border(&many, frame, 1).unwrap() - (whole - centre) / whole).abs() < 1e-12);
    }

    fn picture(values: &[u8], frame: Frame) -> Tensor {
        Tensor::from_slice(values).view([1, frame.channels * frame.rows * frame.cols])
    }

    fn moved(values: &[u8], frame: Frame, dy: i64, dx: i64) -> Vec<u8> {
        let moves = Tensor::from_slice(&[dy, dx]).view([1, 2]);
        let out = shift(&picture(values, frame), &moves, frame, 2).unwrap();
        Vec::<u8>::try_from(out.view([-1])).unwrap()
    }

    #[test]
    fn a_move_takes_the_content_down_and_right_and_brings_in_zeros() {
        let frame = Frame { channels: 1, rows: 3, cols: 3 };
        let values = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(moved(&values, frame, 0, 0), values);
        assert_eq!(moved(&values, frame, 1, 0), [0, 0, 0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(moved(&values, frame, 0, -1), [2, 3, 0, 5, 6, 0, 8, 9, 0]);
        assert_eq!(moved(&values, frame, -2, 2), [0, 0, 7, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn every_channel_moves_together() {
        let frame = Frame { channels: 2, rows: 2, cols: 2 };
        assert_eq!(moved(&[1, 2, 3, 4, 5, 6, 7, 8], frame, 0, 1), [0, 1, 0, 3, 0, 5, 0, 7]);
    }

    #[test]
    fn each_picture_of_a_batch_takes_its_own_move() {
        let frame = Frame { channels: 1, rows: 2, cols: 2 };
        let images = Tensor::from_slice(&[1u8, 2, 3, 4, 1, 2, 3, 4]).view([2, 4]);
        let moves = Tensor::from_slice(&[0i64, 1, 1, 0]).view([2, 2]);
        let out = Vec::<u8>::try_from(shift(&images, &moves, frame, 1).unwrap().view([-1])).unwrap();
        assert_eq!(out, [0, 1, 0, 3, 0, 0, 1, 2]);
    }

    #[test]
    fn the_moves_depend_on_the_seed_and_the_epoch_only() {
        let frame = Frame::MNIST;
        let draw = |seed, epoch| EpochShifts::draw(seed, epoch, 500, 2, frame, Device::Cpu).moves;
        assert!(draw(1, 1).equal(&draw(1, 1)));
        assert!(!draw(1, 1).equal(&draw(1, 2)));
        assert!(!draw(1, 1).equal(&draw(2, 1)));
        let moves = draw(3, 1);
        assert_eq!(moves.min().int64_value(&[]), -2);
        assert_eq!(moves.max().int64_value(&[]), 2);
    }
}
