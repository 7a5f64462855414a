//! `mnist-tch predict`: classify picture files (any size, colour and format), directories of them, or
//! the images of an IDX file, with a run directory or an exported TorchScript file.

use crate::data;
use crate::device::DeviceSpec;
use crate::files::write_atomically;
use crate::frame::Frame;
use crate::inference::{Predictor, prediction_json};
use crate::preprocess::{self, Framing, Invert};
use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Tensor;

/// File extensions taken from a directory: every format the picture reader decodes.
const IMAGE_EXTENSIONS: [&str; 13] =
    ["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp", "pgm", "pnm", "ppm", "pbm", "pam"];

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A run directory, or a TorchScript file written by `mnist-tch export` (with the FILE.json it writes
    /// beside it: model.pt.json, or model.json from earlier versions).
    #[arg(long, value_name = "RUN_DIR|model.pt")]
    pub model: PathBuf,

    /// Picture files (PNG, JPEG, BMP, GIF, TIFF, WebP, PNM/PPM/PGM/PBM/PAM; any size and colour,
    /// transparency counted as paper) or directories of them (what a directory holds besides pictures is
    /// skipped and named on stderr).
    #[arg(value_name = "IMAGE")]
    pub images: Vec<PathBuf>,

    /// Also classify every image of this IDX images file (raw or .gz), used as is (already 28x28,
    /// white on black).
    #[arg(long, value_name = "FILE")]
    pub idx: Option<PathBuf>,

    /// How many of the most likely classes to print per image.
    #[arg(long, value_name = "K", allow_negative_numbers = true, default_value_t = 3, value_parser = super::flags::at_least_one)]
    pub top_k: u64,

    /// Whether to invert pictures to light ink on dark, as the data sets are.
    #[arg(long, value_parser = super::choices::invert(), default_value_t = Invert::Auto)]
    pub invert: Invert,

    /// How a picture's content is fitted into the model's frame.
    #[arg(long, value_parser = super::choices::fit(), default_value_t = Framing::Auto)]
    pub fit: Framing,

    /// Answer "unknown" (label null in --json, the top classes still listed) when the most likely class's
    /// probability is under P; 0 (the default) always answers the most likely class, as Keras's predict
    /// does. Content too small to be a digit is answered unknown whatever P is.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = crate::inference::parse_min_confidence)]
    pub min_confidence: f32,

    /// Save what the network saw (the preprocessed image) as a PNG; with several pictures, FILE-1.png,
    /// FILE-2.png, ... Missing directories are created; a run directory's own files are never replaced.
    #[arg(long, value_name = "FILE.png")]
    pub show_input: Option<PathBuf>,

    /// Write, for each picture, DIR/NAME.explain.png: the picture as the network saw it and, beside it,
    /// where the model looked (the ViT: its class token's attention rolled out over the blocks; the MLP
    /// and the CNN: input-gradient saliency). A run directory only.
    #[arg(long, value_name = "DIR")]
    pub explain: Option<PathBuf>,

    /// Replace existing --show-input and --explain files instead of refusing.
    #[arg(long)]
    pub overwrite: bool,

    /// One JSON object per input instead of text; an input that failed has an "error" instead of
    /// "predictions".
    #[arg(long)]
    pub json: bool,

    /// auto, cpu, cuda or cuda:N.
    #[arg(long, value_name = "DEVICE", default_value_t = DeviceSpec::Auto)]
    pub device: DeviceSpec,

    /// Write the answers as Kaggle's submission file instead of printing them: a header ImageId,Label,
    /// then one line per input in order, ImageId from 1 (for a Kaggle test.csv, its row number), Label
    /// the most likely class's name. Never over a run directory's files, nor over an existing file
    /// without --overwrite.
    #[arg(long, value_name = "FILE.csv")]
    pub out: Option<PathBuf>,
}

/// One thing to classify.
struct Input {
    name: String,
    /// `[rows * cols]` in [0, 1], or the error that stopped it.
    pixels: Result<Vec<f32>>,
    inverted: bool,
    /// How it was placed in the frame (IDX images: as they are).
    framing: Framing,
    /// Why its prediction may mean little.
    warning: Option<String>,
}

