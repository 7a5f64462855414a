//! The user's own pictures as a data set: class folders (sorted, their names the class names) or
//! train/ and test/ trees, decoded once into a cache outside the folder, in a grey or a colour frame; and
//! the bad folders a user has, each refused in one line with nothing written.

mod common;

use common::{Run, json};
use image::{GrayImage, Luma, Rgb, RgbImage};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A small deterministic generator.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
}

/// Runs the binary with its picture cache in `cache`.
fn run(cache: &Path, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_mnist-tch"))
        .args(args)
        .env_remove("MNIST_TCH_DATA")
        .env("MNIST_TCH_CACHE", cache)
        .output()
        .expect("the mnist-tch binary runs");
    Run {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        output,
    }
}

/// 8x8 grey pictures: class `c` of `classes` lights row band `c` over noise.
fn band(class: u32, rng: &mut Lcg) -> GrayImage {
    GrayImage::from_fn(8, 8, |_, y| {
        Luma([if y / 2 == class { 155 + (rng.next() % 100) as u8 } else { (rng.next() % 100) as u8 }])
    })
}

/// `DIR/<tree>/<class>/<n>.png` for each class name, `count` pictures each.
fn write_bands(dir: &Path, tree: &str, names: &[&str], count: u32, seed: u64) {
    let mut rng = Lcg(seed);
    for (class, name) in names.iter().enumerate() {
        let folder = dir.join(tree).join(name);
        std::fs::create_dir_all(&folder).unwrap();
        for n in 0..count {
            band(class as u32, &mut rng).save(folder.join(format!("{n:03}.png"))).unwrap();
        }
    }
}

/// Every file under `dir` with its size and contents' length, to check nothing was written there.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let len = std::fs::metadata(&path).unwrap().len();
                files.push((path, len));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn class_folders_train_with_their_names_through_a_cache_outside_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let (pics, cache) = (tmp.path().join("pics"), tmp.path().join("cache"));
    let names = ["b-band0", "a-band1", "d-band2", "c-band3"];
    write_bands(&pics, "train", &names, 60, 1);
    write_bands(&pics, "test", &names, 20, 2);
    std::fs::write(pics.join("train/a-band1/.DS_Store"), b"x").unwrap();
    std::fs::write(pics.join("train/a-band1/notes.txt"), b"x").unwrap();
    let before = snapshot(&pics);
    let out = tmp.path().join("run");
    let args = ["train", "--data", pics.to_str().unwrap(), "--input", "8x8", "--epochs", "5", "--out"];
    let first = run(&cache, &[&args[..], &[out.to_str().unwrap()]].concat());
    first.assert_ok();
    assert!(first.stdout.contains("Pictures: 320 decoded in"), "{}", first.stdout);
    assert!(first.stdout.contains("Skipped: 1 hidden, 1 not pictures"), "{}", first.stdout);
    assert!(first.test_accuracy() > 0.9, "{}", first.stdout);
    let config = json(&out.join("config.json"));
    // Sorted folder names, as ImageFolder: "a-band1" is class 0.
    assert_eq!(config["data"]["class_names"], serde_json::json!(["a-band1", "b-band0", "c-band3", "d-band2"]));
    assert_eq!(config["data"]["fit"], "auto");
    assert_eq!(config["model"]["input_shape"], serde_json::json!([8, 8]));
    assert!(config["model"].get("channels").is_none(), "a grey frame writes no channels");
    assert_eq!(snapshot(&pics), before, "nothing is written into the picture folder");
    assert_eq!(std::fs::read_dir(cache.join("pictures")).unwrap().count(), 2, "one cache file per tree");

    // Read again from the cache; a picture replaced is decoded again.
    let out2 = tmp.path().join("run2");
    let second = run(&cache, &[&args[..], &[out2.to_str().unwrap()]].concat());
    assert!(second.assert_ok().stdout.contains("Pictures: 320 read from the cache"), "{}", second.stdout);
    band(3, &mut Lcg(9)).save(pics.join("train/a-band1/000.png")).unwrap();
    let out3 = tmp.path().join("run3");
    let third = run(&cache, &[&args[..], &[out3.to_str().unwrap()]].concat());
    assert!(third.assert_ok().stdout.contains("decoded in"), "{}", third.stdout);

    // evaluate RUN --data DIR reads a folder (its test tree) into the run's frame.
    let evaluated = run(&cache, &["evaluate", out.to_str().unwrap(), "--data", pics.to_str().unwrap(), "--json"]);
    let report: serde_json::Value = serde_json::from_str(evaluated.assert_ok().stdout.trim()).unwrap();
    assert!(report["accuracy"].as_f64().unwrap() > 0.9, "{report}");
}

