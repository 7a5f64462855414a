//! Pictures read as people see them: a phone JPEG stored sideways with an EXIF orientation is turned
//! upright before it is classified, a speck in a scan's corner does not move the digit, and an answer
//! can be "unknown": content too small to be a digit, or under `--min-confidence`.

mod common;

use common::server::Server;
use common::{Fixture, mnist_tch};
use image::{DynamicImage, GrayImage, Luma};
use mnist_tch::preprocess::{self, Framing, Invert};
use serde_json::Value;
use std::path::Path;

/// A dark "7" on white paper, `side × side`: a top bar and a stroke down to the lower left.
fn seven(side: u32) -> GrayImage {
    let s = side as f64;
    GrayImage::from_fn(side, side, |x, y| {
        let (x, y) = (x as f64 / s, y as f64 / s);
        let bar = (0.2..0.8).contains(&x) && (0.15..0.25).contains(&y);
        // From (0.8, 0.2) down to (0.4, 0.85).
        let t = (y - 0.2) / 0.65;
        let stem = (0.0..=1.0).contains(&t) && (x - (0.8 - 0.4 * t)).abs() < 0.06;
        Luma([if bar || stem { 0 } else { 255 }])
    })
}

/// `image` as JPEG bytes, with an APP1 Exif segment holding `orientation` right after the start marker.
fn jpeg_with_orientation(image: &DynamicImage, orientation: Option<u16>) -> Vec<u8> {
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95).encode_image(image).unwrap();
    let Some(value) = orientation else { return jpeg };
    // Big-endian TIFF header, one IFD with one entry: Orientation (0x0112), SHORT, 1 value.
    let mut body = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
    body.extend(value.to_be_bytes());
    body.extend([0, 0, 0, 0, 0, 0]);
    let mut segment = vec![0xFF, 0xE1];
    segment.extend(((body.len() + 2) as u16).to_be_bytes());
    segment.extend(body);
    jpeg.splice(2..2, segment);
    jpeg
}

/// The 28×28 frame `predict` and `serve` make of these file bytes.
fn frame(bytes: &[u8]) -> GrayImage {
    let gray = preprocess::decode_gray(bytes).unwrap();
    preprocess::fit_into_frame(&gray, 28, 28, Framing::Digits, Invert::Auto).unwrap().image
}

fn mean_difference(a: &GrayImage, b: &GrayImage) -> f64 {
    a.pixels().zip(b.pixels()).map(|(p, q)| (p[0] as f64 - q[0] as f64).abs()).sum::<f64>() / (28.0 * 28.0)
}

/// What each Orientation value asks a viewer to undo, done to the upright picture: what a camera stores.
fn stored(upright: &DynamicImage, orientation: u16) -> DynamicImage {
    match orientation {
        3 => upright.rotate180(),
        6 => upright.rotate270(),
        8 => upright.rotate90(),
        _ => upright.clone(),
    }
}

#[test]
fn a_jpeg_stored_sideways_with_an_exif_orientation_is_read_upright() {
    let upright = DynamicImage::ImageLuma8(seven(200));
    let reference = frame(&jpeg_with_orientation(&upright, None));
    for orientation in [3, 6, 8] {
        let sideways = stored(&upright, orientation);
        let tagged = frame(&jpeg_with_orientation(&sideways, Some(orientation)));
        let untagged = frame(&jpeg_with_orientation(&sideways, None));
        let (same, turned) = (mean_difference(&tagged, &reference), mean_difference(&untagged, &reference));
        assert!(same < 3.0, "orientation {orientation}: {same} from the upright frame");
        assert!(turned > 20.0, "orientation {orientation}: the stored pixels differ by only {turned}");
    }
}

#[test]
fn predict_classifies_the_tagged_jpeg_like_the_upright_one() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "2"]).assert_ok();
    let upright = DynamicImage::ImageLuma8(seven(200));
    let paths: Vec<_> = [("upright.jpg", None), ("phone.jpg", Some(8))]
        .into_iter()
        .map(|(name, orientation)| {
            let path = fixture.path(name);
            let picture = orientation.map_or(upright.clone(), |o| stored(&upright, o));
            std::fs::write(&path, jpeg_with_orientation(&picture, orientation)).unwrap();
            path
        })
        .collect();
    let lines = predict_json(&fixture, &paths.iter().map(|p| p.as_path()).collect::<Vec<_>>(), &[]);
    assert_eq!(lines[1]["predictions"][0]["label"], lines[0]["predictions"][0]["label"], "{lines:?}");
}

/// `predict --json` of these pictures with the run "run", one answer per picture.
fn predict_json(fixture: &Fixture, inputs: &[&Path], extra: &[&str]) -> Vec<Value> {
    let run_dir = fixture.path("run");
    let mut args = vec!["predict", "--model", run_dir.to_str().unwrap(), "--device", "cpu", "--json"];
    args.extend(extra);
    args.extend(inputs.iter().map(|p| p.to_str().unwrap()));
    let run = mnist_tch(&args);
    run.assert_ok();
    run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn a_speck_in_a_scans_corner_changes_nothing() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "2"]).assert_ok();
    let clean = seven(1000);
    let mut specked = clean.clone();
    for (x, y) in (8..12).flat_map(|x| (8..12).map(move |y| (x, y))) {
        specked.put_pixel(x, y, Luma([0]));
    }
    let (clean_path, specked_path) = (fixture.path("clean.png"), fixture.path("specked.png"));
    clean.save(&clean_path).unwrap();
    specked.save(&specked_path).unwrap();
    let lines = predict_json(&fixture, &[&clean_path, &specked_path], &[]);
    assert_eq!(lines[1]["predictions"], lines[0]["predictions"], "{lines:?}");
}

