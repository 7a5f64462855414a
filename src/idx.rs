//! The IDX file format of MNIST-style data sets: header parsing and the checks that must pass
//! before anything proportional to the header's counts is allocated.
//!
//! An IDX file is a big-endian header — magic `0x0000_08_NN` where `NN` is the number of
//! dimensions, then one `u32` per dimension — followed by the `u8` payload. MNIST images are
//! `[count, rows, cols]` (magic 2051), labels `[count]` (magic 2049).
//!
//! The header checks are pure and work on byte slices, so they are unit-tested and fuzzable without
//! files. Reading a file — raw or `.gz` — is here too, so this module is the whole IDX format: an
//! uncompressed file's header is checked against the file's size, then the payload is read straight
//! into its tensor (one copy in memory); a `.gz` file's decompressed size is unknown until it has been
//! decompressed, so its header is never trusted for an allocation (see [`read_stream`]).
//! Which files make a data set, and checks across files, are `data.rs`'s.

use anyhow::{Context, Result, bail, ensure};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use tch::{Kind, Tensor};

/// Magic number of an IDX file of unsigned bytes with three dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with one dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// What a file is expected to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdxKind {
    Images,
    Labels,
}

impl IdxKind {
    pub fn magic(self) -> u32 {
        match self {
            IdxKind::Images => IMAGES_MAGIC,
            IdxKind::Labels => LABELS_MAGIC,
        }
    }

    /// Header length in bytes: the magic plus one `u32` per dimension.
    pub fn header_len(self) -> usize {
        match self {
            IdxKind::Images => 16,
            IdxKind::Labels => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            IdxKind::Images => "images",
            IdxKind::Labels => "labels",
        }
    }
}

/// A checked IDX header. `rows` and `cols` are 1 for label files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdxHeader {
    pub kind: IdxKind,
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
}

impl IdxHeader {
    /// Bytes per item: `rows * cols` for images, 1 for labels.
    pub fn item_len(&self) -> usize {
        self.rows * self.cols
    }

    /// Payload length in bytes; `parse` has already checked that it fits in a `usize`.
    pub fn payload_len(&self) -> usize {
        self.count * self.item_len()
    }

