//! `mnist-tch serve` as a client sees it: the routes of the page, `/predict` and the Open Inference
//! Protocol, the same answers as `predict` and `evaluate --dump-logits`, every kind of model, and a
//! graceful stop. Each test starts the real binary on 127.0.0.1 with a port the system picks.

mod common;

use common::server::{Server, head, read_response};
use common::{Files, Fixture, SIDE, mnist_tch};
use image::{GrayImage, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use serde_json::{Value, json};
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// One trained MLP for the tests of this file (trained once).
fn trained() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let fixture = Fixture::new(false);
        fixture.train("run", &["--epochs", "2"]).assert_ok();
        fixture
    })
}

fn run_dir() -> PathBuf {
    trained().path("run")
}

/// The first `count` test images of the fixture, `SIDE × SIDE` bytes each.
fn test_images(count: usize) -> Vec<u8> {
    let bytes = std::fs::read(trained().data().join(common::TEST_IMAGES)).unwrap();
    bytes[16..16 + count * (SIDE * SIDE) as usize].to_vec()
}

/// `evaluate --dump-logits` of `model` on the fixture's test images, `[N × classes]` (the file beside
/// the run is this helper's own scratch file, so a second call replaces it).
fn dumped_logits(model: &Path, data: &Path) -> Vec<f32> {
    let npy = model.with_extension("logits.npy");
    mnist_tch(&[
        "evaluate",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--device",
        "cpu",
        "--dump-logits",
        npy.to_str().unwrap(),
        "--overwrite",
    ])
    .assert_ok();
    Vec::<f32>::try_from(&tch::Tensor::read_npy(&npy).unwrap().reshape(-1)).unwrap()
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], tolerance: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(worst <= tolerance, "{what}: largest difference {worst}");
}

/// The output named `name` of a v2 answer.
fn output(answer: &Value, name: &str) -> Vec<f32> {
    let outputs = answer["outputs"].as_array().unwrap();
    floats(&outputs.iter().find(|o| o["name"] == name).unwrap_or_else(|| panic!("no {name}: {answer}"))["data"])
}

fn infer_uint8(server: &Server, images: &[u8], count: usize) -> Value {
    let request =
        json!({"inputs": [{"name": "input", "shape": [count, SIDE, SIDE], "datatype": "UINT8", "data": images}]});
    let response = server.post_json("/v2/models/mnist/infer", &request);
    assert_eq!(response.status, 200, "{:?}", String::from_utf8_lossy(&response.body));
    response.json()
}

