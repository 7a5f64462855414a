//! `predict` on picture files made by the tests (and IDX images, and exports of either kind), its
//! messages for empty and failed inputs, and `summary`.

mod common;

use common::{Fixture, SIDE, mnist_tch};
use image::{GrayImage, Luma, Rgb, RgbImage};
use mnist_tch::idx::{IdxKind, encode};
use serde_json::Value;
use std::path::Path;

/// A fixture with a trained run and its TorchScript export.
fn trained() -> Fixture {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "2"]).assert_ok();
    let out = fixture.path("model.pt");
    mnist_tch(&["export", "--model", fixture.path("run").to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert_ok();
    fixture
}

/// A dark blob drawn on white paper, off-centre in a 120x90 RGB picture.
fn dark_on_light(path: &Path) {
    let picture = RgbImage::from_fn(120, 90, |x, y| {
        if (80..100).contains(&x) && (10..40).contains(&y) { Rgb([20, 20, 30]) } else { Rgb([250, 248, 240]) }
    });
    picture.save(path).unwrap();
}

/// A light blob on black, in the top-left corner of a 64x64 grayscale picture.
fn light_on_dark(path: &Path) {
    GrayImage::from_fn(64, 64, |x, y| if x < 16 && y < 24 { Luma([230]) } else { Luma([0]) }).save(path).unwrap();
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[test]
fn dark_on_light_is_inverted_and_off_centre_content_is_centred() {
    let fixture = trained();
    let (png, jpeg) = (fixture.path("paper.png"), fixture.path("paper.jpg"));
    dark_on_light(&png);
    dark_on_light(&jpeg);
    let seen = fixture.path("seen.png");
    let run = mnist_tch(&[
        "predict",
        "--model",
        fixture.path("run").to_str().unwrap(),
        png.to_str().unwrap(),
        "--json",
        "--fit",
        "digits",
        "--show-input",
        seen.to_str().unwrap(),
    ]);
    run.assert_ok();
    let lines = json_lines(&run.stdout);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["inverted"], true);
    // What the network saw: 8x8, white ink on black, centred by mass.
    let image = image::open(&seen).unwrap().to_luma8();
    assert_eq!(image.dimensions(), (8, 8));
    assert_eq!(image.get_pixel(0, 7)[0], 0, "background must be black");
    let (cx, cy) = mnist_tch::preprocess::centre_of_mass(&image).unwrap();
    assert!((cx - 4.0).abs() <= 0.75 && (cy - 4.0).abs() <= 0.75, "centre of mass ({cx}, {cy})");

    // JPEG too; --invert no leaves it as it is.
    let run = mnist_tch(&[
        "predict",
        "--model",
        fixture.path("run").to_str().unwrap(),
        jpeg.to_str().unwrap(),
        "--json",
        "--invert",
        "no",
    ]);
    run.assert_ok();
    assert_eq!(json_lines(&run.stdout)[0]["inverted"], false);

    let dark = fixture.path("dark.png");
    light_on_dark(&dark);
    let run =
        mnist_tch(&["predict", "--model", fixture.path("run").to_str().unwrap(), dark.to_str().unwrap(), "--json"]);
    assert_eq!(json_lines(&run.stdout)[0]["inverted"], false);
}

#[test]
fn run_directory_and_torchscript_give_the_same_answers() {
    let fixture = trained();
    let pictures = fixture.path("pictures");
    std::fs::create_dir(&pictures).unwrap();
    dark_on_light(&pictures.join("a.png"));
    light_on_dark(&pictures.join("b.png"));
    let idx = fixture.data().join("t10k-images-idx3-ubyte");
    let predict = |model: &Path| {
        let run = mnist_tch(&[
            "predict",
            "--model",
            model.to_str().unwrap(),
            pictures.to_str().unwrap(),
            "--idx",
            idx.to_str().unwrap(),
            "--json",
            "--top-k",
            "4",
        ]);
        run.assert_ok();
        json_lines(&run.stdout)
    };
    let from_run = predict(&fixture.path("run"));
    let from_script = predict(&fixture.path("model.pt"));
    assert_eq!(from_run.len(), 2 + 200, "two pictures and the 200 IDX test images");
    for (a, b) in from_run.iter().zip(&from_script) {
        assert_eq!(a["input"], b["input"]);
        assert_eq!(a["predictions"][0]["label"], b["predictions"][0]["label"], "{a} vs {b}");
        let (pa, pb) = (
            a["predictions"][0]["probability"].as_f64().unwrap(),
            b["predictions"][0]["probability"].as_f64().unwrap(),
        );
        assert!((pa - pb).abs() < 1e-5);
    }
    // The IDX images of a learnable set are mostly right: the predictions are real.
    let (_, labels) = common::synthetic(200, 2);
    let correct = from_run[2..].iter().zip(&labels).filter(|(p, l)| p["predictions"][0]["label"] == **l as i64).count();
    assert!(correct >= 180, "{correct}/200");
    // Names and top-k.
    assert_eq!(from_run[0]["predictions"].as_array().unwrap().len(), 4);
    assert!(from_run[0]["predictions"][0]["name"].is_string());
}

#[test]
fn a_corrupt_picture_fails_alone() {
    let fixture = trained();
    let good = fixture.path("good.png");
    light_on_dark(&good);
    let bad = fixture.path("bad.png");
    std::fs::write(&bad, b"\x89PNG but not really").unwrap();
    let blank = fixture.path("blank.png");
    GrayImage::from_pixel(20, 20, Luma([255])).save(&blank).unwrap();
    let run = mnist_tch(&[
        "predict",
        "--model",
        fixture.path("run").to_str().unwrap(),
        bad.to_str().unwrap(),
        good.to_str().unwrap(),
        blank.to_str().unwrap(),
    ]);
    assert_eq!(run.code(), Some(1), "{}", run.stderr);
    assert!(run.stdout.contains("good.png: "), "the good picture is still predicted: {}", run.stdout);
    assert!(run.stderr.contains("bad.png: not a readable image"), "{}", run.stderr);
    assert!(run.stderr.contains("blank.png: the image is blank"), "{}", run.stderr);
    assert!(run.stderr.contains("2 of 3 inputs could not be predicted"), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"));
}

#[test]
fn a_file_that_is_not_torchscript_is_one_clear_line() {
    let fixture = trained();
    let fake = fixture.path("fake.pt");
    std::fs::write(&fake, b"not a zip").unwrap();
    let picture = fixture.path("p.png");
    light_on_dark(&picture);
    mnist_tch(&["predict", "--model", fake.to_str().unwrap(), picture.to_str().unwrap()])
        .assert_clean_error(&["fake.pt", "not a TorchScript file"]);
    mnist_tch(&["predict", "--model", fixture.path("run").to_str().unwrap()])
        .assert_clean_error(&["nothing to predict"]);
}

#[test]
fn summary_lists_layers_and_counts_frozen_parameters() {
    let fixture = trained();
    let run = mnist_tch(&["summary", "--model", fixture.path("run").to_str().unwrap()]);
    run.assert_ok();
    // 64 inputs -> 128 -> 4: 8,320 + 516 parameters.
    assert!(run.stdout.contains("1 (Linear)") && run.stdout.contains("8,320"), "{}", run.stdout);
    assert!(run.stdout.contains("Total params: 8,836"), "{}", run.stdout);
    assert!(run.stdout.contains("Non-trainable params: 0"), "{}", run.stdout);

    let data = fixture.data();
    let ft = fixture.path("ft");
    mnist_tch(&[
        "finetune",
        "--from",
        fixture.path("run").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        ft.to_str().unwrap(),
        "--freeze",
        "hidden",
        "--epochs",
        "1",
        "--device",
        "cpu",
    ])
    .assert_ok();
    let frozen = mnist_tch(&["summary", "--model", ft.to_str().unwrap()]);
    assert!(frozen.stdout.contains("Trainable params: 516"), "{}", frozen.stdout);
    assert!(frozen.stdout.contains("Non-trainable params: 8,320"), "{}", frozen.stdout);
    // train prints the summary at the start.
    let trained_again = fixture.train("again", &["--epochs", "1"]);
    assert!(trained_again.stdout.contains("Total params: 8,836"), "{}", trained_again.stdout);
}

/// The probabilities of every class for each input, by input name, from `predict --json`.
fn probabilities_by_input(model: &Path, inputs: &[&Path], extra: &[&str]) -> Vec<(String, Vec<(i64, f64)>)> {
    let mut args = vec!["predict", "--model", model.to_str().unwrap(), "--json", "--top-k", "4"];
    args.extend(inputs.iter().map(|p| p.to_str().unwrap()));
    args.extend_from_slice(extra);
    let run = mnist_tch(&args);
    run.assert_ok();
    json_lines(&run.stdout)
        .iter()
        .map(|line| {
            let mut classes: Vec<(i64, f64)> = line["predictions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p["label"].as_i64().unwrap(), p["probability"].as_f64().unwrap()))
                .collect();
            classes.sort_by_key(|&(label, _)| label);
            (line["input"].as_str().unwrap().to_string(), classes)
        })
        .collect()
}

#[test]
fn a_probabilities_export_gives_the_run_directorys_probabilities() {
    let fixture = trained();
    let run = fixture.path("run");
    let probs = fixture.path("probs.pt");
    mnist_tch(&["export", "--model", run.to_str().unwrap(), "--out", probs.to_str().unwrap(), "--probabilities"])
        .assert_ok();
    let (paper, dark) = (fixture.path("paper.png"), fixture.path("dark.png"));
    dark_on_light(&paper);
    light_on_dark(&dark);
    let expected = probabilities_by_input(&run, &[&paper, &dark], &[]);
    for model in [fixture.path("model.pt"), probs] {
        let got = probabilities_by_input(&model, &[&paper, &dark], &[]);
        assert_eq!(got.len(), expected.len());
        for ((name, a), (_, b)) in got.iter().zip(&expected) {
            // Softmax applied once: the same numbers (applied twice they would all be near 1/4).
            for (&(la, pa), &(lb, pb)) in a.iter().zip(b) {
                assert_eq!(la, lb);
                assert!((pa - pb).abs() < 1e-5, "{} {name} class {la}: {pa} vs {pb}", model.display());
            }
            assert!((a.iter().map(|&(_, p)| p).sum::<f64>() - 1.0).abs() < 1e-4);
        }
    }
}

/// An 8x8 picture in the data set's layout: black border, a blob around the centre (as an MNIST image
/// saved as PNG would be), and the same pixels as a one-image IDX file.
fn picture_in_the_frame_layout(fixture: &Fixture) -> (std::path::PathBuf, std::path::PathBuf) {
    let picture = GrayImage::from_fn(SIDE, SIDE, |x, y| {
        let value = match (x, y) {
            (3..=4, 2..=5) => 230,
            (2, 3..=4) | (5, 3..=4) => 120,
            _ => 0,
        };
        Luma([value])
    });
    let png = fixture.path("mnist-like.png");
    picture.save(&png).unwrap();
    let idx = fixture.path("mnist-like-idx3-ubyte");
    std::fs::write(&idx, encode(IdxKind::Images, &[1, SIDE, SIDE], picture.as_raw())).unwrap();
    (png, idx)
}

#[test]
fn a_picture_already_in_the_frame_layout_is_used_as_it_is() {
    let fixture = trained();
    let run = fixture.path("run");
    let (png, idx) = picture_in_the_frame_layout(&fixture);
    let from_idx = mnist_tch(&["predict", "--model", run.to_str().unwrap(), "--idx", idx.to_str().unwrap(), "--json"]);
    from_idx.assert_ok();
    let seen = fixture.path("seen.png");
    let from_png = mnist_tch(&[
        "predict",
        "--model",
        run.to_str().unwrap(),
        png.to_str().unwrap(),
        "--json",
        "--show-input",
        seen.to_str().unwrap(),
    ]);
    from_png.assert_ok();
    let (a, b) = (&json_lines(&from_idx.stdout)[0], &json_lines(&from_png.stdout)[0]);
    assert_eq!(b["fit"], "none", "{b}");
    assert_eq!(a["predictions"], b["predictions"], "the picture must score as the same image read from IDX");
    assert_eq!(image::open(&seen).unwrap().to_luma8(), image::open(&png).unwrap().to_luma8());
    // --fit digits still re-fits it (and so sees something else).
    let refitted =
        mnist_tch(&["predict", "--model", run.to_str().unwrap(), png.to_str().unwrap(), "--json", "--fit", "digits"]);
    assert_eq!(json_lines(&refitted.stdout)[0]["fit"], "digits");
    assert_ne!(json_lines(&refitted.stdout)[0]["predictions"], b["predictions"]);
}

#[test]
fn fit_none_uses_the_pixels_as_they_are() {
    let fixture = trained();
    // Content in the top-left corner of a 64x64 picture: auto centres it, none leaves it in the corner.
    let picture = fixture.path("corner.png");
    light_on_dark(&picture);
    let seen = fixture.path("seen.png");
    let run = mnist_tch(&[
        "predict",
        "--model",
        fixture.path("run").to_str().unwrap(),
        picture.to_str().unwrap(),
        "--fit",
        "none",
        "--json",
        "--show-input",
        seen.to_str().unwrap(),
    ]);
    run.assert_ok();
    assert_eq!(json_lines(&run.stdout)[0]["fit"], "none");
    let seen = image::open(&seen).unwrap().to_luma8();
    assert_eq!(seen.dimensions(), (SIDE, SIDE));
    // 16x24 of 64x64 is the 2x3 top-left pixels of 8x8 (their edge blurred a little by the resize).
    assert!(seen.get_pixel(0, 0)[0] > 200 && seen.get_pixel(1, 2)[0] > 150, "{:?}", seen.as_raw());
    assert_eq!(seen.get_pixel(7, 7)[0], 0);
    assert_eq!(seen.get_pixel(4, 4)[0], 0);
}

#[test]
fn empty_and_failed_inputs_are_said_plainly() {
    let fixture = trained();
    let run = fixture.path("run");
    let empty = fixture.path("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), b"no pictures here").unwrap();
    mnist_tch(&["predict", "--model", run.to_str().unwrap(), empty.to_str().unwrap()])
        .assert_clean_error(&["empty", "no pictures in this directory"]);
    // The only input fails: its error, once, and no timing line.
    let bad = fixture.path("bad.png");
    std::fs::write(&bad, b"not a picture").unwrap();
    mnist_tch(&["predict", "--model", run.to_str().unwrap(), bad.to_str().unwrap()])
        .assert_clean_error(&["bad.png", "not a readable image"]);
    // Every input fails: one line each, a summary, no timing line.
    let all_bad =
        mnist_tch(&["predict", "--model", run.to_str().unwrap(), bad.to_str().unwrap(), empty.to_str().unwrap()]);
    assert_eq!(all_bad.code(), Some(1), "{}", all_bad.stderr);
    let lines: Vec<&str> = all_bad.stderr.lines().collect();
    assert_eq!(lines.len(), 3, "bad.png, the empty directory and the summary, nothing else:\n{}", all_bad.stderr);
    assert!(lines.iter().all(|l| l.starts_with("error: ")), "{}", all_bad.stderr);
    assert_eq!(lines[2], "error: 2 of 2 inputs could not be predicted");
    assert!(all_bad.stdout.is_empty(), "{}", all_bad.stdout);
    // One picture: "1 image", not "1 images".
    let good = fixture.path("good.png");
    light_on_dark(&good);
    let one = mnist_tch(&["predict", "--model", run.to_str().unwrap(), good.to_str().unwrap()]);
    one.assert_ok();
    assert!(one.stderr.starts_with("1 image in "), "{}", one.stderr);
    let two = mnist_tch(&["predict", "--model", run.to_str().unwrap(), good.to_str().unwrap(), good.to_str().unwrap()]);
    assert!(two.stderr.starts_with("2 images in "), "{}", two.stderr);
}
