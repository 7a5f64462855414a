//! `--accumulate N`: N micro-batches of `--batch-size` per optimizer step step as one batch of B·N. Batch
//! 16 × 2 ends 150 steps within 1e-6 of batch 32 from the same start in file order, for the MLP and the
//! ViT; the setting is recorded in config.json (and left out at 1); the fused engine refuses it.

mod common;

use common::{Files, Fixture, json, max_abs_difference, max_abs_difference_of};
use std::path::Path;

/// 6,000 synthetic 28×28 training images: `--limit 6000` keeps 4,800 for training, 150 steps of 32.
fn mnist_sized() -> Fixture {
    Fixture::with_files(&Files::synthetic_of_side(6000, 200, 28), false)
}

#[test]
fn sixteen_times_two_ends_where_thirty_two_does() {
    let fixture = mnist_sized();
    let vit = ["--arch", "vit", "--patch", "7", "--width", "16", "--depth", "2", "--heads", "2"];
    for (name, arch) in [("mlp", &[][..]), ("vit", &vit[..])] {
        let common = ["--limit", "6000", "--epochs", "1", "--save-initial", "--no-shuffle"];
        let one = format!("{name}-32");
        let run = fixture.train(&one, &[&common[..], arch, &["--batch-size", "32"]].concat());
        run.assert_ok();
        let two = format!("{name}-16x2");
        let accumulated =
            fixture.train(&two, &[&common[..], arch, &["--batch-size", "16", "--accumulate", "2"]].concat());
        accumulated.assert_ok();
        assert!(accumulated.stdout.contains("Epoch 1/1 - 150 steps"), "{}", accumulated.stdout);
        let (one, two) = (fixture.path(&one), fixture.path(&two));
        assert_eq!(max_abs_difference(&one, &two, "initial.safetensors"), 0.0, "{name}");
        let difference = max_abs_difference(&one, &two, "model.safetensors");
        assert!(difference <= 1e-6, "{name}: 16 × 2 ended {difference} away from 32");
        let moved = max_abs_difference_from_start(&two);
        assert!(moved > 1e-2, "{name}: training moved the weights by {moved} only");
        assert_eq!(json(&two.join("config.json"))["training"]["accumulate"], 2);
        assert!(json(&one.join("config.json"))["training"].get("accumulate").is_none(), "1 is not written");
    }
}

fn max_abs_difference_from_start(dir: &Path) -> f64 {
    max_abs_difference_of(&dir.join("initial.safetensors"), &dir.join("model.safetensors"))
}

#[test]
fn the_fused_engine_refuses_accumulation_in_one_line() {
    let fixture = Fixture::new(false);
    fixture
        .train("fused", &["--engine", "fused", "--accumulate", "2"])
        .assert_usage_error(&["--accumulate is implemented by --engine autograd, not fused"]);
    assert!(!fixture.path("fused").join("config.json").exists());
    fixture.train("zero", &["--accumulate", "0"]).assert_code(2);
}
