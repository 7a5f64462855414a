//! NumPy `.npz` data sets, such as the `mnist.npz` that `keras.datasets.mnist.load_data()` caches:
//! a zip archive of `.npy` arrays, `x_train` (uint8 `[N, rows, cols]`), `y_train` (`[N]`), `x_test`,
//! `y_test`.
//!
//! The arrays are read by tch's own `Tensor::read_npz`, but that reader trusts the file: it
//! `unwrap`s each zip entry (a damaged entry header is a panic), and it copies as many bytes as an
//! array's `.npy` header claims out of however many the entry holds (a header that claims more is a
//! read past the end of a buffer: garbage pixels or a crash). So [`read_parts`] checks the whole
//! archive first — every entry opens, every `.npy` header parses the way tch parses it, every
//! entry's data is exactly as long as its header says and passes the zip's CRC — streaming through
//! the data without keeping it. Only then does `read_npz` read it. The wanted arrays are checked
//! for dtype, shape and emptiness before anything is allocated for them; checks across arrays
//! (counts of images and labels, label range) are `data.rs`'s, the same for IDX and `.npz`.

use anyhow::{Context, Result, anyhow, bail, ensure};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use tch::{Kind, Tensor};

/// NumPy caps the header it will read at 10,000 bytes (`numpy.lib.format`'s `max_header_size`); so do
/// we, before tch allocates whatever a header's length field claims.
const MAX_HEADER_LEN: usize = 10_000;

const NPY_MAGIC: &[u8] = b"\x93NUMPY";

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

/// A parsed `.npy` header.
#[derive(Debug, Clone, PartialEq)]
struct NpyHeader {
    /// The dtype as written, e.g. `|u1` or `<f8`.
    descr: String,
    /// The tensor kind tch's reader gives for `descr`, when it reads that dtype at all.
    kind: Option<Kind>,
    fortran_order: bool,
    shape: Vec<i64>,
}

impl NpyHeader {
    /// Data bytes the header implies: `prod(shape) * item size`, when it fits in a `u64`.
    fn data_len(&self) -> Option<u64> {
        let kind = self.kind?;
        self.shape
            .iter()
            .try_fold(kind.elt_size_in_bytes() as u64, |acc, &d| u64::try_from(d).ok().and_then(|d| acc.checked_mul(d)))
    }

    fn shape_text(&self) -> String {
        shape_text(&self.shape)
    }
}

