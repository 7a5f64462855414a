//! Every malformed input is one clear line naming the file (or flag) and the problem, exit code 1
//! (2 for flags clap rejects), and no panic or C++ abort.

mod common;

use common::{Files, Fixture, SIDE, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, mnist_tch, write_gz};
use mnist_tch::idx::{IdxKind, encode};
use std::path::Path;

/// Writes the good synthetic data set, then lets `corrupt` damage it.
fn broken(corrupt: impl FnOnce(&Path)) -> Fixture {
    let fixture = Fixture::new(false);
    corrupt(&fixture.data());
    fixture
}

fn train_fails(fixture: &Fixture, fragments: &[&str]) {
    fixture.train("run", &[]).assert_clean_error(fragments);
    assert!(!fixture.path("run").join("config.json").exists(), "a failed run must not leave a config behind");
}

#[test]
fn wrong_magic_number() {
    let f = broken(|d| {
        let path = d.join(TRAIN_IMAGES);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[2] = 0x12;
        std::fs::write(path, bytes).unwrap();
    });
    train_fails(&f, &[TRAIN_IMAGES, "not an IDX images file"]);
}

#[test]
fn swapped_images_and_labels() {
    let f = broken(|d| {
        std::fs::rename(d.join(TRAIN_IMAGES), d.join("tmp")).unwrap();
        std::fs::rename(d.join(TRAIN_LABELS), d.join(TRAIN_IMAGES)).unwrap();
        std::fs::rename(d.join("tmp"), d.join(TRAIN_LABELS)).unwrap();
    });
    train_fails(&f, &[TRAIN_IMAGES, "holds labels"]);
}

#[test]
fn truncated_header() {
    let f = broken(|d| std::fs::write(d.join(TRAIN_IMAGES), [0, 0, 8, 3, 0, 0]).unwrap());
    train_fails(&f, &[TRAIN_IMAGES, "truncated header: 6 bytes"]);
}

#[test]
fn empty_file() {
    let f = broken(|d| std::fs::write(d.join(TEST_LABELS), []).unwrap());
    train_fails(&f, &[TEST_LABELS, "truncated header: 0 bytes"]);
}

#[test]
fn truncated_body() {
    let f = broken(|d| {
        let path = d.join(TRAIN_IMAGES);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    });
    train_fails(&f, &[TRAIN_IMAGES, "truncated"]);
}

#[test]
fn truncated_body_in_gzip() {
    let fixture = Fixture::new(true);
    let files = Files::synthetic(600, 200);
    write_gz(&fixture.data().join(format!("{TRAIN_IMAGES}.gz")), &files.train_images[..1000]);
    train_fails(&fixture, &[TRAIN_IMAGES, "gzip", "truncated"]);
}

#[test]
fn corrupt_gzip() {
    let fixture = Fixture::new(true);
    let path = fixture.data().join(format!("{TRAIN_LABELS}.gz"));
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle..].iter_mut().for_each(|b| *b ^= 0x5a);
    std::fs::write(&path, bytes).unwrap();
    train_fails(&fixture, &[TRAIN_LABELS, "gzip"]);

    let not_gzip = Fixture::new(true);
    std::fs::write(not_gzip.data().join(format!("{TRAIN_IMAGES}.gz")), b"plain text, not gzip").unwrap();
    train_fails(&not_gzip, &[TRAIN_IMAGES, "gzip"]);
}

#[test]
fn image_and_label_counts_differ() {
    let f = broken(|d| {
        let (_, labels) = common::synthetic(599, 1);
        std::fs::write(d.join(TRAIN_LABELS), encode(IdxKind::Labels, &[599], &labels)).unwrap();
    });
    train_fails(&f, &[TRAIN_IMAGES, "600 images", TRAIN_LABELS, "599 labels"]);
}