#[test]
fn routes_answer_as_the_protocol_says() {
    let server = Server::start(&run_dir(), &[]);
    assert_eq!(server.get("/v2/health/live").json(), json!({"live": true}));
    assert_eq!(server.get("/v2/health/ready").json(), json!({"ready": true}));
    assert_eq!(server.get("/v2/models/mnist/ready").status, 200);
    assert_eq!(server.get("/v2/models/mnist/versions/1/ready").status, 200);
    assert_eq!(server.get("/v2").json()["extensions"], json!(["binary_tensor_data"]));
    let metadata = server.get("/v2/models/mnist").json();
    assert_eq!(metadata["inputs"], json!([{"name": "input", "datatype": "FP32", "shape": [-1, SIDE, SIDE]}]));
    assert_eq!(metadata["outputs"][0], json!({"name": "logits", "datatype": "FP32", "shape": [-1, 4]}));
    assert_eq!(metadata["outputs"][1]["name"], "probabilities");
    assert_eq!(metadata["parameters"]["class_names"], json!(["0", "1", "2", "3"]));
    // Unknown models, versions and routes: 404 with a JSON error naming them.
    let unknown = server.get("/v2/models/resnet");
    assert_eq!(unknown.status, 404);
    assert!(unknown.error().contains("'resnet' is not served here"), "{}", unknown.error());
    assert_eq!(server.post_json("/v2/models/mnist/versions/2/infer", &json!({})).status, 404);
    assert_eq!(server.get("/nowhere").status, 404);
    assert_eq!(server.get("/predict").status, 405);
    // A wrong method: 405 with the JSON error of every other error, and the methods it takes in `Allow`.
    for (method, path, allowed) in
        [("GET", "/predict", "POST"), ("DELETE", "/v2/models/mnist/infer", "POST"), ("POST", "/v2/health/live", "GET")]
    {
        let refused = common::server::request(server.addr, method, path, &[], b"");
        assert_eq!(refused.status, 405, "{method} {path}");
        assert!(refused.header("allow").is_some_and(|a| a.contains(allowed)), "{method} {path}: {:?}", refused.headers);
        assert!(refused.error().contains(&format!("{method} is not allowed on {path}")), "{}", refused.error());
        assert!(refused.error().contains(allowed), "{}", refused.error());
    }
    // The page is embedded, with no outside resource.
    let page = server.get("/");
    assert_eq!(page.status, 200);
    let html = String::from_utf8(page.body).unwrap();
    assert!(html.contains("<canvas id=\"pad\"") && html.contains("/predict"), "{html}");
    assert!(!html.contains("http://") && !html.contains("https://"), "the page loads nothing from outside");
    // An inference is counted in /metrics with its batch.
    infer_uint8(&server, &test_images(3), 3);
    let metrics = String::from_utf8(server.get("/metrics").body).unwrap();
    for line in [
        "mnist_tch_requests_total{route=\"/v2/models/{model}/infer\",code=\"200\"} 1",
        "mnist_tch_requests_total{route=\"/v2/models/{model}\",code=\"404\"} 1",
        "mnist_tch_requests_total{route=\"unmatched\",code=\"404\"} 1",
        "mnist_tch_images_total 3",
        "mnist_tch_batch_size_bucket{le=\"2\"} 0\nmnist_tch_batch_size_bucket{le=\"4\"} 1",
        "mnist_tch_queue_depth 0",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}

#[test]
fn predict_and_v2_give_evaluates_logits_for_100_test_images() {
    let fixture = trained();
    let data = fixture.tmp.path().join("data100");
    let files = Files::synthetic(600, 100);
    files.write(&data, false);
    let want = dumped_logits(&run_dir(), &data);
    let images = files.test_images[16..].to_vec();
    assert_eq!(images.len(), 100 * 64);
    let server = Server::start(&run_dir(), &[]);

    // v2, UINT8 [N, rows, cols] and FP32 [N, rows*cols], in one request each.
    assert_close(&output(&infer_uint8(&server, &images, 100), "logits"), &want, 1e-5, "v2 UINT8");
    let pixels: Vec<f32> = images.iter().map(|&p| p as f32 / 255.0).collect();
    let fp32 = json!({"inputs": [{"name": "input", "shape": [100, 64], "datatype": "FP32", "data": pixels}]});
    assert_close(&output(&server.post_json("/v2/models/mnist/infer", &fp32).json(), "logits"), &want, 1e-5, "v2 FP32");

    // /predict, one PNG per image, used as it is.
    let mut got = Vec::new();
    for image in images.chunks(64) {
        let png = png_bytes(&GrayImage::from_raw(SIDE, SIDE, image.to_vec()).unwrap());
        let answer = server.post("/predict?fit=none&invert=no", &png);
        assert_eq!(answer.status, 200, "{:?}", String::from_utf8_lossy(&answer.body));
        got.extend(floats(&answer.json()["logits"]));
    }
    assert_close(&got, &want, 1e-5, "/predict");
}

fn png_bytes(image: &GrayImage) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageOutputFormat::Png).unwrap();
    bytes.into_inner()
}

/// Pictures `predict` must prepare: dark on light, light on dark, transparent, already in the layout.
fn pictures(dir: &Path) -> Vec<PathBuf> {
    let paths: Vec<PathBuf> =
        ["paper.png", "dark.png", "transparent.png", "layout.png"].iter().map(|n| dir.join(n)).collect();
    RgbImage::from_fn(120, 90, |x, y| {
        if (80..100).contains(&x) && (10..40).contains(&y) { Rgb([20, 20, 30]) } else { Rgb([250, 248, 240]) }
    })
    .save(&paths[0])
    .unwrap();
    GrayImage::from_fn(64, 64, |x, y| if x < 16 && y < 24 { Luma([230]) } else { Luma([0]) }).save(&paths[1]).unwrap();
    RgbaImage::from_fn(280, 280, |x, y| {
        if (100..180).contains(&x) && (40..240).contains(&y) { Rgba([0, 0, 0, 255]) } else { Rgba([0, 0, 0, 0]) }
    })
    .save(&paths[2])
    .unwrap();
    GrayImage::from_fn(
        SIDE,
        SIDE,
        |x, y| if (3..5).contains(&x) && (2..6).contains(&y) { Luma([240]) } else { Luma([0]) },
    )
    .save(&paths[3])
    .unwrap();
    paths
}

