//! Keras-style training controls end to end: early stopping with restored best weights, the best
//! checkpoint, learning-rate schedules in the output, metrics.json, the plots, and label smoothing.

mod common;

use common::{Files, Fixture, json, mnist_tch};
use mnist_tch::idx::{IdxKind, encode};

/// Training data whose last 20% — the validation part — has labels unrelated to the images: the
/// more the model learns, the worse validation gets, so val_loss has its best epoch early.
fn validation_cannot_improve() -> Fixture {
    let mut files = Files::synthetic(600, 200);
    let (_, mut labels) = common::synthetic(600, 1);
    for (i, label) in labels.iter_mut().enumerate().skip(480) {
        *label = ((i * 7 + 3) % 4) as u8;
    }
    files.train_labels = encode(IdxKind::Labels, &[600], &labels);
    Fixture::with_files(&files, false)
}

#[test]
fn early_stopping_stops_and_restores_the_best_weights() {
    let fixture = validation_cannot_improve();
    let run = fixture.train("run", &["--epochs", "30", "--early-stopping", "2", "--save-best", "--lr", "0.01"]);
    run.assert_ok();
    let dir = fixture.path("run");
    let config = json(&dir.join("config.json"));
    let metrics = json(&dir.join("metrics.json"));
    let epochs = metrics.as_array().unwrap();
    let best_epoch = config["state"]["best_epoch"].as_u64().unwrap() as usize;
    assert_eq!(config["state"]["status"], "early_stopped");
    assert!(epochs.len() < 30, "never stopped: {} epochs", epochs.len());
    // Patience 2: it stops two epochs after the best one.
    assert_eq!(epochs.len(), best_epoch + 2, "{}", run.stdout);
    let val_losses: Vec<f64> = epochs.iter().map(|m| m["val_loss"].as_f64().unwrap()).collect();
    let minimum = val_losses.iter().cloned().fold(f64::MAX, f64::min);
    assert_eq!(val_losses[best_epoch - 1], minimum);
    assert!(run.stdout.contains(&format!("restored the weights of epoch {best_epoch}")), "{}", run.stdout);
    // The run ends with the best epoch's weights: the same tensors as best.safetensors.
    let model = tch::Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
    let best = tch::Tensor::read_safetensors(dir.join("best.safetensors")).unwrap();
    assert_eq!(model.len(), best.len());
    for (name, tensor) in &model {
        let other = &best.iter().find(|(n, _)| n == name).unwrap().1;
        assert!(tensor.equal(other), "{name} differs from the best checkpoint");
    }
    // And evaluating the run reproduces the test loss it recorded for those weights (the accuracy
    // saturates on this set; the loss does not).
    let evaluated = mnist_tch(&["evaluate", "--model", dir.to_str().unwrap(), "--device", "cpu", "--json"]);
    evaluated.assert_ok();
    let report: serde_json::Value = serde_json::from_str(&evaluated.stdout).unwrap();
    let recorded = config["result"]["test_loss"].as_f64().unwrap();
    assert!((report["loss"].as_f64().unwrap() - recorded).abs() < 1e-6, "{report} vs {recorded}");
}

