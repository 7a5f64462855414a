//! `POST /predict`: a picture (PNG, JPEG, PNM, ... any size) as the body or as the one file field of a
//! `multipart/form-data` form (`curl -F file=@digit.png`), the answer of
//! `mnist-tch predict --json` out — decoded and made the network's input by the same functions of
//! `preprocess` as `predict`, so both see the same pixels — plus every class's probability and the logits.
//! Query: `top=K` (default 3), `fit=`, `invert=` (as predict's flags), `show_input=true` (the
//! `rows × cols` picture the model saw, as 0–255 values), `min_confidence=P` (the answer is "unknown"
//! under it; default `--min-confidence`).

use super::error::{ApiError, body_rejection, body_too_large};
use super::state::Shared;
use super::worker::ModelInfo;
use crate::inference;
use crate::preprocess::{self, Framing, Invert, ModelInput};
use axum::Json;
use axum::body::Bytes;
use axum::extract::multipart::MultipartError;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use std::str::FromStr;
use tch::Tensor;

/// The query string of `/predict`.
#[derive(Debug, Default, Deserialize)]
pub struct PictureQuery {
    top: Option<u64>,
    fit: Option<String>,
    invert: Option<String>,
    show_input: Option<bool>,
    min_confidence: Option<String>,
}

pub async fn predict(
    State(app): State<Shared>,
    query: Result<Query<PictureQuery>, QueryRejection>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|err| ApiError::bad_request(format!("bad query string: {}", err.body_text())))?;
    let (source, body) = read_upload(&app, request).await?;
    let framing = choice(query.fit.as_deref(), "fit", &Framing::NAMES, Framing::Auto)?;
    let invert = choice(query.invert.as_deref(), "invert", &Invert::NAMES, Invert::Auto)?;
    let min_confidence = match query.min_confidence.as_deref() {
        None => app.config.min_confidence,
        Some(text) => inference::parse_min_confidence(text)
            .map_err(|reason| ApiError::bad_request(format!("min_confidence: {reason}")))?,
    };
    let top = query.top.unwrap_or(3);
    if top == 0 {
        return Err(ApiError::bad_request("top must be at least 1"));
    }
    let input = {
        let _permit = app
            .decoding
            .acquire()
            .await
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping"))?;
        let (info, max_pixels) = (app.info.clone(), app.config.limits.max_pixels);
        tokio::task::spawn_blocking(move || prepare_upload(&body, &info, framing, invert, max_pixels))
            .await
            .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "preparing the picture failed"))??
    };
    let answer = app.infer(input.pixels.clone(), 1).await?;
    let class_names = &app.info.class_names;
    let internal = |err: anyhow::Error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("top-k: {err:#}"));
    let probabilities = Tensor::from_slice(&answer.probabilities).f_view([1, -1]).map_err(|e| internal(e.into()))?;
    let best = inference::top_k(&probabilities, top).map_err(internal)?;
    let best = best.first().map(Vec::as_slice).unwrap_or_default();
    let warning = input.warning.as_deref();
    let mut answer_json =
        inference::prediction_json(&source, input.inverted, input.framing, warning, best, class_names, min_confidence);
    answer_json["probabilities"] = json!(answer.probabilities);
    answer_json["class_names"] = json!(class_names);
    if let Some(logits) = answer.logits {
        answer_json["logits"] = json!(logits);
    }
    if query.show_input == Some(true) {
        let (cols, rows) = input.image.dimensions();
        answer_json["image"] = json!({"rows": rows, "cols": cols, "pixels": input.image.as_raw()});
    }
    Ok(Json(answer_json))
}