/// A shape the way NumPy prints it: `(60000, 28, 28)`, `(60000,)`.
fn shape_text(shape: &[i64]) -> String {
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

/// tch's mapping from a descr to a tensor kind (`tch::Tensor::read_npz`), reproduced so that what is
/// checked here is what tch will read. `None`: tch refuses the dtype.
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

/// Parses a `.npy` header dictionary such as `{'descr': '|u1', 'fortran_order': False, 'shape':
/// (60000, 28, 28), }` with the same splitting rules as tch's parser, and stricter: every key once,
/// `descr` and `shape` present, dimensions non-negative integers. A header both parsers accept means
/// the same array to both.
fn parse_header(text: &str) -> Result<NpyHeader> {
    let body = text.trim_matches(|c: char| c == '{' || c == '}' || c == ',' || c.is_whitespace());
    let mut parts = Vec::new();
    let (mut start, mut depth) = (0usize, 0i64);
    for (index, c) in body.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&body[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&body[start..]);
    let mut fields: HashMap<&str, &str> = HashMap::new();
    for part in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let [key, value] = part.split(':').collect::<Vec<_>>()[..] else {
            bail!("unreadable .npy header {}", printable(text));
        };
        let key = key.trim_matches(|c: char| c == '\'' || c.is_whitespace());
        let value = value.trim_matches(|c: char| c == '\'' || c.is_whitespace());
        ensure!(fields.insert(key, value).is_none(), ".npy header names '{key}' twice");
    }
    let descr = fields.get("descr").copied().ok_or_else(|| anyhow!(".npy header without a dtype (descr)"))?;
    ensure!(!descr.is_empty(), ".npy header with an empty dtype (descr)");
    let fortran_order = match fields.get("fortran_order").copied() {
        None | Some("False") => false,
        Some("True") => true,
        Some(other) => bail!(".npy header with fortran_order {other:?}"),
    };
    let shape_value = fields.get("shape").copied().ok_or_else(|| anyhow!(".npy header without a shape"))?;
    let dims = shape_value.trim_matches(|c: char| c == '(' || c == ')' || c == ',');
    let shape = if dims.is_empty() {
        Vec::new()
    } else {
        dims.split(',')
            .map(|d| d.trim().parse::<i64>().ok().filter(|&d| d >= 0))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| anyhow!(".npy header with shape {shape_value:?}"))?
    };
    Ok(NpyHeader { descr: descr.to_string(), kind: tch_kind(descr), fortran_order, shape })
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
    let mut preamble = [0u8; 8];
    reader.read_exact(&mut preamble).map_err(|_| anyhow!("not a .npy array (shorter than a .npy header)"))?;
    ensure!(&preamble[..6] == NPY_MAGIC, "not a .npy array (no \\x93NUMPY magic)");
    let len_bytes = match preamble[6] {
        1 => 2,
        2 => 4,
        version => bail!(".npy format version {version}, tch reads versions 1 and 2"),
    };
    let mut len_field = [0u8; 4];
    reader.read_exact(&mut len_field[..len_bytes]).map_err(|_| anyhow!("truncated .npy header"))?;
    let header_len = u32::from_le_bytes(len_field) as usize;
    ensure!(header_len <= MAX_HEADER_LEN, ".npy header of {header_len} bytes (NumPy's limit is {MAX_HEADER_LEN})");
    let mut header = Vec::with_capacity(header_len);
    reader.take(header_len as u64).read_to_end(&mut header)?;
    ensure!(header.len() == header_len, "truncated .npy header");
    parse_header(&String::from_utf8_lossy(&header))
}

/// One entry of the archive, checked: its array name (the entry name without `.npy`), its header, and
/// whether tch can read it as it stands.
struct Entry {
    name: String,
    /// The header, or why the entry is not an array tch can read.
    header: Result<NpyHeader, String>,
}

