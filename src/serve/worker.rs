//! The inference thread. tch's tensors and modules are not `Sync`, so one thread owns the model and the
//! request handlers send it work through a bounded queue. It groups what is waiting into one batch — up
//! to `max_batch` images, waiting at most `max_wait` after the first for more, like Triton's dynamic
//! batcher — runs the model once and answers each request with its rows. A full queue is refused at
//! once (503), a request whose client has gone or whose time is up is skipped, and a failing or
//! panicking batch fails its requests, never the thread.

use super::config::Batching;
use super::metrics::Metrics;
use crate::inference::Predictor;
use anyhow::{Context, Result, bail};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Instant;
use tch::{Device, Tensor};
use tokio::sync::oneshot;

/// What the server knows about the model it serves.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The frame the model takes: channels, rows, columns.
    pub frame: crate::frame::Frame,
    /// How the run fitted pictures into the frame (runs trained on pictures).
    pub fit: Option<crate::preprocess::Framing>,
    pub class_names: Vec<String>,
    /// False for a TorchScript module exported with the softmax in it: it answers probabilities only.
    pub has_logits: bool,
}

impl ModelInfo {
    pub fn pixels_per_image(&self) -> usize {
        self.frame.values().unwrap_or(0) as usize
    }
}

/// The model's answer for the images of one request: `count × classes` values each, row-major.
#[derive(Debug)]
pub struct Answer {
    pub logits: Option<Vec<f32>>,
    pub probabilities: Vec<f32>,
}

/// One request's images, `count × rows × cols` values in [0, 1].
struct Job {
    pixels: Vec<f32>,
    count: usize,
    deadline: Instant,
    reply: oneshot::Sender<Result<Answer, String>>,
}

/// Why a request could not be handed to the inference thread.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full.
    Busy,
    /// The inference thread has ended (the server is stopping).
    Stopped,
}

/// The handlers' end of the queue.
#[derive(Clone)]
pub struct Queue {
    sender: SyncSender<Job>,
    metrics: Arc<Metrics>,
}

impl Queue {
    /// Queues `count` images (`pixels` holds `count × rows × cols` values); the receiver gets the answer,
    /// or the reason the batch failed.
    pub fn submit(
        &self,
        pixels: Vec<f32>,
        count: usize,
        deadline: Instant,
    ) -> Result<oneshot::Receiver<Result<Answer, String>>, SubmitError> {
        let (reply, answer) = oneshot::channel();
        self.metrics.queued(1);
        match self.sender.try_send(Job { pixels, count, deadline, reply }) {
            Ok(()) => Ok(answer),
            Err(err) => {
                self.metrics.queued(-1);
                Err(match err {
                    TrySendError::Full(_) => SubmitError::Busy,
                    TrySendError::Disconnected(_) => SubmitError::Stopped,
                })
            }
        }
    }
}

/// Starts the inference thread: it loads the model at `path` on `device` and checks it with one image
/// before this returns. The thread ends when every [`Queue`] is dropped.
pub fn start(
    path: &Path,
    weights: &str,
    device: Device,
    batching: Batching,
    queue_size: usize,
    metrics: Arc<Metrics>,
) -> Result<(Queue, ModelInfo, JoinHandle<()>)> {
    let (sender, receiver) = sync_channel::<Job>(queue_size);
    let (loaded_tx, loaded_rx) = std::sync::mpsc::channel::<Result<ModelInfo>>();
    let (path, weights, thread_metrics) = (path.to_path_buf(), weights.to_string(), metrics.clone());
    let thread = std::thread::Builder::new()
        .name("inference".into())
        .spawn(move || {
            tch::set_num_threads(batching.threads as i32);
            let loaded = Predictor::load_weights(&path, &weights, device).and_then(|p| {
                let info = try_blank_image(&p)?;
                Ok((p, info))
            });
            match loaded {
                Ok((predictor, info)) => {
                    let _ = loaded_tx.send(Ok(info.clone()));
                    serve_batches(&predictor, &info, &receiver, batching, &thread_metrics);
                }
                Err(err) => {
                    let _ = loaded_tx.send(Err(err));
                }
            }
        })
        .context("cannot start the inference thread")?;
    let info = match loaded_rx.recv() {
        Ok(loaded) => loaded?,
        Err(_) => bail!("the inference thread ended while loading the model"),
    };
    Ok((Queue { sender, metrics }, info, thread))
}

