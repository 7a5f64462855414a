//! NumPy `.npz` data sets, such as the `mnist.npz` that `keras.datasets.mnist.load_data()` caches:
//! a zip archive of `.npy` arrays, `x_train` (uint8 `[N, rows, cols]`), `y_train` (`[N]`), `x_test`,
//! `y_test`.
//!
//! The archive is read once, entry by entry, with the `npyz` crate (NumPy's `.npy` format: it parses
//! each header and reads the wanted arrays' values) on top of the `zip` crate. Around npyz stay the
//! checks it leaves to its caller: a header's length is capped before anything is allocated for it; a
//! header that names a key twice, or whose shape overflows, is refused before npyz parses it; every
//! entry is read to its end, so that it must hold exactly as many data bytes as its header says and
//! pass the zip's CRC; memory for an array grows with the data actually read, never with what a header
//! claims. Each wanted array is checked for dtype, shape and emptiness before its data is read. Every
//! array of the archive must be one tch's own `Tensor::read_npz` reads safely (a dtype a tch tensor
//! holds, little-endian, C order, `.npy` version 1 or 2), so the files accepted are those tch users
//! can load as well. Checks across arrays (counts of images and labels, label range) are `data.rs`'s,
//! the same for IDX and `.npz`.

use anyhow::{Context, Result, anyhow, bail, ensure};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use tch::{Kind, Tensor};

/// NumPy caps the header it will read at 10,000 bytes (`numpy.lib.format`'s `max_header_size`); so do
/// we, before npyz allocates whatever a header's length field claims.
const MAX_HEADER_LEN: usize = 10_000;

const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// The most memory reserved for an array before its data is read; beyond it the array grows as its
/// data arrives.
const MAX_RESERVED: u64 = 1 << 28;

/// The images and labels of one part (training or test) of an `.npz` data set, as stored. Whether
/// their counts agree and the labels are in range is for the caller to check.
#[derive(Debug)]
pub struct NpzPart {
    /// `[count, rows*cols]` Uint8 pixels.
    pub images: Tensor,
    pub rows: usize,
    pub cols: usize,
    /// `[count]` Int64 labels, converted from whichever integer dtype the file holds.
    pub labels: Tensor,
}

/// What an array must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// uint8 `[count, rows, cols]`.
    Images,
    /// integers `[count]`.
    Labels,
}

/// A `.npy` header, as npyz parsed it.
#[derive(Clone)]
struct NpyHeader {
    /// The dtype as written, e.g. `|u1` or `<f8`.
    descr: String,
    /// The tensor kind tch's reader gives for `descr`, when it reads that dtype at all.
    kind: Option<Kind>,
    fortran_order: bool,
    shape: Vec<u64>,
    /// npyz's own parse, which reads the data.
    parsed: npyz::NpyHeader,
}

impl std::fmt::Debug for NpyHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { descr, kind, fortran_order, shape, parsed: _ } = self;
        f.debug_struct("NpyHeader")
            .field("descr", descr)
            .field("kind", kind)
            .field("fortran_order", fortran_order)
            .field("shape", shape)
            .finish()
    }
}

impl NpyHeader {
    /// Data bytes the header implies: `prod(shape) * item size`, when it fits in a `u64`.
    fn data_len(&self) -> Option<u64> {
        let kind = self.kind?;
        self.shape.iter().try_fold(kind.elt_size_in_bytes() as u64, |acc, &d| acc.checked_mul(d))
    }

    fn shape_text(&self) -> String {
        shape_text(&self.shape)
    }
}

/// A shape the way NumPy prints it: `(60000, 28, 28)`, `(60000,)`.
fn shape_text(shape: &[u64]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    }
}

