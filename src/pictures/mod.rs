//! Data sets of the user's own pictures: a folder of class folders, read the way torchvision's
//! `ImageFolder` and Keras's `image_dataset_from_directory` read one (class index = the class folders'
//! names in sorted order, the names becoming the run's class names), or one with `train/` and `test/`
//! (and `val/` or `validation/`) trees of the same classes.
//!
//! Each picture is decoded once, in parallel over the cores, and made into the frame ([`prepare`]); the
//! frames' bytes and labels go into a cache ([`cache`]) keyed by what they were made from, so later runs
//! read the bytes instead of decoding again. In memory a data set is its frames' bytes, like IDX data.
//! Nothing is ever written into the picture folder.

pub mod cache;
pub mod prepare;

use crate::frame::Frame;
use crate::preprocess::Framing;
use anyhow::{Result, bail, ensure};
use std::path::{Path, PathBuf};

/// The extensions read as pictures (what the `image` crate decodes here), compared without case.
pub const PICTURE_EXTENSIONS: [&str; 13] =
    ["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp", "pnm", "pbm", "pgm", "ppm", "pam"];

/// Whether `path` names a picture by its extension.
pub fn is_picture(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| PICTURE_EXTENSIONS.iter().any(|known| known.eq_ignore_ascii_case(e)))
}

fn is_hidden(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

/// The sub-directories of `dir` that are not hidden, sorted by name (byte order, as Python's `sorted`).
fn subfolders(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|err| anyhow::anyhow!("{}: cannot be read: {}", dir.display(), crate::error_text::io_reason(&err)))?;
    let mut dirs: Vec<PathBuf> =
        entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir() && !is_hidden(p)).collect();
    dirs.sort();
    Ok(dirs)
}

/// The trees of a picture data set.
pub struct Layout {
    pub train: PathBuf,
    pub test: Option<PathBuf>,
    pub valid: Option<PathBuf>,
}

const SPLIT_NAMES: [&str; 4] = ["train", "test", "val", "validation"];

/// Whether `dir` is a picture data set rather than IDX files: a directory with sub-directories and no
/// IDX file.
pub fn looks_like_pictures(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    let mut has_folder = false;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_lowercase();
        if path.is_file() && name.contains("idx") {
            return false;
        }
        has_folder |= path.is_dir() && !is_hidden(&path);
    }
    has_folder
}

/// `DIR/train` (+ `test`, `val`/`validation`) when `train` is there and every other folder is one of
/// those; otherwise `DIR` holds the classes itself.
pub fn layout(dir: &Path) -> Result<Layout> {
    let folders = subfolders(dir)?;
    let name = |p: &PathBuf| p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let split = folders.iter().any(|p| name(p) == "train") && folders.iter().all(|p| SPLIT_NAMES.contains(&&*name(p)));
    if !split {
        return Ok(Layout { train: dir.to_path_buf(), test: None, valid: None });
    }
    let find = |wanted: &[&str]| folders.iter().find(|p| wanted.contains(&&*name(p))).cloned();
    Ok(Layout { train: dir.join("train"), test: find(&["test"]), valid: find(&["val", "validation"]) })
}

/// One tree's pictures: every file with its class index, and what was skipped.
pub struct Listing {
    pub classes: Vec<String>,
    pub files: Vec<(PathBuf, i64)>,
    /// Hidden files and files that are not pictures by their extension.
    pub skipped_hidden: usize,
    pub skipped_other: usize,
}

/// The class folders of `tree` and their picture files (walked recursively, sorted), checked: at least
/// two classes, each with a picture.
pub fn list(tree: &Path) -> Result<Listing> {
    let classes = subfolders(tree)?;
    ensure!(
        !classes.is_empty(),
        "{}: no class folders: a picture data set is a folder of class folders (DIR/cat/*.png, DIR/dog/*.png) \
         or of train/ and test/ trees of them",
        tree.display()
    );
    let names: Vec<String> =
        classes.iter().map(|p| p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default()).collect();
    ensure!(
        classes.len() >= 2,
        "{}: one class folder ({}): a classifier needs at least 2 classes",
        tree.display(),
        names[0]
    );
    let mut listing = Listing { classes: names, files: Vec::new(), skipped_hidden: 0, skipped_other: 0 };
    for (index, class) in classes.iter().enumerate() {
        let before = listing.files.len();
        walk(class, index as i64, &mut listing)?;
        if listing.files.len() == before {
            let idx_inside = std::fs::read_dir(class).is_ok_and(|mut entries| {
                entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().contains("idx")))
            });
            if idx_inside {
                bail!(
                    "{}: holds MNIST-format files, not class folders of pictures; --data {}",
                    tree.display(),
                    class.display()
                );
            }
            bail!(
                "{}: no pictures in this class folder ({} files by extension)",
                class.display(),
                PICTURE_EXTENSIONS.join(", ")
            );
        }
    }
    Ok(listing)
}