/// Runs one blank image through the model: it works, and whether it has logits.
fn try_blank_image(predictor: &Predictor) -> Result<ModelInfo> {
    let shape = predictor.frame.batch_shape(1);
    let outputs =
        predictor.outputs(&Tensor::zeros(shape.as_slice(), (tch::Kind::Float, Device::Cpu))).context("a test image")?;
    Ok(ModelInfo {
        frame: predictor.frame,
        fit: predictor.fit,
        class_names: predictor.class_names.clone(),
        has_logits: outputs.logits.is_some(),
    })
}

/// Takes batches off the queue until every sender is gone.
fn serve_batches(
    predictor: &Predictor,
    info: &ModelInfo,
    queue: &Receiver<Job>,
    batching: Batching,
    metrics: &Metrics,
) {
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match queue.recv() {
                Ok(job) => {
                    metrics.queued(-1);
                    job
                }
                Err(_) => return,
            },
        };
        let mut images = first.count;
        let mut batch = vec![first];
        let wait_until = Instant::now() + batching.max_wait;
        while images < batching.max_batch {
            match queue.recv_timeout(wait_until.saturating_duration_since(Instant::now())) {
                Ok(job) => {
                    metrics.queued(-1);
                    if images + job.count > batching.max_batch {
                        carried = Some(job);
                        break;
                    }
                    images += job.count;
                    batch.push(job);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        let now = Instant::now();
        batch.retain(|job| !job.reply.is_closed() && job.deadline > now);
        if !batch.is_empty() {
            run_batch(predictor, info, batch, metrics);
        }
    }
}

/// Runs the model once on every job's images and answers each job.
fn run_batch(predictor: &Predictor, info: &ModelInfo, batch: Vec<Job>, metrics: &Metrics) {
    let started = Instant::now();
    let images: usize = batch.iter().map(|job| job.count).sum();
    let mut pixels = Vec::with_capacity(images * info.pixels_per_image());
    for job in &batch {
        pixels.extend_from_slice(&job.pixels);
    }
    let shape = info.frame.batch_shape(images as i64);
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<(Option<Vec<f32>>, Vec<f32>)> {
        let input = Tensor::from_slice(&pixels).f_view(shape.as_slice())?;
        let outputs = predictor.outputs(&input)?;
        let flat = |t: &Tensor| -> Result<Vec<f32>> { Ok(Vec::<f32>::try_from(&t.f_reshape([-1])?)?) };
        let answer = (outputs.logits.as_ref().map(flat).transpose()?, flat(&outputs.probabilities)?);
        let expected = images * info.class_names.len();
        if answer.0.as_ref().is_some_and(|l| l.len() != expected) || answer.1.len() != expected {
            bail!("it answered {} values for {images} images of {} classes", answer.1.len(), info.class_names.len());
        }
        Ok(answer)
    }));
    metrics.record_batch(images, started.elapsed());
    let classes = info.class_names.len();
    match result {
        Ok(Ok((logits, probabilities))) => {
            let mut row = 0;
            for job in batch {
                let rows = row * classes..(row + job.count) * classes;
                row += job.count;
                let answer = Answer {
                    logits: logits.as_ref().map(|l| l[rows.clone()].to_vec()),
                    probabilities: probabilities[rows].to_vec(),
                };
                let _ = job.reply.send(Ok(answer));
            }
        }
        Ok(Err(err)) => fail(batch, format!("the model failed: {}", crate::error_text::one_line(&err))),
        Err(_) => fail(batch, "the model failed (a panic in the inference thread, which carries on)".to_string()),
    }
}

fn fail(batch: Vec<Job>, message: String) {
    for job in batch {
        let _ = job.reply.send(Err(message.clone()));
    }
}