#[test]
fn absurd_header_counts_do_not_allocate() {
    // 2^32-1 images of 2^16 x 2^16 pixels claimed by a 16-byte file: rejected from the header alone.
    let f = broken(|d| {
        std::fs::write(d.join(TRAIN_IMAGES), encode(IdxKind::Images, &[u32::MAX, 65536, 65536], &[])).unwrap()
    });
    train_fails(&f, &[TRAIN_IMAGES]);
    let g = broken(|d| {
        std::fs::write(d.join(TRAIN_IMAGES), encode(IdxKind::Images, &[u32::MAX, SIDE, SIDE], &[1; 64])).unwrap()
    });
    train_fails(&g, &[TRAIN_IMAGES, "truncated"]);
}

#[test]
fn trailing_data() {
    let f = broken(|d| {
        let path = d.join(TRAIN_LABELS);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[1, 2, 3]);
        std::fs::write(path, bytes).unwrap();
    });
    train_fails(&f, &[TRAIN_LABELS, "3 bytes of trailing data"]);
}

#[test]
fn label_out_of_range() {
    let f = broken(|d| {
        let path = d.join(TEST_LABELS);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8 + 17] = 4; // the fixture has 4 classes: 0..=3
        std::fs::write(path, bytes).unwrap();
    });
    train_fails(&f, &[TEST_LABELS, "label 4 at index 17 is out of range"]);
    // The same labels are fine for a model with more classes.
    f.train("wide", &["--num-classes", "5", "--epochs", "1"]).assert_ok();
}

#[test]
fn label_out_of_range_in_gzip() {
    let fixture = Fixture::new(true);
    let (_, mut labels) = common::synthetic(600, 1);
    labels[3] = 200;
    write_gz(&fixture.data().join(format!("{TRAIN_LABELS}.gz")), &encode(IdxKind::Labels, &[600], &labels));
    train_fails(&fixture, &[TRAIN_LABELS, "label 200 at index 3"]);
}

#[test]
fn zero_images() {
    let f = broken(|d| {
        std::fs::write(d.join(TRAIN_IMAGES), encode(IdxKind::Images, &[0, SIDE, SIDE], &[])).unwrap();
        std::fs::write(d.join(TRAIN_LABELS), encode(IdxKind::Labels, &[0], &[])).unwrap();
    });
    train_fails(&f, &[TRAIN_IMAGES, "header says 0 images"]);
}

#[test]
fn missing_file_and_missing_directory() {
    let f = broken(|d| std::fs::remove_file(d.join(TEST_LABELS)).unwrap());
    train_fails(&f, &["missing test labels file", TEST_LABELS]);

    let fixture = Fixture::new(false);
    let run = mnist_tch(&["train", "--data", fixture.path("nowhere").to_str().unwrap(), "--device", "cpu"]);
    run.assert_clean_error(&["nowhere", "does not exist", "scripts/setup.sh"]);
}

#[test]
fn directory_where_a_file_should_be() {
    let f = broken(|d| {
        std::fs::remove_file(d.join(TRAIN_LABELS)).unwrap();
        std::fs::create_dir(d.join(TRAIN_LABELS)).unwrap();
    });
    train_fails(&f, &[TRAIN_LABELS, "is a directory"]);
}

#[test]
fn train_and_test_image_sizes_differ() {
    let f = broken(|d| {
        let pixels = vec![0u8; 200 * 6 * 6];
        std::fs::write(d.join(common::TEST_IMAGES), encode(IdxKind::Images, &[200, 6, 6], &pixels)).unwrap();
    });
    train_fails(&f, &["8x8", "6x6"]);
}