pub fn run(args: PredictArgs) -> Result<()> {
    if args.images.is_empty() && args.idx.is_none() {
        bail!("nothing to predict: give image files or directories, or --idx FILE");
    }
    let device = args.device.resolve()?;
    super::note_if_being_trained(&args.model);
    let predictor = Predictor::load(&args.model, device)?;
    if let Some(out) = &args.out {
        crate::destination::check_files(&[out.as_path()], "--out", args.overwrite)?;
    }
    let started = Instant::now();
    let (csv_files, _): (Vec<&PathBuf>, Vec<&PathBuf>) =
        args.images.iter().partition(|p| p.is_file() && crate::kaggle_csv::is_csv(p));
    let pictures: Vec<PathBuf> = args.images.iter().filter(|p| !csv_files.contains(p)).cloned().collect();
    let mut inputs = if pictures.is_empty() { Vec::new() } else { load_pictures(&args, &pictures, &predictor)? };
    for file in csv_files {
        inputs.extend(read_csv_inputs(file, predictor.frame)?);
    }
    if let Some(idx_path) = &args.idx {
        inputs.extend(read_idx_inputs(idx_path, predictor.frame)?);
    }
    // One input that failed is that input's error, on its own line like any other failure (with --json,
    // it is in the JSON like any other input).
    if let (false, [Input { pixels: Err(_), .. }]) = (args.json, inputs.as_slice())
        && let Some(Input { pixels: Err(err), .. }) = inputs.pop()
    {
        return Err(err);
    }
    let best = classify(&predictor, &inputs, args.top_k)?;
    if let Some(dir) = &args.explain {
        explain(dir, args.overwrite, &predictor, &inputs)?;
    }
    if let Some(out) = &args.out {
        return write_submission(out, &predictor.class_names, &inputs, &best);
    }
    let failures = report(&args, &predictor.class_names, &inputs, &best)?;
    summarise(&args, inputs.len(), failures, started)
}

/// The picture files and directories named on the command line, each decoded and turned into the
/// model's input as the data set was made (saved as --show-input when asked); an input that fails keeps its error.
fn load_pictures(args: &PredictArgs, images: &[PathBuf], predictor: &Predictor) -> Result<Vec<Input>> {
    let (rows, cols) = (predictor.frame.rows, predictor.frame.cols);
    let (files, skipped) = expand(images);
    for note in skipped {
        eprintln!("note: {note}");
    }
    let several = files.len() > 1;
    if let Some(show) = &args.show_input {
        let targets: Vec<PathBuf> = (1..=files.len()).map(|n| numbered(show, n, several)).collect();
        let targets: Vec<&Path> = targets.iter().map(PathBuf::as_path).collect();
        crate::destination::check_files(&targets, "--show-input", args.overwrite)?;
    }
    let mut inputs = Vec::new();
    for file in files {
        let path = match file {
            Ok(path) => path,
            Err((dir, err)) => {
                inputs.push(Input::failed(dir.display().to_string(), err));
                continue;
            }
        };
        if follows_the_run(predictor) {
            let prepared = prepare_like_the_run(&path, args, predictor);
            let input = show_input(args, &inputs, several, prepared)?;
            inputs.push(input);
            continue;
        }
        // load_gray names the file in its errors; preprocessing errors get it here.
        let input = preprocess::load_gray(&path).and_then(|image| {
            preprocess::to_model_input(&image, rows as u32, cols as u32, &predictor.class_names, args.fit, args.invert)
                .with_context(|| path.display().to_string())
        });
        let name = path.display().to_string();
        match input {
            Ok(p) => {
                if let Some(show) = &args.show_input {
                    let target = numbered(show, inputs.len() + 1, several);
                    write_atomically(&target, |tmp| Ok(p.image.save(tmp)?))?;
                }
                inputs.push(Input {
                    name,
                    pixels: Ok(p.pixels),
                    inverted: p.inverted,
                    framing: p.framing,
                    warning: p.warning,
                });
            }
            Err(err) => inputs.push(Input::failed(name, err)),
        }
    }
    Ok(inputs)
}

/// Whether pictures are made into the model's frame the way its run read its training pictures: a run
/// trained on pictures (it records its --fit) or a colour frame. Runs trained on IDX data keep the
/// MNIST-style preparation of [`preprocess::to_model_input`] with --fit and --invert.
fn follows_the_run(predictor: &Predictor) -> bool {
    predictor.fit.is_some() || predictor.frame.channels != 1
}

