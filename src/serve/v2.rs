//! The Open Inference Protocol (KServe v2, spoken by Triton and Seldon) over HTTP/JSON: health, server
//! and model metadata, readiness, and inference on `[N, rows, cols]`, `[N, rows*cols]` or
//! `[N, 1, rows, cols]` FP32 (pixels in [0, 1]; other values are refused) or UINT8 (0–255) tensors,
//! answering `logits` and `probabilities` `[N, classes]`. Tensors come as JSON (flat or nested) or, with
//! Triton's binary tensor data extension (`binary_data_size`, `Inference-Header-Content-Length`), as raw
//! little-endian bytes after the JSON — what tritonclient sends by default.

use super::error::{ApiError, body_rejection};
use super::state::Shared;
use super::worker::ModelInfo;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

/// The header giving the JSON part's length when binary tensors follow it.
const HEADER_LENGTH: &str = "inference-header-content-length";
/// The one version of the model.
const VERSION: &str = "1";
/// The input tensor's name in the model's metadata (any name is accepted).
const INPUT_NAME: &str = "input";

/// `{model}` and `{version}` of the URL.
#[derive(Debug, Deserialize)]
pub struct ModelPath {
    model: String,
    version: Option<String>,
}

/// 404 unless the URL names the served model (and its version).
fn check_model(app: &Shared, path: &ModelPath) -> Result<(), ApiError> {
    let name = &app.config.model_name;
    if &path.model != name {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("model '{}' is not served here: this server serves '{name}'", path.model),
        ));
    }
    match &path.version {
        Some(version) if version != VERSION => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("model '{name}' has no version '{version}': its only version is {VERSION}"),
        )),
        _ => Ok(()),
    }
}

pub async fn live() -> Json<Value> {
    Json(json!({"live": true}))
}

pub async fn ready(State(app): State<Shared>) -> Response {
    readiness(&app, json!({"ready": app.is_ready()}))
}