    /// Parses and checks the header at the start of `bytes` (which may be longer than the header).
    ///
    /// Rejects a wrong magic number (naming the other kind when the files were swapped), zero
    /// counts or dimensions, and sizes whose product overflows.
    pub fn parse(bytes: &[u8], kind: IdxKind) -> Result<IdxHeader> {
        let truncated = || {
            anyhow::anyhow!(
                "truncated header: {} bytes, an IDX {} header needs {}",
                bytes.len(),
                kind.name(),
                kind.header_len()
            )
        };
        let word = |i: usize| -> Result<u32> {
            let b = bytes.get(4 * i..4 * i + 4).ok_or_else(truncated)?;
            Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        // The magic first: a file of the other kind is named as such even when it is shorter.
        let magic = word(0)?;
        if magic != kind.magic() {
            let other = match kind {
                IdxKind::Images => IdxKind::Labels,
                IdxKind::Labels => IdxKind::Images,
            };
            if magic == other.magic() {
                bail!("holds {} (magic {magic}), expected {} (magic {})", other.name(), kind.name(), kind.magic());
            }
            bail!("not an IDX {} file: magic number {magic}, expected {}", kind.name(), kind.magic());
        }
        ensure!(bytes.len() >= kind.header_len(), truncated());
        let count = word(1)? as usize;
        let (rows, cols) = match kind {
            IdxKind::Images => (word(2)? as usize, word(3)? as usize),
            IdxKind::Labels => (1, 1),
        };
        ensure!(count > 0, "header says 0 {}: the file is empty", kind.name());
        ensure!(rows > 0 && cols > 0, "header says images of {rows}x{cols} pixels");
        rows.checked_mul(cols)
            .and_then(|item| item.checked_mul(count))
            .and_then(|payload| payload.checked_add(kind.header_len()))
            .with_context(|| format!("header says {count} images of {rows}x{cols}: too large to address"))?;
        Ok(IdxHeader { kind, count, rows, cols })
    }

    /// Total file length the header implies.
    pub fn file_len(&self) -> usize {
        self.kind.header_len() + self.payload_len()
    }

    /// Checks the header against the actual length of the (decompressed) file.
    pub fn check_file_len(&self, actual: u64) -> Result<()> {
        let expected = self.file_len() as u64;
        if actual < expected {
            bail!(
                "truncated: {actual} bytes, the header ({} {}{}) needs {expected}",
                self.count,
                self.kind.name(),
                self.dims_suffix()
            );
        }
        ensure!(
            actual == expected,
            "{} bytes of trailing data: the header ({} {}{}) accounts for {expected} of {actual} bytes",
            actual - expected,
            self.count,
            self.kind.name(),
            self.dims_suffix()
        );
        Ok(())
    }

    fn dims_suffix(&self) -> String {
        match self.kind {
            IdxKind::Images => format!(" of {}x{}", self.rows, self.cols),
            IdxKind::Labels => String::new(),
        }
    }
}

/// Reads a whole IDX stream (raw or already wrapped in a decoder) and returns the checked header
/// and the payload.
///
/// The payload buffer grows as data actually arrives and is never sized from the header alone, so a
/// header claiming 2³² images in a 100-byte file costs nothing.
pub fn read_stream(mut reader: impl Read, kind: IdxKind) -> Result<(IdxHeader, Vec<u8>)> {
    let mut header_bytes = Vec::with_capacity(kind.header_len());
    (&mut reader).take(kind.header_len() as u64).read_to_end(&mut header_bytes)?;
    let header = IdxHeader::parse(&header_bytes, kind)?;
    let mut payload = Vec::new();
    // One byte more than expected tells trailing data apart from an exact fit.
    (&mut reader).take(header.payload_len() as u64 + 1).read_to_end(&mut payload)?;
    header.check_file_len((kind.header_len() + payload.len()) as u64)?;
    Ok((header, payload))
}

/// Checks that every label is below `num_classes`; names the first offending index.
pub fn check_labels(labels: &[u8], num_classes: usize) -> Result<()> {
    if let Some((index, &label)) = labels.iter().enumerate().find(|&(_, &l)| l as usize >= num_classes) {
        bail!(
            "label {label} at index {index} is out of range: the model has {num_classes} classes (0..={})",
            num_classes - 1
        );
    }
    Ok(())
}

/// Whether `path` names a gzipped file (by its `.gz` extension, as the data sets are distributed).
fn is_gzipped(path: &Path) -> bool {
    path.extension().is_some_and(|extension| extension == "gz")
}

/// The name errors use for a file: its path, marked `(gzip)` when it is decompressed on the fly.
fn display_name(path: &Path) -> String {
    if is_gzipped(path) { format!("{} (gzip)", path.display()) } else { path.display().to_string() }
}

fn open(path: &Path, kind: IdxKind) -> Result<File> {
    if path.is_dir() {
        bail!("{}: is a directory, expected an IDX {} file", path.display(), kind.name());
    }
    File::open(path).with_context(|| format!("{}: cannot open", path.display()))
}

/// Reads the header of an uncompressed file and checks it against the file's size, leaving `file` at
/// the start of the payload: after this, allocating `payload_len()` bytes is safe.
fn read_raw_header(file: &mut File, kind: IdxKind) -> Result<IdxHeader> {
    let file_len = file.metadata()?.len();
    let mut header_bytes = Vec::with_capacity(kind.header_len());
    file.take(kind.header_len() as u64).read_to_end(&mut header_bytes)?;
    let header = IdxHeader::parse(&header_bytes, kind)?;
    header.check_file_len(file_len)?;
    Ok(header)
}

/// Reads a whole IDX file of `kind`, raw or `.gz` (by its extension), checked against its header:
/// `(header, payload)`. Errors name the file.
pub fn read_file(path: &Path, kind: IdxKind) -> Result<(IdxHeader, Vec<u8>)> {
    let mut file = open(path, kind)?;
    let read = || -> Result<(IdxHeader, Vec<u8>)> {
        if is_gzipped(path) {
            read_stream(flate2::read::MultiGzDecoder::new(BufReader::new(file)), kind)
        } else {
            let header = read_raw_header(&mut file, kind)?;
            let mut payload = vec![0u8; header.payload_len()];
            file.read_exact(&mut payload)?;
            Ok((header, payload))
        }
    };
    read().with_context(|| display_name(path))
}

/// Reads an IDX images file (raw or `.gz`) as bytes: `(header, pixels)`, `rows*cols` bytes per image.
pub fn read_image_bytes(path: &Path) -> Result<(IdxHeader, Vec<u8>)> {
    read_file(path, IdxKind::Images)
}

/// Reads an IDX images file (raw or `.gz`) as a `[count, rows*cols]` Uint8 tensor.
///
/// An uncompressed file goes straight into the tensor, after its header has been checked against the
/// file size: one copy of the pixels in memory, not two. A `.gz` file is decompressed into a buffer
/// that grows as data arrives ([`read_stream`]), then copied.
pub fn read_images(path: &Path) -> Result<(IdxHeader, Tensor)> {
    if is_gzipped(path) {
        let (header, pixels) = read_file(path, IdxKind::Images)?;
        let tensor = Tensor::from_slice(&pixels).view((header.count as i64, header.item_len() as i64));
        return Ok((header, tensor));
    }
    let mut file = open(path, IdxKind::Images)?;
    let mut read = || -> Result<(IdxHeader, Tensor)> {
        let header = read_raw_header(&mut file, IdxKind::Images)?;
        let pixels = Tensor::empty([header.count as i64, header.item_len() as i64], (Kind::Uint8, tch::Device::Cpu));
        // SAFETY: `pixels` is a freshly allocated, contiguous CPU tensor of exactly payload_len bytes,
        // and nothing else refers to it while this slice lives.
        let buffer = unsafe { std::slice::from_raw_parts_mut(pixels.data_ptr() as *mut u8, header.payload_len()) };
        file.read_exact(buffer)?;
        Ok((header, pixels))
    };
    read().with_context(|| display_name(path))
}

/// Encodes an IDX file; used by tests and by tools that write fixtures.
pub fn encode(kind: IdxKind, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut out = kind.magic().to_be_bytes().to_vec();
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(count: u32, rows: u32, cols: u32, payload_len: usize) -> Vec<u8> {
        encode(IdxKind::Images, &[count, rows, cols], &vec![7u8; payload_len])
    }

    #[test]
    fn parses_a_well_formed_images_header() {
        let bytes = images(3, 28, 28, 3 * 784);
        let (header, payload) = read_stream(&bytes[..], IdxKind::Images).unwrap();
        assert_eq!(header, IdxHeader { kind: IdxKind::Images, count: 3, rows: 28, cols: 28 });
        assert_eq!(payload.len(), 3 * 784);
    }

    #[test]
    fn parses_a_labels_header() {
        let bytes = encode(IdxKind::Labels, &[4], &[0, 1, 2, 9]);
        let (header, payload) = read_stream(&bytes[..], IdxKind::Labels).unwrap();
        assert_eq!(header.count, 4);
        assert_eq!(header.item_len(), 1);
        assert_eq!(payload, vec![0, 1, 2, 9]);
    }

    #[test]
    fn swapped_files_are_named_as_such() {
        let bytes = encode(IdxKind::Labels, &[4], &[0, 1, 2, 3]);
        let err = IdxHeader::parse(&bytes, IdxKind::Images).unwrap_err().to_string();
        assert!(err.contains("holds labels"), "{err}");
    }

    #[test]
    fn wrong_magic_is_rejected() {
        let mut bytes = images(1, 2, 2, 4);
        bytes[3] = 0x42;
        let err = IdxHeader::parse(&bytes, IdxKind::Images).unwrap_err().to_string();
        assert!(err.contains("not an IDX images file"), "{err}");
    }

    #[test]
    fn truncated_header_is_rejected() {
        let bytes = images(1, 2, 2, 4);
        let err = IdxHeader::parse(&bytes[..10], IdxKind::Images).unwrap_err().to_string();
        assert!(err.contains("truncated header: 10 bytes"), "{err}");
        assert!(read_stream(&[][..], IdxKind::Labels).is_err());
    }

    #[test]
    fn truncated_body_and_trailing_data_are_rejected() {
        let short = images(2, 2, 2, 7);
        let err = read_stream(&short[..], IdxKind::Images).unwrap_err().to_string();
        assert!(err.contains("truncated: 23 bytes") && err.contains("needs 24"), "{err}");
        let long = images(2, 2, 2, 9);
        let err = read_stream(&long[..], IdxKind::Images).unwrap_err().to_string();
        assert!(err.contains("1 bytes of trailing data"), "{err}");
    }

    #[test]
    fn zero_counts_and_dimensions_are_rejected() {
        assert!(IdxHeader::parse(&images(0, 28, 28, 0), IdxKind::Images).is_err());
        assert!(IdxHeader::parse(&images(1, 0, 28, 0), IdxKind::Images).is_err());
        assert!(IdxHeader::parse(&encode(IdxKind::Labels, &[0], &[]), IdxKind::Labels).is_err());
    }

    #[test]
    fn absurd_header_counts_allocate_nothing() {
        // 2^32-1 images of 2^32-1 x 2^32-1 overflows; 2^32-1 images of 28x28 is addressable but the
        // 10-byte body shows it truncated without a 3 TB allocation.
        let err = IdxHeader::parse(&images(u32::MAX, u32::MAX, u32::MAX, 0), IdxKind::Images).unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
        let bytes = images(u32::MAX, 28, 28, 10);
        let err = read_stream(&bytes[..], IdxKind::Images).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn labels_out_of_range_name_the_index() {
        assert!(check_labels(&[0, 9, 3], 10).is_ok());
        let err = check_labels(&[0, 9, 10, 3], 10).unwrap_err().to_string();
        assert!(err.contains("label 10 at index 2"), "{err}");
    }
}