/// The uploaded picture and what it is called in the answer's `input`: the whole body ("request body"),
/// or the one file field of a `multipart/form-data` body (its file name). `--body-limit` applies to both.
async fn read_upload(app: &Shared, request: Request) -> Result<(String, Bytes), ApiError> {
    let limit = app.config.limits.body_bytes;
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if !content_type.is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data")) {
        let body = Bytes::from_request(request, app).await.map_err(|err| body_rejection(err, limit))?;
        if body.is_empty() {
            return Err(ApiError::bad_request("the request body is empty: send a PNG, JPEG or PNM picture"));
        }
        return Ok(("request body".to_string(), body));
    }
    let mut form = Multipart::from_request(request, app)
        .await
        .map_err(|err| ApiError::bad_request(format!("not a multipart form: {}", err.body_text())))?;
    let form_error = |err: MultipartError| match err.status() {
        StatusCode::PAYLOAD_TOO_LARGE => body_too_large(limit),
        status => ApiError::new(status, format!("the multipart form could not be read: {}", err.body_text())),
    };
    let (mut picture, mut other_fields) = (None::<(String, String, Bytes)>, Vec::new());
    while let Some(field) = form.next_field().await.map_err(form_error)? {
        let name = field.name().unwrap_or_default().to_string();
        let Some(file_name) = field.file_name().map(str::to_string) else {
            other_fields.push(format!("'{name}'"));
            continue;
        };
        if let Some((first, _, _)) = &picture {
            return Err(ApiError::bad_request(format!(
                "the form has more than one file field ('{first}' and '{name}'): send one picture per request"
            )));
        }
        picture = Some((name, file_name, field.bytes().await.map_err(form_error)?));
    }
    match picture {
        Some((name, _, bytes)) if bytes.is_empty() => {
            Err(ApiError::bad_request(format!("the form's file field '{name}' is empty: send a picture in it")))
        }
        Some((_, file_name, bytes)) => Ok((file_name, bytes)),
        None => Err(ApiError::bad_request(format!(
            "the form has no file field{}: send the picture as one (curl -F file=@digit.png)",
            if other_fields.is_empty() { String::new() } else { format!(" (only {})", other_fields.join(", ")) }
        ))),
    }
}

/// A query value naming one of a flag's choices (`names`), as the command line spells them, in any case.
fn choice<T: FromStr>(value: Option<&str>, name: &str, names: &[&str], default: T) -> Result<T, ApiError> {
    let Some(value) = value else { return Ok(default) };
    value
        .to_ascii_lowercase()
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{name}={value} is not one of: {}", names.join(", "))))
}

/// The uploaded picture in `bytes` as the network's input: refused when larger than `max_pixels`, else
/// An upload made into the frame the way the run read its training pictures (a run trained on pictures,
/// or a colour frame), as `predict` does: the run's fit unless the query names one.
fn prepare_like_the_run(bytes: &[u8], info: &ModelInfo, framing: Framing) -> Result<ModelInput, ApiError> {
    use crate::pictures::prepare;
    let fit = if framing == Framing::Auto { info.fit.unwrap_or(Framing::Auto) } else { framing };
    let bad = |err: anyhow::Error| ApiError::bad_request(format!("{err:#}"));
    let picture = prepare::decode(bytes).map_err(bad)?;
    let prepared = prepare::prepare(&picture, info.frame, fit, &info.class_names).map_err(bad)?;
    let image = prepared.image(info.frame).map(|shown| shown.to_luma8()).unwrap_or_default();
    Ok(ModelInput {
        pixels: prepared.unit_pixels(),
        image,
        inverted: prepared.inverted,
        framing: prepared.framing,
        warning: prepared.warning,
    })
}

/// decoded and made the input the way `predict` turns a file into one ([`preprocess::to_model_input`]).
fn prepare_upload(
    bytes: &[u8],
    info: &ModelInfo,
    framing: Framing,
    invert: Invert,
    max_pixels: u64,
) -> Result<ModelInput, ApiError> {
    let not_readable = |err: &dyn std::fmt::Display| ApiError::bad_request(format!("not a readable image: {err}"));
    let (width, height) = image::io::Reader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|err| not_readable(&err))?
        .into_dimensions()
        .map_err(|err| not_readable(&err))?;
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the picture is {width}x{height}: larger than the {max_pixels} pixels the server decodes"),
        ));
    }
    if info.fit.is_some() || info.frame.channels != 1 {
        return prepare_like_the_run(bytes, info, framing);
    }
    let image = preprocess::decode_gray(bytes).map_err(|err| ApiError::bad_request(format!("{err:#}")))?;
    let (rows, cols) = (info.frame.rows, info.frame.cols);
    preprocess::to_model_input(&image, rows as u32, cols as u32, &info.class_names, framing, invert)
        .map_err(|err| ApiError::bad_request(format!("{err:#}")))
}