/// The dtype name NumPy users know for a `.npy` descr (`|u1` → uint8), or the descr itself.
fn dtype_name(descr: &str) -> String {
    let code = descr.trim_start_matches(['<', '>', '|', '=']);
    let name = match code {
        "u1" | "B" => "uint8",
        "u2" | "H" => "uint16",
        "u4" | "I" => "uint32",
        "u8" | "Q" => "uint64",
        "i1" | "b" => "int8",
        "i2" | "h" => "int16",
        "i4" | "i" => "int32",
        "i8" | "q" => "int64",
        "f2" | "e" => "float16",
        "f4" | "f" => "float32",
        "f8" | "d" => "float64",
        "b1" | "?" => "bool",
        _ => return format!("'{descr}'"),
    };
    name.to_string()
}

/// tch's mapping from a descr to a tensor kind (`tch::Tensor::read_npz`): the arrays an `.npz` file
/// may hold. `None`: tch refuses the dtype.
fn tch_kind(descr: &str) -> Option<Kind> {
    if descr.starts_with('>') {
        return None; // tch refuses big-endian descrs
    }
    Some(match descr.trim_matches(|c: char| c == '=' || c == '<' || c == '|') {
        "e" | "f2" => Kind::Half,
        "f" | "f4" => Kind::Float,
        "d" | "f8" => Kind::Double,
        "i" | "i4" => Kind::Int,
        "q" | "i8" => Kind::Int64,
        "h" | "i2" => Kind::Int16,
        "b" | "i1" => Kind::Int8,
        "B" | "u1" => Kind::Uint8,
        "?" | "b1" => Kind::Bool,
        "F" | "F4" | "c8" => Kind::ComplexFloat,
        "D" | "F8" | "c16" => Kind::ComplexDouble,
        _ => return None,
    })
}

/// Checks a header dictionary such as `{'descr': '|u1', 'fortran_order': False, 'shape': (60000, 28,
/// 28), }` for what npyz does not check — every key once (npyz keeps the last), a shape whose element
/// count fits in a `u64` — then has npyz parse it (`descr`, `fortran_order` and `shape` present and
/// well-formed, dimensions non-negative integers). `raw` is the whole header as read: magic, version,
/// length, dictionary.
fn parse_header(text: &str, raw: &[u8]) -> Result<NpyHeader> {
    let literal: py_literal::Value =
        text.trim_end().parse().map_err(|err| anyhow!("unreadable .npy header {} ({err})", printable(text)))?;
    let py_literal::Value::Dict(items) = &literal else {
        bail!("unreadable .npy header {}", printable(text));
    };
    for (index, (key, value)) in items.iter().enumerate() {
        let key = key.as_string().map_or_else(|| format!("{key}"), String::clone);
        ensure!(items[..index].iter().all(|(k, _)| k.as_string() != Some(&key)), ".npy header names '{key}' twice");
        if key == "shape" {
            check_element_count(value)?;
        }
    }
    let parsed = npyz::NpyHeader::from_reader(raw)
        .map_err(|err| anyhow!("unreadable .npy header {} ({err})", printable(text)))?;
    let descr = match parsed.dtype() {
        npyz::DType::Plain(type_str) => type_str.to_string(),
        other => other.descr(),
    };
    Ok(NpyHeader {
        kind: tch_kind(&descr),
        descr,
        fortran_order: parsed.order() == npyz::Order::Fortran,
        shape: parsed.shape().to_vec(),
        parsed,
    })
}

/// Refuses a shape whose element count overflows a `u64` (npyz multiplies the dimensions unchecked).
fn check_element_count(shape: &py_literal::Value) -> Result<()> {
    let (py_literal::Value::Tuple(dims) | py_literal::Value::List(dims)) = shape else {
        return Ok(()); // npyz refuses it
    };
    let dims: Vec<u64> = dims
        .iter()
        .map(|d| match d {
            py_literal::Value::Integer(d) => u64::try_from(d).ok(),
            _ => None,
        })
        .collect::<Option<_>>()
        .ok_or_else(|| anyhow!(".npy header with shape {shape}"))?;
    // Zeros aside, as npyz's strides multiply the dimensions one by one.
    let count = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d.max(1)));
    ensure!(count.is_some(), "has shape {}: too large to address", shape_text(&dims));
    Ok(())
}

