//! The input frame: the channels, rows and columns of the images a model takes (`--input CxHxW`).
//!
//! One small value that every architecture builds from and every command that feeds a model (train,
//! evaluate, predict, serve, export) reads from the run, so the frame is said once, in one spelling.
//! `config.json` keeps its `input_shape: [rows, cols]` and adds `channels` only when it is not 1, so a
//! grey run's file is what it always was and old runs load as one-channel frames.

use std::fmt;

/// Channels × rows × columns of one image; pixels are stored channel-major (CHW), as PyTorch lays
/// them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Frame {
    /// 1 (grey) or 3 (RGB).
    pub channels: i64,
    pub rows: i64,
    pub cols: i64,
}

/// The channel counts a picture can be read into.
pub const CHANNELS: [i64; 2] = [1, 3];

impl Frame {
    /// MNIST's frame, the default: 1x28x28.
    pub const MNIST: Frame = Frame { channels: 1, rows: 28, cols: 28 };

    pub fn grey(rows: i64, cols: i64) -> Frame {
        Frame { channels: 1, rows, cols }
    }

    /// Values per image (`channels * rows * cols`), `None` on overflow.
    pub fn values(self) -> Option<i64> {
        self.channels.checked_mul(self.rows)?.checked_mul(self.cols)
    }

    /// `[channels, rows, cols]`.
    pub fn dims(self) -> [i64; 3] {
        [self.channels, self.rows, self.cols]
    }

    /// The size as people read it: `28x28` for a grey frame, `3x32x32` for a colour one.
    pub fn size_text(self) -> String {
        if self.channels == 1 { format!("{}x{}", self.rows, self.cols) } else { self.to_string() }
    }

    /// The shape of a batch of `n` inputs as the commands feed them: `[n, rows, cols]` for a grey frame
    /// (as always), `[n, channels, rows, cols]` for a colour one.
    pub fn batch_shape(self, n: i64) -> Vec<i64> {
        if self.channels == 1 { vec![n, self.rows, self.cols] } else { vec![n, self.channels, self.rows, self.cols] }
    }

    /// What one channel count means in a header: `grey` or `RGB`.
    pub fn colour_name(self) -> &'static str {
        if self.channels == 3 { "RGB" } else { "grey" }
    }
}

impl Default for Frame {
    fn default() -> Self {
        Frame::MNIST
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.rows, self.cols)
    }
}

/// Parses `--input`: `CxHxW` (`3x32x32`; C is 1 or 3) or `HxW`, which means `1xHxW`.
pub fn parse_frame(spec: &str) -> Result<Frame, String> {
    let wrong = || format!("'{spec}' is not CxHxW or HxW (e.g. 1x28x28, 3x32x32 or 28x28)");
    let parts: Vec<&str> = spec.split(['x', 'X']).collect();
    let side = |s: &str| s.trim().parse::<i64>().ok().filter(|&n| n >= 1).ok_or_else(wrong);
    let frame = match parts.as_slice() {
        [rows, cols] => Frame::grey(side(rows)?, side(cols)?),
        [channels, rows, cols] => Frame { channels: side(channels)?, rows: side(rows)?, cols: side(cols)? },
        _ => return Err(wrong()),
    };
    if !CHANNELS.contains(&frame.channels) {
        return Err(format!("'{spec}': {} channels; a picture is read as 1 (grey) or 3 (RGB)", frame.channels));
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_channels_by_rows_by_columns_and_two_numbers_are_grey() {
        assert_eq!(parse_frame("28x28"), Ok(Frame::MNIST));
        assert_eq!(parse_frame("1x28x28"), Ok(Frame::MNIST));
        assert_eq!(parse_frame("3X32x16"), Ok(Frame { channels: 3, rows: 32, cols: 16 }));
        for bad in ["28", "0x28", "28x", "ax2", "-1x2", "1x2x3x4", "2x28x28", "4x8x8"] {
            assert!(parse_frame(bad).is_err(), "{bad}");
        }
        assert!(parse_frame("2x8x8").unwrap_err().contains("1 (grey) or 3 (RGB)"));
        assert_eq!(Frame::MNIST.size_text(), "28x28");
        assert_eq!(Frame { channels: 3, rows: 32, cols: 32 }.size_text(), "3x32x32");
        assert_eq!(Frame { channels: 3, rows: 2, cols: 5 }.values(), Some(30));
    }
}