/// A picture file made into the frame as the run's training pictures were ([`crate::pictures::prepare`]):
/// the run's fit, or --fit when given.
fn prepare_like_the_run(
    path: &Path,
    args: &PredictArgs,
    predictor: &Predictor,
) -> (Input, Option<image::DynamicImage>) {
    let name = path.display().to_string();
    let fit = if args.fit == Framing::Auto { predictor.fit.unwrap_or(Framing::Auto) } else { args.fit };
    let prepared = std::fs::read(path)
        .map_err(|err| anyhow::anyhow!("{name}: cannot open: {}", crate::error_text::io_reason(&err)))
        .and_then(|bytes| {
            let picture = crate::pictures::prepare::decode(&bytes).with_context(|| name.clone())?;
            crate::pictures::prepare::prepare(&picture, predictor.frame, fit, &predictor.class_names)
                .with_context(|| name.clone())
        });
    match prepared {
        Ok(p) => {
            let shown = p.image(predictor.frame);
            let input = Input {
                name,
                pixels: Ok(p.unit_pixels()),
                inverted: p.inverted,
                framing: p.framing,
                warning: p.warning,
            };
            (input, shown)
        }
        Err(err) => (Input::failed(name, err), None),
    }
}

/// Saves a prepared picture as --show-input asks, and hands its input on.
fn show_input(
    args: &PredictArgs,
    inputs: &[Input],
    several: bool,
    (input, shown): (Input, Option<image::DynamicImage>),
) -> Result<Input> {
    if let (Some(show), Some(image)) = (&args.show_input, shown) {
        let target = numbered(show, inputs.len() + 1, several);
        write_atomically(&target, |tmp| Ok(image.save(tmp)?))?;
    }
    Ok(input)
}

/// Every row of a CSV file in Kaggle's layout (a label column, if any, is not used), as it is.
fn read_csv_inputs(path: &Path, frame: Frame) -> Result<Vec<Input>> {
    let csv = crate::kaggle_csv::read(path, Some(frame), false)?;
    let values = frame.values().unwrap_or(1).max(1) as usize;
    Ok(csv
        .bytes
        .chunks(values)
        .enumerate()
        .map(|(i, row)| Input {
            name: format!("{}#{}", path.display(), i + 1),
            pixels: Ok(row.iter().map(|&p| p as f32 / 255.0).collect()),
            inverted: false,
            framing: Framing::AsIs,
            warning: None,
        })
        .collect())
}

/// Kaggle's submission file: `ImageId,Label`, ImageId from 1, the most likely class's name. Every input
/// must have been predicted: the first that failed is the error, and nothing is written.
fn write_submission(out: &Path, class_names: &[String], inputs: &[Input], best: &[Vec<(i64, f32)>]) -> Result<()> {
    if let Some(Input { pixels: Err(err), .. }) = inputs.iter().find(|i| i.pixels.is_err()) {
        bail!("{err:#} (--out writes a submission only when every input is predicted)");
    }
    let mut text = String::from("ImageId,Label\n");
    for (id, answer) in best.iter().enumerate() {
        let class = answer.first().map_or(0, |&(class, _)| class) as usize;
        let name = class_names.get(class).cloned().unwrap_or_else(|| class.to_string());
        let name = if name.contains([',', '"']) { format!("\"{}\"", name.replace('"', "\"\"")) } else { name };
        text += &format!("{},{name}\n", id + 1);
    }
    crate::files::write_bytes_atomically(out, text.as_bytes())?;
    crate::say!("Wrote {} predictions to {} (ImageId,Label)", best.len(), out.display())?;
    Ok(())
}