/// A header's text for a message: quoted when it is short printable text, else described.
fn printable(text: &str) -> String {
    let text = text.trim_end();
    if text.len() <= 200 && text.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        format!("{text:?}")
    } else {
        format!("({} bytes, not printable text)", text.len())
    }
}

/// Reads the magic, version and header of one `.npy` entry, leaving `reader` at the data.
fn read_header(reader: &mut impl Read) -> Result<NpyHeader> {
    let mut raw = vec![0u8; 8];
    reader.read_exact(&mut raw).map_err(|_| anyhow!("not a .npy array (shorter than a .npy header)"))?;
    ensure!(&raw[..6] == NPY_MAGIC, "not a .npy array (no \\x93NUMPY magic)");
    let len_bytes = match raw[6] {
        1 => 2,
        2 => 4,
        version => bail!(".npy format version {version}, tch reads versions 1 and 2"),
    };
    let mut len_field = [0u8; 4];
    reader.read_exact(&mut len_field[..len_bytes]).map_err(|_| anyhow!("truncated .npy header"))?;
    raw.extend_from_slice(&len_field[..len_bytes]);
    let header_len = u32::from_le_bytes(len_field) as usize;
    ensure!(header_len <= MAX_HEADER_LEN, ".npy header of {header_len} bytes (NumPy's limit is {MAX_HEADER_LEN})");
    let start = raw.len();
    reader.take(header_len as u64).read_to_end(&mut raw)?;
    ensure!(raw.len() - start == header_len, "truncated .npy header");
    parse_header(&String::from_utf8_lossy(&raw[start..]), &raw)
}

/// An array's values, read.
#[derive(Debug)]
enum Values {
    Pixels(Vec<u8>),
    Labels(Vec<i64>),
}

/// One entry of the archive, read and checked: its array name (the entry name without `.npy`), its
/// header, and its values when it is a wanted array.
struct Entry {
    name: String,
    /// The header, or why the entry is not an array tch can read.
    header: Result<NpyHeader, String>,
    values: Option<Values>,
}

/// A reader that counts the bytes read through it.
struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.count += read as u64;
        Ok(read)
    }
}

/// Reads the archive, every entry to its end (see the module comment), keeping the values of the
/// `wanted` arrays that fit their role.
fn read_archive(path: &Path, wanted: &[(&str, Role)]) -> Result<Vec<Entry>> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut npz = npyz::npz::NpzArchive::new(BufReader::new(file))
        .map_err(|err| anyhow!("{}: not a readable .npz file (zip: {err})", path.display()))?;
    let archive = npz.zip_archive();
    let mut entries: Vec<Entry> = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        let entry = archive
            .by_index(index)
            .map_err(|err| anyhow!("{}: not a readable .npz file (zip entry {index}: {err})", path.display()))?;
        let name = entry.name().strip_suffix(".npy").unwrap_or(entry.name()).to_string();
        ensure!(entries.iter().all(|e| e.name != name), "{}: holds two arrays named '{name}'", path.display());
        let role = wanted.iter().find(|&&(key, _)| key == name).map(|&(_, role)| role);
        let (header, values) = read_entry(entry, &name, role);
        entries.push(Entry { name, header, values });
    }
    Ok(entries)
}

/// Reads one entry to its end: its header, then its values when `role` is given and the header fits
/// it, then whatever is left. The header comes back as an error when the entry is not an array tch
/// reads or its data is not as long as its header says.
fn read_entry(entry: impl Read, name: &str, role: Option<Role>) -> (Result<NpyHeader, String>, Option<Values>) {
    let mut counted = Counted { inner: entry, count: 0 };
    let mut reader = BufReader::with_capacity(1 << 16, &mut counted);
    let header = read_header(&mut reader).map_err(|err| err.to_string());
    let header_bytes = reader.get_ref().count - reader.buffer().len() as u64;
    let mut values = None;
    let mut failure = None;
    if let (Ok(header), Some(role)) = (&header, role)
        && check_role(name, header, role).is_ok()
        && !header.fortran_order
    {
        match read_values(header, role, &mut reader) {
            Ok(read) => values = Some(read),
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(err) => failure = Some(err),
        }
    }
    // Through to the end, whatever the header says: the zip's CRC is checked there, and damaged
    // data is reported as such rather than as whatever it happened to garble.
    let drained = std::io::copy(&mut reader, &mut std::io::sink());
    let actual = counted.count - header_bytes;
    let header = match failure.map_or(drained.map(|_| ()), Err) {
        Err(err) => Err(format!("corrupt data (zip: {err})")),
        Ok(()) => header.and_then(|header| {
            check_entry(&header, actual)?;
            Ok(header)
        }),
    };
    let values = values.filter(|_| header.is_ok());
    (header, values)
}

