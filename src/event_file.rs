//! TensorBoard's event file format, written: the files `tensorboard --logdir` and its Python reader
//! (`EventAccumulator`) read. Written here rather than with the `tboard` crate (by tch's author), which
//! needs `protoc` at build time and cannot write text summaries.
//!
//! A file is a sequence of TFRecords — `u64` little-endian length, masked CRC32C of those 8 bytes, the
//! payload, masked CRC32C of the payload — each holding one `Event` protocol buffer
//! (tensorflow/core/util/event.proto). The first event names the format version (`brain.Event:2`).
//! Kept crates do the encoding: `prost` the protocol buffers, from the few messages and fields used,
//! declared in [`proto`] with its derive (no `protoc`, no generated code); `crc32c` the checksum (the
//! CPU's CRC32C instruction where there is one); `gethostname` the machine's name in file names.
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
        events.write(0, proto::What::FileVersion("brain.Event:2".into()))?;
        Ok(events)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A scalar (`simple_value`, as PyTorch's SummaryWriter writes them): TensorBoard's Scalars tab.
    pub fn scalar(&mut self, step: usize, tag: &str, value: f64) -> Result<()> {
        self.summary(step, tag, None, proto::Kind::SimpleValue(value as f32))
    }

    /// Markdown text (the text plugin's string tensor): TensorBoard's Text tab.
    pub fn text(&mut self, step: usize, tag: &str, markdown: &str) -> Result<()> {
        let plugin = proto::PluginData { plugin_name: "text".into() };
        let metadata = proto::SummaryMetadata { plugin_data: Some(plugin) };
        let tensor = proto::TensorProto {
            dtype: proto::DT_STRING,
            tensor_shape: Some(proto::TensorShapeProto { dim: vec![proto::Dim { size: 1 }] }),
            string_val: vec![markdown.as_bytes().to_vec()],
        };
        self.summary(step, tag, Some(metadata), proto::Kind::Tensor(tensor))
    }

    /// An RGB PNG picture: TensorBoard's Images tab.
    pub fn image(&mut self, step: usize, tag: &str, png: &[u8], (width, height): (u32, u32)) -> Result<()> {
        let side = |pixels: u32| i32::try_from(pixels).context("a picture too large for TensorBoard");
        let image = proto::Image {
            height: side(height)?,
            width: side(width)?,
            colorspace: proto::COLORSPACE_RGB,
            encoded_image_string: png.to_vec(),
        };
        self.summary(step, tag, None, proto::Kind::Image(image))
    }

    /// `SessionLog.START` at `step`: TensorBoard drops the events of earlier files at `step` and later —
    /// what a run resumed from an earlier epoch (or a new run in the same directory) replaces.
    pub fn session_start(&mut self, step: usize) -> Result<()> {
        self.write(step, proto::What::SessionLog(proto::SessionLog { status: proto::SESSION_START }))
    }

    /// An `Event { summary { value } }` at `step`.
    fn summary(
        &mut self,
        step: usize,
        tag: &str,
        metadata: Option<proto::SummaryMetadata>,
        value: proto::Kind,
    ) -> Result<()> {
        let value = proto::Value { tag: tag.into(), metadata, value: Some(value) };
        self.write(step, proto::What::Summary(proto::Summary { value: vec![value] }))
    }

    /// An `Event` with its wall time, step and `what`, as one record.
    fn write(&mut self, step: usize, what: proto::What) -> Result<()> {
        let event = proto::Event {
            wall_time: Some((self.clock)()),
            step: Some(i64::try_from(step).unwrap_or(i64::MAX)),
            what: Some(what),
        };
        let record = record(&prost::Message::encode_to_vec(&event));
        self.file.write_all(&record).with_context(|| format!("{}: cannot write", self.path.display()))
    }
}

/// Seconds since the Unix epoch, as TensorFlow stamps events.
fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

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
    let name = gethostname::gethostname().to_string_lossy().replace(['/', '\\'], "_");
    if name.is_empty() { "localhost".into() } else { name }
}