/// Every image of an IDX images file, as it is (already the model's size, light on dark).
fn read_idx_inputs(idx_path: &Path, frame: Frame) -> Result<Vec<Input>> {
    let (header, pixels) = data::read_idx_images(idx_path)?;
    if Frame::grey(header.rows as i64, header.cols as i64) != frame {
        bail!(
            "{}: images are {}x{}, the model takes {}",
            idx_path.display(),
            header.rows,
            header.cols,
            frame.size_text()
        );
    }
    if pixels.is_empty() {
        bail!("{}: holds no images: nothing to predict", idx_path.display());
    }
    Ok(pixels
        .chunks(header.item_len())
        .enumerate()
        .map(|(i, image)| Input {
            name: format!("{}#{i}", idx_path.display()),
            pixels: Ok(image.iter().map(|&p| p as f32 / 255.0).collect()),
            inverted: false,
            framing: Framing::AsIs,
            warning: None,
        })
        .collect())
}

/// The top-k (class, probability) pairs of every input that prepared well, in order: all of them go
/// through the network in one batch.
fn classify(predictor: &Predictor, inputs: &[Input], top_k: u64) -> Result<Vec<Vec<(i64, f32)>>> {
    let flat: Vec<f32> = inputs.iter().filter_map(|i| i.pixels.as_ref().ok()).flatten().copied().collect();
    let good = inputs.iter().filter(|i| i.pixels.is_ok()).count();
    if good == 0 {
        return Ok(Vec::new());
    }
    let batch = Tensor::from_slice(&flat).f_view(predictor.frame.batch_shape(good as i64).as_slice())?;
    let probabilities = predictor.probabilities(&batch)?;
    crate::inference::top_k(&probabilities, top_k)
}

/// `--explain DIR`: a picture of where the model looked for every input that prepared well.
fn explain(dir: &Path, overwrite: bool, predictor: &Predictor, inputs: &[Input]) -> Result<()> {
    let Some(run) = predictor.run() else {
        bail!("--explain needs a run directory as --model, not an exported file (it reads the model's layers)");
    };
    if predictor.frame.channels != 1 {
        bail!("--explain draws grey frames; this model takes {} colour pictures", predictor.frame);
    }
    let good: Vec<&Input> = inputs.iter().filter(|i| i.pixels.is_ok()).collect();
    let targets: Vec<PathBuf> = good.iter().map(|i| dir.join(explain_name(&i.name))).collect();
    crate::destination::check_files(&targets.iter().map(PathBuf::as_path).collect::<Vec<_>>(), "--explain", overwrite)?;
    let (rows, cols) = (predictor.frame.rows, predictor.frame.cols);
    let flat: Vec<f32> = good.iter().filter_map(|i| i.pixels.as_ref().ok()).flatten().copied().collect();
    if good.is_empty() {
        return Ok(());
    }
    let maps = crate::explain::maps(run, &Tensor::from_slice(&flat).f_view([good.len() as i64, rows, cols])?)?;
    let maps = Vec::<f32>::try_from(&maps.reshape(-1))?;
    let size = (rows * cols) as usize;
    for (n, (input, target)) in good.iter().zip(&targets).enumerate() {
        let pixels = input.pixels.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        crate::explain::write_png(target, pixels, &maps[n * size..(n + 1) * size], rows as u32, cols as u32)?;
    }
    eprintln!("Wrote {} to {}", counted(good.len(), "explanation"), dir.display());
    Ok(())
}

/// `digit.png` → `digit.explain.png`; the 4th image of an IDX file `t10k-images-idx3-ubyte#3` →
/// `t10k-images-idx3-ubyte-3.explain.png`.
fn explain_name(input: &str) -> String {
    let name = Path::new(input).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = match name.rsplit_once('#') {
        Some((file, index)) => format!("{file}-{index}"),
        None => Path::new(&name).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or(name),
    };
    format!("{stem}.explain.png")
}