/// Reads the values of an array that fits `role`, with npyz: uint8 pixels, or integer labels as
/// `i64`. Memory grows with the values read (see [`MAX_RESERVED`]).
fn read_values(header: &NpyHeader, role: Role, reader: impl Read) -> std::io::Result<Values> {
    let reserve = header.data_len().unwrap_or(0).min(MAX_RESERVED) as usize;
    let npy = npyz::NpyFile::with_header(header.parsed.clone(), reader);
    if role == Role::Images {
        let mut pixels = Vec::with_capacity(reserve);
        each_value::<u8>(npy, |v| pixels.push(v))?;
        return Ok(Values::Pixels(pixels));
    }
    let mut labels = Vec::with_capacity(reserve / header.kind.map_or(1, |k| k.elt_size_in_bytes()).max(1));
    let mut push = |v: i64| labels.push(v);
    match header.kind {
        Some(Kind::Uint8) => each_value::<u8>(npy, |v| push(v.into()))?,
        Some(Kind::Int8) => each_value::<i8>(npy, |v| push(v.into()))?,
        Some(Kind::Int16) => each_value::<i16>(npy, |v| push(v.into()))?,
        Some(Kind::Int) => each_value::<i32>(npy, |v| push(v.into()))?,
        _ => each_value::<i64>(npy, push)?,
    }
    Ok(Values::Labels(labels))
}

/// Hands each value of `npy`, read as `T`, to `take`.
fn each_value<T: npyz::Deserialize>(npy: npyz::NpyFile<impl Read>, mut take: impl FnMut(T)) -> std::io::Result<()> {
    for value in npy.data::<T>().map_err(std::io::Error::other)? {
        take(value?);
    }
    Ok(())
}

/// Whether tch can read an array with `header` whose entry holds `actual` data bytes.
fn check_entry(header: &NpyHeader, actual: u64) -> Result<(), String> {
    if header.kind.is_none() {
        return Err(format!("has dtype {}, which tch's .npz reader does not read", dtype_name(&header.descr)));
    }
    if header.fortran_order {
        return Err("is stored in Fortran order; save it C-ordered (numpy.ascontiguousarray)".into());
    }
    let expected =
        header.data_len().ok_or_else(|| format!("has shape {}: too large to address", header.shape_text()))?;
    if actual < expected {
        return Err(format!(
            "truncated: {actual} bytes of data, its header ({}, shape {}) needs {expected}",
            dtype_name(&header.descr),
            header.shape_text()
        ));
    }
    if actual > expected {
        return Err(format!(
            "{} bytes of trailing data: its header ({}, shape {}) accounts for {expected} of {actual} bytes",
            actual - expected,
            dtype_name(&header.descr),
            header.shape_text()
        ));
    }
    Ok(())
}

