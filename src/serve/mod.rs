//! `mnist-tch serve`: a trained model behind HTTP — a draw-a-digit page, `POST /predict` for pictures
//! (the JSON of `predict --json`), the Open Inference Protocol v2 for tensors, and Prometheus metrics.
//!
//! - [`config`]: what the server is told (flags become a [`Config`]).
//! - [`worker`]: the one thread that owns the model and runs dynamic batches from a bounded queue.
//! - [`app`]: the routes, the per-request timeout and body limit, the shared state.
//! - [`picture`]: `POST /predict`. [`v2`]: the Open Inference Protocol. [`page`]: `GET /`.
//! - [`metrics`]: `GET /metrics`. [`error`]: JSON errors. [`shutdown`]: Ctrl-C and SIGTERM.

pub mod app;
pub mod config;
pub mod error;
pub mod metrics;
pub mod page;
pub mod picture;
pub mod shutdown;
pub mod state;
pub mod v2;
pub mod worker;

pub use config::{Batching, Config, Limits};

use anyhow::{Context, Result, bail};
use metrics::Metrics;
use state::App;
use std::io::Write;
use std::sync::Arc;

/// Loads the model, serves until Ctrl-C or SIGTERM, and returns once every request in flight is
/// answered.
pub fn run(config: Config) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let (queue, info, worker) = worker::start(
        &config.model,
        &config.weights,
        config.device,
        config.batching,
        config.limits.queue,
        metrics.clone(),
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("http")
        .build()
        .context("cannot start the HTTP runtime")?;
    let app = Arc::new(App::new(config, info, queue, metrics));
    runtime.block_on(listen(app))?;
    drop(runtime);
    // Every queue handle is gone with the app: the inference thread ends after its last batch.
    if worker.join().is_err() {
        bail!("the inference thread failed");
    }
    eprintln!("mnist-tch serve: stopped");
    Ok(())
}

async fn listen(app: Arc<App>) -> Result<()> {
    let config = &app.config;
    // A name is resolved here, and the first of its addresses that can be bound is used.
    let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", config.host, config.port))?;
    let address = listener.local_addr().context("the listening address")?;
    let size = app.info.frame.size_text();
    // Written, not println!-ed: a closed standard output (`serve | head -1`) must not stop the server.
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "mnist-tch serve: {} ({} classes, {size} inputs) on {}",
        config.model.display(),
        app.info.class_names.len(),
        crate::device::device_name(config.device)
    );
    let reach = if address.ip().is_loopback() {
        "only this machine can connect; --host 0.0.0.0 listens on every interface"
    } else {
        "listening on a non-loopback address: reachable from other machines"
    };
    let _ = writeln!(out, "mnist-tch serve: listening on http://{address} ({reach})");
    axum::serve(listener, app::router(app.clone()))
        .with_graceful_shutdown(shutdown::signalled(app.clone()))
        .await
        .context("the HTTP server failed")
}
