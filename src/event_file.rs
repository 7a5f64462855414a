//! TensorBoard's event file format, written: the files `tensorboard --logdir` and its Python reader
//! (`EventAccumulator`) read. Written here rather than with the `tboard` crate (by tch's author), which
//! needs `protoc` at build time and cannot write text summaries.
//!
//! A file is a sequence of TFRecords — `u64` little-endian length, masked CRC32C of those 8 bytes, the
//! payload, masked CRC32C of the payload — each holding one `Event` protocol buffer
//! (tensorflow/core/util/event.proto). The first event names the format version (`brain.Event:2`).
//! Only the few protobuf fields used are encoded, by hand (see [`proto`]). The checksum is the `crc32c`
//! crate's: a kept implementation of TFRecord's CRC-32C (Castagnoli), using the CPU's CRC32C instruction
//! where there is one.
//!
//! Files are append-only logs, as TensorBoard expects to read them while training runs: each writer
//! creates a new file (never an existing one) and appends one record per event.

use anyhow::{Context, Result};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// One event file being written.
pub struct EventFile {
    file: File,
    path: PathBuf,
    /// The wall time each event records, in seconds since the Unix epoch.
    clock: fn() -> f64,
}

impl EventFile {
    /// Creates a new event file in `dir` (created if needed), named so that files sort in the order they
    /// were created (TensorBoard reads a directory's files in name order), and writes the version event.
    pub fn create(dir: &Path) -> Result<EventFile> {
        EventFile::create_with_clock(dir, now)
    }

    /// [`EventFile::create`], with events stamped by `clock` (tests give a fixed time).
    fn create_with_clock(dir: &Path, clock: fn() -> f64) -> Result<EventFile> {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the directory", dir.display()))?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let name = format!(
            "events.out.tfevents.{:010}.{:09}.{}.{}",
            now.as_secs(),
            now.subsec_nanos(),
            hostname(),
            std::process::id()
        );
        let path = dir.join(name);
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("{}: cannot create the TensorBoard event file", path.display()))?;
        let mut events = EventFile { file, path, clock };
        events.write(0, &proto::bytes(3, b"brain.Event:2"))?;
        Ok(events)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A scalar (`simple_value`, as PyTorch's SummaryWriter writes them): TensorBoard's Scalars tab.
    pub fn scalar(&mut self, step: usize, tag: &str, value: f64) -> Result<()> {
        let value = [proto::bytes(1, tag.as_bytes()), proto::float(2, value as f32)].concat();
        self.summary(step, &value)
    }

    /// Markdown text (the text plugin's string tensor): TensorBoard's Text tab.
    pub fn text(&mut self, step: usize, tag: &str, markdown: &str) -> Result<()> {
        let plugin = proto::bytes(1, &proto::bytes(1, b"text"));
        let shape = proto::bytes(2, &proto::bytes(2, &proto::varint(1, 1)));
        let tensor = [proto::varint(1, DT_STRING), shape, proto::bytes(8, markdown.as_bytes())].concat();
        let value = [proto::bytes(1, tag.as_bytes()), proto::bytes(9, &plugin), proto::bytes(8, &tensor)].concat();
        self.summary(step, &value)
    }

    /// An RGB PNG picture: TensorBoard's Images tab.
    pub fn image(&mut self, step: usize, tag: &str, png: &[u8], (width, height): (u32, u32)) -> Result<()> {
        let image = [
            proto::varint(1, u64::from(height)),
            proto::varint(2, u64::from(width)),
            proto::varint(3, COLORSPACE_RGB),
            proto::bytes(4, png),
        ]
        .concat();
        let value = [proto::bytes(1, tag.as_bytes()), proto::bytes(4, &image)].concat();
        self.summary(step, &value)
    }

    /// `SessionLog.START` at `step`: TensorBoard drops the events of earlier files at `step` and later —
    /// what a run resumed from an earlier epoch (or a new run in the same directory) replaces.
    pub fn session_start(&mut self, step: usize) -> Result<()> {
        self.write(step, &proto::bytes(6, &proto::varint(1, SESSION_START)))
    }

    /// An `Event { summary { value } }` at `step`.
    fn summary(&mut self, step: usize, value: &[u8]) -> Result<()> {
        self.write(step, &proto::bytes(5, &proto::bytes(1, value)))
    }

    /// An `Event` with its wall time, step and `what` (fields already encoded), as one record.
    fn write(&mut self, step: usize, what: &[u8]) -> Result<()> {
        let event = [proto::double(1, (self.clock)()), proto::varint(2, step as u64), what.to_vec()].concat();
        self.file.write_all(&record(&event)).with_context(|| format!("{}: cannot write", self.path.display()))
    }
}

/// Seconds since the Unix epoch, as TensorFlow stamps events.
fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// `DataType.DT_STRING` (tensorflow/core/framework/types.proto).
const DT_STRING: u64 = 7;
/// `Summary.Image.colorspace` of RGB pictures.
const COLORSPACE_RGB: u64 = 3;
/// `SessionLog.SessionStatus.START`.
const SESSION_START: u64 = 1;

/// `data` framed as a TFRecord: length, masked CRC32C of the length, data, masked CRC32C of the data.
pub fn record(data: &[u8]) -> Vec<u8> {
    let length = (data.len() as u64).to_le_bytes();
    let mut framed = Vec::with_capacity(data.len() + 16);
    framed.extend_from_slice(&length);
    framed.extend_from_slice(&masked_crc32c(&length).to_le_bytes());
    framed.extend_from_slice(data);
    framed.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    framed
}

