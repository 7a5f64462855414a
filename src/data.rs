//! MNIST-format data sets on disk: finding the four files (raw or `.gz`), validating them, turning them
//! into tensors, class names, and Keras's validation split.
//!
//! Images stay bytes (`u8`) in memory and become float inputs one batch at a time ([`to_inputs`]):
//! the 60,000 training images are 47 MB as bytes and 188 MB as float32. That is also why the files are
//! read here rather than through tch's `tch::vision::mnist::load_dir`, which checks only the magic
//! numbers and materialises float32 copies (peak ~470 MB while loading).

use crate::idx::{self, IdxHeader, IdxKind};
use anyhow::{Context, Result, bail, ensure};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// Class names of Fashion-MNIST, in label order.
pub const FASHION_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// One of the four files of a data set.
#[derive(Debug, Clone, Copy)]
struct FileRole {
    /// The standard (LeCun) file name, as `tch::vision::mnist::load_dir` expects it.
    standard_name: &'static str,
    kind: IdxKind,
    what: &'static str,
}

const TRAIN_IMAGES: FileRole =
    FileRole { standard_name: "train-images-idx3-ubyte", kind: IdxKind::Images, what: "training images" };
const TRAIN_LABELS: FileRole =
    FileRole { standard_name: "train-labels-idx1-ubyte", kind: IdxKind::Labels, what: "training labels" };
const TEST_IMAGES: FileRole =
    FileRole { standard_name: "t10k-images-idx3-ubyte", kind: IdxKind::Images, what: "test images" };
const TEST_LABELS: FileRole =
    FileRole { standard_name: "t10k-labels-idx1-ubyte", kind: IdxKind::Labels, what: "test labels" };

/// The network's inputs for pixel bytes: float32 in [0, 1] (pixel / 255), the same shape.
///
/// A division, not a multiplication by 1/255: `x * (1/255)` differs from `x / 255` in the last bit for
/// some pixel values, and Python (`images / 255.0`) divides; the parity checks compare logits to 1e-5.
pub fn to_inputs(pixels: &Tensor) -> Tensor {
    let mut inputs = pixels.to_kind(Kind::Float);
    let _ = inputs.g_div_scalar_(255.0); // in place: one allocation per batch, not two
    inputs
}

/// Images and labels of one part of a data set.
#[derive(Debug)]
pub struct Examples {
    /// `[N, rows*cols]` Uint8 pixels, as in the files; [`to_inputs`] makes network inputs of them.
    pub images: Tensor,
    /// `[N]` Int64 class indices.
    pub labels: Tensor,
}

