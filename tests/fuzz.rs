//! Property tests (fuzzing) of the two parsers that read untrusted files: IDX headers/payloads and
//! `config.json`. Whatever the bytes, they return Ok or an error — never a panic, never an allocation
//! sized by an unchecked header — and whatever they accept is consistent.
//!
//! The regular test run tries a few hundred cases per property. For a long fuzzing session:
//!   MNIST_TCH_FUZZ_SECONDS=600 cargo test --release --test fuzz -- --ignored --nocapture

use mnist_tch::idx::{self, IdxHeader, IdxKind};
use mnist_tch::model::ModelConfig;
use mnist_tch::run_dir::RunConfig;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::time::{Duration, Instant};

fn kind() -> impl Strategy<Value = IdxKind> {
    prop_oneof![Just(IdxKind::Images), Just(IdxKind::Labels)]
}

/// A valid IDX file of `kind` (small), to be mutated.
fn valid_file(kind: IdxKind, count: u32, rows: u32, cols: u32) -> Vec<u8> {
    match kind {
        IdxKind::Images => idx::encode(kind, &[count, rows, cols], &vec![9u8; (count * rows * cols) as usize]),
        IdxKind::Labels => idx::encode(kind, &[count], &vec![3u8; count as usize]),
    }
}

/// Bytes an attacker or a bad disk might produce: random, or a valid file with mutations.
fn idx_bytes() -> impl Strategy<Value = (IdxKind, Vec<u8>)> {
    let random = (kind(), prop::collection::vec(any::<u8>(), 0..64));
    let mutated = (
        kind(),
        1u32..20,
        1u32..9,
        1u32..9,
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        any::<usize>(),
        0usize..3,
    )
        .prop_map(|(kind, count, rows, cols, flips, cut, mode)| {
            let mut bytes = valid_file(kind, count, rows, cols);
            for (at, value) in flips {
                let i = at % bytes.len();
                bytes[i] = value;
            }
            match mode {
                0 => bytes.truncate(cut % (bytes.len() + 1)),
                1 => bytes.extend(std::iter::repeat_n(0u8, cut % 7)),
                _ => {}
            }
            (kind, bytes)
        });
    // Headers with extreme counts and dimensions (up to 2^32-1) over a tiny body.
    let extreme = (kind(), any::<u32>(), any::<u32>(), any::<u32>(), prop::collection::vec(any::<u8>(), 0..32))
        .prop_map(|(kind, count, rows, cols, body)| {
            let dims: Vec<u32> = match kind {
                IdxKind::Images => vec![count, rows, cols],
                IdxKind::Labels => vec![count],
            };
            (kind, idx::encode(kind, &dims, &body))
        });
    prop_oneof![random, mutated, extreme]
}

/// The IDX property: never panics; anything accepted is self-consistent.
fn check_idx((kind, bytes): (IdxKind, Vec<u8>)) -> Result<(), TestCaseError> {
    if let Ok((header, payload)) = idx::read_stream(&bytes[..], kind) {
        prop_assert_eq!(header.kind, kind);
        prop_assert!(header.count > 0 && header.rows > 0 && header.cols > 0);
        prop_assert_eq!(payload.len(), header.payload_len());
        prop_assert_eq!(bytes.len(), header.file_len());
        prop_assert!(IdxHeader::parse(&bytes, kind).is_ok());
    }
    // The label check on arbitrary data and class counts.
    let classes = 2 + bytes.first().copied().unwrap_or(0) as usize;
    if idx::check_labels(&bytes, classes).is_ok() {
        prop_assert!(bytes.iter().all(|&b| (b as usize) < classes));
    }
    Ok(())
}

