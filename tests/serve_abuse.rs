//! `mnist-tch serve` under abuse, bounded in count and time: 100 MB bodies, slow bodies, hostile
//! pictures, wrong tensors and 10,000 connections at once. Each is answered or refused cleanly — a
//! status and a JSON error — and the server answers correctly afterwards.

mod common;

use common::server::{Response, Server, head, parse_response, read_response};
use common::{Fixture, SIDE};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn run_dir() -> PathBuf {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            let fixture = Fixture::new(false);
            fixture.train("run", &["--epochs", "1"]).assert_ok();
            fixture
        })
        .path("run")
}

/// A good inference request for `count` images.
fn good_request(count: usize) -> Value {
    json!({"inputs": [{"name": "input", "shape": [count, SIDE * SIDE], "datatype": "UINT8",
                       "data": vec![7u8; count * (SIDE * SIDE) as usize]}]})
}

/// The server still answers correctly.
fn assert_healthy(server: &Server) {
    assert_eq!(server.get("/v2/health/ready").status, 200);
    let answer = server.post_json("/v2/models/mnist/infer", &good_request(2));
    assert_eq!(answer.status, 200, "{:?}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.json()["outputs"][1]["shape"], json!([2, 4]));
}

/// Sends the head of a request announcing `length` body bytes, then zeros until the server answers or
/// closes; the answer.
fn flood(server: &Server, path: &str, length: usize) -> Response {
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(head("POST", path, &[], length).as_bytes()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![0u8; 1 << 20];
        let mut sent = 0;
        while sent < length && writer.write_all(&chunk[..chunk.len().min(length - sent)]).is_ok() {
            sent += chunk.len();
        }
        sent
    });
    let response = read_response(&mut stream);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let sent = sender.join().unwrap();
    assert!(sent < length, "the server read the whole {length}-byte body before refusing it");
    response
}

#[test]
fn bodies_over_the_limit_are_refused_with_413() {
    let server = Server::start(&run_dir(), &["--body-limit", "1M"]);
    for path in ["/predict", "/v2/models/mnist/infer"] {
        let started = Instant::now();
        let refused = flood(&server, path, 100 << 20);
        assert_eq!(refused.status, 413, "{path}");
        assert!(refused.error().contains("larger than 1048576 bytes"), "{}", refused.error());
        assert!(started.elapsed() < Duration::from_secs(20), "{path}: {:?}", started.elapsed());
    }
    // Chunked, with no length announced.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream
        .write_all(b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = [b"100000\r\n".as_slice(), &vec![1u8; 1 << 20], b"\r\n"].concat();
    for _ in 0..4 {
        if stream.write_all(&chunk).is_err() {
            break;
        }
    }
    let chunked = read_response(&mut stream);
    assert_eq!(chunked.status, 413, "{:?}", String::from_utf8_lossy(&chunked.body));
    // A picture whose header claims 100,000 x 100,000 pixels is refused before it is decoded.
    let huge =
        [png_header(100_000, 100_000), png_chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])].concat();
    let refused = server.post("/predict", &huge);
    assert_eq!(refused.status, 413);
    assert!(refused.error().contains("100000x100000"), "{}", refused.error());
    assert_healthy(&server);
}

#[test]
fn an_announced_length_over_the_limit_is_413_before_the_body_is_read() {
    let server = Server::start(&run_dir(), &["--body-limit", "1M"]);
    for path in ["/predict", "/v2/models/mnist/infer"] {
        // Only the head is sent: the answer must come without waiting for the body, and without `100
        // Continue` (the first status line read is the answer's).
        let started = Instant::now();
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream.write_all(head("POST", path, &[("Expect", "100-continue")], 100_000_000).as_bytes()).unwrap();
        let refused = read_response(&mut stream);
        assert_eq!(refused.status, 413, "{path}: {:?}", String::from_utf8_lossy(&refused.body));
        assert!(refused.error().contains("larger than 1048576 bytes"), "{}", refused.error());
        assert!(started.elapsed() < Duration::from_secs(5), "{path}: {:?}", started.elapsed());
    }
    assert_healthy(&server);
}

/// The first bytes of a grayscale PNG of `width × height`: its signature and a valid IHDR chunk.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let ihdr = [width.to_be_bytes().as_slice(), &height.to_be_bytes(), &[8, 0, 0, 0, 0]].concat();
    [b"\x89PNG\r\n\x1a\n".as_slice(), &png_chunk(b"IHDR", &ihdr)].concat()
}

/// A PNG chunk: length, type, data, CRC.
fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    [(data.len() as u32).to_be_bytes().as_slice(), kind, data, &crc.sum().to_be_bytes()].concat()
}

#[test]
fn slow_bodies_time_out_with_408() {
    let server = Server::start(&run_dir(), &["--timeout", "1"]);
    let mut slow = Vec::new();
    for path in ["/predict", "/v2/models/mnist/infer"] {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream.write_all(head("POST", path, &[], 1000).as_bytes()).unwrap();
        stream.write_all(b"{\"inputs\"").unwrap();
        slow.push((path, stream, Instant::now()));
    }
    for (path, mut stream, started) in slow {
        let response = read_response(&mut stream);
        assert_eq!(response.status, 408, "{path}");
        assert!(response.error().contains("longer than 1.000 s"), "{}", response.error());
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(10), "{path}: {waited:?}");
    }
    assert_healthy(&server);
}