#[test]
fn predict_route_and_predict_command_agree_exactly_on_png_files() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&run_dir(), &[]);
    for picture in pictures(dir.path()) {
        // One picture per command: the same batch of one as the server's.
        let run = mnist_tch(&[
            "predict",
            "--model",
            run_dir().to_str().unwrap(),
            "--json",
            "--top-k",
            "4",
            "--device",
            "cpu",
            picture.to_str().unwrap(),
        ]);
        let got = server.post("/predict?top=4", &std::fs::read(&picture).unwrap());
        if run.code() != Some(0) {
            // A picture predict refuses, the server refuses for the same reason.
            let reason = run.stderr.trim().rsplit(": ").next().unwrap().to_string();
            assert_eq!(got.status, 400, "{}", picture.display());
            assert!(got.error().ends_with(&reason), "{} / {}", got.error(), run.stderr);
            continue;
        }
        let want: Value = serde_json::from_str(run.stdout.trim()).unwrap();
        let got = got.json();
        for key in ["predictions", "fit", "inverted"] {
            assert_eq!(got[key], want[key], "{key} of {}", picture.display());
        }
        // Every class's probability, the top ones among them.
        let probabilities = floats(&got["probabilities"]);
        assert_eq!(probabilities.len(), 4);
        assert_eq!(
            probabilities[want["predictions"][0]["label"].as_u64().unwrap() as usize] as f64,
            want["predictions"][0]["probability"].as_f64().unwrap()
        );
    }
    // What the model saw, on request.
    let seen = server.post("/predict?show_input=true", &std::fs::read(dir.path().join("paper.png")).unwrap()).json();
    assert_eq!((seen["image"]["rows"].as_u64(), seen["image"]["pixels"].as_array().map(Vec::len)), (Some(8), Some(64)));
}

