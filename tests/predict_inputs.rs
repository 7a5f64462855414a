//! What `predict` takes: pictures with transparency (alpha counts as paper, in every format that has
//! it), every picture extension in a directory, what a directory holds besides pictures named, and
//! failed inputs in the `--json` output with their error.

mod common;

use common::{Fixture, mnist_tch};
use image::{DynamicImage, GrayImage, Luma, Rgba, RgbaImage};
use serde_json::Value;
use std::path::Path;

fn trained() -> Fixture {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "2"]).assert_ok();
    fixture
}

fn in_stroke(x: u32, y: u32) -> bool {
    (10..50).contains(&x) && (20..28).contains(&y)
}

/// Black ink on a transparent background whose hidden colour is black as well (what a canvas saves).
fn ink_on_transparent() -> RgbaImage {
    RgbaImage::from_fn(60, 60, |x, y| if in_stroke(x, y) { Rgba([0, 0, 0, 255]) } else { Rgba([0, 0, 0, 0]) })
}

/// The same drawing on opaque white paper.
fn ink_on_paper(path: &Path) {
    GrayImage::from_fn(60, 60, |x, y| Luma([if in_stroke(x, y) { 0 } else { 255 }])).save(path).unwrap();
}

fn predict_json(fixture: &Fixture, inputs: &[&Path]) -> (Vec<Value>, common::Run) {
    let run_dir = fixture.path("run");
    let mut args = vec!["predict", "--model", run_dir.to_str().unwrap(), "--device", "cpu", "--json"];
    args.extend(inputs.iter().map(|p| p.to_str().unwrap()));
    let run = mnist_tch(&args);
    let lines = run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (lines, run)
}

#[test]
fn transparent_backgrounds_count_as_paper_in_every_format_with_alpha() {
    let fixture = trained();
    let paper = fixture.path("paper.png");
    ink_on_paper(&paper);
    let mut inputs = vec![paper.clone()];
    for ext in ["png", "gif", "tiff"] {
        let path = fixture.path(&format!("canvas.{ext}"));
        DynamicImage::ImageRgba8(ink_on_transparent()).save(&path).unwrap();
        inputs.push(path);
    }
    let refs: Vec<&Path> = inputs.iter().map(|p| p.as_path()).collect();
    let (lines, run) = predict_json(&fixture, &refs);
    run.assert_ok();
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    for line in &lines[1..] {
        assert!(line.get("error").is_none(), "{line}");
        assert_eq!(line["inverted"], true, "{line}");
        assert_eq!(line["predictions"], lines[0]["predictions"], "the same as on paper: {line}");
    }
}

#[test]
fn a_directory_gives_every_picture_format_and_names_what_it_skipped() {
    let fixture = trained();
    let dir = fixture.path("pictures");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    ink_on_paper(&dir.join("a.png"));
    DynamicImage::ImageLuma8(image::open(dir.join("a.png")).unwrap().to_luma8())
        .to_rgb8()
        .save(dir.join("b.ppm"))
        .unwrap();
    // A plain (P1) bitmap: 1 is black.
    let mut pbm = String::from("P1\n60 60\n");
    for y in 0..60 {
        for x in 0..60 {
            pbm.push_str(if in_stroke(x, y) { "1 " } else { "0 " });
        }
        pbm.push('\n');
    }
    std::fs::write(dir.join("c.pbm"), pbm).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a picture").unwrap();
    let (lines, run) = predict_json(&fixture, &[&dir]);
    run.assert_ok();
    let names: Vec<&str> = lines.iter().map(|l| l["input"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for (name, ext) in names.iter().zip(["a.png", "b.ppm", "c.pbm"]) {
        assert!(name.ends_with(ext), "{names:?}");
    }
    assert!(lines.iter().all(|l| l["predictions"] == lines[0]["predictions"]), "{}", run.stdout);
    assert!(run.stderr.contains("skipped 2 entries"), "{}", run.stderr);
    assert!(run.stderr.contains("notes.txt") && run.stderr.contains("sub/"), "{}", run.stderr);
}

#[test]
fn failed_inputs_are_in_the_json_with_their_error() {
    let fixture = trained();
    let good = fixture.path("good.png");
    ink_on_paper(&good);
    let bad = fixture.path("bad.png");
    std::fs::write(&bad, b"\x89PNG but not really").unwrap();
    let (lines, run) = predict_json(&fixture, &[&good, &bad]);
    assert_eq!(run.code(), Some(1), "{}", run.stderr);
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(lines[0]["predictions"].is_array());
    assert!(lines[1]["input"].as_str().unwrap().ends_with("bad.png"));
    assert!(lines[1]["error"].as_str().unwrap().contains("not a readable image"), "{}", lines[1]);
    assert!(run.stderr.contains("1 of 2 inputs could not be predicted"), "{}", run.stderr);
    // A single input that fails is in the JSON too.
    let (lines, run) = predict_json(&fixture, &[&bad]);
    assert_eq!(run.code(), Some(1));
    assert_eq!(lines.len(), 1);
    assert!(lines[0]["error"].is_string());
}