/// Prints each input's answer (or its error), as text or one JSON object per input; the number that failed.
fn report(args: &PredictArgs, class_names: &[String], inputs: &[Input], best: &[Vec<(i64, f32)>]) -> Result<usize> {
    let mut failures = 0;
    let mut answers = best.iter();
    for input in inputs {
        let best = match &input.pixels {
            Err(err) => {
                failures += 1;
                if args.json {
                    crate::say!("{}", json!({"input": input.name, "error": crate::error_text::one_line(err)}))?;
                } else {
                    eprintln!("error: {}", crate::error_text::one_line(err));
                }
                continue;
            }
            Ok(_) => answers.next().with_context(|| format!("{}: the network gave no answer for it", input.name))?,
        };
        if args.json {
            let line = prediction_json(
                &input.name,
                input.inverted,
                input.framing,
                input.warning.as_deref(),
                best,
                class_names,
                args.min_confidence,
            );
            crate::say!("{line}")?;
        } else {
            if let Some(warning) = &input.warning {
                eprintln!("warning: {}: {warning}", input.name);
            }
            let text: Vec<String> =
                best.iter().map(|&(label, p)| format!("{} {p:.2}", class_names[label as usize])).collect();
            let unknown = crate::inference::unknown_reason(best, input.warning.as_deref(), args.min_confidence)
                .map(|reason| format!("unknown ({reason}); "))
                .unwrap_or_default();
            let inverted = if input.inverted { " (inverted)" } else { "" };
            crate::say!("{}: {unknown}{}{inverted}", input.name, text.join(", "))?;
        }
    }
    Ok(failures)
}

/// The timing line, and the error that makes the exit code 1 when any input failed.
fn summarise(args: &PredictArgs, inputs: usize, failures: usize, started: Instant) -> Result<()> {
    let predicted = inputs - failures;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    if !args.json && predicted > 0 {
        eprintln!(
            "{} in {elapsed_ms:.1} ms ({:.2} ms per image, reading and preprocessing included)",
            counted(predicted, "image"),
            elapsed_ms / predicted as f64
        );
    }
    if failures > 0 {
        bail!("{failures} of {inputs} inputs could not be predicted");
    }
    Ok(())
}

impl Input {
    /// An input that could not be read or prepared.
    fn failed(name: String, err: anyhow::Error) -> Input {
        Input { name, pixels: Err(err), inverted: false, framing: Framing::Auto, warning: None }
    }
}

/// `1 image`, `2 images`.
fn counted(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// A picture file to read, or a directory that held none: the directory and the error that says so.
type PictureFile = std::result::Result<PathBuf, (PathBuf, anyhow::Error)>;

/// Files as given, directories replaced by their picture files in name order, and notes on what the
/// directories held besides pictures. A directory without any picture is an error of its own (with the
/// directory), so that it is not passed over in silence.
fn expand(paths: &[PathBuf]) -> (Vec<PictureFile>, Vec<String>) {
    let mut files = Vec::new();
    let mut notes = Vec::new();
    for path in paths {
        match std::fs::read_dir(path) {
            Ok(entries) if path.is_dir() => {
                let mut found = Vec::new();
                let mut skipped = Vec::new();
                for entry in entries.filter_map(|e| e.ok()) {
                    let entry = entry.path();
                    let name = entry.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    if entry.is_dir() {
                        skipped.push(format!("{name}/"));
                    } else if is_picture_name(&entry) {
                        found.push(entry);
                    } else if !name.starts_with('.') {
                        skipped.push(name);
                    }
                }
                skipped.sort();
                if found.is_empty() {
                    let held =
                        if skipped.is_empty() { String::new() } else { format!("; it holds {}", skipped.join(", ")) };
                    let err = anyhow::anyhow!(
                        "{}: no pictures in this directory (looked for .{} files{held})",
                        path.display(),
                        IMAGE_EXTENSIONS.join(", .")
                    );
                    files.push(Err((path.clone(), err)));
                } else if !skipped.is_empty() {
                    notes.push(format!(
                        "{}: skipped {} that {} not pictures (subdirectories are not searched): {}",
                        path.display(),
                        if skipped.len() == 1 { "1 entry".to_string() } else { format!("{} entries", skipped.len()) },
                        if skipped.len() == 1 { "is" } else { "are" },
                        skipped.join(", ")
                    ));
                }
                found.sort();
                files.extend(found.into_iter().map(Ok));
            }
            _ => files.push(Ok(path.clone())),
        }
    }
    (files, notes)
}

/// Whether a file's extension is one of the picture formats.
fn is_picture_name(path: &Path) -> bool {
    path.extension().is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_string_lossy().to_lowercase().as_str()))
}

/// `FILE.png` for one picture, `FILE-N.png` for the N-th of several.
fn numbered(path: &Path, n: usize, several: bool) -> PathBuf {
    if !several {
        return path.to_path_buf();
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_else(|| "png".into());
    path.with_file_name(format!("{stem}-{n}.{ext}"))
}
