//! Data sets on disk: where the default one is, which format a path holds (a directory of the four
//! IDX files, raw or `.gz`, or a Keras-style `.npz` file), the checks across files, class names,
//! `--labels`/`--limit`, and Keras's validation split.
//!
//! One format per module: `idx.rs` reads IDX files and `npz.rs` reads `.npz` archives, each checking
//! what one file or array can say about itself. What only holds across files — as many labels as
//! images, labels below the number of classes, training and test images of one size — is checked
//! here, once, the same way for both formats: a data set gives the same tensors, and so the same
//! run, whichever format it comes in.
//!
//! Images stay bytes (`u8`) in memory and become float inputs one batch at a time ([`to_inputs`]):
//! the 60,000 training images are 47 MB as bytes and 188 MB as float32. That is also why the files are
//! read by this crate rather than by tch's `tch::vision::mnist::load_dir`, which checks only the magic
//! numbers and materialises float32 copies (peak ~470 MB while loading).

use crate::class_names::ClassNames;
use crate::frame::Frame;
use crate::idx::{self, IdxKind};
use crate::npz;
use anyhow::{Context, Result, bail, ensure};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// For `mnist-tch predict --idx`: an IDX images file as bytes (the reader lives in `idx.rs`).
pub use crate::idx::read_image_bytes as read_idx_images;

/// The environment variable that names the default data set (a directory or an `.npz` file).
pub const DATA_ENV: &str = "MNIST_TCH_DATA";

/// Where the default data set, digit MNIST, is looked for when `--data` is not given, in this order.
/// `scripts/setup.sh` installs digit MNIST in both directories.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSearch {
    /// `$MNIST_TCH_DATA`, when set and not empty: taken as given, like `--data`.
    pub from_env: Option<PathBuf>,
    /// `./data/mnist` in the working directory: a checkout's own copy.
    pub in_working_dir: PathBuf,
    /// The per-user copy, `$XDG_DATA_HOME/mnist-tch/mnist` (`~/.local/share/mnist-tch/mnist` by
    /// default), so the binary finds its data from any directory. `None` without a home directory.
    pub per_user: Option<PathBuf>,
}

impl DataSearch {
    /// The search for this process: its environment and its working directory.
    pub fn from_process() -> DataSearch {
        let working_dir = std::env::current_dir().unwrap_or_default();
        DataSearch::from_vars(&working_dir, |name| std::env::var_os(name))
    }

    /// The search for a working directory and an environment given as a lookup function (tests inject
    /// one instead of changing the process's environment).
    pub fn from_vars(working_dir: &Path, var: impl Fn(&str) -> Option<OsString>) -> DataSearch {
        DataSearch {
            from_env: var(DATA_ENV).filter(|value| !value.is_empty()).map(PathBuf::from),
            in_working_dir: working_dir.join("data").join("mnist"),
            per_user: user_data_dir(var).map(|dir| dir.join("mnist")),
        }
    }
}

/// mnist-tch's per-user data directory, `$XDG_DATA_HOME/mnist-tch`, where `XDG_DATA_HOME` defaults to
/// `~/.local/share` and is ignored unless absolute (the XDG base directory rules). scripts/setup.sh
/// computes the same directory.
pub fn user_data_dir(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let base = match var("XDG_DATA_HOME").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => PathBuf::from(var("HOME").filter(|home| !home.is_empty())?).join(".local").join("share"),
    };
    Some(base.join("mnist-tch"))
}

