//! Test fixtures: tiny, learnable MNIST-format data sets written into temp dirs, and a runner for the
//! real `mnist-tch` binary.

#![allow(dead_code)] // each test file uses its own subset

pub mod server;

use mnist_tch::idx::{IdxKind, encode};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Side of the synthetic square images.
pub const SIDE: u32 = 8;
pub const CLASSES: u8 = 4;

/// A small deterministic generator, so fixtures are the same on every run.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u8 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 56) as u8
    }
}

/// `count` images where class `c` lights up row-band `c` (rows 2c, 2c+1) over noise, and their
/// labels. Easy to learn, impossible to get right by chance.
pub fn synthetic(count: u32, seed: u64) -> (Vec<u8>, Vec<u8>) {
    synthetic_of_side(count, seed, SIDE)
}

/// [`synthetic`] with images of `side` x `side` pixels (a CNN needs at least 10x10).
pub fn synthetic_of_side(count: u32, seed: u64, side: u32) -> (Vec<u8>, Vec<u8>) {
    let mut rng = Lcg(seed);
    let mut pixels = Vec::with_capacity((count * side * side) as usize);
    let mut labels = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let class = rng.next() % CLASSES;
        labels.push(class);
        for row in 0..side {
            for _ in 0..side {
                let lit = row / 2 == u32::from(class);
                let noise = rng.next() % 100;
                pixels.push(if lit { 155 + noise } else { noise });
            }
        }
    }
    (pixels, labels)
}