impl Examples {
    pub fn len(&self) -> i64 {
        self.labels.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows `start..start+len`, as views (no copy).
    pub fn slice(&self, start: i64, len: i64) -> Examples {
        Examples { images: self.images.narrow(0, start, len), labels: self.labels.narrow(0, start, len) }
    }

    pub fn to_device(&self, device: tch::Device) -> Examples {
        Examples { images: self.images.to_device(device), labels: self.labels.to_device(device) }
    }
}

/// A whole data set: the training files and the test files.
#[derive(Debug)]
pub struct MnistData {
    pub train: Examples,
    pub test: Examples,
    pub image_rows: usize,
    pub image_cols: usize,
}

/// The files of one data set, located and with checked headers.
struct Located {
    path: PathBuf,
    gzipped: bool,
    role: FileRole,
}

/// Loads and validates the four files in `dir`; every label must be below `num_classes`.
pub fn load_dir(dir: &Path, num_classes: usize) -> Result<MnistData> {
    ensure!(num_classes >= 2, "a classifier needs at least 2 classes, got {num_classes}");
    if !dir.is_dir() {
        if dir.exists() {
            bail!("data directory {} is not a directory", dir.display());
        }
        bail!(
            "data directory {} does not exist (scripts/setup.sh prepares the default Fashion-MNIST; \
             or pass --data DIR with the four MNIST files)",
            dir.display()
        );
    }
    let train_images = locate(dir, TRAIN_IMAGES)?;
    let train_labels = locate(dir, TRAIN_LABELS)?;
    let test_images = locate(dir, TEST_IMAGES)?;
    let test_labels = locate(dir, TEST_LABELS)?;

    let (train, train_dims) = read_examples(&train_images, &train_labels, num_classes)?;
    let (test, test_dims) = read_examples(&test_images, &test_labels, num_classes)?;
    ensure!(
        train_dims == test_dims,
        "{} holds {}x{} images but {} holds {}x{}",
        train_images.path.display(),
        train_dims.0,
        train_dims.1,
        test_images.path.display(),
        test_dims.0,
        test_dims.1
    );
    Ok(MnistData { train, test, image_rows: train_dims.0, image_cols: train_dims.1 })
}

fn dims(header: &IdxHeader) -> (usize, usize) {
    (header.rows, header.cols)
}

/// Finds `role`'s file in `dir`: the standard name or the dotted spelling, raw or `.gz`.
fn locate(dir: &Path, role: FileRole) -> Result<Located> {
    let dotted = role.standard_name.replacen("-idx", ".idx", 1);
    for name in [role.standard_name.to_string(), dotted] {
        for (file_name, gzipped) in [(name.clone(), false), (format!("{name}.gz"), true)] {
            let path = dir.join(&file_name);
            if path.is_dir() {
                bail!("{}: is a directory, expected the {} file", path.display(), role.what);
            }
            if path.exists() {
                return Ok(Located { path, gzipped, role });
            }
        }
    }
    bail!("{}: missing {} file {} (or {}.gz)", dir.display(), role.what, role.standard_name, role.standard_name)
}

fn open(file: &Located) -> Result<File> {
    File::open(&file.path).with_context(|| format!("{}: cannot open", file.path.display()))
}

/// Reads one IDX images file (raw or `.gz`, by its extension), checked: `(header, pixels)`.
pub fn read_idx_images(path: &Path) -> Result<(IdxHeader, Vec<u8>)> {
    if path.is_dir() {
        bail!("{}: is a directory, expected an IDX images file", path.display());
    }
    let role = FileRole { standard_name: "", kind: IdxKind::Images, what: "images" };
    let gzipped = path.extension().is_some_and(|e| e == "gz");
    read_file(&Located { path: path.to_path_buf(), gzipped, role })
}

/// Reads a whole file, decompressing `.gz`; the result is checked against its header.
fn read_file(file: &Located) -> Result<(IdxHeader, Vec<u8>)> {
    let handle = open(file)?;
    let result = if file.gzipped {
        // The decompressed size is unknown until decompressed: the stream reader never trusts the header.
        idx::read_stream(flate2::read::MultiGzDecoder::new(BufReader::new(handle)), file.role.kind)
    } else {
        // The file size is known: check the header against it first, then read exactly the payload.
        read_raw(handle, file.role.kind)
    };
    result.with_context(|| {
        if file.gzipped { format!("{} (gzip)", file.path.display()) } else { file.path.display().to_string() }
    })
}

/// Reads the header of an uncompressed file and checks it against the file's size, leaving `handle` at
/// the start of the payload: after this, allocating `payload_len()` bytes is safe.
fn read_raw_header(handle: &mut File, kind: IdxKind) -> Result<IdxHeader> {
    use std::io::Read;
    let file_len = handle.metadata()?.len();
    let mut header_bytes = Vec::with_capacity(kind.header_len());
    handle.take(kind.header_len() as u64).read_to_end(&mut header_bytes)?;
    let header = IdxHeader::parse(&header_bytes, kind)?;
    header.check_file_len(file_len)?;
    Ok(header)
}

fn read_raw(mut handle: File, kind: IdxKind) -> Result<(IdxHeader, Vec<u8>)> {
    use std::io::Read;
    let header = read_raw_header(&mut handle, kind)?;
    let mut payload = vec![0u8; header.payload_len()];
    handle.read_exact(&mut payload)?;
    Ok((header, payload))
}

fn check_pair(images: &Located, image_header: &IdxHeader, labels: &Located, label_header: &IdxHeader) -> Result<()> {
    ensure!(
        image_header.count == label_header.count,
        "{} holds {} images but {} holds {} labels",
        images.path.display(),
        image_header.count,
        labels.path.display(),
        label_header.count
    );
    Ok(())
}

/// Reads an uncompressed images file straight into a tensor (one copy of the pixels in memory, not
/// two), after checking its header against the file size.
fn read_raw_images(file: &Located) -> Result<(IdxHeader, Tensor)> {
    use std::io::Read;
    let read = || -> Result<(IdxHeader, Tensor)> {
        let mut handle = open(file)?;
        let header = read_raw_header(&mut handle, IdxKind::Images)?;
        let pixels = Tensor::empty([header.count as i64, header.item_len() as i64], (Kind::Uint8, tch::Device::Cpu));
        // SAFETY: `pixels` is a freshly allocated, contiguous CPU tensor of exactly payload_len bytes,
        // and nothing else refers to it while this slice lives.
        let buffer = unsafe { std::slice::from_raw_parts_mut(pixels.data_ptr() as *mut u8, header.payload_len()) };
        handle.read_exact(buffer)?;
        Ok((header, pixels))
    };
    read().with_context(|| file.path.display().to_string())
}

/// Decodes an images file and its labels file into tensors.
fn read_examples(images: &Located, labels: &Located, num_classes: usize) -> Result<(Examples, (usize, usize))> {
    let (image_header, images_tensor) = if images.gzipped {
        let (header, pixels) = read_file(images)?;
        let tensor = Tensor::from_slice(&pixels).view((header.count as i64, header.item_len() as i64));
        (header, tensor)
    } else {
        read_raw_images(images)?
    };
    let (label_header, label_bytes) = read_file(labels)?;
    check_pair(images, &image_header, labels, &label_header)?;
    idx::check_labels(&label_bytes, num_classes).with_context(|| labels.path.display().to_string())?;
    let labels_tensor = Tensor::from_slice(&label_bytes).to_kind(Kind::Int64);
    Ok((Examples { images: images_tensor, labels: labels_tensor }, dims(&image_header)))
}

/// Which part of a data set a job uses: some classes only (relabelled 0..k in the order given), and/or
/// the first `limit` training images. Recorded in `config.json`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Selection {
    #[serde(default)]
    pub labels: Option<Vec<u8>>,
    #[serde(default)]
    pub limit: Option<usize>,
}