/// The data set to use: `--data` when given, else `$MNIST_TCH_DATA`, else the first of `./data/mnist`
/// and the per-user directory that exists. Nothing else: without digit MNIST, the error says where it
/// looked and how to get it or use Fashion-MNIST instead, rather than training on something else.
pub fn resolve_data_path(flag: Option<&Path>, search: &DataSearch) -> Result<PathBuf> {
    if let Some(path) = flag {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = &search.from_env {
        ensure!(path.exists(), "${DATA_ENV} is {}, which does not exist", path.display());
        return Ok(path.clone());
    }
    let candidates: Vec<&PathBuf> = std::iter::once(&search.in_working_dir).chain(&search.per_user).collect();
    if let Some(found) = candidates.iter().find(|dir| dir.exists()) {
        return Ok(found.to_path_buf());
    }
    let looked_in = candidates.iter().map(|dir| dir.display().to_string()).collect::<Vec<_>>().join(" or ");
    // Fashion-MNIST beside where digit MNIST was looked for, named as it can be typed from here.
    let fashion = candidates
        .iter()
        .filter_map(|dir| dir.parent().map(|parent| parent.join("fashion-mnist")))
        .find(|dir| dir.is_dir())
        .map_or_else(
            || "scripts/setup.sh installs it too".to_string(),
            |dir| {
                let here =
                    std::env::current_dir().ok().and_then(|cwd| dir.strip_prefix(cwd).ok().map(Path::to_path_buf));
                format!("--data {}", here.unwrap_or(dir).display())
            },
        );
    bail!(
        "no data set: digit MNIST, the default, is not in {looked_in} (--data not given, ${DATA_ENV} not set); \
         scripts/setup.sh installs it there, or pass --data PATH (a directory of MNIST-format IDX files or a \
         Keras mnist.npz); for Fashion-MNIST: {fashion}"
    )
}

/// One of the four IDX files of a data set.
#[derive(Debug, Clone, Copy)]
struct FileRole {
    /// The standard (LeCun) file name, as `tch::vision::mnist::load_dir` expects it.
    standard_name: &'static str,
    what: &'static str,
}

const TRAIN_IMAGES: FileRole = FileRole { standard_name: "train-images-idx3-ubyte", what: "training images" };
const TRAIN_LABELS: FileRole = FileRole { standard_name: "train-labels-idx1-ubyte", what: "training labels" };
const TEST_IMAGES: FileRole = FileRole { standard_name: "t10k-images-idx3-ubyte", what: "test images" };
const TEST_LABELS: FileRole = FileRole { standard_name: "t10k-labels-idx1-ubyte", what: "test labels" };

/// The network's inputs for pixel bytes: float32 in [0, 1] (pixel / 255), the same shape.
///
/// A division, not a multiplication by 1/255: `x * (1/255)` differs from `x / 255` in the last bit for
/// some pixel values, and Python (`images / 255.0`) divides; the parity checks compare logits to 1e-5.
///
/// One op: dividing the `u8` tensor by a float scalar promotes it to float32 (PyTorch's true division),
/// the same values as converting first and dividing after, with one allocation and one pass.
pub fn to_inputs(pixels: &Tensor) -> Tensor {
    pixels.g_div_scalar(255.0)
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

/// The part of a data set: the training or the test images and labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    Train,
    Test,
}

impl Split {
    fn idx_files(self) -> (FileRole, FileRole) {
        match self {
            Split::Train => (TRAIN_IMAGES, TRAIN_LABELS),
            Split::Test => (TEST_IMAGES, TEST_LABELS),
        }
    }

    /// The arrays' names in Keras's `mnist.npz`.
    fn npz_keys(self) -> (&'static str, &'static str) {
        match self {
            Split::Train => ("x_train", "y_train"),
            Split::Test => ("x_test", "y_test"),
        }
    }
}

/// What a path holds.
enum Source {
    /// A directory of the four IDX files.
    IdxDir(PathBuf),
    /// A NumPy `.npz` archive with `x_train`, `y_train`, `x_test`, `y_test`.
    Npz(PathBuf),
}

fn has_npz_extension(path: &Path) -> bool {
    path.extension().is_some_and(|extension| extension.eq_ignore_ascii_case("npz"))
}

/// Whether the file starts like a zip archive (an `.npz` under another name).
fn starts_like_zip(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut file| file.read_exact(&mut magic)).is_ok() && magic == *b"PK\x03\x04"
}

/// Decides what `path` holds: a directory is read as IDX files, a file as an `.npz` archive.
fn locate_source(path: &Path) -> Result<Source> {
    if path.is_dir() {
        ensure!(!has_npz_extension(path), "{}: is a directory, expected an .npz file", path.display());
        let empty = std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none());
        ensure!(
            !empty,
            "{}: is an empty folder; --data takes a folder of class folders of pictures (DIR/cat/*.png, \
             DIR/dog/*.png, or train/ and test/ trees of them), a directory of the four MNIST files, or an .npz file",
            path.display()
        );
        return Ok(Source::IdxDir(path.to_path_buf()));
    }
    if !path.exists() {
        bail!(
            "{} does not exist (scripts/setup.sh installs digit MNIST in data/mnist and Fashion-MNIST in \
             data/fashion-mnist; --data takes a directory of the four MNIST files or a Keras .npz file)",
            path.display()
        );
    }
    ensure!(
        has_npz_extension(path) || starts_like_zip(path),
        "{}: is a file but not an .npz archive; --data takes a directory holding the four MNIST files \
         (train-images-idx3-ubyte, ...) or a Keras-style .npz file",
        path.display()
    );
    Ok(Source::Npz(path.to_path_buf()))
}