/// `config.json` texts: a valid one, mutated byte-wise or value-wise.
fn config_text() -> impl Strategy<Value = String> {
    let valid = serde_json::to_string_pretty(&sample_config()).unwrap();
    let byte_mutated = {
        let valid = valid.clone();
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..8).prop_map(move |flips| {
            let mut bytes = valid.clone().into_bytes();
            for (at, value) in flips {
                let i = at % bytes.len();
                bytes[i] = value;
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let value_mutated = (
        prop::collection::vec(-5i64..100_000, 0..4),
        -3i64..300,
        any::<[i32; 2]>(),
        -1.0f64..2.0,
        prop::collection::vec("[a-z]{0,3}", 0..12),
    )
        .prop_map(|(hidden, classes, shape, dropout, names)| {
            let mut json: serde_json::Value = serde_json::to_value(sample_config()).unwrap();
            json["model"]["hidden"] = serde_json::json!(hidden);
            json["model"]["num_classes"] = serde_json::json!(classes);
            json["model"]["input_shape"] = serde_json::json!(shape);
            json["model"]["dropout"] = serde_json::json!(dropout);
            json["data"]["class_names"] = serde_json::json!(names);
            json.to_string()
        });
    prop_oneof![byte_mutated, value_mutated]
}

fn sample_config() -> RunConfig {
    RunConfig {
        tool: Default::default(),
        model: Default::default(),
        data: mnist_tch::run_dir::DataInfo {
            dir: "/data".into(),
            class_names: (0..10).map(|i| i.to_string()).collect(),
            train_examples: 48_000,
            validation_examples: 12_000,
            test_examples: 10_000,
            normalization: "pixel / 255".into(),
            selection: Default::default(),
            fit: None,
            skip_bad: false,
        },
        training: Default::default(),
        lineage: None,
        state: Default::default(),
        result: None,
    }
}

/// The config property: loading never panics; an accepted config describes a buildable model.
fn check_config(dir: &std::path::Path, text: String) -> Result<(), TestCaseError> {
    std::fs::write(dir.join("config.json"), &text).unwrap();
    if let Ok(config) = RunConfig::load(dir) {
        let m = &config.model;
        prop_assert!(ModelConfig::new(m.arch, m.input_shape, m.hidden.clone(), m.num_classes, m.dropout).is_ok());
        prop_assert!(m.output_shapes().is_ok());
        prop_assert!(m.parameter_count() <= mnist_tch::model::MAX_PARAMETERS);
        prop_assert!(config.model.num_classes >= 2);
        prop_assert_eq!(config.data.class_names.len() as i64, config.model.num_classes);
        prop_assert!(config.model.input_dim() > 0);
    }
    Ok(())
}

proptest! {
    #![proptest_config(Config { cases: 512, ..Config::default() })]

    #[test]
    fn idx_parsing_never_panics(case in idx_bytes()) {
        check_idx(case)?;
    }
}

#[test]
fn config_loading_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = TestRunner::new(Config { cases: 256, ..Config::default() });
    runner.run(&config_text(), |text| check_config(dir.path(), text)).unwrap();
}

/// The long session: runs both properties until the time budget is spent and prints the counts.
#[test]
#[ignore]
fn fuzz_for_a_time_budget() {
    let seconds: u64 = std::env::var("MNIST_TCH_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let dir = tempfile::tempdir().unwrap();
    let (mut idx_cases, mut config_cases, mut rounds) = (0u64, 0u64, 0u64);
    while Instant::now() < deadline {
        // Fresh random seeds every round; each round is a full proptest run that would shrink and fail
        // on the first property violation or panic.
        let mut runner = TestRunner::new(Config { cases: 20_000, failure_persistence: None, ..Config::default() });
        runner.run(&idx_bytes(), check_idx).unwrap();
        idx_cases += 20_000;
        let mut runner = TestRunner::new(Config { cases: 2_000, failure_persistence: None, ..Config::default() });
        runner.run(&config_text(), |text| check_config(dir.path(), text)).unwrap();
        config_cases += 2_000;
        rounds += 1;
    }
    println!(
        "fuzzed for {seconds} s: {idx_cases} IDX inputs, {config_cases} config.json inputs, {rounds} rounds, no failure"
    );
}