fn walk(dir: &Path, label: i64, listing: &mut Listing) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|err| anyhow::anyhow!("{}: cannot be read: {}", dir.display(), crate::error_text::io_reason(&err)))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if is_hidden(&path) {
            listing.skipped_hidden += 1;
        } else if path.is_dir() {
            walk(&path, label, listing)?;
        } else if is_picture(&path) {
            listing.files.push((path, label));
        } else {
            listing.skipped_other += 1;
        }
    }
    Ok(())
}

/// One tree decoded into frames.
pub struct Decoded {
    pub classes: Vec<String>,
    /// `count * frame.values()` bytes.
    pub bytes: Vec<u8>,
    pub labels: Vec<i64>,
    /// Pictures that would not decode, skipped under `skip_bad`.
    pub bad: Vec<PathBuf>,
    pub skipped_hidden: usize,
    pub skipped_other: usize,
    /// Read from the cache instead of decoded.
    pub from_cache: bool,
}

/// The frames' bytes, labels and undecodable pictures of a tree.
type Frames = (Vec<u8>, Vec<i64>, Vec<PathBuf>);

impl Decoded {
    fn of(listing: Listing, (bytes, labels, bad): Frames, from_cache: bool) -> Decoded {
        Decoded {
            classes: listing.classes,
            bytes,
            labels,
            bad,
            skipped_hidden: listing.skipped_hidden,
            skipped_other: listing.skipped_other,
            from_cache,
        }
    }
}

/// How a tree is read: the frame, the fit, whether undecodable pictures are skipped, the class names
/// that choose `auto`'s framing.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    pub frame: Frame,
    pub fit: Framing,
    pub skip_bad: bool,
    pub class_names: &'a [String],
}

/// The pictures of `tree` in `options.frame`: from the cache when it holds them as they are now,
/// decoded (and cached) otherwise.
pub fn read_tree(tree: &Path, options: &Options) -> Result<Decoded> {
    let listing = list(tree)?;
    let key = cache::key(tree, &listing, options)?;
    let cache_file = cache::file_for(&key);
    if let Some(path) = &cache_file
        && let Some((bytes, labels, bad)) = cache::read(path, &key, options.frame)
    {
        return Ok(Decoded::of(listing, (bytes, labels, bad), true));
    }
    let (bytes, labels, bad) = decode_all(&listing, options)?;
    if let Some(path) = &cache_file
        && let Err(err) = cache::write(path, &key, options.frame, &bytes, &labels, &bad)
    {
        eprintln!("note: the decoded pictures could not be cached in {}: {err:#}", path.display());
    }
    Ok(Decoded::of(listing, (bytes, labels, bad), false))
}

/// Every picture of `listing` decoded and prepared, in parallel over the cores, with a progress bar on
/// a terminal. The first one that fails stops it, named, unless `skip_bad`.
fn decode_all(listing: &Listing, options: &Options) -> Result<Frames> {
    let values = options.frame.values().unwrap_or(0) as usize;
    let files = &listing.files;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(files.len().max(1));
    let chunk = files.len().div_ceil(threads).max(1);
    let bar = decoding_bar(files.len());
    let results: Vec<Vec<Result<Vec<u8>, String>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                let bar = bar.clone();
                scope.spawn(move || {
                    part.iter()
                        .map(|(path, _)| {
                            let prepared = read_picture(path, options);
                            bar.inc(1);
                            prepared
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| vec![Err("the decoder panicked".into())])).collect()
    });
    bar.finish_and_clear();
    let mut bytes = Vec::with_capacity(files.len() * values);
    let (mut labels, mut bad) = (Vec::with_capacity(files.len()), Vec::new());
    for ((path, label), result) in files.iter().zip(results.into_iter().flatten()) {
        match result {
            Ok(frame) => {
                bytes.extend_from_slice(&frame);
                labels.push(*label);
            }
            Err(_) if options.skip_bad => bad.push(path.clone()),
            Err(err) => bail!("{err} (--skip-bad skips pictures that will not decode)"),
        }
    }
    ensure!(!labels.is_empty(), "no picture of {} could be read", files.len());
    Ok((bytes, labels, bad))
}

