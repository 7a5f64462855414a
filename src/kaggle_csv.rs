//! Kaggle's "Digit Recognizer" CSV layout: a header, then one image per row — `label,pixel0,...,pixelN`
//! for training (`train.csv`), `pixel0,...,pixelN` alone for the test file (`test.csv`) — pixels as
//! integers 0 to 255, row-major, channel-major for a colour frame. Read here into frames' bytes and
//! labels; every row is checked, and the first bad one is named by its line and column.

use crate::frame::Frame;
use anyhow::{Result, bail, ensure};
use std::path::Path;

/// The rows of a CSV file as frames.
pub struct CsvImages {
    pub frame: Frame,
    /// `count * frame.values()` bytes.
    pub bytes: Vec<u8>,
    /// The label column, when the file has one.
    pub labels: Option<Vec<i64>>,
}

impl CsvImages {
    pub fn count(&self) -> usize {
        let values = self.frame.values().unwrap_or(1).max(1) as usize;
        self.bytes.len() / values
    }
}

/// Whether `path` names a CSV file by its extension.
pub fn is_csv(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// The frame of `pixels` columns: `frame` when given (it must hold that many values), else a square
/// grey frame.
fn frame_of(path: &Path, pixels: usize, frame: Option<Frame>) -> Result<Frame> {
    if let Some(frame) = frame {
        ensure!(
            frame.values() == Some(pixels as i64),
            "{}: {pixels} pixel columns, but a {frame} frame holds {} values",
            path.display(),
            frame.values().unwrap_or(0)
        );
        return Ok(frame);
    }
    let side = (pixels as f64).sqrt().round() as i64;
    ensure!(
        pixels > 0 && side * side == pixels as i64,
        "{}: {pixels} pixel columns are not a square image; give the frame with --input CxHxW",
        path.display()
    );
    Ok(Frame::grey(side, side))
}

/// Reads `path`; `need_labels` refuses a file without the label column (training and evaluation).
pub fn read(path: &Path, frame: Option<Frame>, need_labels: bool) -> Result<CsvImages> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| anyhow::anyhow!("{}: cannot be read: {}", path.display(), crate::error_text::io_reason(&err)))?;
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        bail!("{}: is empty: expected a header (label,pixel0,...)", path.display())
    };
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    let labelled = columns.first() == Some(&"label");
    if need_labels && !labelled {
        bail!(
            "{}: no label column: its header starts with {:?}, expected label,pixel0,... (a Kaggle test file \
             without labels is for predict)",
            path.display(),
            columns.first().copied().unwrap_or_default()
        );
    }
    let pixels = columns.len() - usize::from(labelled);
    if let Some((at, name)) =
        columns.iter().skip(usize::from(labelled)).enumerate().find(|(i, n)| **n != format!("pixel{i}"))
    {
        bail!(
            "{}: header column {} is {name:?}, expected \"pixel{at}\"",
            path.display(),
            at + 1 + usize::from(labelled)
        );
    }
    let frame = frame_of(path, pixels, frame)?;
    let mut bytes = Vec::with_capacity(text.len() / 2);
    let mut labels = labelled.then(Vec::new);
    for (index, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let line_number = index + 2;
        read_row(path, line_number, line, &columns, labels.as_mut(), &mut bytes)?;
    }
    ensure!(!bytes.is_empty(), "{}: holds a header but no rows", path.display());
    Ok(CsvImages { frame, bytes, labels })
}

/// One row's label (into `labels`, when the file has them) and pixels (into `bytes`).
fn read_row(
    path: &Path,
    line_number: usize,
    line: &str,
    columns: &[&str],
    mut labels: Option<&mut Vec<i64>>,
    bytes: &mut Vec<u8>,
) -> Result<()> {
    let fields: Vec<&str> = line.split(',').collect();
    ensure!(
        fields.len() == columns.len(),
        "{}: line {line_number} has {} columns, the header {}",
        path.display(),
        fields.len(),
        columns.len()
    );
    for (field, name) in fields.iter().zip(columns) {
        let value: i64 = field.trim().parse().map_err(|_| {
            anyhow::anyhow!(
                "{}: line {line_number}, column {name}: {:?} is not an integer",
                path.display(),
                field.trim()
            )
        })?;
        match labels.as_deref_mut() {
            Some(labels) if *name == "label" => {
                ensure!(value >= 0, "{}: line {line_number}: label {value} is negative", path.display());
                labels.push(value);
            }
            _ => {
                ensure!(
                    (0..=255).contains(&value),
                    "{}: line {line_number}, column {name}: {value} is outside 0..255",
                    path.display()
                );
                bytes.push(value as u8);
            }
        }
    }
    Ok(())
}