#[test]
fn save_best_keeps_the_best_epoch_beside_the_last() {
    let fixture = validation_cannot_improve();
    fixture.train("run", &["--epochs", "5", "--save-best", "--lr", "0.01"]).assert_ok();
    let dir = fixture.path("run");
    let config = json(&dir.join("config.json"));
    assert_eq!(config["state"]["status"], "completed");
    let best_epoch = config["state"]["best_epoch"].as_u64().unwrap();
    assert!(best_epoch < 5, "the constructed plateau should peak early, got {best_epoch}");
    let last = tch::Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
    let best = tch::Tensor::read_safetensors(dir.join("best.safetensors")).unwrap();
    let weight = |set: &[(String, tch::Tensor)]| set.iter().find(|(n, _)| n == "1.weight").unwrap().1.shallow_clone();
    assert!(!weight(&last).equal(&weight(&best)), "last and best epochs must differ");
    // evaluate --weights best.safetensors scores those weights, not the last ones.
    let loss_of = |weights: &str| {
        let run = mnist_tch(&[
            "evaluate",
            "--model",
            dir.to_str().unwrap(),
            "--weights",
            weights,
            "--device",
            "cpu",
            "--json",
        ]);
        run.assert_ok();
        serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap()["loss"].as_f64().unwrap()
    };
    let (best_loss, last_loss) = (loss_of("best.safetensors"), loss_of("model.safetensors"));
    let loaded = mnist_tch::run_dir::load_run_weights(&dir, "best.safetensors", tch::Device::Cpu).unwrap();
    let test = mnist_tch::data::load_test(&fixture.data(), &Default::default(), 4).unwrap().test;
    let expected = mnist_tch::evaluation::evaluate(&loaded.model.net, &test, 4).unwrap().loss;
    assert!((best_loss - expected).abs() < 1e-6, "best {best_loss} vs {expected}");
    assert!((best_loss - last_loss).abs() > 1e-6, "best and last weights score the same loss {best_loss}");
    assert!((last_loss - config["result"]["test_loss"].as_f64().unwrap()).abs() < 1e-6);
}

#[test]
fn schedules_show_in_the_epoch_lines_and_metrics() {
    let fixture = Fixture::new(false);
    let run = fixture.train("run", &["--epochs", "4", "--lr-schedule", "step:2:0.5"]);
    run.assert_ok();
    let rates: Vec<&str> =
        run.stdout.lines().filter(|l| l.starts_with("Epoch ")).map(|l| l.rsplit("lr: ").next().unwrap()).collect();
    assert_eq!(rates, vec!["1.000e-3", "1.000e-3", "5.000e-4", "5.000e-4"]);
    let metrics = json(&fixture.path("run").join("metrics.json"));
    let lrs: Vec<f64> = metrics.as_array().unwrap().iter().map(|m| m["lr"].as_f64().unwrap()).collect();
    assert_eq!(lrs, vec![1e-3, 1e-3, 5e-4, 5e-4]);
    let config = json(&fixture.path("run").join("config.json"));
    assert_eq!(config["training"]["lr_schedule"], "step:2:0.5");

    let cosine = fixture.train("cos", &["--epochs", "2", "--lr-schedule", "cosine"]);
    cosine.assert_ok();
    let lrs: Vec<f64> = json(&fixture.path("cos").join("metrics.json"))
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["lr"].as_f64().unwrap())
        .collect();
    assert_eq!(lrs, vec![1e-3, 5e-4]);
    let bad = fixture.train("bad", &["--lr-schedule", "linear"]);
    assert_eq!(bad.code(), Some(2), "{}", bad.stderr);
}

#[test]
fn metrics_json_matches_metrics_csv() {
    let fixture = Fixture::new(false);
    fixture.train("run", &[]).assert_ok();
    let dir = fixture.path("run");
    let metrics = json(&dir.join("metrics.json"));
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let mut rows = csv.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    let objects = metrics.as_array().unwrap();
    let rows: Vec<&str> = rows.collect();
    assert_eq!(rows.len(), objects.len());
    for (row, object) in rows.iter().zip(objects) {
        for (column, text) in header.iter().zip(row.split(',')) {
            let value: f64 = text.parse().unwrap();
            let expected = object[*column].as_f64().unwrap_or_else(|| panic!("{column} missing in metrics.json"));
            // The csv rounds to the digits it prints: the json value must round to the same.
            let tolerance = match text.split_once('.') {
                Some((_, decimals)) if !text.contains('e') => 0.5 * 10f64.powi(-(decimals.len() as i32)) + 1e-12,
                _ => expected.abs() * 1e-9,
            };
            assert!((value - expected).abs() <= tolerance, "{column}: csv {text}, json {expected}");
        }
    }
}

