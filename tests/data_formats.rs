//! Data sets in every form mnist-tch reads — a directory of IDX files (raw or .gz, as Keras caches
//! Fashion-MNIST) or a Keras-style .npz — give the same run, every malformed .npz is one clear line,
//! and without --data the default data set is found (or explained) from any working directory.

mod common;

use common::{Fixture, Run, SIDE, synthetic};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One `.npy` array as NumPy writes it: magic, version 1.0, a header padded to 64 bytes, the data.
fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let shape_text = match shape {
        [one] => format!("({one},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Named `.npy` entries of an `.npz` file.
type Arrays = Vec<(String, Vec<u8>)>;

/// The synthetic set of `Fixture::new` (600 training and 200 test images of 8x8, 4 classes) as the
/// arrays of Keras's mnist.npz: uint8 images `[N, 8, 8]` and uint8 labels `[N]`.
fn keras_arrays() -> Arrays {
    let (train_pixels, train_labels) = synthetic(600, 1);
    let (test_pixels, test_labels) = synthetic(200, 2);
    let side = SIDE as usize;
    vec![
        ("x_train".into(), npy("|u1", &[600, side, side], &train_pixels)),
        ("y_train".into(), npy("|u1", &[600], &train_labels)),
        ("x_test".into(), npy("|u1", &[200, side, side], &test_pixels)),
        ("y_test".into(), npy("|u1", &[200], &test_labels)),
    ]
}

/// Replaces (or adds) the array `name`.
fn set(arrays: &mut Arrays, name: &str, bytes: Vec<u8>) {
    arrays.retain(|(n, _)| n != name);
    arrays.push((name.into(), bytes));
}

/// Writes `arrays` as an .npz file, deflated as numpy.savez_compressed (and Keras's mnist.npz) are.
fn write_npz(path: &Path, arrays: &Arrays) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in arrays {
        zip.start_file(format!("{name}.npy"), options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

/// Trains on `data` with the fixture's small settings into `fixture/out`.
fn train_on(fixture: &Fixture, data: &Path, out: &str, extra: &[&str]) -> Run {
    let out = fixture.path(out);
    let mut args = vec!["train", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--device", "cpu"];
    if !extra.contains(&"--num-classes") {
        args.extend(["--num-classes", "4"]);
    }
    args.extend(["--epochs", "3"]);
    args.extend_from_slice(extra);
    common::mnist_tch(&args)
}

/// metrics.csv without its last column, the epoch's wall time.
fn metrics(run_dir: &Path) -> Vec<String> {
    let csv = std::fs::read_to_string(run_dir.join("metrics.csv")).unwrap();
    csv.lines().map(|line| line.rsplit_once(',').unwrap().0.to_string()).collect()
}

fn config(run_dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run_dir.join("config.json")).unwrap()).unwrap()
}

#[test]
fn npz_and_idx_of_the_same_data_give_identical_runs() {
    let fixture = Fixture::new(false);
    let deflated = fixture.path("mnist.npz");
    write_npz(&deflated, &keras_arrays());
    // The same data written by tch (stored, not deflated), with int64 labels as other caches have them.
    let stored = fixture.path("int64-labels.npz");
    let to_tensor = |pixels: Vec<u8>, count: i64| tch::Tensor::from_slice(&pixels).view([count, 8, 8]);
    let (train_pixels, train_labels) = synthetic(600, 1);
    let (test_pixels, test_labels) = synthetic(200, 2);
    let int64 = |labels: &[u8]| tch::Tensor::from_slice(&labels.iter().map(|&l| l as i64).collect::<Vec<_>>());
    tch::Tensor::write_npz(
        &[
            ("x_train", to_tensor(train_pixels, 600)),
            ("y_train", int64(&train_labels)),
            ("x_test", to_tensor(test_pixels, 200)),
            ("y_test", int64(&test_labels)),
        ],
        &stored,
    )
    .unwrap();

    let idx = fixture.train("idx", &[]);
    idx.assert_ok();
    let from_npz = train_on(&fixture, &deflated, "npz", &[]);
    from_npz.assert_ok();
    let from_int64 = train_on(&fixture, &stored, "npz64", &[]);
    from_int64.assert_ok();
    assert!(from_npz.stdout.contains("480 training, 120 validation, 200 test images of 8x8"), "{}", from_npz.stdout);
    assert!(idx.test_accuracy() >= 0.95, "{}", idx.stdout);
    assert_eq!(metrics(&fixture.path("npz")), metrics(&fixture.path("idx")), "npz and IDX loaders disagree");
    assert_eq!(metrics(&fixture.path("npz64")), metrics(&fixture.path("idx")), "int64 labels change the run");
    assert_eq!(from_npz.test_accuracy(), idx.test_accuracy());

    // The run remembers its .npz; evaluate reads it again, and reads .npz for an IDX-trained run too.
    let run_config = config(&fixture.path("npz"));
    assert_eq!(run_config["data"]["dir"], deflated.canonicalize().unwrap().to_str().unwrap());
    assert_eq!(run_config["data"]["class_names"], serde_json::json!(["0", "1", "2", "3"]));
    let npz_run = fixture.path("npz");
    let evaluated = common::mnist_tch(&["evaluate", "--model", npz_run.to_str().unwrap(), "--device", "cpu"]);
    evaluated.assert_ok();
    assert_eq!(evaluated.test_accuracy(), from_npz.test_accuracy());
    let idx_run = fixture.path("idx");
    let across = common::mnist_tch(&[
        "evaluate",
        "--model",
        idx_run.to_str().unwrap(),
        "--data",
        deflated.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    across.assert_ok();
    assert_eq!(across.test_accuracy(), idx.test_accuracy());
}

#[test]
fn keras_fashion_mnist_cache_directory_is_read_as_it_is() {
    // keras.datasets.fashion_mnist caches ~/.keras/datasets/fashion-mnist/ with the four .gz files.
    let fixture = Fixture::new(true);
    let keras_cache = fixture.path("keras/datasets/fashion-mnist");
    std::fs::create_dir_all(keras_cache.parent().unwrap()).unwrap();
    std::fs::rename(fixture.data(), &keras_cache).unwrap();
    let run = train_on(&fixture, &keras_cache, "run", &["--num-classes", "10"]);
    run.assert_ok();
    assert!(run.test_accuracy() >= 0.95, "{}", run.stdout);
    let run_config = config(&fixture.path("run"));
    assert_eq!(run_config["data"]["class_names"][0], "T-shirt/top");
    assert_eq!(run_config["data"]["class_names"][9], "Ankle boot");
}

/// Writes the good arrays, lets `damage` change them, and checks that training fails with one line
/// holding every fragment and leaves no run behind.
fn npz_fails(damage: impl FnOnce(&mut Arrays), fragments: &[&str]) {
    let fixture = Fixture::new(false);
    let path = fixture.path("mnist.npz");
    let mut arrays = keras_arrays();
    damage(&mut arrays);
    write_npz(&path, &arrays);
    train_on(&fixture, &path, "run", &[]).assert_clean_error(fragments);
    assert!(!fixture.path("run").join("config.json").exists(), "a failed run must not leave a config behind");
}

#[test]
fn npz_without_the_keras_keys() {
    npz_fails(
        |a| {
            let x = a.iter().position(|(n, _)| n == "x_train").unwrap();
            a[x].0 = "images".into();
        },
        &["mnist.npz", "no array 'x_train'", "images, y_train, x_test, y_test"],
    );
}

#[test]
fn npz_of_the_wrong_dtype() {
    let side = SIDE as usize;
    npz_fails(
        |a| set(a, "x_train", npy("<f4", &[600, side, side], &vec![0u8; 600 * 64 * 4])),
        &["mnist.npz", "x_train has dtype float32, expected uint8"],
    );
    npz_fails(
        |a| set(a, "y_test", npy("<f8", &[200], &vec![0u8; 200 * 8])),
        &["mnist.npz", "y_test has dtype float64, expected integer class labels"],
    );
}

#[test]
fn npz_of_the_wrong_shape() {
    npz_fails(
        |a| set(a, "x_train", npy("|u1", &[600, 64], &[1u8; 600 * 64])),
        &["mnist.npz", "x_train has shape (600, 64)"],
    );
    npz_fails(|a| set(a, "y_train", npy("|u1", &[600, 1], &[1u8; 600])), &["mnist.npz", "y_train has shape (600, 1)"]);
    npz_fails(
        |a| set(a, "x_test", npy("|u1", &[200, 6, 6], &[1u8; 200 * 36])),
        &["x_train holds 8x8 images but x_test holds 6x6"],
    );
    npz_fails(
        |a| {
            set(a, "x_train", npy("|u1", &[0, 8, 8], &[]));
            set(a, "y_train", npy("|u1", &[0], &[]));
        },
        &["mnist.npz", "x_train holds 0 images"],
    );
}

#[test]
fn npz_with_image_and_label_counts_that_differ() {
    npz_fails(
        |a| set(a, "y_train", npy("|u1", &[599], &[1u8; 599])),
        &["mnist.npz", "x_train holds 600 images but y_train holds 599 labels"],
    );
}

#[test]
fn npz_with_labels_out_of_range() {
    let (_, mut labels) = synthetic(200, 2);
    labels[17] = 4; // the fixture has 4 classes: 0..=3
    npz_fails(
        |a| set(a, "y_test", npy("|u1", &[200], &labels)),
        &["mnist.npz", "y_test: label 4 at index 17 is out of range"],
    );
    let negative: Vec<u8> = (0..600i64).flat_map(|i| (if i == 5 { -1 } else { i % 4 }).to_le_bytes()).collect();
    npz_fails(|a| set(a, "y_train", npy("<i8", &[600], &negative)), &["mnist.npz", "y_train: label -1 at index 5"]);
}

#[test]
fn npz_whose_header_claims_more_data_than_it_holds() {
    // tch's own reader would copy 600*64 bytes out of a 100-byte buffer here (a crash or garbage).
    npz_fails(
        |a| set(a, "x_train", npy("|u1", &[600, 8, 8], &[7u8; 100])),
        &["mnist.npz", "x_train: truncated: 100 bytes", "needs 38400"],
    );
    npz_fails(
        |a| set(a, "y_test", npy("|u1", &[200], &[1u8; 203])),
        &["mnist.npz", "y_test: 3 bytes of trailing data"],
    );
}

#[test]
fn npz_with_an_array_tch_cannot_read() {
    // tch reads every array of the file: one it cannot read is named even when it is not needed.
    npz_fails(|a| set(a, "names", npy("<U5", &[2], &[0u8; 40])), &["mnist.npz", "array 'names'", "'<U5'"]);
}

#[test]
fn truncated_and_corrupt_npz() {
    let fixture = Fixture::new(false);
    let path = fixture.path("mnist.npz");
    write_npz(&path, &keras_arrays());
    let bytes = std::fs::read(&path).unwrap();

    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    train_on(&fixture, &path, "run", &[]).assert_clean_error(&["mnist.npz", "not a readable .npz file"]);

    // Damage inside the first entry's compressed data: the deflate stream or the CRC catches it.
    let mut corrupt = bytes.clone();
    corrupt[200..260].iter_mut().for_each(|b| *b ^= 0x5a);
    std::fs::write(&path, &corrupt).unwrap();
    let run = train_on(&fixture, &path, "run", &[]);
    run.assert_clean_error(&["mnist.npz"]);
    assert!(run.stderr.contains("corrupt") || run.stderr.contains("not a"), "{}", run.stderr);

    std::fs::write(&path, b"PK\x03\x04 but not a zip archive").unwrap();
    train_on(&fixture, &path, "run", &[]).assert_clean_error(&["mnist.npz", "not a readable .npz file"]);
    assert!(!fixture.path("run").join("config.json").exists());
}

#[test]
fn npz_path_that_is_a_directory_missing_or_another_file() {
    let fixture = Fixture::new(false);
    let directory = fixture.path("mnist.npz");
    std::fs::create_dir(&directory).unwrap();
    train_on(&fixture, &directory, "run", &[])
        .assert_clean_error(&["mnist.npz", "is a directory, expected an .npz file"]);
    train_on(&fixture, &fixture.path("nowhere.npz"), "run", &[]).assert_clean_error(&["nowhere.npz", "does not exist"]);
    let idx_file = fixture.data().join(common::TRAIN_IMAGES);
    train_on(&fixture, &idx_file, "run", &[]).assert_clean_error(&[common::TRAIN_IMAGES, "not an .npz archive"]);
}

/// Runs the binary in `working_dir` with only `env` for the data lookup: HOME and, when given,
/// XDG_DATA_HOME and MNIST_TCH_DATA.
fn run_in(working_dir: &Path, env: &[(&str, &Path)], args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mnist-tch"));
    command.args(args).current_dir(working_dir).env_remove("MNIST_TCH_DATA").env_remove("XDG_DATA_HOME");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("the mnist-tch binary runs");
    Run {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        output,
    }
}

/// Copies the fixture's four files into `dir`.
fn install(fixture: &Fixture, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(fixture.data()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
}

/// The data set the newest run in `working_dir/runs` was trained on.
fn trained_on(working_dir: &Path) -> PathBuf {
    // Runs are numbered runs/train1, runs/train2, ... in order.
    let newest = std::fs::read_dir(working_dir.join("runs"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_prefix("train")?.parse::<u32>().ok())
        .max()
        .unwrap();
    let run_dir = working_dir.join(format!("runs/train{newest}"));
    PathBuf::from(config(&run_dir)["data"]["dir"].as_str().unwrap())
}

#[test]
fn default_data_is_found_from_any_directory_or_explained() {
    let fixture = Fixture::new(false);
    let (work, home) = (fixture.path("work"), fixture.path("home"));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    let quick = ["train", "--epochs", "1", "--num-classes", "4", "--device", "cpu", "--quiet"];
    let per_user = home.join(".local/share/mnist-tch/mnist");

    // Nothing installed: one line naming where it looked, and that setup.sh installs Fashion-MNIST too
    // (no --data path that does not exist from here).
    let run = run_in(&work, &[("HOME", &home)], &quick);
    run.assert_clean_error(&[
        work.join("data/mnist").to_str().unwrap(),
        per_user.to_str().unwrap(),
        "scripts/setup.sh",
        "for Fashion-MNIST: scripts/setup.sh installs it too",
    ]);
    // Fashion-MNIST in the per-user directory only: its full path, usable from anywhere.
    let fashion = home.join(".local/share/mnist-tch/fashion-mnist");
    std::fs::create_dir_all(&fashion).unwrap();
    run_in(&work, &[("HOME", &home)], &quick).assert_clean_error(&[&format!("--data {}", fashion.display())]);
    std::fs::remove_dir_all(&fashion).unwrap();
    assert!(!work.join("runs").exists(), "a failed run must not leave a run directory behind");

    // The per-user copy, from a directory that has none of its own.
    install(&fixture, &per_user);
    run_in(&work, &[("HOME", &home)], &quick).assert_ok();
    assert_eq!(trained_on(&work), per_user.canonicalize().unwrap());
    let run_config = config(&work.join("runs/train1"));
    assert_eq!(run_config["data"]["class_names"], serde_json::json!(["0", "1", "2", "3"]));

    // XDG_DATA_HOME moves the per-user directory.
    let xdg = fixture.path("xdg");
    install(&fixture, &xdg.join("mnist-tch/mnist"));
    run_in(&work, &[("HOME", &home), ("XDG_DATA_HOME", &xdg)], &quick).assert_ok();
    assert_eq!(trained_on(&work), xdg.join("mnist-tch/mnist").canonicalize().unwrap());

    // ./data/mnist comes before the per-user copy.
    install(&fixture, &work.join("data/mnist"));
    run_in(&work, &[("HOME", &home)], &quick).assert_ok();
    assert_eq!(trained_on(&work), work.join("data/mnist").canonicalize().unwrap());

    // $MNIST_TCH_DATA before both, and it may name an .npz file.
    let npz = fixture.path("mnist.npz");
    write_npz(&npz, &keras_arrays());
    run_in(&work, &[("HOME", &home), ("MNIST_TCH_DATA", &npz)], &quick).assert_ok();
    assert_eq!(trained_on(&work), npz.canonicalize().unwrap());
    let missing = fixture.path("missing");
    run_in(&work, &[("HOME", &home), ("MNIST_TCH_DATA", &missing)], &quick).assert_clean_error(&[
        "$MNIST_TCH_DATA",
        "missing",
        "does not exist",
    ]);
}