/// TFRecord's checksum: CRC32C, rotated right by 15 bits plus a constant, so that a CRC stored inside
/// checksummed data does not checksum to a fixed point.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

/// The machine's name, as TensorFlow puts it in event file names ("localhost" when unknown).
fn hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most buffer.len() bytes into the buffer.
    let ok = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0;
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    let name = String::from_utf8_lossy(&buffer[..end]).replace(['/', '\\'], "_");
    if ok && !name.is_empty() { name } else { "localhost".into() }
}

/// Protocol-buffer fields in the wire format: a key (field number and wire type), then the value.
mod proto {
    fn key(field: u32, wire_type: u8) -> Vec<u8> {
        encode_varint(u64::from(field) << 3 | u64::from(wire_type))
    }

    fn encode_varint(mut value: u64) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(10);
        while value >= 0x80 {
            bytes.push(value as u8 | 0x80);
            value >>= 7;
        }
        bytes.push(value as u8);
        bytes
    }

    /// An integer or enum field (wire type 0).
    pub fn varint(field: u32, value: u64) -> Vec<u8> {
        [key(field, 0), encode_varint(value)].concat()
    }

    /// A `double` field (wire type 1).
    pub fn double(field: u32, value: f64) -> Vec<u8> {
        [key(field, 1), value.to_le_bytes().to_vec()].concat()
    }

    /// A string, bytes or embedded-message field (wire type 2).
    pub fn bytes(field: u32, value: &[u8]) -> Vec<u8> {
        [key(field, 2), encode_varint(value.len() as u64), value.to_vec()].concat()
    }

    /// A `float` field (wire type 5).
    pub fn float(field: u32, value: f32) -> Vec<u8> {
        [key(field, 5), value.to_le_bytes().to_vec()].concat()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn fields_encode_as_the_protobuf_documentation_shows() {
            // protobuf.dev/programming-guides/encoding: field 1 = 150 is 08 96 01.
            assert_eq!(varint(1, 150), [0x08, 0x96, 0x01]);
            // Field 2 = "testing" is 12 07 74 65 73 74 69 6e 67.
            assert_eq!(bytes(2, b"testing"), [&[0x12, 0x07][..], b"testing"].concat());
            assert_eq!(float(2, 1.0), [0x15, 0x00, 0x00, 0x80, 0x3f]);
            assert_eq!(double(1, 1.0), [0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]);
            assert_eq!(varint(9, 300), [0x48, 0xac, 0x02]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The CRC catalogue's check value of CRC-32C ("123456789"), and RFC 3720's 32 zero bytes.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
    }

    #[test]
    fn records_are_framed_as_tensorflow_frames_them() {
        // The values TensorBoard's own Python writer computes (tensorboard 2.21:
        // `tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c`).
        assert_eq!(masked_crc32c(b"123456789"), MASKED_CHECK);
        let framed = record(b"hello");
        assert_eq!(&framed[..8], &5u64.to_le_bytes());
        assert_eq!(&framed[8..12], &masked_crc32c(&5u64.to_le_bytes()).to_le_bytes());
        assert_eq!(&framed[12..17], b"hello");
        assert_eq!(framed[17..], HELLO_RECORD_TAIL);
        assert_eq!(framed[8..12], HELLO_LENGTH_CRC);
    }

    /// Writes one event of every kind [`crate::tensorboard`] writes, with a fixed wall time, into a new
    /// file in `dir`; returns its path. Lengths above 127 bytes (two-byte varints), step 0 and a 0.0
    /// value (fields protobuf would leave out as defaults) and non-ASCII text are among them.
    fn write_fixed_events(dir: &Path) -> PathBuf {
        let mut events = EventFile::create_with_clock(dir, || 1_765_000_000.123_456_7).unwrap();
        events.session_start(0).unwrap();
        let config = format!("    {{\n      \"seed\": 42,\n      \"note\": \"é {}\"\n    }}\n", "x".repeat(150));
        events.text(0, "config", &config).unwrap();
        events.scalar(0, "epoch_loss", 0.326_457_123_456).unwrap();
        events.scalar(0, "epoch_accuracy", 0.0).unwrap();
        events.scalar(1, "epoch_learning_rate", 1e-3).unwrap();
        events.scalar(300, "epoch_loss", -2.5).unwrap();
        let png: Vec<u8> = (0..=255u8).cycle().take(400).collect();
        events.image(300, "confusion_matrix", &png, (640, 480)).unwrap();
        events.session_start(7).unwrap();
        events.text(7, "config", "").unwrap();
        events.path().to_path_buf()
    }

    /// The file [`write_fixed_events`] writes, byte for byte, as recorded: a change in how events are
    /// encoded shows here.
    const FIXED_EVENTS: &[u8] = include_bytes!("../tests/fixtures/events.out.tfevents");

    #[test]
    fn events_are_written_as_the_recorded_fixture() {
        let dir = tempfile::tempdir().unwrap();
        let written = std::fs::read(write_fixed_events(dir.path())).unwrap();
        assert_eq!(written, FIXED_EVENTS);
    }

    const MASKED_CHECK: u32 = 0xc78a_b0e5;
    const HELLO_LENGTH_CRC: [u8; 4] = [234, 178, 4, 62];
    const HELLO_RECORD_TAIL: [u8; 4] = [187, 31, 28, 25];
}