#[test]
fn without_a_test_tree_the_header_says_what_test_accuracy_is_computed_on() {
    let tmp = tempfile::tempdir().unwrap();
    let (pics, cache) = (tmp.path().join("pics"), tmp.path().join("cache"));
    write_bands(&pics, ".", &["x", "y"], 40, 3);
    let out = tmp.path().join("run");
    let done = run(
        &cache,
        &["train", "--data", pics.to_str().unwrap(), "--input", "8x8", "--epochs", "1", "--out", out.to_str().unwrap()],
    );
    assert!(done.assert_ok().stdout.contains("No test set:"), "{}", done.stdout);
    assert!(done.stdout.contains("\"Test accuracy\" is computed on the validation part"), "{}", done.stdout);
    assert!(done.stdout.contains("64 training, 16 validation, 16 test images"), "{}", done.stdout);
}

/// 8x8 RGB pictures: a 3x3 square of red or of green (the same grey, 54, in the BT.709 luma the `image`
/// crate converts with) somewhere on black.
fn square(green: bool, rng: &mut Lcg) -> RgbImage {
    let (x0, y0) = (rng.next() % 6, rng.next() % 6);
    RgbImage::from_fn(8, 8, |x, y| {
        let inside = (x0..x0 + 3).contains(&x) && (y0..y0 + 3).contains(&y);
        match (inside, green) {
            (false, _) => Rgb([0, 0, 0]),
            (true, false) => Rgb([255, 0, 0]),
            (true, true) => Rgb([0, 76, 0]),
        }
    })
}