/// Checks that the array `name` fits its role: uint8 `[count, rows, cols]` images or integer
/// `[count]` labels, with no zero dimension.
fn check_role(name: &str, header: &NpyHeader, role: Role) -> Result<()> {
    let dtype = dtype_name(&header.descr);
    let shape = header.shape_text();
    match role {
        Role::Images => {
            ensure!(
                header.kind == Some(Kind::Uint8),
                "{name} has dtype {dtype}, expected uint8 pixels 0-255 (as Keras's mnist.npz stores them)"
            );
            ensure!(header.shape.len() == 3, "{name} has shape {shape}, expected images (count, rows, cols)");
            ensure!(header.shape[0] > 0, "{name} holds 0 images");
            ensure!(header.shape[1] > 0 && header.shape[2] > 0, "{name} has shape {shape}: images of 0 pixels");
        }
        Role::Labels => {
            let integer = matches!(header.kind, Some(Kind::Uint8 | Kind::Int8 | Kind::Int16 | Kind::Int | Kind::Int64));
            ensure!(
                integer,
                "{name} has dtype {dtype}, expected integer class labels (uint8, int8, int16, int32 or int64)"
            );
            ensure!(header.shape.len() == 1, "{name} has shape {shape}, expected one label per image (count,)");
            ensure!(header.shape[0] > 0, "{name} holds 0 labels");
        }
    }
    Ok(())
}

