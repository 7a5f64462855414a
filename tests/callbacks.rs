//! Keras-style training controls end to end: early stopping with restored best weights, the best
//! checkpoint, learning-rate schedules in the output, metrics.json, and the plots.

mod common;

use common::{Files, Fixture, mnist_tch};
use mnist_tch::idx::{IdxKind, encode};
use serde_json::Value;

fn json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

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
    // And evaluating the run reproduces the test accuracy it printed for those weights.
    let evaluated = mnist_tch(&["evaluate", "--model", dir.to_str().unwrap(), "--device", "cpu"]);
    assert_eq!(evaluated.test_accuracy(), run.test_accuracy());
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
    let with_best =
        mnist_tch(&["evaluate", "--model", dir.to_str().unwrap(), "--weights", "best.safetensors", "--device", "cpu"]);
    with_best.assert_ok();
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

fn png_size(path: &std::path::Path) -> (u32, u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    // Not a blank canvas: some pixels are dark (text, lines).
    assert!(pixels[..frame.buffer_size()].iter().any(|&p| p < 64), "{} is blank", path.display());
    (frame.width, frame.height)
}

#[test]
fn plots_are_written_decodable_and_sized() {
    let fixture = Fixture::new(false);
    let run = fixture.train("run", &["--plot"]);
    run.assert_ok();
    let dir = fixture.path("run");
    assert_eq!(png_size(&dir.join("learning_curves.png")), mnist_tch::plot::CURVES_SIZE);
    assert_eq!(png_size(&dir.join("confusion_matrix.png")), mnist_tch::plot::CONFUSION_SIZE);

    // The plot subcommand redraws them from the run directory alone.
    std::fs::remove_file(dir.join("learning_curves.png")).unwrap();
    std::fs::remove_file(dir.join("confusion_matrix.png")).unwrap();
    let plotted = mnist_tch(&["plot", dir.to_str().unwrap()]);
    plotted.assert_ok();
    assert_eq!(png_size(&dir.join("learning_curves.png")), mnist_tch::plot::CURVES_SIZE);
    assert_eq!(png_size(&dir.join("confusion_matrix.png")), mnist_tch::plot::CONFUSION_SIZE);

    mnist_tch(&["plot", fixture.path("nothing").to_str().unwrap()]).assert_clean_error(&["not a run directory"]);
}