/// Opens the archive and checks every entry (see the module comment), streaming through its data.
fn check_archive(path: &Path) -> Result<Vec<Entry>> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|err| anyhow!("{}: not a readable .npz file (zip: {err})", path.display()))?;
    let mut entries = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|err| anyhow!("{}: not a readable .npz file (zip entry {index}: {err})", path.display()))?;
        let name = entry.name().strip_suffix(".npy").unwrap_or(entry.name()).to_string();
        ensure!(entries.iter().all(|e: &Entry| e.name != name), "{}: holds two arrays named '{name}'", path.display());
        let header = read_header(&mut entry);
        // Through to the end, whatever the header says: the zip's CRC is checked there, and damaged
        // data is reported as such rather than as whatever it happened to garble.
        let header = match std::io::copy(&mut entry, &mut std::io::sink()) {
            Err(err) => Err(format!("corrupt data (zip: {err})")),
            Ok(actual) => header.map_err(|err| err.to_string()).and_then(|header| {
                check_entry(&header, actual)?;
                Ok(header)
            }),
        };
        entries.push(Entry { name, header });
    }
    Ok(entries)
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
/// `[("x_train", "y_train"), ("x_test", "y_test")]`, after checking the whole archive. Errors are one
/// line naming the file and the array.
pub fn read_parts(path: &Path, parts: &[(&str, &str)]) -> Result<Vec<NpzPart>> {
    let entries = check_archive(path)?;
    let wanted: Vec<(&str, Role)> =
        parts.iter().flat_map(|&(images, labels)| [(images, Role::Images), (labels, Role::Labels)]).collect();
    let names = || entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ");
    let mut headers: HashMap<&str, NpyHeader> = HashMap::new();
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
        headers.insert(key, header.clone());
    }
    // tch reads every array of the file, not only the wanted ones.
    if let Some(entry) = entries.iter().find(|e| e.header.is_err()) {
        let why = entry.header.as_ref().err().map_or("", String::as_str);
        bail!("{}: array '{}' {why} (tch reads every array of an .npz file)", path.display(), entry.name);
    }

    let mut arrays: HashMap<String, Tensor> = Tensor::read_npz(path)
        .map_err(|err| anyhow!("{}: not a readable .npz file ({err})", path.display()))?
        .into_iter()
        .collect();
    let mut take = |key: &str| -> Result<Tensor> {
        let tensor = arrays.remove(key).ok_or_else(|| anyhow!("{}: tch read no array '{key}'", path.display()))?;
        let header = &headers[key];
        // What tch read must be what was checked (the file could have changed in between).
        ensure!(
            Some(tensor.kind()) == header.kind && tensor.size() == header.shape,
            "{}: {key} changed while it was read",
            path.display()
        );
        Ok(tensor)
    };
    parts
        .iter()
        .map(|&(images_key, labels_key)| {
            let images = take(images_key)?;
            let labels = take(labels_key)?;
            let [count, rows, cols] = images.size()[..] else {
                bail!("{}: {images_key} is not (count, rows, cols)", path.display());
            };
            Ok(NpzPart {
                images: images.f_view([count, rows * cols])?,
                rows: rows as usize,
                cols: cols as usize,
                labels: labels.f_to_kind(Kind::Int64)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numpy_headers_as_tch_does() {
        let header = parse_header("{'descr': '|u1', 'fortran_order': False, 'shape': (60000, 28, 28), }").unwrap();
        assert_eq!(header.kind, Some(Kind::Uint8));
        assert_eq!(header.shape, vec![60000, 28, 28]);
        assert_eq!(header.data_len(), Some(60000 * 784));
        assert_eq!(header.shape_text(), "(60000, 28, 28)");
        let labels = parse_header("{'descr': '<i8', 'fortran_order': False, 'shape': (7,), }").unwrap();
        assert_eq!(
            (labels.kind, labels.data_len(), labels.shape_text().as_str()),
            (Some(Kind::Int64), Some(56), "(7,)")
        );
        let scalar = parse_header("{'descr': '<f4', 'fortran_order': False, 'shape': (), }").unwrap();
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
            assert!(parse_header(bad).is_err(), "{bad}");
        }
        let header = parse_header("{'descr': '<U10', 'shape': (3,), }").unwrap();
        assert_eq!(header.kind, None);
        assert!(check_entry(&header, 120).unwrap_err().contains("'<U10'"));
        assert_eq!(tch_kind(">i8"), None);
        assert_eq!(dtype_name(">i8"), "int64");
    }

    #[test]
    fn data_length_must_match_the_header() {
        let header = parse_header("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }").unwrap();
        assert!(check_entry(&header, 24).is_ok());
        assert!(check_entry(&header, 20).unwrap_err().contains("truncated: 20 bytes"));
        assert!(check_entry(&header, 28).unwrap_err().contains("4 bytes of trailing data"));
        let huge = parse_header("{'descr': '<i8', 'shape': (4611686018427387904, 4), }").unwrap();
        assert!(check_entry(&huge, 0).unwrap_err().contains("too large"));
    }

    #[test]
    fn roles_name_the_array_and_the_problem() {
        let floats = parse_header("{'descr': '<f4', 'fortran_order': False, 'shape': (5, 2, 2), }").unwrap();
        let err = check_role("x_train", &floats, Role::Images).unwrap_err().to_string();
        assert!(err.contains("x_train has dtype float32, expected uint8"), "{err}");
        let flat = parse_header("{'descr': '|u1', 'fortran_order': False, 'shape': (5, 784), }").unwrap();
        let err = check_role("x_test", &flat, Role::Images).unwrap_err().to_string();
        assert!(err.contains("x_test has shape (5, 784)"), "{err}");
        let err = check_role("y_train", &floats, Role::Labels).unwrap_err().to_string();
        assert!(err.contains("y_train has dtype float32, expected integer"), "{err}");
        for descr in ["|u1", "|i1", "<i2", "<i4", "<i8"] {
            let labels = parse_header(&format!("{{'descr': '{descr}', 'shape': (5,), }}")).unwrap();
            assert!(check_role("y_train", &labels, Role::Labels).is_ok(), "{descr}");
        }
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
    }
}