#[test]
fn colour_decides_the_label_only_in_a_colour_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let (pics, cache) = (tmp.path().join("pics"), tmp.path().join("cache"));
    let mut rng = Lcg(5);
    for tree in ["train", "test"] {
        for (name, green) in [("green", true), ("red", false)] {
            std::fs::create_dir_all(pics.join(tree).join(name)).unwrap();
            for n in 0..80 {
                square(green, &mut rng).save(pics.join(tree).join(name).join(format!("{n}.png"))).unwrap();
            }
        }
    }
    let accuracy = |frame: &str| {
        let out = tmp.path().join(format!("run-{frame}"));
        let done = run(
            &cache,
            &[
                "train",
                "--data",
                pics.to_str().unwrap(),
                "--input",
                frame,
                "--epochs",
                "8",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        (done.assert_ok().test_accuracy(), json(&out.join("config.json")), done.stdout.clone())
    };
    let (colour, config, stdout) = accuracy("3x8x8");
    let (grey, _, _) = accuracy("1x8x8");
    assert!(stdout.contains("frame 3x8x8 (RGB"), "{stdout}");
    assert_eq!(config["model"]["channels"], 3);
    assert!(colour > 0.95, "a colour frame sees the colour: {colour}");
    assert!(grey < 0.75, "a grey frame cannot tell red from green of the same grey: {grey}");
    // The run answers a colour picture as it was trained, and a grey parent refuses a colour frame.
    let picture = pics.join("test/red/0.png");
    let predicted =
        run(&cache, &["predict", "--model", tmp.path().join("run-3x8x8").to_str().unwrap(), picture.to_str().unwrap()]);
    assert!(predicted.assert_ok().stdout.contains(": red "), "{}", predicted.stdout);
    let explained = tmp.path().join("explained");
    let colour_run = tmp.path().join("run-3x8x8");
    run(
        &cache,
        &[
            "predict",
            "--model",
            colour_run.to_str().unwrap(),
            picture.to_str().unwrap(),
            "--explain",
            explained.to_str().unwrap(),
        ],
    )
    .assert_clean_error(&["--explain draws grey frames", "3x8x8"]);
    assert!(!explained.exists());
    serve_answers_in_the_colour_frame(&tmp.path().join("run-3x8x8"), &picture);
    let refused = tmp.path().join("refused");
    let finetune = run(
        &cache,
        &[
            "finetune",
            "--from",
            tmp.path().join("run-1x8x8").to_str().unwrap(),
            "--data",
            pics.to_str().unwrap(),
            "--input",
            "3x8x8",
            "--out",
            refused.to_str().unwrap(),
        ],
    );
    finetune.assert_clean_error(&["images are 3x8x8", "takes 8x8"]);
    assert!(!refused.exists());
}

/// `serve` of a colour run: /predict fits an upload as the run was trained, and /v2 takes and describes
/// `[N, 3, rows, cols]`.
fn serve_answers_in_the_colour_frame(run: &Path, picture: &Path) {
    let server = common::server::Server::start(run, &[]);
    let answer = server.post("/predict", &std::fs::read(picture).unwrap());
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.json()["name"], "red", "{}", answer.json());
    let metadata = server.get("/v2/models/mnist").json();
    assert_eq!(metadata["inputs"][0]["shape"], serde_json::json!([-1, 3, 8, 8]), "{metadata}");
    let pixels: Vec<f32> = image::open(picture).unwrap().to_rgb8().pixels().flat_map(|p| p.0).map(f32::from).collect();
    // Channel-major: every red value, then every green, then every blue, in [0, 1].
    let planes: Vec<f32> =
        (0..3).flat_map(|c| pixels.iter().skip(c).step_by(3).map(|v| v / 255.0).collect::<Vec<_>>()).collect();
    let body =
        serde_json::json!({"inputs": [{"name": "input", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": planes}]});
    let infer = server.post_json("/v2/models/mnist/infer", &body);
    assert_eq!(infer.status, 200, "{}", String::from_utf8_lossy(&infer.body));
    let flat = serde_json::json!({"inputs": [{"name": "input", "shape": [1, 8, 8], "datatype": "FP32", "data": vec![0.0; 64]}]});
    assert_eq!(
        server.post_json("/v2/models/mnist/infer", &flat).status,
        400,
        "a grey tensor is not this model's input"
    );
}

/// A two-class folder of good pictures, with `spoil` applied to it.
fn bad_folder(tmp: &Path, spoil: impl FnOnce(&Path)) -> PathBuf {
    let pics = tmp.join("pics");
    write_bands(&pics, ".", &["a", "b"], 20, 7);
    spoil(&pics);
    pics
}

#[test]
fn bad_picture_folders_are_refused_in_one_line_with_nothing_written() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let refuse = |pics: &Path, extra: &[&str], fragments: &[&str]| {
        let out = tmp.path().join("run");
        let frame: &[&str] = if extra.contains(&"--input") { &[] } else { &["--input", "8x8"] };
        let args =
            [&["train", "--data", pics.to_str().unwrap(), "--out", out.to_str().unwrap()], frame, extra].concat();
        run(&cache, &args).assert_clean_error(fragments);
        assert!(!out.exists(), "a refused run wrote {}", out.display());
    };
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    refuse(&empty, &[], &["is an empty folder", "class folders"]);

    let one = tmp.path().join("one");
    write_bands(&one, ".", &["only"], 5, 1);
    refuse(&one, &[], &["one class folder (only)", "at least 2 classes"]);

    let pics = bad_folder(&tmp.path().join("t1"), |p| std::fs::create_dir(p.join("c-empty")).unwrap());
    refuse(&pics, &[], &["c-empty: no pictures in this class folder"]);

    let pics = bad_folder(&tmp.path().join("t2"), |p| {
        let good = std::fs::read(p.join("a/000.png")).unwrap();
        let mut corrupt = good.clone();
        let middle = corrupt.len() / 2;
        corrupt[middle..].iter_mut().for_each(|b| *b ^= 0x5a);
        std::fs::write(p.join("a/001.png"), corrupt).unwrap();
    });
    refuse(&pics, &[], &["a/001.png", "not a readable image", "--skip-bad"]);
    // --skip-bad: skipped and counted in the header.
    let out = tmp.path().join("skipping");
    let skipped = run(
        &cache,
        &[
            "train",
            "--data",
            pics.to_str().unwrap(),
            "--input",
            "8x8",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--skip-bad",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(
        skipped.assert_ok().stdout.contains("1 that would not decode (--skip-bad; the first: "),
        "{}",
        skipped.stdout
    );
    assert!(json(&out.join("config.json"))["data"]["skip_bad"].as_bool().unwrap());

    let pics = bad_folder(&tmp.path().join("t3"), |p| {
        let mut jpeg = Vec::new();
        let picture = image::DynamicImage::ImageLuma8(band(1, &mut Lcg(3)));
        picture.write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageOutputFormat::Jpeg(90)).unwrap();
        std::fs::write(p.join("b/cut.jpg"), &jpeg[..jpeg.len() / 3]).unwrap();
    });
    refuse(&pics, &[], &["b/cut.jpg", "not a readable image"]);

    let pics = bad_folder(&tmp.path().join("t4"), |_| {});
    refuse(&pics, &["--input", "3x8x8", "--fit", "digits"], &["--fit digits works on grey frames"]);
}

/// Kaggle's layout for `count` 8x8 band images: `label,pixel0..pixel63` (or without the label column).
fn kaggle_csv(count: u32, labelled: bool, seed: u64) -> String {
    let mut rng = Lcg(seed);
    let pixels: Vec<String> = (0..64).map(|i| format!("pixel{i}")).collect();
    let mut text = if labelled { format!("label,{}\n", pixels.join(",")) } else { format!("{}\n", pixels.join(",")) };
    for n in 0..count {
        let class = n % 4;
        let row: Vec<String> = band(class, &mut rng).pixels().map(|p| p[0].to_string()).collect();
        if labelled {
            text += &format!("{class},");
        }
        text += &format!("{}\n", row.join(","));
    }
    text
}

#[test]
fn a_kaggle_csv_trains_and_predict_writes_its_submission() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (train, test) = (tmp.path().join("train.csv"), tmp.path().join("test.csv"));
    std::fs::write(&train, kaggle_csv(400, true, 1)).unwrap();
    std::fs::write(&test, kaggle_csv(12, false, 2)).unwrap();
    let out = tmp.path().join("run");
    let args = ["train", "--data", train.to_str().unwrap(), "--num-classes", "4", "--epochs", "4", "--out"];
    let done = run(&cache, &[&args[..], &[out.to_str().unwrap()]].concat());
    assert!(done.assert_ok().stdout.contains("images of 8x8, 4 classes"), "{}", done.stdout);
    assert!(done.stdout.contains("No test set:"), "{}", done.stdout);
    assert!(done.test_accuracy() > 0.9, "{}", done.stdout);
    let submission = tmp.path().join("submission.csv");
    let predict = ["predict", "--model", out.to_str().unwrap(), test.to_str().unwrap(), "--out"];
    run(&cache, &[&predict[..], &[submission.to_str().unwrap()]].concat()).assert_ok();
    let lines: Vec<String> = std::fs::read_to_string(&submission).unwrap().lines().map(String::from).collect();
    let expected: Vec<String> =
        std::iter::once("ImageId,Label".to_string()).chain((0..12).map(|n| format!("{},{}", n + 1, n % 4))).collect();
    assert_eq!(lines, expected);
    // The write rule: never over an existing file without --overwrite, never over a run's files.
    run(&cache, &[&predict[..], &[submission.to_str().unwrap()]].concat()).assert_clean_error(&["already exists"]);
    let own = out.join("metrics.csv");
    let before = std::fs::read(&own).unwrap();
    run(&cache, &[&predict[..], &[own.to_str().unwrap(), "--overwrite"]].concat())
        .assert_clean_error(&["file of the run directory"]);
    assert_eq!(std::fs::read(&own).unwrap(), before);
}

#[test]
fn bad_kaggle_csvs_are_refused_by_line_and_column_with_nothing_written() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let good = kaggle_csv(40, true, 3);
    let spoil_row = |line: usize, edit: &dyn Fn(&str) -> String| -> String {
        good.lines().enumerate().map(|(i, l)| if i == line { edit(l) } else { l.to_string() } + "\n").collect()
    };
    let cases: Vec<(String, Vec<&str>)> = vec![
        (spoil_row(3, &|l| l.rsplit_once(',').unwrap().0.to_string()), vec!["line 4 has 64 columns, the header 65"]),
        (spoil_row(5, &|l| l.replacen(",", ",x", 1)), vec!["line 6", "is not an integer"]),
        (
            spoil_row(2, &|l| format!("{},256", l.rsplit_once(',').unwrap().0)),
            vec!["line 3, column pixel63: 256 is outside 0..255"],
        ),
        (kaggle_csv(40, false, 3), vec!["no label column", "pixel0"]),
    ];
    for (n, (text, fragments)) in cases.iter().enumerate() {
        let file = tmp.path().join(format!("bad{n}.csv"));
        std::fs::write(&file, text).unwrap();
        let out = tmp.path().join("run");
        let args = ["train", "--data", file.to_str().unwrap(), "--num-classes", "4", "--out", out.to_str().unwrap()];
        let mut expected = vec![file.to_str().unwrap()];
        expected.extend(fragments);
        run(&cache, &args).assert_clean_error(&expected);
        assert!(!out.exists(), "a refused run wrote {}", out.display());
    }
}