fn readiness(app: &Shared, body: Value) -> Response {
    let status = if app.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

pub async fn server_metadata() -> Json<Value> {
    Json(json!({"name": "mnist-tch", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"]}))
}

pub async fn model_metadata(State(app): State<Shared>, Path(path): Path<ModelPath>) -> Result<Json<Value>, ApiError> {
    check_model(&app, &path)?;
    let info = &app.info;
    let (rows, cols) = (info.frame.rows, info.frame.cols);
    let channels = info.frame.channels;
    let classes = info.class_names.len();
    let mut outputs = Vec::new();
    if info.has_logits {
        outputs.push(json!({"name": "logits", "datatype": "FP32", "shape": [-1, classes]}));
    }
    outputs.push(json!({"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]}));
    Ok(Json(json!({
        "name": app.config.model_name,
        "versions": [VERSION],
        "platform": "pytorch_libtorch",
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": info.frame.batch_shape(-1)}],
        "outputs": outputs,
        "parameters": {"class_names": info.class_names, "input_datatypes": ["FP32", "UINT8"],
                       "input_shapes": if channels == 1 {
                           json!([[-1, rows, cols], [-1, rows * cols], [-1, 1, rows, cols]])
                       } else {
                           json!([[-1, channels, rows, cols], [-1, channels * rows * cols]])
                       }},
    })))
}

pub async fn model_ready(State(app): State<Shared>, Path(path): Path<ModelPath>) -> Result<Response, ApiError> {
    check_model(&app, &path)?;
    Ok(readiness(&app, json!({"name": app.config.model_name, "ready": app.is_ready()})))
}

/// An inference request's JSON.
#[derive(Debug, Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<RequestInput>,
    #[serde(default)]
    outputs: Vec<RequestOutput>,
    #[serde(default)]
    parameters: Parameters,
}

#[derive(Debug, Deserialize)]
struct RequestInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    data: Option<FlatNumbers>,
    #[serde(default)]
    parameters: Parameters,
}

#[derive(Debug, Deserialize)]
struct RequestOutput {
    name: String,
    #[serde(default)]
    parameters: Parameters,
}

/// The parameters this server reads; others are ignored, as the protocol allows.
#[derive(Debug, Default, Deserialize)]
struct Parameters {
    binary_data_size: Option<usize>,
    binary_data: Option<bool>,
    binary_data_output: Option<bool>,
}

/// The model's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Logits,
    Probabilities,
}

impl Output {
    fn name(self) -> &'static str {
        match self {
            Output::Logits => "logits",
            Output::Probabilities => "probabilities",
        }
    }
}

/// The input's element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Datatype {
    Fp32,
    Uint8,
}

impl Datatype {
    fn parse(name: &str, input: &str) -> Result<Datatype, ApiError> {
        match name {
            "FP32" => Ok(Datatype::Fp32),
            "UINT8" => Ok(Datatype::Uint8),
            other => Err(ApiError::bad_request(format!(
                "input '{input}': datatype '{other}' is not supported: send FP32 (pixels in [0, 1]) or UINT8 (0-255)"
            ))),
        }
    }

    fn size(self) -> usize {
        match self {
            Datatype::Fp32 => 4,
            Datatype::Uint8 => 1,
        }
    }
}

pub async fn infer(
    State(app): State<Shared>,
    Path(path): Path<ModelPath>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_model(&app, &path)?;
    let body = body.map_err(|err| body_rejection(err, app.config.limits.body_bytes))?;
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING).filter(|e| e.as_bytes() != b"identity") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("compressed requests (Content-Encoding: {}) are not supported", encoding.to_str().unwrap_or("?")),
        ));
    }
    let (json_part, binary) = split_body(&body, &headers)?;
    let request: InferRequest = serde_json::from_slice(json_part)
        .map_err(|err| ApiError::bad_request(format!("not a valid inference request: {err}")))?;
    let (pixels, count) = read_input(&request, binary, &app.info)?;
    let outputs = requested_outputs(&request, &app.info)?;
    let answer = app.infer(pixels, count).await?;
    let classes = app.info.class_names.len();
    let mut described = Vec::new();
    let mut tail = Vec::new();
    for (output, binary) in outputs {
        let values = match output {
            Output::Logits => answer.logits.as_deref().unwrap_or_default(),
            Output::Probabilities => &answer.probabilities,
        };
        let mut tensor = json!({"name": output.name(), "datatype": "FP32", "shape": [count, classes]});
        if binary {
            tensor["parameters"] = json!({"binary_data_size": values.len() * 4});
            tail.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        } else {
            tensor["data"] = json!(values);
        }
        described.push(tensor);
    }
    let mut response = json!({"model_name": app.config.model_name, "model_version": VERSION, "outputs": described});
    if let Some(id) = request.id {
        response["id"] = json!(id);
    }
    if tail.is_empty() {
        return Ok(Json(response).into_response());
    }
    let mut bytes = serde_json::to_vec(&response)
        .map_err(|err| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the answer: {err}")))?;
    let header_length = bytes.len();
    bytes.extend_from_slice(&tail);
    let mut binary_response = bytes.into_response();
    let headers = binary_response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(HEADER_LENGTH, HeaderValue::from(header_length));
    Ok(binary_response)
}

/// The JSON part and the binary tensors after it.
fn split_body<'a>(body: &'a [u8], headers: &HeaderMap) -> Result<(&'a [u8], &'a [u8]), ApiError> {
    let Some(value) = headers.get(HEADER_LENGTH) else { return Ok((body, &[])) };
    let length = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .ok_or_else(|| ApiError::bad_request("Inference-Header-Content-Length is not a number of bytes"))?;
    if length > body.len() {
        return Err(ApiError::bad_request(format!(
            "Inference-Header-Content-Length is {length} but the body has {} bytes",
            body.len()
        )));
    }
    Ok(body.split_at(length))
}

/// The one input tensor as `count × rows × cols` pixels in [0, 1], checked against the model.
fn read_input(request: &InferRequest, binary: &[u8], info: &ModelInfo) -> Result<(Vec<f32>, usize), ApiError> {
    let [input] = request.inputs.as_slice() else {
        return Err(ApiError::bad_request(format!(
            "expected one input tensor ('{INPUT_NAME}'), got {}",
            request.inputs.len()
        )));
    };
    let datatype = Datatype::parse(&input.datatype, &input.name)?;
    let count = image_count(input, info)?;
    let values = count.checked_mul(info.pixels_per_image()).ok_or_else(|| {
        ApiError::bad_request(format!("input '{}': shape {:?} is too large", input.name, input.shape))
    })?;
    let pixels = input_pixels(input, binary, datatype, values)?;
    if input.parameters.binary_data_size.is_none() && !binary.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} bytes of binary data follow the JSON but no input uses them",
            binary.len()
        )));
    }
    Ok((pixels, count))
}