/// Finds `role`'s file in `dir`: the standard name or the dotted spelling, raw or `.gz`.
fn locate_idx(dir: &Path, role: FileRole) -> Result<PathBuf> {
    let dotted = role.standard_name.replacen("-idx", ".idx", 1);
    for name in [role.standard_name.to_string(), dotted] {
        for file_name in [name.clone(), format!("{name}.gz")] {
            let path = dir.join(&file_name);
            if path.is_dir() {
                bail!("{}: is a directory, expected the {} file", path.display(), role.what);
            }
            if path.exists() {
                return Ok(path);
            }
        }
    }
    bail!("{}: missing {} file {} (or {}.gz)", dir.display(), role.what, role.standard_name, role.standard_name)
}

/// One part of a data set as read, with the names its errors use for the images and the labels.
struct Part {
    examples: Examples,
    rows: usize,
    cols: usize,
    images_origin: String,
    labels_origin: String,
}

/// The labels a data set may hold.
#[derive(Debug, Clone, Copy)]
enum LabelBound {
    /// Below the model's number of classes.
    Classes(usize),
    /// Any byte: `--labels` picks the classes and drops the rest.
    AnyByte,
}

/// Checks what holds across one part's arrays: as many labels as images, every label in range.
fn check_part(part: &Part, bound: LabelBound) -> Result<()> {
    let images = part.examples.images.size()[0];
    let labels = part.examples.len();
    ensure!(
        images == labels,
        "{} holds {images} images but {} holds {labels} labels",
        part.images_origin,
        part.labels_origin
    );
    let (limit, why) = match bound {
        LabelBound::Classes(n) => (n as i64, format!("the model has {n} classes (0..={})", n - 1)),
        LabelBound::AnyByte => (256, "labels must be 0..=255".to_string()),
    };
    let labels = &part.examples.labels;
    let outside = labels.f_lt(0)?.f_logical_or(&labels.f_ge(limit)?)?.f_nonzero()?;
    if outside.size()[0] > 0 {
        let index = outside.int64_value(&[0, 0]);
        let label = labels.int64_value(&[index]);
        bail!("{}: label {label} at index {index} is out of range: {why}", part.labels_origin);
    }
    Ok(())
}

/// Reads the `splits` of the data set at `path` (IDX directory or `.npz`) and checks them: each part
/// on its own ([`check_part`]), then that all parts hold images of one size.
fn read_splits(path: &Path, splits: &[Split], bound: LabelBound) -> Result<Vec<Part>> {
    match locate_source(path)? {
        Source::IdxDir(dir) => {
            let parts = read_idx_parts(&dir, splits, bound)?;
            check_sizes(&parts)?;
            Ok(parts)
        }
        Source::Npz(file) => {
            let parts = read_npz_parts(&file, splits)?;
            // The arrays are named by key; the file once, in front.
            parts.iter().try_for_each(|part| check_part(part, bound)).with_context(|| file.display().to_string())?;
            check_sizes(&parts).with_context(|| file.display().to_string())?;
            Ok(parts)
        }
    }
}