#[test]
fn hostile_pictures_and_queries_are_400() {
    let server = Server::start(&run_dir(), &[]);
    let mut png = Vec::new();
    image::GrayImage::from_fn(40, 40, |x, _| image::Luma([if x < 20 { 0 } else { 255 }]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageOutputFormat::Png)
        .unwrap();
    let mut white = Vec::new();
    image::GrayImage::from_pixel(30, 30, image::Luma([255]))
        .write_to(&mut std::io::Cursor::new(&mut white), image::ImageOutputFormat::Png)
        .unwrap();
    let mut bad_crc = png.clone();
    bad_crc[29] ^= 0xff;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "body is empty"),
        ("text", b"hello, world".to_vec(), "not a readable image"),
        (
            "random bytes",
            (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect(),
            "not a readable image",
        ),
        ("truncated PNG", png[..png.len() / 2].to_vec(), "not a readable image"),
        ("PNG header only", png_header(40, 40), "not a readable image"),
        ("bad CRC", bad_crc, "not a readable image"),
        ("zero-sized PNG", png_header(0, 0), "not a readable image"),
        ("GIF header", b"GIF89a\x10\x00\x10\x00".to_vec(), "not a readable image"),
        ("PNM with huge max", b"P5\n2 2\n99999999999\n\0\0\0\0".to_vec(), "not a readable image"),
        ("blank", white, "blank"),
    ];
    for (name, body, fragment) in cases {
        let response = server.post("/predict", &body);
        assert_eq!(response.status, 400, "{name}: {:?}", String::from_utf8_lossy(&response.body));
        assert!(response.error().contains(fragment), "{name}: {}", response.error());
    }
    for (query, fragment) in
        [("top=0", "top"), ("top=-1", "query"), ("fit=sideways", "fit=sideways"), ("invert=1", "invert")]
    {
        let response = server.post(&format!("/predict?{query}"), &png);
        assert_eq!(response.status, 400, "{query}");
        assert!(response.error().contains(fragment), "{query}: {}", response.error());
    }
    assert_eq!(server.post("/predict", &png).status, 200);
    assert_healthy(&server);
}

#[test]
fn wrong_tensors_are_400_naming_the_problem() {
    let server = Server::start(&run_dir(), &[]);
    let input = |shape: Value, datatype: &str, data: Value| json!({"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]});
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "missing field `inputs`"),
        (json!({"inputs": []}), "expected one input tensor"),
        (json!({"inputs": [good_request(1)["inputs"][0], good_request(1)["inputs"][0]]}), "got 2"),
        (input(json!([1, 8]), "UINT8", json!(vec![0; 8])), "is not [N, 8, 8] or [N, 64]"),
        (input(json!([0, 64]), "UINT8", json!([])), "N >= 1"),
        (input(json!([-1, 64]), "UINT8", json!(vec![0; 64])), "N >= 1"),
        (input(json!([1, 28, 28]), "FP32", json!(vec![0.0; 784])), "is not [N, 8, 8]"),
        (input(json!([1, 64]), "INT64", json!(vec![0; 64])), "datatype 'INT64' is not supported"),
        (input(json!([1, 64]), "BYTES", json!(["a"])), "not a valid inference request"),
        (input(json!([2, 64]), "UINT8", json!(vec![0; 64])), "holds 128 values but data has 64"),
        (input(json!([1, 64]), "UINT8", json!(vec![300; 64])), "300 is not a UINT8 value"),
        (input(json!([1, 64]), "UINT8", json!(vec![0.5; 64])), "0.5 is not a UINT8 value"),
        (input(json!([1, 64]), "FP32", json!(vec![1e300; 64])), "not a finite FP32 number"),
        (input(json!([1, 64]), "FP32", json!(vec!["0"; 64])), "not a valid inference request"),
        (input(json!([1, 64]), "FP32", Value::Null), "no data"),
        (input(json!([4611686018427387904i64, 64]), "FP32", json!([0])), "too large"),
        (json!({"inputs": good_request(1)["inputs"], "outputs": [{"name": "features"}]}), "no output named 'features'"),
    ];
    for (body, fragment) in cases {
        let response = server.post_json("/v2/models/mnist/infer", &body);
        assert_eq!(response.status, 400, "{body}: {:?}", String::from_utf8_lossy(&response.body));
        assert!(response.error().contains(fragment), "{fragment}: {}", response.error());
    }
    /// A raw body, its extra headers, and a fragment of the error it must get.
    type RawCase = (Vec<u8>, Vec<(&'static str, String)>, &'static str);
    let raw: Vec<RawCase> = vec![
        (b"{\"inputs\": [".to_vec(), vec![], "not a valid inference request"),
        (b"not json".to_vec(), vec![], "not a valid inference request"),
        ([vec![b'['; 100_000], vec![b']'; 100_000]].concat(), vec![], "not a valid inference request"),
        (b"{}".to_vec(), vec![("Inference-Header-Content-Length", "99".into())], "but the body has 2 bytes"),
        (b"{}".to_vec(), vec![("Inference-Header-Content-Length", "x".into())], "not a number of bytes"),
        (
            {
                let header = json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                             "parameters": {"binary_data_size": 256}}]})
                .to_string();
                [header.as_bytes(), &[0u8; 100]].concat()
            },
            vec![],
            "not a valid inference request",
        ),
    ];
    for (body, headers, fragment) in raw {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let response = common::server::request(server.addr, "POST", "/v2/models/mnist/infer", &headers, &body);
        assert_eq!(response.status, 400, "{:?}", String::from_utf8_lossy(&response.body));
        assert!(response.error().contains(fragment), "{fragment}: {}", response.error());
    }
    // Binary tensors whose size does not match the shape.
    let header = json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 100}}]})
    .to_string();
    let length = header.len().to_string();
    let body = [header.as_bytes(), &[0u8; 100]].concat();
    let response = common::server::request(
        server.addr,
        "POST",
        "/v2/models/mnist/infer",
        &[("Inference-Header-Content-Length", &length)],
        &body,
    );
    assert_eq!(response.status, 400);
    assert!(response.error().contains("needs 256 bytes"), "{}", response.error());
    let gzip =
        common::server::request(server.addr, "POST", "/v2/models/mnist/infer", &[("Content-Encoding", "gzip")], b"x");
    assert_eq!(gzip.status, 415);
    assert_healthy(&server);
}

