//! The exported TorchScript module loads back with `CModule::load` and matches the eager model for
//! every accepted input shape; export never replaces a file it was not asked to (nor ever a run
//! directory's own), creates missing directories, and every failure is one clear line.

mod common;

use common::{Fixture, SIDE, mnist_tch, mnist_tch_as_ordinary_user};
use mnist_tch::run_dir::load_run;
use std::path::Path;
use tch::{CModule, Device, Kind, Tensor, nn::ModuleT};

#[test]
fn exported_module_matches_the_eager_model() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1", "--hidden", "32,16"]).assert_ok();
    let run_dir = fixture.path("run");
    for (file, probabilities) in [("logits.pt", false), ("probs.pt", true)] {
        let out = fixture.path(file);
        let mut args = vec!["export", "--model", run_dir.to_str().unwrap(), "--out", out.to_str().unwrap()];
        if probabilities {
            args.push("--probabilities");
        }
        let exported = mnist_tch(&args);
        exported.assert_ok();
        assert!(exported.stdout.contains(if probabilities { "probabilities" } else { "logits" }));

        let module = CModule::load(&out).unwrap();
        let run = load_run(&run_dir, Device::Cpu).unwrap();
        let side = SIDE as i64;
        // A batch size the trace never saw, in each accepted shape.
        let images = Tensor::rand([7, side, side], (Kind::Float, Device::Cpu));
        let eager = tch::no_grad(|| run.model.net.forward_t(&images, false));
        let expected = if probabilities { eager.softmax(-1, Kind::Float) } else { eager };
        for input in [images.shallow_clone(), images.view([7, 1, side, side]), images.view([7, side * side])] {
            let output = tch::no_grad(|| module.forward_ts(&[&input])).unwrap();
            assert_eq!(output.size(), vec![7, 4]);
            assert_eq!(output.kind(), Kind::Float);
            let diff = (&output - &expected).abs().max().double_value(&[]);
            assert!(diff <= 1e-6, "{file} {:?}: max abs diff {diff}", input.size());
        }
        if probabilities {
            let sums = module.forward_ts(&[&images]).unwrap().sum_dim_intlist(-1, false, Kind::Float);
            assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-5);
        }
        // About the size of the weights: 64*32 + 32 + 32*16 + 16 + 16*4 + 4 floats, plus the graph.
        let size = std::fs::metadata(&out).unwrap().len();
        assert!(size < 64 * 1024, "{file} is {size} bytes");
    }
}

#[test]
fn export_of_something_that_is_not_a_run_is_one_clear_line() {
    let fixture = Fixture::new(false);
    let out = fixture.path("model.pt");
    let missing = fixture.path("missing");
    mnist_tch(&["export", "--model", missing.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert_clean_error(&["missing", "not a run directory"]);
    // A directory of something else: the data directory.
    let data = fixture.data();
    mnist_tch(&["export", "--model", data.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert_clean_error(&["config.json", "cannot read"]);
    assert!(!out.exists(), "a failed export must not leave a file");
}

#[test]
fn export_on_a_missing_gpu_is_one_clear_line() {
    if mnist_tch::device::cuda_device_count() > 0 {
        return; // the error path only exists without CUDA
    }
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let out = fixture.path("model.pt");
    mnist_tch(&[
        "export",
        "--model",
        fixture.path("run").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cuda",
    ])
    .assert_clean_error(&["CUDA is not available"]);
}

/// `export --model RUN --out OUT` plus `extra` flags.
fn export(run: &Path, out: &Path, extra: &[&str]) -> common::Run {
    let mut args = vec!["export", "--model", run.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    mnist_tch(&args)
}

/// Whether `path` is a TorchScript module that loads.
fn loads_as_torchscript(path: &Path) -> bool {
    CModule::load(path).is_ok()
}

#[test]
fn the_description_never_replaces_the_module() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let run = fixture.path("run");
    // --out model.json would be a module that predict --model takes for a JSON file: refused, nothing written.
    let module = fixture.path("model.json");
    export(&run, &module, &[]).assert_usage_error(&["model.json", "name the module model.pt"]);
    assert!(!module.exists() && !fixture.path("model.json.json").exists());
    // The usual name: model.pt beside its description model.pt.json, each its own file.
    let module = fixture.path("model.pt");
    let exported = export(&run, &module, &[]);
    exported.assert_ok();
    assert!(loads_as_torchscript(&module) && fixture.path("model.pt.json").is_file());
    let description = fixture.path("model.pt.json");
    let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&description).unwrap()).unwrap();
    assert_eq!(info["output"], "logits");
    assert!(
        exported.stdout.contains(&format!("and its description to {}", description.display())),
        "{}",
        exported.stdout
    );
    assert!(!fixture.path("model.json.pt").exists());
}

#[test]
fn export_refuses_to_replace_files_unless_asked() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let run = fixture.path("run");
    let module = fixture.path("model.pt");
    std::fs::write(&module, b"someone's file").unwrap();
    export(&run, &module, &[]).assert_clean_error(&["model.pt", "already exists", "--overwrite"]);
    assert_eq!(std::fs::read(&module).unwrap(), b"someone's file");
    assert!(!fixture.path("model.pt.json").exists(), "a refused export writes nothing");
    // Its description alone is protected as well.
    std::fs::remove_file(&module).unwrap();
    std::fs::write(fixture.path("model.pt.json"), b"{}").unwrap();
    export(&run, &module, &[]).assert_clean_error(&["model.pt.json", "already exists", "--overwrite"]);
    assert!(!module.exists());
    // --overwrite replaces both.
    export(&run, &module, &["--overwrite"]).assert_ok();
    assert!(loads_as_torchscript(&module));
    assert_ne!(std::fs::read(fixture.path("model.pt.json")).unwrap(), b"{}");
}

#[test]
fn export_never_replaces_a_file_of_a_run_directory() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let run = fixture.path("run");
    let config = std::fs::read(run.join("config.json")).unwrap();
    let weights = std::fs::read(run.join("model.safetensors")).unwrap();
    // RUN/config: its description would be RUN/config.json.
    export(&run, &run.join("config"), &["--overwrite"]).assert_clean_error(&["config.json", "run directory"]);
    export(&run, &run.join("model.safetensors"), &["--overwrite"])
        .assert_clean_error(&["model.safetensors", "run directory"]);
    export(&run, &run.join("best.safetensors"), &[]).assert_clean_error(&["best.safetensors", "run directory"]);
    assert!(!run.join("config").exists() && !run.join("best.safetensors").exists());
    // RUN/config.pt is a new file: its description is config.pt.json, not the run's config.json.
    export(&run, &run.join("config.pt"), &[]).assert_ok();
    assert_eq!(std::fs::read(run.join("config.json")).unwrap(), config);
    assert_eq!(std::fs::read(run.join("model.safetensors")).unwrap(), weights);
    mnist_tch(&["evaluate", "--model", run.to_str().unwrap(), "--device", "cpu"]).assert_ok();
}

