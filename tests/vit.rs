//! The Vision Transformer (`--arch vit`) on small synthetic images, through every subcommand: a tiny
//! ViT learns a separable set; evaluate reproduces the run's test loss; summary counts its parameters;
//! the TorchScript export matches the eager model for every input shape and predicts as the run does;
//! serve answers with the run's logits; fine-tuning with `--freeze hidden` moves the head only; resume
//! continues it; TensorBoard gets its curves; `--print-config` and `describe` show its description;
//! sizes that do not fit, ViT flags on another architecture and the fused engine are one clear line.

mod common;

use common::server::Server;
use common::{Files, Fixture, json, mnist_tch, weights};
use mnist_tch::model::ModelConfig;
use mnist_tch::run_dir::load_run;
use serde_json::Value;
use std::path::Path;
use tch::{CModule, Device, Kind, Tensor, nn::ModuleT};

/// 12x12 images in 4x4 patches: 9 tokens and the class token.
const SIDE: i64 = 12;
const TINY: [&str; 10] = ["--arch", "vit", "--patch", "4", "--width", "16", "--depth", "2", "--heads", "2"];

fn fixture() -> Fixture {
    Fixture::with_files(&Files::synthetic_of_side(600, 200, SIDE as u32), false)
}

fn tiny<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    TINY.iter().chain(extra).copied().collect()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_tiny_vit_learns_and_every_subcommand_takes_it() {
    let fixture = fixture();
    let tb = fixture.path("tb");
    // 480 training images, batch 32: 15 steps an epoch, 300 steps in all.
    let run = fixture.train("vit", &tiny(&["--epochs", "20", "--lr", "0.003", "--tensorboard", path(&tb)]));
    run.assert_ok();
    let accuracy = run.test_accuracy();
    assert!(accuracy > 0.9, "test accuracy {accuracy}\n{}", run.stdout);
    let dir = fixture.path("vit");
    let config = json(&dir.join("config.json"));
    assert_eq!(config["model"]["arch"], "vit");
    assert_eq!(
        config["model"]["vit"],
        serde_json::json!({"patch": 4, "width": 16, "depth": 2, "heads": 2, "mlp_ratio": 2.0})
    );
    let names: Vec<String> = weights(&dir).into_iter().map(|(name, _)| name).collect();
    for name in ["patch_embed.proj.weight", "cls_token", "pos_embed", "blocks.1.attn.qkv.weight", "head.bias"] {
        assert!(names.iter().any(|n| n == name), "{name} missing in {names:?}");
    }
    let event_files = std::fs::read_dir(&tb).unwrap().count();
    assert!(event_files > 0, "no TensorBoard event file in {}", tb.display());

    // Rebuilt from config.json alone: evaluate reproduces the run's own test loss; summary counts it.
    let model: ModelConfig = serde_json::from_value(config["model"].clone()).unwrap();
    let evaluated = mnist_tch(&["evaluate", "--model", path(&dir), "--device", "cpu", "--json"]);
    evaluated.assert_ok();
    let report: Value = serde_json::from_str(&evaluated.stdout).unwrap();
    let own_loss = config["result"]["test_loss"].as_f64().unwrap();
    assert!((report["loss"].as_f64().unwrap() - own_loss).abs() < 1e-6, "{report} vs {own_loss}");
    let summary = mnist_tch(&["summary", "--model", path(&dir)]);
    summary.assert_ok();
    let total = summary.stdout.lines().find_map(|l| l.trim().strip_prefix("Total params: ")).unwrap();
    let total: i64 = total.split(' ').next().unwrap().replace(',', "").parse().unwrap();
    let stored: i64 = weights(&dir).iter().map(|(_, t)| t.numel() as i64).sum();
    assert_eq!((total, model.parameter_count()), (stored, stored), "{}", summary.stdout);
    assert!(
        summary.stdout.contains("blocks.1 (Block)") && summary.stdout.contains("(None, 10, 16)"),
        "{}",
        summary.stdout
    );

    check_export_and_predict(&fixture, &dir);
    check_serve(&fixture, &dir);
    check_finetune_and_resume(&fixture, &dir);
}

