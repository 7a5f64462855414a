//! The state every handler shares ([`App`]), with the one way they reach the model: the inference
//! thread's queue.

use super::config::Config;
use super::error::ApiError;
use super::metrics::Metrics;
use super::worker::{Answer, ModelInfo, Queue, SubmitError};
use axum::http::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::sync::Semaphore;

/// What the handlers share.
pub struct App {
    pub config: Config,
    pub info: ModelInfo,
    pub metrics: Arc<Metrics>,
    queue: Queue,
    /// Set at the first Ctrl-C/SIGTERM: readiness answers 503 while requests in flight finish.
    stopping: AtomicBool,
    /// Pictures decoded at once: decoding runs on blocking threads, and each may take megabytes.
    pub decoding: Semaphore,
}

pub type Shared = Arc<App>;

impl App {
    pub fn new(config: Config, info: ModelInfo, queue: Queue, metrics: Arc<Metrics>) -> App {
        let decoders = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
        App { config, info, metrics, queue, stopping: AtomicBool::new(false), decoding: Semaphore::new(decoders) }
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        !self.stopping.load(Ordering::SeqCst)
    }

    /// The model's answer for `count` images (`pixels`: `count × rows × cols` values in [0, 1]).
    pub async fn infer(&self, pixels: Vec<f32>, count: usize) -> Result<Answer, ApiError> {
        let deadline = Instant::now() + self.config.limits.timeout;
        let answer = match self.queue.submit(pixels, count, deadline) {
            Ok(answer) => answer,
            Err(SubmitError::Busy) => return Err(ApiError::busy()),
            Err(SubmitError::Stopped) => {
                return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping"));
            }
        };
        match answer.await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(message)) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)),
            Err(_) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the inference thread dropped the request")),
        }
    }
}