/// A data set cut for one job: training and validation parts (Keras split), the test set, all on the CPU.
pub struct Prepared {
    pub train: Examples,
    pub valid: Examples,
    pub test: Examples,
    pub image_rows: usize,
    pub image_cols: usize,
    pub num_classes: usize,
    pub class_names: Vec<String>,
}

impl Prepared {
    /// The same data with the examples on `device`.
    pub fn to_device(&self, device: tch::Device) -> Prepared {
        Prepared {
            train: self.train.to_device(device),
            valid: self.valid.to_device(device),
            test: self.test.to_device(device),
            class_names: self.class_names.clone(),
            ..*self
        }
    }
}

/// Loads `dir` and applies `selection`: keep the chosen labels (relabelled), then the first `limit`
/// training images, then split off the last `validation_split` for validation. Without `labels`,
/// every label must be below `num_classes`.
pub fn prepare(
    dir: &Path,
    selection: &Selection,
    num_classes: usize,
    class_names_spec: &str,
    validation_split_fraction: f64,
) -> Result<Prepared> {
    let (data, num_classes, class_names) = match &selection.labels {
        None => {
            let data = load_dir(dir, num_classes)?;
            (data, num_classes, class_names(class_names_spec, dir, num_classes)?)
        }
        Some(labels) => {
            ensure!(labels.len() >= 2, "--labels needs at least 2 classes, got {labels:?}");
            let mut sorted = labels.clone();
            sorted.sort_unstable();
            sorted.dedup();
            ensure!(sorted.len() == labels.len(), "--labels {labels:?} names a class twice");
            // Labels outside the selection are dropped, so any byte value is acceptable here.
            let data = load_dir(dir, 256)?;
            let all_names = match class_names_spec {
                "auto" | "digits" | "fashion" => {
                    let source = (*sorted.last().unwrap_or(&0) as usize + 1).max(10);
                    let names =
                        class_names(class_names_spec, dir, source).or_else(|_| class_names("digits", dir, source))?;
                    labels.iter().map(|&l| names[l as usize].clone()).collect()
                }
                _ => class_names(class_names_spec, dir, labels.len())?,
            };
            let keep = |examples: &Examples, what: &str| -> Result<Examples> {
                let kept = select_labels(examples, labels)?;
                ensure!(!kept.is_empty(), "{}: no {what} images with labels {labels:?}", dir.display());
                Ok(kept)
            };
            let train = keep(&data.train, "training")?;
            let test = keep(&data.test, "test")?;
            (MnistData { train, test, ..data }, labels.len(), all_names)
        }
    };
    let mut train_all = data.train;
    if let Some(limit) = selection.limit {
        ensure!(limit > 0, "--limit must be at least 1");
        ensure!(
            limit as i64 <= train_all.len(),
            "--limit {limit} is more than the {} training images available",
            train_all.len()
        );
        train_all = train_all.slice(0, limit as i64);
    }
    let (train_len, valid_len) = validation_split(train_all.len() as usize, validation_split_fraction)?;
    Ok(Prepared {
        train: train_all.slice(0, train_len as i64),
        valid: train_all.slice(train_len as i64, valid_len as i64),
        test: data.test,
        image_rows: data.image_rows,
        image_cols: data.image_cols,
        num_classes,
        class_names,
    })
}