#[test]
fn bad_flags_are_rejected_by_the_parser() {
    let fixture = Fixture::new(false);
    for (flag, value) in [
        ("--epochs", "0"),
        ("--batch-size", "0"),
        ("--epochs", "-3"),
        ("--hidden", "12,abc"),
        ("--hidden", "0"),
        ("--validation-split", "0"),
        ("--validation-split", "1.5"),
        ("--lr", "-1"),
        ("--device", "tpu"),
    ] {
        let run = fixture.train("run", &[flag, value]);
        assert_eq!(run.code(), Some(2), "{flag} {value}: {}", run.stderr);
        assert!(run.stderr.contains(flag) || run.stderr.contains(value), "{flag} {value}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
}

#[test]
fn batch_larger_than_the_data() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--batch-size", "481"]).assert_clean_error(&["--batch-size 481", "480 training examples"]);
    fixture.train("run", &["--batch-size", "480", "--epochs", "1"]).assert_ok();
}

#[test]
fn cuda_that_is_not_there() {
    let fixture = Fixture::new(false);
    let cuda_devices = mnist_tch::device::cuda_device_count();
    // cuda:99 exists nowhere: always a clean error.
    let run = fixture.train("run", &["--device", "cuda:99"]);
    if cuda_devices == 0 {
        run.assert_clean_error(&["--device cuda:99", "CUDA is not available"]);
        fixture.train("run", &["--device", "cuda"]).assert_clean_error(&["--device cuda:0", "CUDA is not available"]);
    } else {
        run.assert_clean_error(&["--device cuda:99", "CUDA device"]);
    }
}

#[test]
fn evaluate_on_something_that_is_not_a_run() {
    let fixture = Fixture::new(false);
    let missing = fixture.path("no-such-run");
    mnist_tch(&["evaluate", "--model", missing.to_str().unwrap()])
        .assert_clean_error(&["no-such-run", "not a run directory"]);

    let empty = fixture.path("empty");
    std::fs::create_dir(&empty).unwrap();
    mnist_tch(&["evaluate", "--model", empty.to_str().unwrap()]).assert_clean_error(&["config.json", "cannot read"]);

    std::fs::write(empty.join("config.json"), "{ not json").unwrap();
    mnist_tch(&["evaluate", "--model", empty.to_str().unwrap()])
        .assert_clean_error(&["config.json", "not a valid mnist-tch config"]);
}

#[test]
fn evaluate_with_weights_from_another_architecture() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let dir = fixture.path("run");
    let config_path = dir.join("config.json");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&config).unwrap();
    // Another hidden width alone contradicts the layer list written beside it: one line says so.
    json["model"]["hidden"] = serde_json::json!([64]);
    std::fs::write(&config_path, serde_json::to_string(&json).unwrap()).unwrap();
    let run = mnist_tch(&["evaluate", "--model", dir.to_str().unwrap(), "--device", "cpu"]);
    run.assert_clean_error(&["config.json", "\"layers\" do not match the 64-64-4 MLP"]);
    // Without the layer list (as runs of earlier versions wrote it), the architecture is the fields'.
    json["model"].as_object_mut().unwrap().remove("layers");
    std::fs::write(&config_path, serde_json::to_string(&json).unwrap()).unwrap();
    let run = mnist_tch(&["evaluate", "--model", dir.to_str().unwrap(), "--device", "cpu"]);
    run.assert_clean_error(&["model.safetensors", "tensor '1.bias' has shape [128]", "needs [64]"]);

    json["model"]["hidden"] = serde_json::json!([128, 32]);
    std::fs::write(&config_path, serde_json::to_string(&json).unwrap()).unwrap();
    let run = mnist_tch(&["evaluate", "--model", dir.to_str().unwrap(), "--device", "cpu"]);
    run.assert_clean_error(&["model.safetensors", "tensor '3.bias' has shape [4]", "needs [32]"]);
}

#[test]
fn evaluate_with_truncated_weights() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let weights = fixture.path("run").join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let run = mnist_tch(&["evaluate", "--model", fixture.path("run").to_str().unwrap(), "--device", "cpu"]);
    run.assert_clean_error(&["model.safetensors", "truncated", "copy it again or retrain"]);
    assert!(!run.stderr.contains("MetadataIncompleteBuffer"), "{}", run.stderr);
    // Cut inside the header, and nothing but the length prefix.
    for keep in [20, 3] {
        std::fs::write(&weights, &bytes[..keep]).unwrap();
        let run = mnist_tch(&["evaluate", "--model", fixture.path("run").to_str().unwrap(), "--device", "cpu"]);
        run.assert_clean_error(&["model.safetensors", "truncated"]);
    }
}