/// One picture file decoded and prepared, or its error naming it.
fn read_picture(path: &Path, options: &Options) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path)
        .map_err(|err| format!("{}: cannot open: {}", path.display(), crate::error_text::io_reason(&err)))?;
    let picture = prepare::decode(&bytes).map_err(|err| format!("{}: {err:#}", path.display()))?;
    prepare::prepare(&picture, options.frame, options.fit, options.class_names)
        .map(|prepared| prepared.bytes)
        .map_err(|err| format!("{}: {err:#}", path.display()))
}

fn decoding_bar(total: usize) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template("Decoding pictures {bar:30} {pos}/{len} {elapsed}") {
        bar.set_style(style);
    }
    bar
}

/// A picture data set read into frames: its trees, the classes (the class folders' names) and what the
/// header says about how it was read.
pub struct PictureSet {
    pub classes: Vec<String>,
    pub train: Decoded,
    pub test: Option<Decoded>,
    pub valid: Option<Decoded>,
    pub notes: Vec<String>,
}

/// The trees of the picture data set `dir` in `frame`, fitted as `fit` says; the test and validation
/// trees must hold the training tree's classes.
pub fn load_set(dir: &Path, frame: Frame, fit: Framing, skip_bad: bool) -> Result<PictureSet> {
    prepare::check_fit(frame, fit)?;
    let layout = layout(dir)?;
    let options = Options { frame, fit, skip_bad, class_names: &[] };
    let started = std::time::Instant::now();
    let train = read_tree(&layout.train, &options)?;
    let read_other = |tree: &Option<PathBuf>| -> Result<Option<Decoded>> {
        let Some(tree) = tree else { return Ok(None) };
        let decoded = read_tree(tree, &options)?;
        ensure!(
            decoded.classes == train.classes,
            "{}: its class folders ({}) are not the training tree's ({})",
            tree.display(),
            decoded.classes.join(", "),
            train.classes.join(", ")
        );
        Ok(Some(decoded))
    };
    let (test, valid) = (read_other(&layout.test)?, read_other(&layout.valid)?);
    let trees: Vec<&Decoded> = std::iter::once(&train).chain(test.iter()).chain(valid.iter()).collect();
    let mut notes = vec![reading_note(&trees, frame, fit, started.elapsed().as_secs_f64())];
    notes.extend(skipped_note(&trees));
    if test.is_none() {
        notes.push(format!(
            "No test set: {} has no test/ tree, so \"Test accuracy\" is computed on the validation part",
            dir.display()
        ));
    }
    Ok(PictureSet { classes: train.classes.clone(), train, test, valid, notes })
}

/// `Pictures: 70000 decoded in 5.1 s (cache: ~/.cache/mnist-tch), frame 1x28x28 grey, fit auto (...)`.
fn reading_note(trees: &[&Decoded], frame: Frame, fit: Framing, seconds: f64) -> String {
    let count: usize = trees.iter().map(|t| t.labels.len()).sum();
    let how = if trees.iter().all(|t| t.from_cache) {
        "read from the cache".to_string()
    } else {
        format!("decoded in {seconds:.1} s")
    };
    let colour = if frame.channels == 3 {
        "RGB: grey pictures repeated in each channel"
    } else {
        "grey: colour pictures converted to grey"
    };
    let fit_text = match fit {
        Framing::Auto if frame.channels == 3 => "auto (a plain resize)".to_string(),
        Framing::Auto => "auto (a picture of the frame's size as it is, others cropped and centred as MNIST)".into(),
        Framing::AsIs => "none (a plain resize)".into(),
        other => format!("{other} (cropped and centred as MNIST)"),
    };
    let cache = cache::dir().map_or(String::new(), |d| format!(", cache in {}", d.display()));
    format!("Pictures: {count} {how}{cache}; frame {frame} ({colour}); fit {fit_text}")
}

/// What was skipped: hidden files, files that are not pictures, pictures that would not decode.
fn skipped_note(trees: &[&Decoded]) -> Option<String> {
    let hidden: usize = trees.iter().map(|t| t.skipped_hidden).sum();
    let other: usize = trees.iter().map(|t| t.skipped_other).sum();
    let bad: Vec<&PathBuf> = trees.iter().flat_map(|t| &t.bad).collect();
    if hidden + other + bad.len() == 0 {
        return None;
    }
    let mut text = format!("Skipped: {hidden} hidden, {other} not pictures by their extension");
    if !bad.is_empty() {
        text += &format!(", {} that would not decode (--skip-bad; the first: {})", bad.len(), bad[0].display());
    }
    Some(text)
}