#[test]
fn every_architecture_torchscript_and_own_class_names_serve() {
    let fixture = Fixture::with_files(&Files::synthetic_of_side(600, 40, 12), false);
    let data = fixture.data();
    let images = Files::synthetic_of_side(600, 40, 12).test_images[16..].to_vec();
    for arch in ["mlp", "linear", "cnn"] {
        fixture.train(arch, &["--arch", arch, "--epochs", "1", "--class-names", "north,east,south,west"]).assert_ok();
        let want = dumped_logits(&fixture.path(arch), &data);
        let server = Server::start(&fixture.path(arch), &["--max-batch", "16"]);
        let request =
            json!({"inputs": [{"name": "input", "shape": [40, 12, 12], "datatype": "UINT8", "data": images}]});
        let answer = server.post_json("/v2/models/mnist/infer", &request).json();
        assert_close(&output(&answer, "logits"), &want, 1e-5, arch);
        let picture =
            png_bytes(&GrayImage::from_fn(30, 30, |x, _| Luma(if (10..20).contains(&x) { [0] } else { [255] })));
        let names: Vec<Value> = server.post("/predict?top=4", &picture).json()["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].clone())
            .collect();
        let mut sorted: Vec<String> = names.iter().map(|n| n.as_str().unwrap().to_string()).collect();
        sorted.sort();
        assert_eq!(sorted, ["east", "north", "south", "west"], "{arch}");
    }
    // TorchScript: logits as the run's; exported with the softmax in it, probabilities only.
    let run = fixture.path("mlp");
    let want = dumped_logits(&run, &data);
    for (file, probabilities) in [("model.pt", false), ("probs.pt", true)] {
        let out = fixture.path(file);
        let mut args = vec!["export", "--model", run.to_str().unwrap(), "--out", out.to_str().unwrap()];
        if probabilities {
            args.push("--probabilities");
        }
        mnist_tch(&args).assert_ok();
        let server = Server::start(&out, &["--model-name", "digits"]);
        let request = json!({"inputs": [{"name": "input", "shape": [40, 144], "datatype": "UINT8", "data": images}]});
        let answer = server.post_json("/v2/models/digits/infer", &request);
        assert_eq!(answer.status, 200, "{:?}", String::from_utf8_lossy(&answer.body));
        let outputs: Vec<Value> =
            answer.json()["outputs"].as_array().unwrap().iter().map(|o| o["name"].clone()).collect();
        if probabilities {
            assert_eq!(outputs, [json!("probabilities")]);
            let logits = json!({"inputs": request["inputs"], "outputs": [{"name": "logits"}]});
            let refused = server.post_json("/v2/models/digits/infer", &logits);
            assert_eq!(refused.status, 400);
            assert!(refused.error().contains("no 'logits' output"), "{}", refused.error());
        } else {
            assert_close(&output(&answer.json(), "logits"), &want, 1e-5, "TorchScript");
        }
    }
}

#[test]
fn a_model_that_cannot_be_served_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing");
    mnist_tch(&["serve", "--model", missing.to_str().unwrap(), "--port", "0"]).assert_clean_error(&["nothing"]);
    mnist_tch(&["serve", "--model", run_dir().to_str().unwrap(), "--port", "0", "--weights", "best.safetensors"])
        .assert_clean_error(&["best.safetensors"]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    mnist_tch(&["serve", "--model", run_dir().to_str().unwrap(), "--port", &port, "--device", "cpu"])
        .assert_clean_error(&["cannot listen on 127.0.0.1", &port]);
}

#[test]
fn sigterm_stops_accepting_finishes_requests_in_flight_and_exits_0() {
    let mut server = Server::start(&run_dir(), &[]);
    let body = json!({"inputs": [{"name": "input", "shape": [2, 64], "datatype": "UINT8", "data": test_images(2)}]})
        .to_string()
        .into_bytes();
    // A request in flight: headers and half its body sent.
    let mut in_flight = TcpStream::connect(server.addr).unwrap();
    in_flight.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    in_flight.write_all(head("POST", "/v2/models/mnist/infer", &[], body.len()).as_bytes()).unwrap();
    in_flight.write_all(&body[..body.len() / 2]).unwrap();
    // The server accepts connections in order: once a later connection is answered, this one is
    // accepted too.
    assert_eq!(server.get("/v2/health/live").status, 200);
    server.signal(libc::SIGTERM);
    assert!(server.wait_for_stderr("stopping", Duration::from_secs(10)), "{:?}", server.stderr_seen);
    // No new connections: the listener is closed.
    let refused = (0..250).any(|_| {
        let closed = TcpStream::connect(server.addr).is_err();
        if !closed {
            std::thread::sleep(Duration::from_millis(20));
        }
        closed
    });
    assert!(refused, "the server still accepts connections after SIGTERM");
    // The request in flight is answered, then the process ends with 0.
    in_flight.write_all(&body[body.len() / 2..]).unwrap();
    let response = read_response(&mut in_flight);
    assert_eq!(response.status, 200, "{:?}", String::from_utf8_lossy(&response.body));
    assert_eq!(response.json()["outputs"][0]["shape"], json!([2, 4]));
    let status = server.wait_exit(Duration::from_secs(30)).expect("the server ends");
    assert_eq!(status.code(), Some(0));
    assert!(server.wait_for_stderr("stopped", Duration::from_secs(5)), "{:?}", server.stderr_seen);
}

/// A form field: its name, its file name if it is a file, its content.
type Part<'a> = (&'a str, Option<&'a str>, &'a [u8]);