#[test]
fn export_creates_missing_directories_and_prints_a_human_size() {
    let fixture = Fixture::new(false);
    // 64*512 + 512 + 512*512 + 512 + 512*4 + 4 = 297,476 floats: about 1.1 MB.
    fixture.train("run", &["--epochs", "1", "--hidden", "512,512"]).assert_ok();
    let module = fixture.path("exports/today/model.pt");
    let exported = export(&fixture.path("run"), &module, &[]);
    exported.assert_ok();
    assert!(loads_as_torchscript(&module));
    let size = std::fs::metadata(&module).unwrap().len() as f64 / (1024.0 * 1024.0);
    assert!(exported.stdout.contains(&format!("({size:.1} MB)")), "{size:.1} MB: {}", exported.stdout);
    // A directory is not a file name.
    export(&fixture.path("run"), &fixture.path("exports"), &["--overwrite"])
        .assert_clean_error(&["exports", "is a directory"]);
}

#[test]
fn export_to_a_place_that_cannot_be_written_is_one_plain_line() {
    use std::os::unix::fs::PermissionsExt;
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let run = fixture.path("run");
    // A read-only directory (as an ordinary user: root would write into it anyway).
    let read_only = fixture.path("read-only");
    std::fs::create_dir(&read_only).unwrap();
    std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o555)).unwrap();
    let module = read_only.join("model.pt");
    let args = ["export", "--model", run.to_str().unwrap(), "--out", module.to_str().unwrap()];
    mnist_tch_as_ordinary_user(&args).assert_clean_error(&[
        "read-only/model.pt",
        "cannot be written",
        "permission denied",
    ]);
    std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(std::fs::read_dir(&read_only).unwrap().count(), 0, "nothing may be left behind");
    // A parent that is a regular file stops root as well.
    let file = fixture.path("a-file");
    std::fs::write(&file, b"").unwrap();
    for out in [file.join("model.pt"), file.join("deeper/model.pt")] {
        export(&run, &out, &[]).assert_clean_error(&[
            "a-file/",
            "cannot be written",
            "a-file is a file, not a directory",
        ]);
    }
}

#[test]
fn exports_of_earlier_versions_with_model_json_still_predict() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let module = fixture.path("model.pt");
    export(&fixture.path("run"), &module, &[]).assert_ok();
    let idx = fixture.data().join("t10k-images-idx3-ubyte");
    let predict = |model: &Path| {
        let run = mnist_tch(&["predict", "--model", model.to_str().unwrap(), "--idx", idx.to_str().unwrap(), "--json"]);
        run.assert_ok();
        run.stdout
    };
    let from_run = predict(&fixture.path("run"));
    // Earlier versions wrote the description as model.json.
    std::fs::rename(fixture.path("model.pt.json"), fixture.path("model.json")).unwrap();
    assert_eq!(predict(&module), from_run);
    std::fs::remove_file(fixture.path("model.json")).unwrap();
    mnist_tch(&["predict", "--model", module.to_str().unwrap(), "--idx", idx.to_str().unwrap()]).assert_clean_error(&[
        "model.pt.json",
        "cannot be read",
        "export again",
    ]);
}