#[test]
fn dropout_and_weight_decay_are_recorded_and_train() {
    let fixture = Fixture::new(false);
    let run = fixture.train("run", &["--dropout", "0.2", "--weight-decay", "0.01"]);
    run.assert_ok();
    assert!(run.test_accuracy() > 0.9, "{}", run.stdout);
    let config = json(&fixture.path("run").join("config.json"));
    assert_eq!(config["model"]["dropout"], 0.2);
    assert_eq!(config["training"]["optimizer"], "adamw");
    assert_eq!(config["training"]["weight_decay"], 0.01);
    // With dropout the PyTorch nn.Sequential indices shift: Flatten, Linear, ReLU, Dropout, Linear.
    let names: Vec<String> = tch::Tensor::read_safetensors(fixture.path("run").join("model.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&"4.weight".to_string()), "{names:?}");
    // evaluate rebuilds the dropout model from config.json.
    mnist_tch(&["evaluate", "--model", fixture.path("run").to_str().unwrap(), "--device", "cpu"]).assert_ok();
}

/// A decoded plot: its pixels as RGB.
struct Picture(image::RgbImage);

/// The series colours the plots draw with (as in the README's pictures): training blue, validation red,
/// the restored epoch green.
const TRAINING: [u8; 3] = [31, 119, 180];
const VALIDATION: [u8; 3] = [214, 39, 40];
const RESTORED: [u8; 3] = [44, 160, 44];

impl Picture {
    fn open(path: &std::path::Path) -> Picture {
        let decoded = image::open(path).unwrap_or_else(|e| panic!("{}: not a decodable PNG: {e}", path.display()));
        Picture(decoded.to_rgb8())
    }

    fn size(&self) -> (u32, u32) {
        self.0.dimensions()
    }

    /// Pixels of exactly `color` in the rectangle `xs` × `ys`.
    fn count(&self, color: [u8; 3], xs: std::ops::Range<u32>, ys: std::ops::Range<u32>) -> usize {
        ys.flat_map(|y| xs.clone().map(move |x| (x, y))).filter(|&(x, y)| self.0.get_pixel(x, y).0 == color).count()
    }

    /// Whether a pixel is dark enough to be text or an axis (anti-aliased text included).
    fn is_dark(&self, x: u32, y: u32) -> bool {
        self.0.get_pixel(x, y).0.iter().all(|&c| c < 90)
    }

    /// Rows of the dark pixels in the rectangle, if any: (first, last).
    fn dark_rows(&self, xs: std::ops::Range<u32>, ys: std::ops::Range<u32>) -> Option<(u32, u32)> {
        let rows: Vec<u32> = ys.filter(|&y| xs.clone().any(|x| self.is_dark(x, y))).collect();
        Some((*rows.first()?, *rows.last()?))
    }

    /// The longest horizontal run of dark pixels in the columns `xs`: (row, first column, last column).
    /// In a learning-curves panel that is the x axis, which spans the plotting area.
    fn x_axis(&self, xs: std::ops::Range<u32>) -> (u32, u32, u32) {
        let mut best = (0, 0, 0);
        for y in 0..self.0.height() {
            let mut start = None;
            for x in xs.clone() {
                match (self.is_dark(x, y), start) {
                    (true, None) => start = Some(x),
                    (false, Some(s)) => {
                        if x - s > best.2 - best.1 {
                            best = (y, s, x - 1);
                        }
                        start = None;
                    }
                    _ => {}
                }
            }
        }
        best
    }
}

/// Checks the learning curves as a user sees them, 1200x540: two panels with both series in their own
/// colours, text in the title, legend and axis-label regions, the legend in its strip under the title
/// (not over the data), and — only when `restored` is `Some((epoch, epochs))` — the restored epoch's
/// dashed line at that epoch in both panels.
fn check_learning_curves(path: &std::path::Path, restored: Option<(u32, u32)>) {
    let picture = Picture::open(path);
    assert_eq!(picture.size(), (1200, 540), "{}", path.display());
    let legend_rows = 30..70;
    let panel_rows = 80..540;
    for (panel, xs) in [("loss", 0..600), ("accuracy", 600..1200)] {
        for (name, color) in [("training", TRAINING), ("validation", VALIDATION)] {
            let pixels = picture.count(color, xs.clone(), panel_rows.clone());
            assert!(pixels >= 100, "{panel} panel: {pixels} pixels of the {name} colour");
        }
        // Tick labels under the panel and left of it.
        assert!(picture.dark_rows(xs.start + 60..xs.end - 20, 490..525).is_some(), "{panel}: no x-axis text");
        assert!(picture.dark_rows(xs.start..xs.start + 60, 120..440).is_some(), "{panel}: no y-axis text");
    }
    assert!(picture.dark_rows(400..800, 0..30).is_some(), "no title");
    // The legend strip: a sample of each series and its text.
    for color in [TRAINING, VALIDATION] {
        assert!(picture.count(color, 0..1200, legend_rows.clone()) >= 20, "the legend strip lacks {color:?}");
    }
    assert!(picture.dark_rows(0..1200, legend_rows.clone()).is_some(), "the legend has no text");
    let marker_pixels = picture.count(RESTORED, 0..1200, 0..540);
    let Some((epoch, epochs)) = restored else {
        assert_eq!(marker_pixels, 0, "a restored-epoch marker on a run that restored nothing");
        return;
    };
    assert!(picture.count(RESTORED, 0..1200, legend_rows) > 0, "the restored epoch is not in the legend");
    for (panel, xs) in [("loss", 0..600u32), ("accuracy", 600..1200)] {
        let column_counts: Vec<(u32, usize)> =
            xs.clone().map(|x| (x, picture.count(RESTORED, x..x + 1, panel_rows.clone()))).collect();
        let (line_x, tallest) = column_counts.into_iter().max_by_key(|&(_, n)| n).unwrap();
        assert!(tallest >= 150, "{panel}: the restored-epoch line is {tallest} pixels tall");
        // The x axis runs over 0.5..epochs+0.5: epoch e sits at (e - 0.5) / epochs of its length.
        let (_, left, right) = picture.x_axis(xs);
        let expected = left as f64 + (epoch as f64 - 0.5) / epochs as f64 * (right - left) as f64;
        assert!(
            (line_x as f64 - expected).abs() <= 4.0,
            "{panel}: restored epoch {epoch} of {epochs} drawn at x={line_x}, expected {expected:.0} (axis {left}..{right})"
        );
    }
}

/// Checks the confusion matrix of a `classes`-class run, 900x800: the cells shaded, and each class
/// name on the y-axis vertically centred on its row.
fn check_confusion_matrix(path: &std::path::Path, classes: u32) {
    let picture = Picture::open(path);
    assert_eq!(picture.size(), (900, 800), "{}", path.display());
    // The shaded cells (blue, r == g < 250): a learned model's diagonal spans the whole matrix.
    let shaded: Vec<(u32, u32)> = picture
        .0
        .enumerate_pixels()
        .filter(|(_, _, p)| p.0[2] == 255 && p.0[0] == p.0[1] && p.0[0] < 250)
        .map(|(x, y, _)| (x, y))
        .collect();
    assert!(shaded.len() > 1000, "no shaded cells");
    let (left, right) = (shaded.iter().map(|p| p.0).min().unwrap(), shaded.iter().map(|p| p.0).max().unwrap());
    let (top, bottom) = (shaded.iter().map(|p| p.1).min().unwrap(), shaded.iter().map(|p| p.1).max().unwrap());
    assert!(right - left > 500 && bottom - top > 500, "matrix {left}..{right} x {top}..{bottom}");
    let row_height = (bottom - top + 1) as f64 / classes as f64;
    for row in 0..classes {
        let band_top = top + (row as f64 * row_height) as u32;
        let band_bottom = top + ((row + 1) as f64 * row_height) as u32;
        // Between the y-axis title and the axis's tick marks.
        let label = picture.dark_rows(left - 22..left - 6, band_top + 3..band_bottom - 3);
        let Some((first, last)) = label else { panic!("row {row} ({band_top}..{band_bottom}) has no class name") };
        let (centre, expected) = ((first + last) as f64 / 2.0, (band_top + band_bottom) as f64 / 2.0);
        assert!(
            (centre - expected).abs() <= 3.0,
            "row {row}: its name is centred at y={centre}, the row at y={expected}"
        );
    }
    assert!(picture.dark_rows(300..600, 0..45).is_some(), "no title");
    assert!(picture.dark_rows(left..right, bottom + 10..bottom + 60).is_some(), "no column names");
}

#[test]
fn plots_show_both_series_text_and_centred_class_names() {
    let fixture = Fixture::new(false);
    // --save-best records a best epoch, but without early stopping nothing is restored: no marker.
    let run = fixture.train("run", &["--plot", "--save-best"]);
    run.assert_ok();
    let dir = fixture.path("run");
    check_learning_curves(&dir.join("learning_curves.png"), None);
    check_confusion_matrix(&dir.join("confusion_matrix.png"), 4);

    // The plot subcommand redraws them from the run directory alone.
    std::fs::remove_file(dir.join("learning_curves.png")).unwrap();
    std::fs::remove_file(dir.join("confusion_matrix.png")).unwrap();
    let plotted = mnist_tch(&["plot", dir.to_str().unwrap()]);
    plotted.assert_ok();
    check_learning_curves(&dir.join("learning_curves.png"), None);
    check_confusion_matrix(&dir.join("confusion_matrix.png"), 4);

    mnist_tch(&["plot", fixture.path("nothing").to_str().unwrap()]).assert_clean_error(&["not a run directory"]);
}

#[test]
fn the_epoch_early_stopping_restored_is_marked() {
    let fixture = validation_cannot_improve();
    let run = fixture.train("run", &["--epochs", "30", "--early-stopping", "2", "--lr", "0.01", "--plot"]);
    run.assert_ok();
    let dir = fixture.path("run");
    let config = json(&dir.join("config.json"));
    assert_eq!(config["state"]["status"], "early_stopped");
    let best = config["state"]["best_epoch"].as_u64().unwrap() as u32;
    let epochs = json(&dir.join("metrics.json")).as_array().unwrap().len() as u32;
    check_learning_curves(&dir.join("learning_curves.png"), Some((best, epochs)));
    // Redrawn by `plot --model`, from config.json's state alone.
    std::fs::remove_file(dir.join("learning_curves.png")).unwrap();
    mnist_tch(&["plot", "--model", dir.to_str().unwrap()]).assert_ok();
    check_learning_curves(&dir.join("learning_curves.png"), Some((best, epochs)));
}

#[test]
fn label_smoothing_is_recorded_changes_the_weights_and_the_fused_engine_refuses_it() {
    let fixture = Fixture::new(false);
    fixture.train("plain", &["--epochs", "1"]).assert_ok();
    fixture.train("smoothed", &["--epochs", "1", "--label-smoothing", "0.1"]).assert_ok();
    let training = |name: &str| json(&fixture.path(name).join("config.json"))["training"].clone();
    assert_eq!(training("smoothed")["label_smoothing"], 0.1);
    assert!(training("plain").get("label_smoothing").is_none(), "0 is not written");
    let weights = |name: &str| std::fs::read(fixture.path(name).join("model.safetensors")).unwrap();
    assert_ne!(weights("plain"), weights("smoothed"), "the smoothed target trained the same weights");

    fixture
        .train("fused", &["--engine", "fused", "--label-smoothing", "0.1"])
        .assert_usage_error(&["--label-smoothing is implemented by --engine autograd, not fused"]);
    assert!(!fixture.path("fused").join("config.json").exists());
    for bad in ["1", "-0.1", "nan"] {
        fixture.train("bad", &["--label-smoothing", bad]).assert_code(2);
    }
}