/// How many images `input`'s shape holds: `[N, rows, cols]`, `[N, rows * cols]` or `[N, 1, rows, cols]`
/// (NCHW, one channel: a CNN's and the TorchScript export's layout) of the model's size.
fn image_count(input: &RequestInput, info: &ModelInfo) -> Result<usize, ApiError> {
    if info.frame.channels != 1 {
        return colour_image_count(input, info);
    }
    let (rows, cols) = (info.frame.rows, info.frame.cols);
    let count = match input.shape.as_slice() {
        [n, r, c] if *n > 0 && [*r, *c] == [rows, cols] => *n,
        [n, flat] if *n > 0 && *flat == rows * cols => *n,
        [n, 1, r, c] if *n > 0 && [*r, *c] == [rows, cols] => *n,
        _ => {
            return Err(ApiError::bad_request(format!(
                "input '{}': shape {:?} is not [N, {rows}, {cols}] or [N, {}] or [N, 1, {rows}, {cols}], with N >= 1",
                input.name,
                input.shape,
                rows * cols
            )));
        }
    };
    Ok(count as usize)
}

/// How many images `input`'s shape holds for a colour frame: `[N, C, rows, cols]` or `[N, C*rows*cols]`.
fn colour_image_count(input: &RequestInput, info: &ModelInfo) -> Result<usize, ApiError> {
    let crate::frame::Frame { channels, rows, cols } = info.frame;
    match input.shape.as_slice() {
        [n, c, r, w] if *n > 0 && [*c, *r, *w] == [channels, rows, cols] => Ok(*n as usize),
        [n, flat] if *n > 0 && *flat == channels * rows * cols => Ok(*n as usize),
        _ => Err(ApiError::bad_request(format!(
            "input '{}': shape {:?} is not [N, {channels}, {rows}, {cols}] or [N, {}], with N >= 1",
            input.name,
            input.shape,
            channels * rows * cols
        ))),
    }
}

/// `input`'s `values` pixels, from its JSON `data` or from the `binary` tensor after the JSON (the one
/// its `binary_data_size` announces).
fn input_pixels(input: &RequestInput, binary: &[u8], datatype: Datatype, values: usize) -> Result<Vec<f32>, ApiError> {
    let name = &input.name;
    match (&input.data, input.parameters.binary_data_size) {
        (Some(data), None) => {
            if data.0.len() != values {
                return Err(ApiError::bad_request(format!(
                    "input '{name}': shape {:?} holds {values} values but data has {}",
                    input.shape,
                    data.0.len()
                )));
            }
            from_json(&data.0, datatype, name)
        }
        (None, Some(size)) => {
            let expected = values * datatype.size();
            if size != expected || size != binary.len() {
                return Err(ApiError::bad_request(format!(
                    "input '{name}': binary_data_size is {size}, shape {:?} of {} needs {expected} bytes, and {} \
                     bytes follow the JSON",
                    input.shape,
                    input.datatype,
                    binary.len()
                )));
            }
            from_bytes(binary, datatype, name)
        }
        (Some(_), Some(_)) => {
            Err(ApiError::bad_request(format!("input '{name}': both data and binary_data_size given")))
        }
        (None, None) => Err(ApiError::bad_request(format!("input '{name}': no data"))),
    }
}

fn from_json(values: &[f64], datatype: Datatype, name: &str) -> Result<Vec<f32>, ApiError> {
    match datatype {
        Datatype::Fp32 => values.iter().enumerate().map(|(at, &v)| pixel(v as f32, at, name)).collect(),
        Datatype::Uint8 => values
            .iter()
            .map(|&v| {
                if v.fract() == 0.0 && (0.0..=255.0).contains(&v) {
                    Ok(v as u8 as f32 / 255.0)
                } else {
                    Err(ApiError::bad_request(format!("input '{name}': {v} is not a UINT8 value (0-255)")))
                }
            })
            .collect(),
    }
}

fn from_bytes(bytes: &[u8], datatype: Datatype, name: &str) -> Result<Vec<f32>, ApiError> {
    match datatype {
        Datatype::Fp32 => {
            let values = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            values.enumerate().map(|(at, v)| pixel(v, at, name)).collect()
        }
        Datatype::Uint8 => Ok(bytes.iter().map(|&b| b as f32 / 255.0).collect()),
    }
}