/// Reads the parts `(images key, labels key)` of the `.npz` file at `path`, e.g.
/// `[("x_train", "y_train"), ("x_test", "y_test")]`, checking the whole archive. Errors are one line
/// naming the file and the array.
pub fn read_parts(path: &Path, parts: &[(&str, &str)]) -> Result<Vec<NpzPart>> {
    let wanted: Vec<(&str, Role)> =
        parts.iter().flat_map(|&(images, labels)| [(images, Role::Images), (labels, Role::Labels)]).collect();
    let mut entries = read_archive(path, &wanted)?;
    let names = || entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ");
    for &(key, role) in &wanted {
        let entry = entries.iter().find(|e| e.name == key).ok_or_else(|| {
            anyhow!(
                "{}: no array '{key}' (it holds: {}); mnist-tch reads x_train, y_train, x_test, y_test as \
                 keras.datasets.mnist caches them",
                path.display(),
                names()
            )
        })?;
        let header = entry.header.as_ref().map_err(|why| anyhow!("{}: {key}: {why}", path.display()))?;
        check_role(key, header, role).with_context(|| path.display().to_string())?;
    }
    // Every array of the file, not only the wanted ones.
    if let Some(entry) = entries.iter().find(|e| e.header.is_err()) {
        let why = entry.header.as_ref().err().map_or("", String::as_str);
        bail!("{}: array '{}' {why} (an .npz file must hold only arrays tch reads)", path.display(), entry.name);
    }
    let mut take = |key: &str| -> Result<(Values, Vec<i64>)> {
        let entry = entries.iter_mut().find(|e| e.name == key);
        let values = entry.and_then(|e| Some((e.values.take()?, e.header.as_ref().ok()?.shape.clone())));
        let (values, shape) = values.ok_or_else(|| anyhow!("{}: {key} was not read", path.display()))?;
        Ok((values, shape.into_iter().map(|d| d as i64).collect()))
    };
    parts
        .iter()
        .map(|&(images_key, labels_key)| {
            let (Values::Pixels(pixels), shape) = take(images_key)? else {
                bail!("{}: {images_key} is not uint8 pixels", path.display());
            };
            let (Values::Labels(labels), _) = take(labels_key)? else {
                bail!("{}: {labels_key} is not labels", path.display());
            };
            let [count, rows, cols] = shape[..] else {
                bail!("{}: {images_key} is not (count, rows, cols)", path.display());
            };
            Ok(NpzPart {
                images: Tensor::from_slice(&pixels).f_view([count, rows * cols])?,
                rows: rows as usize,
                cols: cols as usize,
                labels: Tensor::from_slice(&labels),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// `dictionary` as the header of a version 1.0 `.npy` entry, read and parsed.
    fn parse(dictionary: &str) -> Result<NpyHeader> {
        let mut raw = b"\x93NUMPY\x01\x00".to_vec();
        raw.extend_from_slice(&(dictionary.len() as u16 + 1).to_le_bytes());
        raw.extend_from_slice(dictionary.as_bytes());
        raw.push(b'\n');
        read_header(&mut raw.as_slice())
    }

    #[test]
    fn parses_numpy_headers_as_tch_does() {
        let header = parse("{'descr': '|u1', 'fortran_order': False, 'shape': (60000, 28, 28), }").unwrap();
        assert_eq!(header.kind, Some(Kind::Uint8));
        assert_eq!(header.shape, vec![60000, 28, 28]);
        assert_eq!(header.data_len(), Some(60000 * 784));
        assert_eq!(header.shape_text(), "(60000, 28, 28)");
        let labels = parse("{'descr': '<i8', 'fortran_order': False, 'shape': (7,), }").unwrap();
        assert_eq!(
            (labels.kind, labels.data_len(), labels.shape_text().as_str()),
            (Some(Kind::Int64), Some(56), "(7,)")
        );
        let scalar = parse("{'descr': '<f4', 'fortran_order': False, 'shape': (), }").unwrap();
        assert_eq!(scalar.data_len(), Some(4));
    }

    #[test]
    fn refuses_headers_tch_might_read_differently() {
        for bad in [
            "{'descr': '|u1', 'descr': '<f8', 'shape': (3,), }",
            "{'fortran_order': False, 'shape': (3,), }",
            "{'descr': '|u1', 'shape': (-3,), }",
            "{'descr': '|u1', 'shape': (3, x), }",
            "{'descr': '|u1', 'fortran_order': maybe, 'shape': (3,), }",
            "{'descr': '|u1': 'shape', 'shape': (3,), }",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let twice = parse("{'descr': '|u1', 'descr': '<f8', 'fortran_order': False, 'shape': (3,), }");
        assert_eq!(twice.unwrap_err().to_string(), ".npy header names 'descr' twice");
        let header = parse("{'descr': '<U10', 'fortran_order': False, 'shape': (3,), }").unwrap();
        assert_eq!(header.kind, None);
        assert!(check_entry(&header, 120).unwrap_err().contains("'<U10'"));
        assert_eq!(tch_kind(">i8"), None);
        assert_eq!(dtype_name(">i8"), "int64");
    }

    #[test]
    fn data_length_must_match_the_header() {
        let header = parse("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }").unwrap();
        assert!(check_entry(&header, 24).is_ok());
        assert!(check_entry(&header, 20).unwrap_err().contains("truncated: 20 bytes"));
        assert!(check_entry(&header, 28).unwrap_err().contains("4 bytes of trailing data"));
        // Elements that overflow a u64, and bytes that do.
        let huge = parse("{'descr': '<i8', 'shape': (4611686018427387904, 4), }");
        assert!(huge.unwrap_err().to_string().contains("too large"));
        let huge = parse("{'descr': '<i8', 'fortran_order': False, 'shape': (4611686018427387904, 2), }").unwrap();
        assert!(check_entry(&huge, 0).unwrap_err().contains("too large"));
    }

    #[test]
    fn headers_longer_than_numpys_limit_are_refused_before_reading_them() {
        let mut raw = b"\x93NUMPY\x02\x00".to_vec();
        raw.extend_from_slice(&u32::MAX.to_le_bytes());
        let err = read_header(&mut raw.as_slice()).unwrap_err().to_string();
        assert_eq!(err, ".npy header of 4294967295 bytes (NumPy's limit is 10000)");
        raw[6] = 3;
        let err = read_header(&mut raw.as_slice()).unwrap_err().to_string();
        assert_eq!(err, ".npy format version 3, tch reads versions 1 and 2");
    }

    #[test]
    fn roles_name_the_array_and_the_problem() {
        let floats = parse("{'descr': '<f4', 'fortran_order': False, 'shape': (5, 2, 2), }").unwrap();
        let err = check_role("x_train", &floats, Role::Images).unwrap_err().to_string();
        assert!(err.contains("x_train has dtype float32, expected uint8"), "{err}");
        let flat = parse("{'descr': '|u1', 'fortran_order': False, 'shape': (5, 784), }").unwrap();
        let err = check_role("x_test", &flat, Role::Images).unwrap_err().to_string();
        assert!(err.contains("x_test has shape (5, 784)"), "{err}");
        let err = check_role("y_train", &floats, Role::Labels).unwrap_err().to_string();
        assert!(err.contains("y_train has dtype float32, expected integer"), "{err}");
        for descr in ["|u1", "|i1", "<i2", "<i4", "<i8"] {
            let labels = parse(&format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (5,), }}")).unwrap();
            assert!(check_role("y_train", &labels, Role::Labels).is_ok(), "{descr}");
        }
    }

    /// What tch's own `Tensor::read_npz` reads from `path`, as `read_parts` hands it on: images
    /// `[count, rows*cols]`, labels as Int64.
    fn read_by_tch(path: &Path, images: &str, labels: &str) -> (Tensor, Tensor) {
        let read: HashMap<String, Tensor> = Tensor::read_npz(path).unwrap().into_iter().collect();
        let x = &read[images];
        let (count, pixels) = (x.size()[0], x.size()[1] * x.size()[2]);
        (x.view([count, pixels]), read[labels].to_kind(Kind::Int64))
    }

    fn assert_same(ours: &NpzPart, (images, labels): &(Tensor, Tensor)) {
        assert_eq!((ours.images.kind(), ours.labels.kind()), (Kind::Uint8, Kind::Int64));
        assert_eq!(ours.images.size(), images.size());
        assert_eq!(Vec::<u8>::try_from(&ours.images.view(-1)).unwrap(), Vec::<u8>::try_from(&images.view(-1)).unwrap());
        assert_eq!(Vec::<i64>::try_from(&ours.labels).unwrap(), Vec::<i64>::try_from(labels).unwrap());
    }

    #[test]
    fn tch_reads_uint8_and_int64_arrays_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnist.npz");
        let x = Tensor::from_slice(&[1u8, 2, 3, 4, 5, 6, 7, 8]).view([2, 2, 2]);
        let y = Tensor::from_slice(&[3i64, 1]);
        Tensor::write_npz(&[("x_train", &x), ("y_train", &y)], &path).unwrap();
        let read: HashMap<String, Tensor> = Tensor::read_npz(&path).unwrap().into_iter().collect();
        assert_eq!(read["x_train"].kind(), Kind::Uint8);
        assert_eq!(read["y_train"].kind(), Kind::Int64);

        let parts = read_parts(&path, &[("x_train", "y_train")]).unwrap();
        assert_eq!(parts[0].images.size(), vec![2, 4]);
        assert_eq!((parts[0].rows, parts[0].cols), (2, 2));
        assert_eq!(Vec::<u8>::try_from(&parts[0].images.view(-1)).unwrap(), vec![1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(Vec::<i64>::try_from(&parts[0].labels).unwrap(), vec![3, 1]);
        assert_same(&parts[0], &read_by_tch(&path, "x_train", "y_train"));
    }

    /// Keras's layout as NumPy itself writes it, stored (`np.savez`) and deflated
    /// (`np.savez_compressed`, as Keras's mnist.npz is): read exactly as tch's own reader reads it.
    /// The fixtures were made with NumPy 2.4:
    /// `rng = np.random.default_rng(7); a = dict(x_train=rng.integers(0, 256, (5, 4, 3), dtype=np.uint8),
    /// y_train=rng.integers(0, 10, 5).astype(np.uint8), x_test=rng.integers(0, 256, (3, 4, 3),
    /// dtype=np.uint8), y_test=rng.integers(0, 10, 3).astype(np.int64)); np.savez(path, **a)`.
    #[test]
    fn numpys_own_npz_files_read_as_tch_reads_them() {
        for name in ["keras-layout.npz", "keras-layout-compressed.npz"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
            let parts = read_parts(&path, &[("x_train", "y_train"), ("x_test", "y_test")]).unwrap();
            assert_eq!((parts[0].rows, parts[0].cols, parts[1].images.size()), (4, 3, vec![3, 12]), "{name}");
            assert_same(&parts[0], &read_by_tch(&path, "x_train", "y_train"));
            assert_same(&parts[1], &read_by_tch(&path, "x_test", "y_test"));
        }
    }
}