/// The `splits` of the IDX files in `dir`, each part checked as it is read.
fn read_idx_parts(dir: &Path, splits: &[Split], bound: LabelBound) -> Result<Vec<Part>> {
    // Every file located before any is read: a missing one is reported at once.
    let files = splits
        .iter()
        .map(|split| {
            let (images, labels) = split.idx_files();
            Ok((locate_idx(dir, images)?, locate_idx(dir, labels)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut parts = Vec::with_capacity(files.len());
    for (images_path, labels_path) in files {
        let (header, images) = idx::read_images(&images_path)?;
        let (_, label_bytes) = idx::read_file(&labels_path, IdxKind::Labels)?;
        let part = Part {
            examples: Examples { images, labels: Tensor::from_slice(&label_bytes).to_kind(Kind::Int64) },
            rows: header.rows,
            cols: header.cols,
            images_origin: images_path.display().to_string(),
            labels_origin: labels_path.display().to_string(),
        };
        check_part(&part, bound)?;
        parts.push(part);
    }
    Ok(parts)
}

/// The `splits` of the `.npz` archive `file`, not yet checked.
fn read_npz_parts(file: &Path, splits: &[Split]) -> Result<Vec<Part>> {
    let keys: Vec<(&str, &str)> = splits.iter().map(|split| split.npz_keys()).collect();
    let arrays = npz::read_parts(file, &keys)?;
    let parts = arrays
        .into_iter()
        .zip(keys)
        .map(|(array, (images_key, labels_key))| Part {
            examples: Examples { images: array.images, labels: array.labels },
            rows: array.rows,
            cols: array.cols,
            images_origin: images_key.to_string(),
            labels_origin: labels_key.to_string(),
        })
        .collect();
    Ok(parts)
}

/// Checks that all `parts` hold images of one size.
fn check_sizes(parts: &[Part]) -> Result<()> {
    for pair in parts.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        ensure!(
            (a.rows, a.cols) == (b.rows, b.cols),
            "{} holds {}x{} images but {} holds {}x{}",
            a.images_origin,
            a.rows,
            a.cols,
            b.images_origin,
            b.rows,
            b.cols
        );
    }
    Ok(())
}

/// A whole data set: the training part and the test part, images of one frame.
pub(crate) struct DataSet {
    pub(crate) train: Examples,
    pub(crate) test: Examples,
    pub(crate) frame: Frame,
    /// What the header says about how the data was read (pictures skipped, colour converted, no test set).
    pub(crate) notes: Vec<String>,
    /// How pictures were fitted into the frame; `None` for IDX and `.npz` data, which are frames already.
    pub(crate) fit: Option<crate::preprocess::Framing>,
    /// The classes' names the data itself gives (a picture folder's class folders).
    pub(crate) class_names: Option<Vec<String>>,
    /// A validation tree of its own (a picture folder's `val/`), used instead of the split.
    pub(crate) valid: Option<Examples>,
    /// No test part: the test set is the validation part (said in the header).
    pub(crate) test_is_validation: bool,
}

/// Loads and checks the data set at `path`: a picture folder (read as `reading` says), a directory of
/// IDX files or an `.npz` file.
fn load(path: &Path, bound: LabelBound, reading: &Reading) -> Result<DataSet> {
    if path.is_dir() && crate::pictures::looks_like_pictures(path) {
        return picture_data_set(path, reading);
    }
    if path.is_file() && crate::kaggle_csv::is_csv(path) {
        return csv_data_set(path, bound, reading);
    }
    let mut parts = read_splits(path, &[Split::Train, Split::Test], bound)?.into_iter();
    let (Some(train), Some(test)) = (parts.next(), parts.next()) else {
        bail!("{}: expected a training and a test part", path.display());
    };
    let frame = Frame::grey(train.rows as i64, train.cols as i64);
    Ok(DataSet {
        train: train.examples,
        test: test.examples,
        frame,
        notes: Vec::new(),
        fit: None,
        class_names: None,
        valid: None,
        test_is_validation: false,
    })
}

/// Decoded pictures as examples: `[N, C*H*W]` bytes and `[N]` labels.
fn picture_examples(decoded: crate::pictures::Decoded, frame: Frame) -> Result<Examples> {
    let count = decoded.labels.len() as i64;
    let values = frame.values().unwrap_or(0);
    Ok(Examples {
        images: Tensor::from_slice(&decoded.bytes).f_view([count, values])?,
        labels: Tensor::from_slice(&decoded.labels),
    })
}

/// The picture folder `path` as a data set (see [`crate::pictures`]): frame `--input` (default 1x28x28).
fn picture_data_set(path: &Path, reading: &Reading) -> Result<DataSet> {
    let frame = reading.frame.unwrap_or_default();
    let set = crate::pictures::load_set(path, frame, reading.fit, reading.skip_bad)?;
    let test_is_validation = set.test.is_none();
    let empty = || Examples {
        images: Tensor::zeros([0, frame.values().unwrap_or(0)], (Kind::Uint8, tch::Device::Cpu)),
        labels: Tensor::zeros([0], (Kind::Int64, tch::Device::Cpu)),
    };
    let train = picture_examples(set.train, frame)?;
    // Class folders list their pictures class by class: Keras's split of the last fifth would then
    // validate on the last classes alone. Like image_dataset_from_directory (shuffle=True, seed), the
    // training tree is put in a fixed random order first, the same on every run.
    let order = Tensor::from_slice(&fixed_permutation(train.len() as usize));
    let train =
        Examples { images: train.images.f_index_select(0, &order)?, labels: train.labels.f_index_select(0, &order)? };
    Ok(DataSet {
        train,
        test: set.test.map(|t| picture_examples(t, frame)).transpose()?.unwrap_or_else(empty),
        frame,
        notes: set.notes,
        fit: Some(reading.fit),
        class_names: Some(set.classes),
        valid: set.valid.map(|v| picture_examples(v, frame)).transpose()?,
        test_is_validation,
    })
}

/// `0..n` in a fixed random order (Fisher-Yates over splitmix64 from seed 1337): independent of the
/// run's seed, so a data set's split is the same for every run of it.
fn fixed_permutation(n: usize) -> Vec<i64> {
    let mut state: u64 = 1337;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut order: Vec<i64> = (0..n as i64).collect();
    for i in (1..n).rev() {
        order.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    order
}

/// A CSV file in Kaggle's layout (see [`crate::kaggle_csv`]) as a data set: its rows are the training
/// part; there is no test part, so the test set is the validation part, as the header says.
fn csv_data_set(path: &Path, bound: LabelBound, reading: &Reading) -> Result<DataSet> {
    let csv = crate::kaggle_csv::read(path, reading.frame, true)?;
    let (frame, count) = (csv.frame, csv.count() as i64);
    let part = Part {
        examples: Examples {
            images: Tensor::from_slice(&csv.bytes).f_view([count, frame.values().unwrap_or(0)])?,
            labels: Tensor::from_slice(&csv.labels.unwrap_or_default()),
        },
        rows: frame.rows as usize,
        cols: frame.cols as usize,
        images_origin: path.display().to_string(),
        labels_origin: format!("{} (its label column)", path.display()),
    };
    check_part(&part, bound)?;
    let empty = part.examples.slice(0, 0);
    Ok(DataSet {
        train: part.examples,
        test: empty,
        frame,
        notes: vec![format!(
            "No test set: {} is one part (Kaggle's train.csv), so \"Test accuracy\" is computed on the validation part",
            path.display()
        )],
        fit: None,
        class_names: None,
        valid: None,
        test_is_validation: true,
    })
}

/// A picture folder's test tree (or the whole folder when it has none), for `evaluate --data DIR`.
fn picture_test_data(path: &Path, selection: &Selection, num_classes: usize, reading: &Reading) -> Result<TestData> {
    let frame = reading.frame.unwrap_or_default();
    let layout = crate::pictures::layout(path)?;
    let tree = layout.test.unwrap_or(layout.train);
    let options = crate::pictures::Options { frame, fit: reading.fit, skip_bad: reading.skip_bad, class_names: &[] };
    let decoded = crate::pictures::read_tree(&tree, &options)?;
    ensure!(
        selection.labels.is_some() || decoded.classes.len() == num_classes,
        "{}: {} class folders ({}), the model has {num_classes} classes",
        tree.display(),
        decoded.classes.len(),
        decoded.classes.join(", ")
    );
    let class_names = Some(decoded.classes.clone());
    let test = picture_examples(decoded, frame)?;
    let test = match &selection.labels {
        Some(labels) => select_labels(&test, labels)?,
        None => test,
    };
    Ok(TestData { test, frame, class_names })
}

/// An IDX or `.npz` data set is used at its own size: a different `--input` is refused.
pub fn check_frame(path: &Path, frame: Frame, reading: &Reading) -> Result<()> {
    match reading.frame {
        Some(asked) if asked != frame => bail!(
            "{}: holds {frame} images (grey, as IDX and .npz files are), not the {asked} of --input; --input \
             makes pictures (a folder of images) and CSV rows into its frame, not these files",
            path.display()
        ),
        _ => Ok(()),
    }
}

/// A data set's test part, for evaluating a trained model.
#[derive(Debug)]
pub struct TestData {
    pub test: Examples,
    pub frame: Frame,
    /// The classes the data names itself (a picture folder's class folders).
    pub class_names: Option<Vec<String>>,
}

/// Loads and checks only the test part of the data set at `path` (a directory of IDX files, where the
/// training files need not exist, or an `.npz` file), with the classes of `selection` (relabelled as
/// the run was trained) when it names some; every label must then be below `num_classes`.
pub fn load_test(path: &Path, selection: &Selection, num_classes: usize) -> Result<TestData> {
    load_test_as(path, selection, num_classes, &Reading::default())
}

/// [`load_test`] read as `reading` says (a picture folder or CSV into the run's frame).
pub fn load_test_as(path: &Path, selection: &Selection, num_classes: usize, reading: &Reading) -> Result<TestData> {
    ensure!(num_classes >= 2, "a classifier needs at least 2 classes, got {num_classes}");
    if path.is_dir() && crate::pictures::looks_like_pictures(path) {
        return picture_test_data(path, selection, num_classes, reading);
    }
    if path.is_file() && crate::kaggle_csv::is_csv(path) {
        let bound = if selection.labels.is_some() { LabelBound::AnyByte } else { LabelBound::Classes(num_classes) };
        let data = csv_data_set(path, bound, reading)?;
        let test = match &selection.labels {
            Some(labels) => select_labels(&data.train, labels)?,
            None => data.train,
        };
        return Ok(TestData { test, frame: data.frame, class_names: None });
    }
    let bound = if selection.labels.is_some() { LabelBound::AnyByte } else { LabelBound::Classes(num_classes) };
    let part = read_splits(path, &[Split::Test], bound)?.into_iter().next();
    let Some(part) = part else { bail!("{}: no test part", path.display()) };
    let test = match &selection.labels {
        Some(labels) => {
            let kept = select_labels(&part.examples, labels)?;
            ensure!(!kept.is_empty(), "{}: no test images with labels {labels:?}", part.labels_origin);
            kept
        }
        None => part.examples,
    };
    Ok(TestData { test, frame: Frame::grey(part.rows as i64, part.cols as i64), class_names: None })
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
pub struct TrainingData {
    pub train: Examples,
    pub valid: Examples,
    pub test: Examples,
    pub frame: Frame,
    pub num_classes: usize,
    pub class_names: Vec<String>,
    /// Lines the header prints about how the data was read.
    pub notes: Vec<String>,
    /// How pictures were fitted into the frame (recorded in config.json); `None` for IDX and `.npz`.
    pub fit: Option<crate::preprocess::Framing>,
}

impl TrainingData {
    /// The same data with the examples on `device`.
    pub fn to_device(&self, device: tch::Device) -> TrainingData {
        TrainingData {
            train: self.train.to_device(device),
            valid: self.valid.to_device(device),
            test: self.test.to_device(device),
            class_names: self.class_names.clone(),
            notes: self.notes.clone(),
            ..*self
        }
    }
}

/// Loads the data set at `path` (a directory of IDX files or an `.npz` file) and applies `selection`:
/// keep the chosen labels (relabelled), then the first `limit` training images, then split off the last
/// `validation_split` for validation. Without `labels`, every label must be below `num_classes`.
pub fn load_training_data(
    path: &Path,
    selection: &Selection,
    num_classes: usize,
    class_names: &ClassNames,
    validation_split_fraction: f64,
) -> Result<TrainingData> {
    load_training_data_as(path, selection, num_classes, class_names, validation_split_fraction, &Reading::default())
}

/// How a data set is read into frames: the frame asked for (`--input`, `None`: the data's own), how
/// pictures are fitted into it (`--fit`), and whether undecodable pictures are skipped (`--skip-bad`).
/// IDX and `.npz` data sets are used at their own size; pictures and CSV rows are made into the frame.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Reading {
    pub frame: Option<Frame>,
    pub fit: crate::preprocess::Framing,
    pub skip_bad: bool,
}

/// [`load_training_data`] read as `reading` says.
pub fn load_training_data_as(
    path: &Path,
    selection: &Selection,
    num_classes: usize,
    class_names: &ClassNames,
    validation_split_fraction: f64,
    reading: &Reading,
) -> Result<TrainingData> {
    let (data, num_classes, names) = match &selection.labels {
        None => {
            ensure!(num_classes >= 2, "a classifier needs at least 2 classes, got {num_classes}");
            let data = load(path, LabelBound::Classes(num_classes), reading)?;
            let num_classes = data.class_names.as_ref().map_or(num_classes, Vec::len);
            let names = match (&data.class_names, class_names) {
                (Some(own), ClassNames::Auto) => own.clone(),
                _ => class_names.names(path, num_classes)?,
            };
            (data, num_classes, names)
        }
        Some(labels) => load_selected_labels(path, labels, class_names, reading)?,
    };
    let train_all = first_images(data.train, selection.limit)?;
    let (train, valid) = match data.valid {
        Some(valid) => (train_all, valid),
        None => {
            let (train_len, valid_len) = validation_split(train_all.len() as usize, validation_split_fraction)?;
            (train_all.slice(0, train_len as i64), train_all.slice(train_len as i64, valid_len as i64))
        }
    };
    let test = if data.test_is_validation { valid.slice(0, valid.len()) } else { data.test };
    Ok(TrainingData {
        train,
        valid,
        test,
        frame: data.frame,
        num_classes,
        class_names: names,
        notes: data.notes,
        fit: data.fit,
    })
}

/// The data set at `path` cut to the classes `labels` (`--labels`), relabelled 0..k in that order,
/// with the number of classes and their names.
fn load_selected_labels(
    path: &Path,
    labels: &[u8],
    class_names: &ClassNames,
    reading: &Reading,
) -> Result<(DataSet, usize, Vec<String>)> {
    ensure!(labels.len() >= 2, "--labels needs at least 2 classes, got {labels:?}");
    let mut sorted = labels.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    ensure!(sorted.len() == labels.len(), "--labels {labels:?} names a class twice");
    // Labels outside the selection are dropped, so any byte value is acceptable here.
    let data = load(path, LabelBound::AnyByte, reading)?;
    let names = match class_names {
        ClassNames::Listed(_) => class_names.names(path, labels.len())?,
        _ => {
            let source = (*sorted.last().unwrap_or(&0) as usize + 1).max(10);
            let names = class_names.names(path, source).or_else(|_| ClassNames::Digits.names(path, source))?;
            labels.iter().map(|&l| names[l as usize].clone()).collect()
        }
    };
    let keep = |examples: &Examples, what: &str| -> Result<Examples> {
        let kept = select_labels(examples, labels)?;
        ensure!(!kept.is_empty(), "{}: no {what} images with labels {labels:?}", path.display());
        Ok(kept)
    };
    let train = keep(&data.train, "training")?;
    check_every_class_trains(&train, labels, path)?;
    let test = keep(&data.test, "test")?;
    Ok((DataSet { train, test, ..data }, labels.len(), names))
}

/// A class without a single training image would be an output unit nothing ever trains.
fn check_every_class_trains(train: &Examples, labels: &[u8], path: &Path) -> Result<()> {
    let counts = Vec::<i64>::try_from(&train.labels.f_bincount::<Tensor>(None, labels.len() as i64)?)?;
    if let Some(empty) = counts.iter().position(|&count| count == 0) {
        bail!(
            "--labels {}: label {} has no training images in {}",
            labels.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(","),
            labels[empty],
            path.display()
        );
    }
    Ok(())
}

/// The first `limit` training images (`--limit`), or all of them without one.
fn first_images(train: Examples, limit: Option<usize>) -> Result<Examples> {
    let Some(limit) = limit else { return Ok(train) };
    ensure!(limit > 0, "--limit must be at least 1");
    ensure!(limit as i64 <= train.len(), "--limit {limit} is more than the {} training images available", train.len());
    Ok(train.slice(0, limit as i64))
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
    ensure!(
        fraction > 0.0 && fraction < 1.0,
        "--validation-split must be between 0 and 1 (exclusive), got {}",
        crate::wording::number(fraction)
    );
    // Keras: split_at = floor(n * (1 - validation_split)).
    let train_len = (n as f64 * (1.0 - fraction)).floor() as usize;
    ensure!(
        train_len > 0 && train_len < n,
        "--validation-split {} of {n} training examples leaves {train_len} for training and {} for \
         validation; both need at least one",
        crate::wording::number(fraction),
        n - train_len
    );
    Ok((train_len, n - train_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_float_pixels_divided_by_255() {
        let pixels = Tensor::arange(256, (Kind::Uint8, tch::Device::Cpu));
        let inputs = to_inputs(&pixels);
        assert_eq!(inputs.kind(), Kind::Float);
        let expected: Vec<f32> = (0..256).map(|p| p as f32 / 255.0).collect();
        assert_eq!(Vec::<f32>::try_from(&inputs).unwrap(), expected);
    }

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

    /// An environment of `pairs` for [`DataSearch::from_vars`].
    fn vars(pairs: &[(&str, &Path)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let map: Vec<(String, OsString)> =
            pairs.iter().map(|(name, value)| (name.to_string(), value.as_os_str().to_owned())).collect();
        move |name| map.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn default_data_is_looked_up_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let (work, home) = (tmp.path().join("work"), tmp.path().join("home"));
        let in_work = work.join("data/mnist");
        let per_user = home.join(".local/share/mnist-tch/mnist");
        let search = DataSearch::from_vars(&work, vars(&[("HOME", &home)]));
        assert_eq!(search.per_user.as_deref(), Some(per_user.as_path()));

        // Nothing installed: one message naming both places and Fashion-MNIST, no fallback.
        let err = resolve_data_path(None, &search).unwrap_err().to_string();
        for fragment in [in_work.to_str().unwrap(), per_user.to_str().unwrap(), "scripts/setup.sh installs it too"] {
            assert!(err.contains(fragment), "missing {fragment:?} in: {err}");
        }
        // Fashion-MNIST is suggested where it is: here, the per-user copy (from any directory).
        let fashion = home.join(".local/share/mnist-tch/fashion-mnist");
        std::fs::create_dir_all(&fashion).unwrap();
        let err = resolve_data_path(None, &search).unwrap_err().to_string();
        assert!(err.contains(&format!("--data {}", fashion.display())), "{err}");
        std::fs::remove_dir_all(&fashion).unwrap();
        // --data wins, whether or not it exists (loading reports a missing one).
        let flag = Path::new("/somewhere/else.npz");
        assert_eq!(resolve_data_path(Some(flag), &search).unwrap(), flag);

        std::fs::create_dir_all(&per_user).unwrap();
        assert_eq!(resolve_data_path(None, &search).unwrap(), per_user);
        std::fs::create_dir_all(&in_work).unwrap();
        assert_eq!(resolve_data_path(None, &search).unwrap(), in_work);

        // $MNIST_TCH_DATA comes before both; set but missing is an error, set but empty is unset.
        let chosen = tmp.path().join("chosen");
        std::fs::create_dir(&chosen).unwrap();
        let with_env = DataSearch::from_vars(&work, vars(&[("HOME", &home), (DATA_ENV, &chosen)]));
        assert_eq!(resolve_data_path(None, &with_env).unwrap(), chosen);
        assert_eq!(resolve_data_path(Some(flag), &with_env).unwrap(), flag);
        let missing = tmp.path().join("missing");
        let err = resolve_data_path(None, &DataSearch::from_vars(&work, vars(&[(DATA_ENV, &missing)])))
            .unwrap_err()
            .to_string();
        assert!(err.contains("$MNIST_TCH_DATA") && err.contains("does not exist"), "{err}");
        let empty = DataSearch::from_vars(&work, vars(&[("HOME", &home), (DATA_ENV, Path::new(""))]));
        assert_eq!(resolve_data_path(None, &empty).unwrap(), in_work);
    }

    #[test]
    fn per_user_directory_follows_xdg() {
        let home = Path::new("/home/u");
        assert_eq!(user_data_dir(vars(&[("HOME", home)])), Some(PathBuf::from("/home/u/.local/share/mnist-tch")));
        let xdg = vars(&[("HOME", home), ("XDG_DATA_HOME", Path::new("/data/xdg"))]);
        assert_eq!(user_data_dir(xdg), Some(PathBuf::from("/data/xdg/mnist-tch")));
        // A relative XDG_DATA_HOME is invalid by the spec and ignored.
        let relative = vars(&[("HOME", home), ("XDG_DATA_HOME", Path::new("rel"))]);
        assert_eq!(user_data_dir(relative), Some(PathBuf::from("/home/u/.local/share/mnist-tch")));
        assert_eq!(user_data_dir(vars(&[])), None);
        // Without a home, only the working directory is searched.
        let search = DataSearch::from_vars(Path::new("/w"), vars(&[]));
        let err = resolve_data_path(None, &search).unwrap_err().to_string();
        assert!(err.contains("not in /w/data/mnist (--data"), "{err}");
    }

    #[test]
    fn labels_are_checked_against_the_images_and_the_classes() {
        let part = |labels: &[i64]| Part {
            examples: Examples {
                images: Tensor::zeros([3, 4], (Kind::Uint8, tch::Device::Cpu)),
                labels: Tensor::from_slice(labels),
            },
            rows: 2,
            cols: 2,
            images_origin: "x".into(),
            labels_origin: "y".into(),
        };
        assert!(check_part(&part(&[0, 1, 9]), LabelBound::Classes(10)).is_ok());
        let err = check_part(&part(&[0, 1]), LabelBound::Classes(10)).unwrap_err().to_string();
        assert_eq!(err, "x holds 3 images but y holds 2 labels");
        let err = check_part(&part(&[0, 10, 3]), LabelBound::Classes(10)).unwrap_err().to_string();
        assert!(err.starts_with("y: label 10 at index 1 is out of range: the model has 10 classes"), "{err}");
        let err = check_part(&part(&[0, 1, -2]), LabelBound::AnyByte).unwrap_err().to_string();
        assert!(err.contains("label -2 at index 2"), "{err}");
        assert!(check_part(&part(&[0, 255, 3]), LabelBound::AnyByte).is_ok());
    }
}