/// The messages of TensorFlow's protocol buffers that event files hold, with the fields written here
/// (tensorboard/compat/proto: event.proto, summary.proto, tensor.proto, tensor_shape.proto); `prost`
/// encodes them. Fields prost would leave out when zero (proto3) are `optional` where a zero can occur,
/// so that every event is laid out as files earlier versions of mnist-tch wrote.
mod proto {
    /// `tensorflow.Event`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(double, optional, tag = "1")]
        pub wall_time: Option<f64>,
        #[prost(int64, optional, tag = "2")]
        pub step: Option<i64>,
        #[prost(oneof = "What", tags = "3, 5, 7")]
        pub what: Option<What>,
    }

    /// `Event.what`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        #[prost(string, tag = "3")]
        FileVersion(String),
        #[prost(message, tag = "5")]
        Summary(Summary),
        #[prost(message, tag = "7")]
        SessionLog(SessionLog),
    }

    /// `tensorflow.SessionLog`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SessionLog {
        #[prost(int32, tag = "1")]
        pub status: i32,
    }

    /// `tensorflow.Summary`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        #[prost(message, repeated, tag = "1")]
        pub value: Vec<Value>,
    }

    /// `Summary.Value`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        #[prost(string, tag = "1")]
        pub tag: String,
        #[prost(message, optional, tag = "9")]
        pub metadata: Option<SummaryMetadata>,
        #[prost(oneof = "Kind", tags = "2, 4, 8")]
        pub value: Option<Kind>,
    }

    /// `Summary.Value.value`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(float, tag = "2")]
        SimpleValue(f32),
        #[prost(message, tag = "4")]
        Image(Image),
        #[prost(message, tag = "8")]
        Tensor(TensorProto),
    }

    /// `Summary.Image`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Image {
        #[prost(int32, tag = "1")]
        pub height: i32,
        #[prost(int32, tag = "2")]
        pub width: i32,
        #[prost(int32, tag = "3")]
        pub colorspace: i32,
        #[prost(bytes = "vec", tag = "4")]
        pub encoded_image_string: Vec<u8>,
    }

    /// `tensorflow.SummaryMetadata`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SummaryMetadata {
        #[prost(message, optional, tag = "1")]
        pub plugin_data: Option<PluginData>,
    }

    /// `SummaryMetadata.PluginData`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PluginData {
        #[prost(string, tag = "1")]
        pub plugin_name: String,
    }

    /// `tensorflow.TensorProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        #[prost(int32, tag = "1")]
        pub dtype: i32,
        #[prost(message, optional, tag = "2")]
        pub tensor_shape: Option<TensorShapeProto>,
        #[prost(bytes = "vec", repeated, tag = "8")]
        pub string_val: Vec<Vec<u8>>,
    }

    /// `tensorflow.TensorShapeProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorShapeProto {
        #[prost(message, repeated, tag = "2")]
        pub dim: Vec<Dim>,
    }

    /// `TensorShapeProto.Dim`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dim {
        #[prost(int64, tag = "1")]
        pub size: i64,
    }

    /// `DataType.DT_STRING` (types.proto).
    pub const DT_STRING: i32 = 7;
    /// `Summary.Image.colorspace` of RGB pictures.
    pub const COLORSPACE_RGB: i32 = 3;
    /// `SessionLog.SessionStatus.START`.
    pub const SESSION_START: i32 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_carry_the_machine_name_and_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let events = EventFile::create(dir.path()).unwrap();
        let name = events.path().file_name().unwrap().to_str().unwrap().to_string();
        let host = hostname();
        assert!(!host.is_empty() && !host.contains('/'), "{host}");
        // The name gethostname(2) gives, as libc hands it over.
        let mut buffer = [0u8; 256];
        // SAFETY: gethostname writes at most buffer.len() bytes into the buffer.
        assert_eq!(unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) }, 0);
        let end = buffer.iter().position(|&b| b == 0).unwrap();
        assert_eq!(host, String::from_utf8_lossy(&buffer[..end]).replace(['/', '\\'], "_"));
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        assert!(name.ends_with(&format!(".{host}.{}", std::process::id())), "{name}");
    }

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

    /// The payloads of a file's records, each checked against its length and both CRCs.
    fn records(mut file: &[u8]) -> Vec<&[u8]> {
        let mut payloads = Vec::new();
        while !file.is_empty() {
            let length = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
            assert_eq!(file[8..12], masked_crc32c(&file[..8]).to_le_bytes());
            let payload = &file[12..12 + length];
            assert_eq!(file[12 + length..16 + length], masked_crc32c(payload).to_le_bytes());
            payloads.push(payload);
            file = &file[16 + length..];
        }
        payloads
    }

    /// A message's fields as they are written — (field number, key and value bytes) — in file order.
    fn fields(mut message: &[u8]) -> Vec<(u32, &[u8])> {
        use prost::encoding::{WireType, decode_key, decode_varint};
        let mut found = Vec::new();
        while !message.is_empty() {
            let start = message;
            let (tag, wire_type) = decode_key(&mut message).unwrap();
            let skip = match wire_type {
                WireType::Varint => decode_varint(&mut message).map(|_| 0).unwrap(),
                WireType::SixtyFourBit => 8,
                WireType::ThirtyTwoBit => 4,
                WireType::LengthDelimited => decode_varint(&mut message).unwrap() as usize,
                other => panic!("wire type {other:?}"),
            };
            message = &message[skip..];
            found.push((tag, &start[..start.len() - message.len()]));
        }
        found
    }

    /// The contents of the length-delimited field `tag` of `message`.
    fn field(message: &[u8], tag: u32) -> &[u8] {
        let (_, bytes) = fields(message).into_iter().find(|&(t, _)| t == tag).unwrap();
        let mut contents = &bytes[1..];
        let length = prost::encoding::decode_varint(&mut contents).unwrap() as usize;
        assert_eq!(contents.len(), length);
        contents
    }

    /// Every record is the recorded one byte for byte, except:
    /// - a text summary's `Summary.Value` has its fields in field-number order (tag, tensor, metadata: as
    ///   TensorFlow's and PyTorch's writers order them), where the recorded file has tag, metadata,
    ///   tensor. Both decode to the same event, and have the same length (no field gained or lost);
    /// - a session start is `SessionLog { status: START }` in `Event` field 7, where the recorded file
    ///   has the same contents in field 6 (`log_message`, which TensorBoard does not act on).
    #[test]
    fn events_are_written_as_the_recorded_fixture() {
        use prost::Message;
        let dir = tempfile::tempdir().unwrap();
        let written = std::fs::read(write_fixed_events(dir.path())).unwrap();
        let (recorded, written) = (records(FIXED_EVENTS), records(&written));
        assert_eq!(recorded.len(), written.len());
        let (mut reordered, mut sessions) = (0, 0);
        for (index, (&old, &new)) in recorded.iter().zip(&written).enumerate() {
            let event = proto::Event::decode(new).unwrap();
            if let Some(proto::What::SessionLog(log)) = &event.what {
                assert_eq!(log.status, proto::SESSION_START);
                let (old_fields, new_fields) = (fields(old), fields(new));
                assert_eq!(old_fields.iter().map(|f| f.0).collect::<Vec<_>>(), [1, 2, 6], "record {index}");
                assert_eq!(new_fields.iter().map(|f| f.0).collect::<Vec<_>>(), [1, 2, 7], "record {index}");
                assert_eq!(old_fields[..2], new_fields[..2], "record {index}");
                assert_eq!(old_fields[2].1[1..], new_fields[2].1[1..], "record {index}: the same contents");
                sessions += 1;
                continue;
            }
            assert_eq!(proto::Event::decode(old).unwrap(), event, "record {index}");
            assert_eq!(old.len(), new.len(), "record {index}");
            let Some(proto::What::Summary(summary)) = &event.what else {
                assert_eq!(old, new, "record {index}");
                continue;
            };
            let Some(proto::Kind::Tensor(_)) = summary.value[0].value else {
                assert_eq!(old, new, "record {index}");
                continue;
            };
            let (old_value, new_value) = (field(field(old, 5), 1), field(field(new, 5), 1));
            assert_eq!(fields(new_value).iter().map(|f| f.0).collect::<Vec<_>>(), [1, 8, 9]);
            assert_eq!(fields(old_value).iter().map(|f| f.0).collect::<Vec<_>>(), [1, 9, 8]);
            let mut old_fields = fields(old_value);
            old_fields.sort();
            assert_eq!(old_fields, fields(new_value), "record {index}: the same fields, byte for byte");
            assert_eq!(old[..old.len() - old_value.len()], new[..new.len() - new_value.len()]);
            reordered += 1;
        }
        assert_eq!((reordered, sessions), (2, 2), "the two text summaries and the two session starts");
    }

    const MASKED_CHECK: u32 = 0xc78a_b0e5;
    const HELLO_LENGTH_CRC: [u8; 4] = [234, 178, 4, 62];
    const HELLO_RECORD_TAIL: [u8; 4] = [187, 31, 28, 25];
}