/// A 20 px dot on a white 1000×1000 page: too little ink to be a digit.
fn dot() -> GrayImage {
    GrayImage::from_fn(1000, 1000, |x, y| {
        Luma([if (490..510).contains(&x) && (490..510).contains(&y) { 0 } else { 255 }])
    })
}

#[test]
fn under_min_confidence_or_with_too_little_ink_the_answer_is_unknown() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "2"]).assert_ok();
    let (seven_path, dot_path) = (fixture.path("seven.png"), fixture.path("dot.png"));
    seven(200).save(&seven_path).unwrap();
    dot().save(&dot_path).unwrap();
    // By default the most likely class is the answer; the dot is unknown, its classes still listed.
    let lines = predict_json(&fixture, &[&seven_path, &dot_path], &[]);
    assert_eq!(lines[0]["label"], lines[0]["predictions"][0]["label"], "{}", lines[0]);
    assert_eq!(lines[0]["name"], lines[0]["predictions"][0]["name"]);
    assert!(lines[0].get("unknown").is_none());
    assert_eq!((&lines[1]["label"], &lines[1]["name"]), (&Value::Null, &serde_json::json!("unknown")));
    assert_eq!(lines[1]["unknown"], "too little ink to be a digit");
    assert!(lines[1]["warning"].is_string() && lines[1]["predictions"].as_array().unwrap().len() == 3);
    // A threshold above the seven's top probability makes it unknown too.
    let top = lines[0]["predictions"][0]["probability"].as_f64().unwrap();
    assert!(top < 1.0, "the seven is certain: {top}");
    let threshold = format!("{}", (top + 1.0) / 2.0);
    let strict = predict_json(&fixture, &[&seven_path], &["--min-confidence", &threshold]);
    assert_eq!(strict[0]["label"], Value::Null, "{}", strict[0]);
    assert!(strict[0]["unknown"].as_str().unwrap().contains("below the minimum confidence"), "{}", strict[0]);
    // The same classes in the same order; the probabilities agree to rounding (the seven was predicted in a
    // batch of two before, alone now, and libtorch's matrix product may take another path for one row).
    let classes = |line: &Value| -> Vec<(Value, f64)> {
        let predictions = line["predictions"].as_array().unwrap();
        predictions.iter().map(|p| (p["label"].clone(), p["probability"].as_f64().unwrap())).collect()
    };
    for ((label, p), (expected_label, expected_p)) in classes(&strict[0]).iter().zip(&classes(&lines[0])) {
        assert_eq!(label, expected_label, "{} vs {}", strict[0], lines[0]);
        assert!((p - expected_p).abs() <= 1e-6, "{} vs {}", strict[0], lines[0]);
    }
    assert_eq!(classes(&strict[0]).len(), 3);
    // In text, a line that says unknown and why, then the top classes.
    let run_dir = fixture.path("run");
    let args = ["predict", "--model", run_dir.to_str().unwrap(), "--device", "cpu", "--min-confidence", &threshold];
    let text = mnist_tch(&[&args[..], &[seven_path.to_str().unwrap()]].concat());
    text.assert_ok();
    assert!(text.stdout.contains("seven.png: unknown (the top probability"), "{}", text.stdout);
    // Not a probability: refused.
    let bad = mnist_tch(&[&args[..6], &["--min-confidence", "1.5", seven_path.to_str().unwrap()]].concat());
    assert_eq!(bad.code(), Some(2), "{}", bad.stderr);
}

#[test]
fn serve_answers_unknown_under_its_min_confidence_and_the_query_overrides_it() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "2"]).assert_ok();
    let mut png = Vec::new();
    DynamicImage::ImageLuma8(seven(200))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let server = Server::start(&fixture.path("run"), &["--min-confidence", "1"]);
    let strict = server.post("/predict", &png).json();
    let top = strict["predictions"][0]["probability"].as_f64().unwrap();
    assert!(top < 1.0, "the seven is certain: {top}");
    assert_eq!((&strict["label"], &strict["name"]), (&Value::Null, &serde_json::json!("unknown")), "{strict}");
    let relaxed = server.post("/predict?min_confidence=0", &png).json();
    assert_eq!(relaxed["label"], relaxed["predictions"][0]["label"], "{relaxed}");
    assert_eq!(relaxed["predictions"], strict["predictions"]);
    let bad = server.post("/predict?min_confidence=abc", &png);
    assert_eq!(bad.status, 400);
    assert!(bad.error().contains("min_confidence"), "{}", bad.error());
    // The page sends the value typed in its control and shows why an answer is unknown.
    let page = String::from_utf8(server.get("/").body).unwrap();
    assert!(page.contains("min_confidence=") && page.contains("answer.unknown") && page.contains("answer.warning"));
}