/// An FP32 pixel, the `at`-th value (row-major) of input `name`: a finite number in [0, 1], as the
/// model was trained on (a value far outside gives logits without meaning, not an error of the model).
fn pixel(v: f32, at: usize, name: &str) -> Result<f32, ApiError> {
    if !v.is_finite() {
        return Err(ApiError::bad_request(format!(
            "input '{name}': the value at index {at} is not a finite FP32 number"
        )));
    }
    if !(0.0..=1.0).contains(&v) {
        return Err(ApiError::bad_request(format!(
            "input '{name}': the value {v:?} at index {at} is outside [0, 1]: FP32 pixels are in [0, 1] (send UINT8 \
             for 0-255)"
        )));
    }
    Ok(v)
}

/// The outputs to answer, each as JSON or binary.
fn requested_outputs(request: &InferRequest, info: &ModelInfo) -> Result<Vec<(Output, bool)>, ApiError> {
    let default_binary = request.parameters.binary_data_output.unwrap_or(false);
    if request.outputs.is_empty() {
        let all =
            if info.has_logits { vec![Output::Logits, Output::Probabilities] } else { vec![Output::Probabilities] };
        return Ok(all.into_iter().map(|o| (o, default_binary)).collect());
    }
    request
        .outputs
        .iter()
        .map(|wanted| {
            let output = match wanted.name.as_str() {
                "logits" if info.has_logits => Output::Logits,
                "logits" => {
                    return Err(ApiError::bad_request(
                        "this model has no 'logits' output (exported with the softmax in it): ask for 'probabilities'",
                    ));
                }
                "probabilities" => Output::Probabilities,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "no output named '{other}': the outputs are 'logits' and 'probabilities'"
                    )));
                }
            };
            Ok((output, wanted.parameters.binary_data.unwrap_or(default_binary)))
        })
        .collect()
}

/// A tensor's `data`: a number or arrays of numbers nested to any depth, flattened in row-major order
/// as it is read (8 bytes per value, no intermediate JSON tree).
#[derive(Debug)]
struct FlatNumbers(Vec<f64>);

impl<'de> Deserialize<'de> for FlatNumbers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut values = Vec::new();
        Flatten(&mut values).deserialize(deserializer)?;
        Ok(FlatNumbers(values))
    }
}

struct Flatten<'a>(&'a mut Vec<f64>);

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a number or an array of numbers")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.push(v);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.push(v as f64);
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push(v as f64);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_flattened_in_row_major_order() {
        let data: FlatNumbers = serde_json::from_str("[[1, 2.5], [[3], -4]]").unwrap();
        assert_eq!(data.0, vec![1.0, 2.5, 3.0, -4.0]);
        assert!(serde_json::from_str::<FlatNumbers>("[1, \"2\"]").is_err());
        assert!(serde_json::from_str::<FlatNumbers>("[1, null]").is_err());
    }

    #[test]
    fn uint8_values_must_be_bytes() {
        assert_eq!(from_json(&[0.0, 255.0], Datatype::Uint8, "x").unwrap(), vec![0.0, 1.0]);
        for bad in [256.0, -1.0, 0.5] {
            assert!(from_json(&[bad], Datatype::Uint8, "x").is_err(), "{bad}");
        }
        assert!(from_json(&[1e300], Datatype::Fp32, "x").is_err());
    }

    #[test]
    fn fp32_values_must_be_pixels_in_0_1() {
        assert_eq!(from_json(&[0.0, 0.5, 1.0], Datatype::Fp32, "x").unwrap(), vec![0.0, 0.5, 1.0]);
        let error = from_json(&[0.0, 1.5, -1.0], Datatype::Fp32, "x").unwrap_err().message;
        assert!(error.contains("'x'") && error.contains("1.5 at index 1") && error.contains("[0, 1]"), "{error}");
        let bytes: Vec<u8> = [0.25f32, f32::NAN].iter().flat_map(|v| v.to_le_bytes()).collect();
        let error = from_bytes(&bytes, Datatype::Fp32, "x").unwrap_err().message;
        assert!(error.contains("index 1 is not a finite"), "{error}");
    }
}