#[test]
fn evaluate_with_weights_the_run_does_not_have() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let run = fixture.path("run");
    let evaluated =
        mnist_tch(&["evaluate", "--model", run.to_str().unwrap(), "--weights", "best.safetensors", "--device", "cpu"]);
    evaluated.assert_clean_error(&["best.safetensors", "is missing", "train --save-best"]);
    assert!(!evaluated.stderr.contains("IoError"), "{}", evaluated.stderr);
    std::fs::remove_file(run.join("model.safetensors")).unwrap();
    mnist_tch(&["evaluate", "--model", run.to_str().unwrap(), "--device", "cpu"])
        .assert_clean_error(&["model.safetensors", "is missing"]);
}

#[test]
fn evaluate_on_data_of_another_shape() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let other = fixture.path("other");
    std::fs::create_dir(&other).unwrap();
    for (images, labels, count) in [(TRAIN_IMAGES, TRAIN_LABELS, 600u32), (common::TEST_IMAGES, TEST_LABELS, 200)] {
        let pixels = vec![0u8; count as usize * 36];
        std::fs::write(other.join(images), encode(IdxKind::Images, &[count, 6, 6], &pixels)).unwrap();
        std::fs::write(other.join(labels), encode(IdxKind::Labels, &[count], &vec![1u8; count as usize])).unwrap();
    }
    let run = mnist_tch(&[
        "evaluate",
        "--model",
        fixture.path("run").to_str().unwrap(),
        "--data",
        other.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    run.assert_clean_error(&["images are 6x6", "takes 8x8"]);
}

#[test]
fn evaluate_with_weights_of_the_wrong_dtype() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let weights = fixture.path("run").join("model.safetensors");
    // The same names and shapes, stored as float64.
    let doubled: Vec<(String, tch::Tensor)> = tch::Tensor::read_safetensors(&weights)
        .unwrap()
        .into_iter()
        .map(|(name, t)| (name, t.to_kind(tch::Kind::Double)))
        .collect();
    tch::Tensor::write_safetensors(&doubled, &weights).unwrap();
    let run = mnist_tch(&["evaluate", "--model", fixture.path("run").to_str().unwrap(), "--device", "cpu"]);
    run.assert_clean_error(&["model.safetensors", "has dtype Double, expected Float"]);
}

#[test]
fn evaluate_with_weights_under_other_names() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let weights = fixture.path("run").join("model.safetensors");
    // Keras-style names instead of nn.Sequential's.
    let renamed: Vec<(String, tch::Tensor)> = tch::Tensor::read_safetensors(&weights)
        .unwrap()
        .into_iter()
        .map(|(name, t)| (name.replace("1.", "dense.").replace("3.", "dense_1."), t))
        .collect();
    tch::Tensor::write_safetensors(&renamed, &weights).unwrap();
    let run = mnist_tch(&["evaluate", "--model", fixture.path("run").to_str().unwrap(), "--device", "cpu"]);
    run.assert_clean_error(&["model.safetensors", "unexpected tensor 'dense.bias'"]);
}

#[test]
fn unreadable_data_file() {
    use std::os::unix::fs::PermissionsExt;
    let f = broken(|d| std::fs::set_permissions(d.join(TRAIN_LABELS), std::fs::Permissions::from_mode(0o000)).unwrap());
    // As an ordinary user's process would meet it, also when the tests run as root (as CI does).
    let data = f.data();
    let out = f.path("run");
    let args = [
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--num-classes",
        "4",
        "--device",
        "cpu",
    ];
    common::mnist_tch_as_ordinary_user(&args).assert_clean_error(&[TRAIN_LABELS, "cannot open", "Permission denied"]);
    assert!(!out.join("config.json").exists(), "a failed run must not leave a config behind");
}

#[test]
fn absurd_hidden_sizes_are_refused_before_allocating() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--hidden", "2000000000,2000000000"]).assert_clean_error(&["parameters", "4 GB"]);
}