#[test]
fn fp32_values_outside_0_1_are_400_naming_the_first() {
    let server = Server::start(&run_dir(), &[]);
    let fp32 =
        |data: Vec<f64>| json!({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": data}]});
    let cases = [
        (
            [vec![0.5; 5], vec![1e30, 2.0], vec![0.0; 57]].concat(),
            "input 'pixels': the value 1e30 at index 5 is outside [0, 1]",
        ),
        ([vec![1.0; 63], vec![-0.5]].concat(), "the value -0.5 at index 63 is outside [0, 1]"),
        ([vec![0.0; 10], vec![1e300], vec![0.0; 53]].concat(), "the value at index 10 is not a finite FP32 number"),
    ];
    for (data, fragment) in cases {
        let response = server.post_json("/v2/models/mnist/infer", &fp32(data));
        assert_eq!(response.status, 400, "{fragment}: {:?}", String::from_utf8_lossy(&response.body));
        assert!(response.error().contains(fragment), "{fragment}: {}", response.error());
    }
    // The same check on binary tensor data (Triton's extension).
    let header = json!({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 256}}]})
    .to_string();
    let length = header.len().to_string();
    let values: Vec<u8> = (0..64).flat_map(|i| if i == 7 { f32::NAN } else { 0.25f32 }.to_le_bytes()).collect();
    let body = [header.as_bytes(), &values].concat();
    let headers = [("Inference-Header-Content-Length", length.as_str())];
    let response = common::server::request(server.addr, "POST", "/v2/models/mnist/infer", &headers, &body);
    assert_eq!(response.status, 400);
    assert!(response.error().contains("'pixels': the value at index 7 is not a finite"), "{}", response.error());
    // The edges of [0, 1] are pixels.
    assert_eq!(server.post_json("/v2/models/mnist/infer", &fp32([vec![0.0; 32], vec![1.0; 32]].concat())).status, 200);
    assert_healthy(&server);
}

/// How many connections the concurrency test opens at once.
const CONNECTIONS: usize = 10_000;

#[test]
fn ten_thousand_connections_at_once_are_answered_or_refused_cleanly() {
    // A queue of one request, so most of the burst finds it full.
    let server = Server::start(&run_dir(), &["--queue", "1", "--max-batch", "8"]);
    let body = good_request(1).to_string();
    let request = [head("POST", "/v2/models/mnist/infer", &[], body.len()).as_bytes(), body.as_bytes()].concat();
    let started = Instant::now();
    let mut streams = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        stream.write_all(&request).unwrap();
        streams.push(stream);
    }
    let (mut answered, mut busy) = (0, 0);
    for mut stream in streams {
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).unwrap();
        let response = parse_response(&bytes);
        match response.status {
            200 => {
                answered += 1;
                assert_eq!(response.json()["outputs"][0]["shape"], json!([1, 4]));
            }
            503 => {
                busy += 1;
                assert_eq!(response.header("retry-after"), Some("1"));
                assert!(response.error().contains("queue is full"), "{}", response.error());
            }
            other => panic!("status {other}: {:?}", String::from_utf8_lossy(&response.body)),
        }
    }
    eprintln!("{CONNECTIONS} connections: {answered} answered, {busy} refused busy, in {:?}", started.elapsed());
    assert_eq!(answered + busy, CONNECTIONS);
    assert!(answered > 0 && busy > 0, "{answered} answered, {busy} busy");
    assert_healthy(&server);
    let metrics = String::from_utf8(server.get("/metrics").body).unwrap();
    assert!(metrics.contains(&format!("code=\"503\"}} {busy}\n")), "{metrics}");
}