/// A `multipart/form-data` body of `parts` and its Content-Type.
fn form(parts: &[Part]) -> (String, Vec<u8>) {
    let boundary = "------------------------d74496d66958873e";
    let mut body = Vec::new();
    for (name, file_name, content) in parts {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes());
        if let Some(file_name) = file_name {
            body.extend_from_slice(format!("; filename=\"{file_name}\"\r\nContent-Type: image/png").as_bytes());
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn predict_takes_a_multipart_form_with_one_file_field() {
    let server = Server::start(&run_dir(), &["--body-limit", "64K"]);
    let png = png_bytes(&GrayImage::from_raw(SIDE, SIDE, test_images(1)).unwrap());
    let raw = server.post("/predict?top=4", &png);
    assert_eq!(raw.status, 200);
    // As `curl -F file=@digit.png` sends it, with a text field beside it: the raw body's answer.
    let (content_type, body) = form(&[("note", None, b"hello"), ("file", Some("digit.png"), &png)]);
    let sent =
        common::server::request(server.addr, "POST", "/predict?top=4", &[("Content-Type", &content_type)], &body);
    assert_eq!(sent.status, 200, "{:?}", String::from_utf8_lossy(&sent.body));
    for key in ["predictions", "probabilities", "logits", "fit", "inverted"] {
        assert_eq!(sent.json()[key], raw.json()[key], "{key}");
    }
    assert_eq!(sent.json()["input"], "digit.png");
    // Two file fields, none, an empty one, a broken form: 400 naming the problem.
    let cases: Vec<(Vec<Part>, &str)> = vec![
        (vec![("a", Some("a.png"), &png), ("b", Some("b.png"), &png)], "more than one file field ('a' and 'b')"),
        (vec![("file", None, &png)], "no file field (only 'file')"),
        (vec![], "no file field"),
        (vec![("file", Some("digit.png"), b"")], "file field 'file' is empty"),
    ];
    for (parts, fragment) in cases {
        let (content_type, body) = form(&parts);
        let refused =
            common::server::request(server.addr, "POST", "/predict", &[("Content-Type", &content_type)], &body);
        assert_eq!(refused.status, 400, "{fragment}: {:?}", String::from_utf8_lossy(&refused.body));
        assert!(refused.error().contains(fragment), "{fragment}: {}", refused.error());
    }
    let no_boundary = common::server::request(
        server.addr,
        "POST",
        "/predict",
        &[("Content-Type", "multipart/form-data")],
        &form(&[("file", Some("digit.png"), &png)]).1,
    );
    assert_eq!(no_boundary.status, 400);
    assert!(no_boundary.error().contains("not a multipart form"), "{}", no_boundary.error());
    // The body limit applies to a form sent chunked, with no length announced.
    let (content_type, body) = form(&[("file", Some("big.png"), &vec![7u8; 100 << 10])]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {content_type}\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        body.len()
    );
    let _ = stream.write_all([head.as_bytes(), &body, b"\r\n0\r\n\r\n"].concat().as_slice());
    let refused = read_response(&mut stream);
    assert_eq!(refused.status, 413, "{:?}", String::from_utf8_lossy(&refused.body));
    assert!(refused.error().contains("larger than 65536 bytes"), "{}", refused.error());
}

#[test]
fn v2_takes_nchw_tensors_as_the_cnn_and_torchscript_do() {
    let server = Server::start(&run_dir(), &[]);
    let images = test_images(3);
    let want = output(&infer_uint8(&server, &images, 3), "logits");
    let pixels: Vec<f32> = images.iter().map(|&p| p as f32 / 255.0).collect();
    let nchw = json!({"inputs": [{"name": "input", "shape": [3, 1, SIDE, SIDE], "datatype": "FP32", "data": pixels}]});
    let answer = server.post_json("/v2/models/mnist/infer", &nchw);
    assert_eq!(answer.status, 200, "{:?}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.json()["outputs"][0]["shape"], json!([3, 4]));
    assert_close(&output(&answer.json(), "logits"), &want, 1e-6, "[N, 1, rows, cols]");
    let metadata = server.get("/v2/models/mnist").json();
    assert_eq!(metadata["parameters"]["input_shapes"][2], json!([-1, 1, SIDE, SIDE]));
    // Two channels are not a picture of this model.
    let two = json!({"inputs": [{"name": "input", "shape": [1, 2, SIDE, SIDE], "datatype": "UINT8",
                                  "data": vec![0u8; 2 * (SIDE * SIDE) as usize]}]});
    let refused = server.post_json("/v2/models/mnist/infer", &two);
    assert_eq!(refused.status, 400);
    assert!(refused.error().contains("or [N, 1, 8, 8]"), "{}", refused.error());
}

#[test]
fn host_names_that_resolve_are_listened_on() {
    // localhost: a loopback address, as the default.
    let server = Server::start(&run_dir(), &["--host", "localhost"]);
    assert!(server.addr.ip().is_loopback(), "{}", server.addr);
    assert_eq!(server.get("/v2/health/ready").json(), json!({"ready": true}));
    assert_eq!(infer_uint8(&server, &test_images(1), 1)["outputs"][0]["shape"], json!([1, 4]));
    // Not a host at all: a usage error, as for any other flag.
    let refused = mnist_tch(&["serve", "--model", run_dir().to_str().unwrap(), "--port", "0", "--host", "local host"]);
    refused.assert_code(2);
    assert!(refused.stderr.contains("'local host' is not a host"), "{}", refused.stderr);
}
