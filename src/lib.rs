//! mnist-tch: the classic Keras MNIST tutorial — Flatten → Dense(128, relu) → Dense(10), Adam, sparse
//! categorical cross-entropy, batch 32, validation_split 0.2 — built from scratch on libtorch via tch,
//! with a linear model and Keras's simple convnet beside it.
//!
//! The library holds everything; `src/main.rs` only maps errors to exit codes, and only `cli` knows
//! clap. Modules import downwards only (`tests/source_rules.rs` fails on an import circle): `cli` →
//! `jobs` → `fit` → `training` → `engine`, with `run_dir` (the schema of a run) below the modules that
//! do work, and plain helpers (`files`, `error_text`, `wording`) at the bottom.
//!
//! **The training path**, as tch's `examples/mnist` has it: `cli::train` makes a [`jobs::NewRun`],
//! [`jobs::plan_new_run`] a [`jobs::Plan`], [`jobs::start`] builds the model and claims the run
//! directory, [`fit::fit`] makes the step and records every epoch, the loop is [`training::train`] (an
//! epoch of mini-batches in `train_epoch`, then validation and the callbacks), and one step is
//! [`engine::autograd::AutogradStep`]'s `step`: forward, loss, zero the gradients, backward,
//! (all-reduce,) `nn::Adam`'s step.
//!
//! - [`run_dir`]: the schema of a run: every file's name and format (config, training settings,
//!   weights, metrics, evaluation), the check of a config read back, the writer's lock, `--overwrite`.
//! - [`idx`]: the IDX format: header checks and reading files, raw or `.gz`.
//! - [`kaggle_csv`]: Kaggle's CSV layout (`label,pixel0..pixelN`), for training, evaluation and predict.
//! - [`npz`]: NumPy `.npz` data sets such as Keras's `mnist.npz`, checked before tch reads them.
//! - [`data`]: the default data set, which format a path holds, checks across files; Keras's
//!   validation split ([`data::TrainingData`]).
//! - [`class_names`]: `--class-names`: the names a run stores for its classes.
//! - [`model`]: the architectures (MLP, linear, CNN), their `config.json` description, and
//!   [`model::Network`], a model built from it (`ModelConfig::init`).
//! - [`engine`]: the training step behind one interface: `autograd` (libtorch autograd + `nn::Adam`,
//!   the default) and `fused` (hand-written MLP backward pass, flat Adam); what each can train.
//! - [`training`]: the training loop over any step.
//! - [`augment`]: `--random-shift`: the training pictures moved by a few pixels, drawn from the seed.
//! - [`optimizer`]: Adam, or AdamW under weight decay, as `config.json` names it.
//! - [`callbacks`]: learning-rate schedules, early stopping, the best epoch.
//! - [`jobs`]: a new, resumed or fine-tuned run as a plan (config, data, starting weights, run
//!   directory), and the one sequence that starts every plan.
//! - [`fit`]: a training job end to end into a run directory, every epoch saved as it completes.
//! - [`distributed`]: training as one of several torchrun processes on libtorch's c10d (Gloo).
//! - [`freeze`]: `finetune --freeze`: which of the parent's tensors stay fixed.
//! - [`preprocess`]: pictures to network inputs, the way MNIST was made.
//! - [`pictures`]: data sets of the user's own pictures (class folders), decoded once into a cache.
//! - [`inference`]: predictions from a run directory or a TorchScript file.
//! - [`plot`]: learning curves and confusion matrix as PNG.
//! - [`tensorboard`]: `--tensorboard DIR`, the epochs as TensorBoard event files in Keras's layout.
//! - [`event_file`]: TensorBoard's event file format (TFRecords of `Event` protocol buffers).
//! - [`evaluation`]: loss, accuracy and confusion matrix.
//! - [`export`]: TorchScript export.
//! - [`serve`]: the HTTP server (`mnist-tch serve`): page, /predict, Open Inference Protocol, metrics.
//! - [`files`]: atomic writes and their temporary files.
//! - [`frame`]: the input frame, channels × rows × columns (`--input CxHxW`).
//! - [`error_text`]: I/O and libtorch errors in plain words, an error chain on one line.
//! - [`wording`]: counts in plain English (`1 epoch`, `3 epochs`).
//! - [`destination`]: where a command may write a file the user named (one rule for all).
//! - [`describe`]: `mnist-tch describe`: the run-directory layout, models and the write rule, as JSON
//!   for scripts.
//! - [`device`]: `--device` parsing and CUDA checks.
//! - [`cuda_library`]: loading libtorch's CUDA backend only where a CUDA driver is.
//! - [`progress`]: Keras-like console output.
//! - [`output`]: standard output that a reader may close early.
//! - [`signals`]: Ctrl-C and SIGTERM.
//! - [`spelling`]: how the library's choices are spelled (`--arch mlp`, `--class-names a,b`), read and
//!   printed without clap.
//! - [`cli`]: the command line, one file per subcommand.

pub mod augment;
pub mod callbacks;
pub mod class_names;
pub mod cli;
pub mod cuda_library;
pub mod data;
pub mod describe;
pub mod destination;
pub mod device;
pub mod distributed;
pub mod engine;
pub mod error_text;
pub mod evaluation;
pub mod event_file;
pub mod explain;
pub mod export;
pub mod files;
pub mod fit;
pub mod frame;
pub mod freeze;
pub mod idx;
pub mod inference;
pub mod jobs;
pub mod kaggle_csv;
pub mod model;
pub mod npz;
pub mod optimizer;
pub mod orientation;
pub mod output;
pub mod pictures;
pub mod plot;
pub mod preprocess;
pub mod progress;
pub mod run_dir;
pub mod serve;
pub mod signals;
pub mod spelling;
pub mod tensorboard;
pub mod training;
pub mod vit;
pub mod wording;

/// Sets flush-to-zero and denormals-are-zero (FTZ/DAZ) on the calling thread, which threads created
/// afterwards (libtorch's worker pool) inherit. Adam's second-moment estimates of rarely-active weights
/// decay into the denormal range, where x86 arithmetic is many times slower: measured here, the optimizer
/// step took ~25% longer without it. Denormals (< 1.2e-38) are below anything training can resolve.
/// PyTorch offers the same switch as `torch.set_flush_denormal(True)`.
pub fn flush_denormals_to_zero() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: only sets the FTZ (bit 15) and DAZ (bit 6) flags of this thread's MXCSR register.
    #[allow(deprecated)]
    unsafe {
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        _mm_setcsr(_mm_getcsr() | 0x8040);
    }
}

/// Makes glibc's malloc keep the memory libtorch frees for its next tensors instead of handing it back
/// to the kernel and faulting it in again. By default, allocations above 128 KB (a gradient of the first
/// layer is 400 KB) are mmap-ed and unmapped one by one until malloc's adaptive threshold has seen a
/// larger block freed — which happens at the first validation pass: measured here, the first epoch took
/// 0.64 s against 0.39 s for the next ones, and the profiler's steps ran 1.7× slower. Blocks up to 32 MB
/// now come from the heap from the start, and up to 128 MB of free heap is kept.
pub fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters; called at start-up before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}