/// The TorchScript export gives the eager model's logits for every input shape, and predicts as the run.
fn check_export_and_predict(fixture: &Fixture, dir: &Path) {
    let exported = fixture.path("vit.pt");
    mnist_tch(&["export", "--model", path(dir), "--out", path(&exported)]).assert_ok();
    let module = CModule::load(&exported).unwrap();
    let loaded = load_run(dir, Device::Cpu).unwrap();
    let images = Tensor::rand([5, SIDE, SIDE], (Kind::Float, Device::Cpu));
    let eager = tch::no_grad(|| loaded.model.net.forward_t(&images, false));
    for input in
        [images.shallow_clone(), images.view([5, 1, SIDE, SIDE]), images.view([5, SIDE * SIDE]), images.narrow(0, 0, 1)]
    {
        let traced = tch::no_grad(|| module.forward_ts(&[&input])).unwrap();
        let want = eager.narrow(0, 0, traced.size()[0]);
        let diff = (&traced - &want).abs().max().double_value(&[]);
        assert!(diff <= 1e-6, "{:?}: {diff}", input.size());
    }
    let idx = fixture.data().join("t10k-images-idx3-ubyte");
    let predict = |model: &Path| {
        let run = mnist_tch(&["predict", "--model", path(model), "--idx", path(&idx), "--json"]);
        run.assert_ok();
        run.stdout
    };
    let answers = predict(dir);
    assert_eq!(answers.lines().count(), 200);
    assert_eq!(answers, predict(&exported));
}