/// The examples whose label is in `labels`, in their original order, relabelled to the label's
/// position in `labels`.
pub fn select_labels(examples: &Examples, labels: &[u8]) -> Result<Examples> {
    // A 256-entry lookup: original label -> new label, or -1 to drop.
    let mut table = vec![-1i64; 256];
    for (new, &old) in labels.iter().enumerate() {
        table[old as usize] = new as i64;
    }
    let table = Tensor::from_slice(&table);
    let mapped = table.f_index_select(0, &examples.labels)?; // [N]
    let keep = mapped.ge(0).nonzero().squeeze_dim(1); // [M] row indices
    Ok(Examples { images: examples.images.f_index_select(0, &keep)?, labels: mapped.f_index_select(0, &keep)? })
}

/// Parses `--labels`: a comma-separated list of class labels such as `0,1,2,3,4`.
pub fn parse_labels(spec: &str) -> Result<Vec<u8>, String> {
    spec.split(',')
        .map(|part| {
            part.trim().parse::<u8>().map_err(|_| format!("'{spec}' is not a comma-separated list of labels 0..255"))
        })
        .collect()
}

/// Splits `n` examples like Keras's `validation_split`: the **last** `fraction` of them, before any
/// shuffling, is for validation. Returns `(train_len, validation_len)`.
pub fn validation_split(n: usize, fraction: f64) -> Result<(usize, usize)> {
    ensure!(fraction > 0.0 && fraction < 1.0, "--validation-split must be between 0 and 1 (exclusive), got {fraction}");
    // Keras: split_at = floor(n * (1 - validation_split)).
    let train_len = (n as f64 * (1.0 - fraction)).floor() as usize;
    ensure!(
        train_len > 0 && train_len < n,
        "--validation-split {fraction} of {n} training examples leaves {train_len} for training and {} for \
         validation; both need at least one",
        n - train_len
    );
    Ok((train_len, n - train_len))
}

/// Class names for a data set: `auto` (Fashion-MNIST when the directory name says so, else digits),
/// `digits`, `fashion`, or a comma-separated list with one name per class.
pub fn class_names(spec: &str, dir: &Path, num_classes: usize) -> Result<Vec<String>> {
    let numbered = || (0..num_classes).map(|i| i.to_string()).collect::<Vec<_>>();
    let fashion = || FASHION_CLASSES.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let names = match spec {
        "auto" => {
            let looks_fashion = std::fs::canonicalize(dir)
                .unwrap_or_else(|_| dir.to_path_buf())
                .to_string_lossy()
                .to_lowercase()
                .contains("fashion");
            if looks_fashion && num_classes == FASHION_CLASSES.len() { fashion() } else { numbered() }
        }
        "digits" => numbered(),
        "fashion" => fashion(),
        list => list.split(',').map(|s| s.trim().to_string()).collect(),
    };
    ensure!(names.len() == num_classes, "--class-names gives {} names for {num_classes} classes", names.len());
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keras_split_takes_the_last_fifth() {
        assert_eq!(validation_split(60_000, 0.2).unwrap(), (48_000, 12_000));
        assert_eq!(validation_split(10, 0.25).unwrap(), (7, 3));
        assert_eq!(validation_split(3, 0.5).unwrap(), (1, 2));
    }

    #[test]
    fn split_outside_the_open_interval_is_rejected() {
        for fraction in [0.0, 1.0, -0.1, 1.5, f64::NAN] {
            assert!(validation_split(100, fraction).is_err(), "{fraction}");
        }
        let err = validation_split(1, 0.5).unwrap_err().to_string();
        assert!(err.contains("both need at least one"), "{err}");
    }

    #[test]
    fn selecting_labels_keeps_order_and_relabels() {
        let examples = Examples {
            images: Tensor::from_slice(&[0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0]).view([6, 1]),
            labels: Tensor::from_slice(&[5i64, 1, 7, 5, 0, 7]),
        };
        let kept = select_labels(&examples, &[7, 5]).unwrap();
        assert_eq!(Vec::<f32>::try_from(&kept.images.view(-1)).unwrap(), vec![0.0, 2.0, 3.0, 5.0]);
        assert_eq!(Vec::<i64>::try_from(&kept.labels).unwrap(), vec![1, 0, 1, 0]);
        assert_eq!(parse_labels("5, 6,7").unwrap(), vec![5, 6, 7]);
        assert!(parse_labels("5,300").is_err());
    }

    #[test]
    fn class_names_follow_the_spec() {
        let dir = Path::new("/nonexistent/fashion-mnist");
        assert_eq!(class_names("auto", dir, 10).unwrap()[9], "Ankle boot");
        assert_eq!(class_names("auto", Path::new("/x/mnist"), 10).unwrap()[3], "3");
        assert_eq!(class_names("a, b", dir, 2).unwrap(), vec!["a", "b"]);
        assert!(class_names("a,b,c", dir, 2).is_err());
    }
}
