//! `mnist-tch serve`: flags to a [`serve::Config`](crate::serve::Config), then the server.

use crate::device::DeviceSpec;
use crate::serve::{self, Batching, Config, Limits};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A run directory, or a TorchScript file written by `mnist-tch export` (with its FILE.json).
    #[arg(long, value_name = "RUN_DIR|model.pt")]
    pub model: PathBuf,

    /// Weights file inside the run directory: model.safetensors or best.safetensors.
    #[arg(long, value_name = "FILE", default_value = crate::run_dir::WEIGHTS_FILE)]
    pub weights: String,

    /// Address to listen on: an IP address or a host name (localhost). The default answers this machine
    /// only; 0.0.0.0 listens on every interface.
    #[arg(long, default_value = "127.0.0.1", value_parser = serve::config::parse_host)]
    pub host: String,

    /// Port to listen on; 0 picks a free one (printed at start).
    #[arg(long, default_value_t = 8080, allow_negative_numbers = true, value_parser = super::flags::port)]
    pub port: u16,

    /// auto, cpu, cuda or cuda:N.
    #[arg(long, value_name = "DEVICE", default_value_t = DeviceSpec::Auto)]
    pub device: DeviceSpec,

    /// The model's name in the Open Inference Protocol's URLs (/v2/models/NAME).
    #[arg(long, value_name = "NAME", default_value = "mnist")]
    pub model_name: String,

    /// Most images the inference thread runs in one batch.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = super::flags::at_least_one)]
    pub max_batch: u64,

    /// How long the inference thread waits after a request for others to batch with it, in
    /// milliseconds (0: only what is already waiting).
    #[arg(long, value_name = "MS", default_value_t = 1)]
    pub max_wait_ms: u64,

    /// Requests that may wait for the inference thread; more are answered 503 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = super::flags::at_least_one)]
    pub queue: u64,

    /// Seconds a request may take in all (reading its body, waiting, inference); past them, 408.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, value_parser = super::positive_f64)]
    pub timeout: f64,

    /// Largest request body: bytes, or with K, M or G (binary units); larger ones are answered 413.
    #[arg(long, value_name = "SIZE", default_value = "4M", value_parser = serve::config::parse_byte_count)]
    pub body_limit: usize,

    /// Largest picture /predict decodes, in megapixels; larger ones are answered 413.
    #[arg(long, value_name = "MP", default_value_t = 16, value_parser = super::flags::at_least_one)]
    pub max_megapixels: u64,

    /// /predict answers "unknown" (label null, the top classes still listed) when the most likely class's
    /// probability is under P; a request's min_confidence query value overrides it. 0 (the default): always
    /// the most likely class. Content too small to be a digit is answered unknown whatever P is.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = crate::inference::parse_min_confidence)]
    pub min_confidence: f32,
}

/// `threads`: the global `--threads`. The server's default is 1, not libtorch's one per core: more help
/// only large batches of a large model, and on small ones they take the cores the HTTP side needs.
pub fn run(args: ServeArgs, threads: Option<u64>) -> Result<()> {
    let device = args.device.resolve()?;
    super::note_if_being_trained(&args.model);
    serve::run(Config {
        model: args.model,
        weights: args.weights,
        device,
        host: args.host,
        port: args.port,
        model_name: args.model_name,
        min_confidence: args.min_confidence,
        batching: Batching {
            max_batch: args.max_batch as usize,
            max_wait: Duration::from_millis(args.max_wait_ms),
            threads: threads.unwrap_or(1) as usize,
        },
        limits: Limits {
            queue: args.queue as usize,
            timeout: Duration::from_secs_f64(args.timeout),
            body_bytes: args.body_limit,
            max_pixels: args.max_megapixels * 1_000_000,
        },
    })
}