/// serve's Open Inference Protocol answers with the logits `evaluate --dump-logits` writes.
fn check_serve(fixture: &Fixture, dir: &Path) {
    let npy = fixture.path("vit-logits.npy");
    mnist_tch(&["evaluate", "--model", path(dir), "--device", "cpu", "--dump-logits", path(&npy)]).assert_ok();
    let dumped = Vec::<f32>::try_from(&Tensor::read_npy(&npy).unwrap().narrow(0, 0, 3).reshape(-1)).unwrap();
    let bytes = std::fs::read(fixture.data().join(common::TEST_IMAGES)).unwrap();
    let images = &bytes[16..16 + 3 * (SIDE * SIDE) as usize];
    let server = Server::start(dir, &[]);
    let request = serde_json::json!({"inputs": [{"name": "input", "shape": [3, SIDE, SIDE], "datatype": "UINT8", "data": images}]});
    let response = server.post_json("/v2/models/mnist/infer", &request);
    assert_eq!(response.status, 200, "{:?}", String::from_utf8_lossy(&response.body));
    let answer = response.json();
    let outputs = answer["outputs"].as_array().unwrap();
    let logits = outputs.iter().find(|o| o["name"] == "logits").unwrap_or_else(|| panic!("{answer}"));
    let served: Vec<f32> = logits["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let worst = served.iter().zip(&dumped).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert_eq!(served.len(), dumped.len());
    assert!(worst <= 1e-5, "served logits differ by {worst}");
}

/// `--freeze hidden` trains the head alone; resume continues the fine-tuned run.
fn check_finetune_and_resume(fixture: &Fixture, dir: &Path) {
    let child = fixture.path("child");
    let data = fixture.data();
    let args = ["finetune", "--from", path(dir), "--data", path(&data), "--freeze", "hidden", "--epochs", "1"];
    mnist_tch(&[&args[..], &["--device", "cpu", "--out", path(&child)]].concat()).assert_ok();
    for ((name, a), (_, b)) in weights(dir).iter().zip(&weights(&child)) {
        let head = name.starts_with("head.");
        assert_eq!(a.equal(b), !head, "{name} (the head alone trains)");
    }
    let config = json(&child.join("config.json"));
    // Fine-tuning keeps the tutorial's constant rate, plain Adam and cross-entropy and pictures as they are,
    // whatever the parent had.
    let t = &config["training"];
    assert_eq!((t["lr_schedule"].as_str(), t["optimizer"].as_str()), (Some("constant"), Some("adam")), "{t}");
    assert!(t.get("random_shift").is_none() && t.get("label_smoothing").is_none(), "{t}");
    let frozen = config["lineage"]["frozen"].as_array().unwrap();
    assert!(frozen.iter().all(|n| !n.as_str().unwrap().starts_with("head.")) && frozen.len() > 10, "{frozen:?}");
    let resumed = mnist_tch(&["resume", path(&child), "--epochs", "2", "--device", "cpu"]);
    resumed.assert_ok();
    assert_eq!(json(&child.join("config.json"))["state"]["epochs_completed"], 2);
}

/// The `training` part of the config.json `train` would write with `flags`.
fn printed_training(fixture: &Fixture, flags: &[&str]) -> Value {
    let printed = fixture.train("printed", &[flags, &["--print-config"]].concat());
    printed.assert_ok();
    serde_json::from_str::<Value>(&printed.stdout).unwrap()["training"].clone()
}

/// [`fixture`]'s pictures with their outer one-pixel ring blanked, as digit MNIST's are.
fn framed_fixture() -> Fixture {
    let blank_ring = |(mut pixels, labels): (Vec<u8>, Vec<u8>)| {
        for (i, pixel) in pixels.iter_mut().enumerate() {
            let (row, col) = ((i as i64 / SIDE) % SIDE, i as i64 % SIDE);
            if row == 0 || col == 0 || row == SIDE - 1 || col == SIDE - 1 {
                *pixel = 0;
            }
        }
        (pixels, labels)
    };
    let pictures = |count: u32, seed: u64| blank_ring(common::synthetic_of_side(count, seed, SIDE as u32));
    let files = Files::of_pictures(pictures(600, 1), pictures(200, 2), SIDE as u32);
    Fixture::with_files(&files, false)
}

#[test]
fn a_new_vit_trains_with_deits_regularisers_and_moves_only_pictures_inside_an_empty_border() {
    let fixture = fixture();
    let vit = printed_training(&fixture, &tiny(&[]));
    assert_eq!(vit["lr_schedule"], "cosine", "{vit}");
    assert_eq!((vit["optimizer"].as_str(), vit["weight_decay"].as_f64()), (Some("adamw"), Some(0.05)), "{vit}");
    assert_eq!(vit["label_smoothing"], 0.1, "{vit}");
    // The synthetic pictures' noise fills the frame: the default does not move them, and says why.
    assert!(vit.get("random_shift").is_none(), "0 is not written: {vit}");
    let run = fixture.train("filled", &tiny(&["--epochs", "1"]));
    run.assert_ok();
    assert!(run.stdout.contains("Random shift: 0 (") && run.stdout.contains("fill their frame"), "{}", run.stdout);
    // The same pictures inside an empty one-pixel border are moved by up to a pixel.
    let framed = framed_fixture();
    assert_eq!(printed_training(&framed, &tiny(&[]))["random_shift"], 1);
    let run = framed.train("framed", &tiny(&["--epochs", "1"]));
    run.assert_ok();
    assert!(run.stdout.contains("Random shift: 1 (the training pictures have 0.00% of their ink"), "{}", run.stdout);
    assert_eq!(json(&framed.path("framed").join("config.json"))["training"]["random_shift"], 1);
    // Flags win over the defaults; the other architectures keep the Keras tutorial's recipe.
    let plain = printed_training(
        &framed,
        &tiny(&["--lr-schedule", "constant", "--random-shift", "0", "--weight-decay", "0", "--label-smoothing", "0"]),
    );
    assert_eq!((plain["lr_schedule"].as_str(), plain["optimizer"].as_str()), (Some("constant"), Some("adam")));
    assert!(plain.get("random_shift").is_none() && plain.get("label_smoothing").is_none(), "{plain}");
    for arch in ["mlp", "linear", "cnn"] {
        let other = printed_training(&framed, &["--arch", arch]);
        assert_eq!((other["lr_schedule"].as_str(), other["optimizer"].as_str()), (Some("constant"), Some("adam")));
        assert!(other.get("random_shift").is_none() && other.get("label_smoothing").is_none(), "{arch}: {other}");
    }
    let mlp = printed_training(&fixture, &["--random-shift", "3"]);
    assert_eq!(mlp["random_shift"], 3, "any architecture takes the flag");

    // The moves change what is trained; the same seed draws the same moves.
    for (name, shift) in [("shifted", "2"), ("again", "2"), ("still", "0")] {
        fixture.train(name, &tiny(&["--epochs", "1", "--random-shift", shift])).assert_ok();
    }
    let same = |a: &str, b: &str| {
        weights(&fixture.path(a)).iter().zip(&weights(&fixture.path(b))).all(|((_, x), (_, y))| x.equal(y))
    };
    assert!(same("shifted", "again"), "two runs with the same seed drew different moves");
    assert!(!same("shifted", "still"), "--random-shift 2 trained the same weights as no shift");

    fixture.train("far", &tiny(&["--random-shift", "12"])).assert_usage_error(&[
        "--random-shift 12",
        "12x12",
        "shorter side",
    ]);
    assert!(!fixture.path("far").exists(), "a refused run left a directory");
}

#[test]
fn the_vit_is_described_and_what_does_not_fit_is_one_line() {
    let fixture = fixture();
    let printed = fixture.train("printed", &tiny(&["--print-config"]));
    printed.assert_ok();
    let config: Value = serde_json::from_str(&printed.stdout).unwrap();
    assert_eq!(config["model"]["vit"]["patch"], 4);
    assert!(!fixture.path("printed").exists(), "--print-config wrote a run");
    let described = mnist_tch(&["describe", "--json", "--arch", "vit", "--input", "12x12", "--patch", "4"]);
    described.assert_ok();
    let described: Value = serde_json::from_str(&described.stdout).unwrap();
    assert_eq!(described["model"]["vit"]["width"], 64, "train's defaults for the flags left out");

    fixture
        .train("odd", &["--arch", "vit", "--patch", "5"])
        .assert_clean_error(&["--patch 5 does not divide the 12x12 images"]);
    fixture
        .train("heads", &["--arch", "vit", "--patch", "4", "--heads", "3"])
        .assert_clean_error(&["--heads 3 does not divide --width 64"]);
    fixture.train("mlp", &["--patch", "4"]).assert_usage_error(&["--patch applies to --arch vit, not MLP"]);
    fixture
        .train("fused", &tiny(&["--engine", "fused"]))
        .assert_usage_error(&["--engine fused trains MLP and linear models only, not a ViT"]);
    for refused in ["odd", "heads", "mlp", "fused"] {
        assert!(!fixture.path(refused).join("config.json").exists(), "{refused}: a refused run left a config");
    }
}

#[test]
fn explain_draws_where_the_vit_and_the_mlp_looked() {
    let fixture = fixture();
    let pictures = fixture.path("pictures");
    std::fs::create_dir_all(&pictures).unwrap();
    let bytes = std::fs::read(fixture.data().join(common::TEST_IMAGES)).unwrap();
    let side = SIDE as u32;
    for n in 0..3 {
        let pixels = bytes[16 + n * (side * side) as usize..16 + (n + 1) * (side * side) as usize].to_vec();
        image::GrayImage::from_raw(side, side, pixels).unwrap().save(pictures.join(format!("digit{n}.png"))).unwrap();
    }
    fixture.train("vit", &tiny(&["--epochs", "2"])).assert_ok();
    fixture.train("mlp", &["--epochs", "1"]).assert_ok();
    for arch in ["vit", "mlp"] {
        let out = fixture.path(&format!("explained-{arch}"));
        let model = fixture.path(arch);
        let args = ["predict", "--model", path(&model), path(&pictures), "--explain", path(&out), "--device", "cpu"];
        mnist_tch(&args).assert_ok();
        for n in 0..3 {
            let drawn = image::open(out.join(format!("digit{n}.explain.png"))).unwrap().to_rgb8();
            // The picture and its map side by side, each pixel 8x8, a gap of 8 between.
            assert_eq!(drawn.dimensions(), (2 * side * 8 + 8, side * 8), "{arch}");
            let reds: Vec<u8> = (0..side).map(|c| drawn.get_pixel(side * 8 + 8 + c * 8, 4 * 8)[0]).collect();
            assert!(reds.iter().max() > reds.iter().min(), "{arch}: the map is flat: {reds:?}");
        }
        // An existing explanation is not replaced without --overwrite.
        mnist_tch(&args).assert_clean_error(&["--explain", "digit0.explain.png"]);
        mnist_tch(&[&args[..], &["--overwrite"]].concat()).assert_ok();
    }
    let exported = fixture.path("mlp.pt");
    mnist_tch(&["export", "--model", path(&fixture.path("mlp")), "--out", path(&exported)]).assert_ok();
    mnist_tch(&["predict", "--model", path(&exported), path(&pictures), "--explain", path(&fixture.path("x"))])
        .assert_clean_error(&["--explain needs a run directory"]);
}