/// A JSON file of a run directory (config.json, metrics.json, ...).
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A run's `model.safetensors`, in name order.
pub fn weights(dir: &Path) -> Vec<(String, tch::Tensor)> {
    let mut tensors = tch::Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

/// The four files' bytes: images and labels for train and test.
pub struct Files {
    pub train_images: Vec<u8>,
    pub train_labels: Vec<u8>,
    pub test_images: Vec<u8>,
    pub test_labels: Vec<u8>,
}

impl Files {
    pub fn synthetic(train: u32, test: u32) -> Files {
        Files::synthetic_of_side(train, test, SIDE)
    }

    pub fn synthetic_of_side(train: u32, test: u32, side: u32) -> Files {
        Files::of_pictures(synthetic_of_side(train, 1, side), synthetic_of_side(test, 2, side), side)
    }

    /// The IDX files of `side` x `side` pictures: `(pixels, labels)` of the training and the test set.
    pub fn of_pictures(train: (Vec<u8>, Vec<u8>), test: (Vec<u8>, Vec<u8>), side: u32) -> Files {
        let images = |pixels: &[u8], labels: &[u8]| encode(IdxKind::Images, &[labels.len() as u32, side, side], pixels);
        let labels = |labels: &[u8]| encode(IdxKind::Labels, &[labels.len() as u32], labels);
        Files {
            train_images: images(&train.0, &train.1),
            train_labels: labels(&train.1),
            test_images: images(&test.0, &test.1),
            test_labels: labels(&test.1),
        }
    }

    pub fn named(&self) -> [(&'static str, &Vec<u8>); 4] {
        [
            (TRAIN_IMAGES, &self.train_images),
            (TRAIN_LABELS, &self.train_labels),
            (TEST_IMAGES, &self.test_images),
            (TEST_LABELS, &self.test_labels),
        ]
    }

    /// Writes the four files into `dir`, gzipped when asked.
    pub fn write(&self, dir: &Path, gzip: bool) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, bytes) in self.named() {
            if gzip {
                write_gz(&dir.join(format!("{name}.gz")), bytes);
            } else {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
    }
}

pub fn write_gz(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    std::fs::write(path, encoder.finish().unwrap()).unwrap();
}

/// A temp dir holding a synthetic data set in `data/`.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
}

impl Fixture {
    pub fn new(gzip: bool) -> Fixture {
        Fixture::with_files(&Files::synthetic(600, 200), gzip)
    }

    pub fn with_files(files: &Files, gzip: bool) -> Fixture {
        let fixture = Fixture { tmp: tempfile::tempdir().unwrap() };
        files.write(&fixture.data(), gzip);
        fixture
    }

    pub fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Trains on the fixture into `out` with small, fast settings plus `extra` flags.
    pub fn train(&self, out: &str, extra: &[&str]) -> Run {
        let data = self.data();
        let out = self.path(out);
        let mut args = vec!["train", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()];
        // Small, fast defaults, each unless `extra` sets that flag itself (with --labels, the number of
        // classes is theirs: a --num-classes that disagrees is refused).
        for (flag, value) in [("--num-classes", "4"), ("--epochs", "3"), ("--device", "cpu")] {
            let implied = flag == "--num-classes" && extra.contains(&"--labels");
            if !extra.contains(&flag) && !implied {
                args.extend([flag, value]);
            }
        }
        args.extend_from_slice(extra);
        mnist_tch(&args)
    }
}

/// The outcome of one run of the binary.
pub struct Run {
    pub output: Output,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    pub fn assert_ok(&self) -> &Run {
        assert!(
            self.output.status.success(),
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code(),
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(self.code(), Some(code), "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// A failure the way users must see it: exit code 1, exactly one line on stderr starting with
    /// `error:` and containing every fragment, and no panic or C++ abort.
    pub fn assert_clean_error(&self, fragments: &[&str]) -> &Run {
        self.assert_error_line(1, fragments)
    }

    /// Flags that do not apply together, refused the way clap refuses a bad flag: exit code 2, and
    /// otherwise as [`Run::assert_clean_error`].
    pub fn assert_usage_error(&self, fragments: &[&str]) -> &Run {
        self.assert_error_line(2, fragments)
    }

    fn assert_error_line(&self, code: i32, fragments: &[&str]) -> &Run {
        assert_eq!(self.code(), Some(code), "expected exit {code}\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected one line on stderr, got:\n{}", self.stderr);
        assert!(lines[0].starts_with("error: "), "{}", self.stderr);
        for fragment in fragments {
            assert!(lines[0].contains(fragment), "missing {fragment:?} in: {}", lines[0]);
        }
        for forbidden in ["panicked", "RUST_BACKTRACE", "terminate called", "Exception raised"] {
            assert!(!self.stderr.contains(forbidden), "{}", self.stderr);
        }
        self
    }

    /// The value printed on the `Test accuracy: X` line.
    pub fn test_accuracy(&self) -> f64 {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("Test accuracy: "))
            .unwrap_or_else(|| panic!("no Test accuracy line in:\n{}", self.stdout))
            .parse()
            .unwrap()
    }
}

/// Runs the real binary with `args`.
pub fn mnist_tch(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_mnist-tch"))
        .args(args)
        .env_remove("MNIST_TCH_DATA")
        .output()
        .expect("the mnist-tch binary runs");
    Run {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        output,
    }
}

/// Runs the real binary with `args` the way an ordinary user's process meets file permissions, even when
/// the tests run as root (as CI does), where a read-only directory would not stop a write: the child
/// drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from its capability bounding set before exec, so its
/// uid 0 no longer overrides permission bits. For any other user there is nothing to drop.
pub fn mnist_tch_as_ordinary_user(args: &[&str]) -> Run {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_mnist-tch"));
    command.args(args).env_remove("MNIST_TCH_DATA");
    // SAFETY: only async-signal-safe calls (geteuid, prctl) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::geteuid() != 0 {
                return Ok(());
            }
            const CAP_DAC_OVERRIDE: libc::c_ulong = 1;
            const CAP_DAC_READ_SEARCH: libc::c_ulong = 2;
            for capability in [CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH] {
                if libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let output = command.output().expect("the mnist-tch binary runs without CAP_DAC_OVERRIDE");
    Run {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        output,
    }
}

/// Waits (polling, with a deadline) for `child` to end; kills it and fails the test past `limit`.
pub fn wait_within(child: &mut std::process::Child, limit: std::time::Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The torchrun that scripts/setup.sh installs into the project's .venv.
pub fn torchrun() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/torchrun");
    assert!(path.exists(), "{} is missing: run scripts/setup.sh", path.display());
    path
}

/// The pid of a running mnist-tch process whose environment holds every one of `variables`
/// (`NAME=value`), found through /proc: how the torchrun tests find the worker they kill.
pub fn mnist_tch_process_with(variables: &[String]) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let present: Vec<String> =
            environ.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
        let is_mnist_tch = std::fs::read_link(entry.path().join("exe"))
            .is_ok_and(|exe| exe.file_name().is_some_and(|n| n.to_string_lossy().starts_with("mnist-tch")));
        if is_mnist_tch && variables.iter().all(|w| present.contains(w)) {
            return Some(pid);
        }
    }
    None
}

/// Largest absolute difference between two safetensors files holding tensors of the same names.
pub fn max_abs_difference_of(a: &Path, b: &Path) -> f64 {
    let sorted = |path: &Path| {
        let mut tensors = tch::Tensor::read_safetensors(path).unwrap();
        tensors.sort_by(|x, y| x.0.cmp(&y.0));
        tensors
    };
    let (left, right) = (sorted(a), sorted(b));
    assert_eq!(left.len(), right.len());
    left.iter()
        .zip(&right)
        .map(|((n1, t1), (n2, t2))| {
            assert_eq!(n1, n2);
            (t1 - t2).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max)
}

/// Largest absolute difference over every tensor of two runs' `file`.
pub fn max_abs_difference(a: &Path, b: &Path, file: &str) -> f64 {
    max_abs_difference_of(&a.join(file), &b.join(file))
}
