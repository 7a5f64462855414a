//! The routes and what every request goes through: the body-size limit (an announced `Content-Length`
//! over it is refused before any of the body is read), the per-request timeout (408), the metrics, and
//! a JSON error for a wrong method (405) as for every other error.

use super::error::{ApiError, body_too_large};
use super::state::Shared;
use super::{page, picture, v2};
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::time::Instant;

/// Every route of the server.
pub fn router(app: Shared) -> Router {
    let body_limit = app.config.limits.body_bytes;
    let routes = Router::new()
        .route("/", get(page::index))
        .route("/predict", post(picture::predict))
        .route("/metrics", get(metrics))
        .route("/v2", get(v2::server_metadata))
        .route("/v2/health/live", get(v2::live))
        .route("/v2/health/ready", get(v2::ready))
        .route("/v2/models/{model}", get(v2::model_metadata))
        .route("/v2/models/{model}/ready", get(v2::model_ready))
        .route("/v2/models/{model}/infer", post(v2::infer))
        .route("/v2/models/{model}/versions/{version}", get(v2::model_metadata))
        .route("/v2/models/{model}/versions/{version}/ready", get(v2::model_ready))
        .route("/v2/models/{model}/versions/{version}/infer", post(v2::infer))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(app.clone(), refuse_announced_overflow))
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app);
    // The router sets `Allow` on a 405 around its routes' layers: the JSON is made outside it.
    Router::new().fallback_service(routes).layer(middleware::from_fn(method_not_allowed))
}

/// A 405 (a known path, another method) as a JSON error naming the methods the path takes, with the
/// router's `Allow` header kept.
async fn method_not_allowed(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let response = next.run(request).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let takes = allow.as_ref().and_then(|value| value.to_str().ok()).unwrap_or_default().replace(',', ", ");
    let message = format!("{method} is not allowed on {path}: it takes {takes}");
    let mut answer = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, message).into_response();
    if let Some(allow) = allow {
        answer.headers_mut().insert(header::ALLOW, allow);
    }
    answer
}

/// The per-request timeout and the metrics around every request. Unknown paths share one label, so
/// hostile URLs cannot grow the metrics without bound.
async fn observe(State(app): State<Shared>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |path| path.as_str()).to_string();
    let started = Instant::now();
    let timeout = app.config.limits.timeout;
    let response = match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request took longer than {:.3} s (--timeout)", timeout.as_secs_f64()),
        )
        .into_response(),
    };
    app.metrics.record_request(&route, response.status().as_u16(), started.elapsed());
    response
}

/// 413 at once for a request whose `Content-Length` is over the body limit: nothing of its body is read,
/// so hyper never sends `100 Continue` for it. Bodies without a length (chunked) are limited while they
/// are read ([`DefaultBodyLimit`]).
async fn refuse_announced_overflow(State(app): State<Shared>, request: Request, next: Next) -> Response {
    let limit = app.config.limits.body_bytes;
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if announced.is_some_and(|length| length > limit as u64) {
        return body_too_large(limit).into_response();
    }
    next.run(request).await
}

async fn metrics(State(app): State<Shared>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], app.metrics.render()).into_response()
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no such route: {} {}", request.method(), request.uri().path()))
}
