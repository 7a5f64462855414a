//! What `mnist-tch serve` is told: the model, where to listen, and the limits a production server needs.
//! Built by the command line (`cli/serve.rs`), read by every other part of the server.

use std::path::PathBuf;
use std::time::Duration;

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// A run directory or an exported TorchScript file.
    pub model: PathBuf,
    /// The weights file inside a run directory.
    pub weights: String,
    pub device: tch::Device,
    /// An IP address, or a host name that resolves (`localhost`): the server listens on the first of
    /// its addresses it can bind.
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    /// The model's name in the Open Inference Protocol's URLs (`/v2/models/NAME`).
    pub model_name: String,
    /// `/predict` answers "unknown" under this top probability unless the request says otherwise (0: never).
    pub min_confidence: f32,
    pub batching: Batching,
    pub limits: Limits,
}

/// How the inference thread groups requests: up to `max_batch` images, waiting at most `max_wait`
/// after the first one for more (Triton's dynamic batcher).
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub max_batch: usize,
    pub max_wait: Duration,
    /// libtorch's intra-op threads for the model. One by default: a batch of small images is done in
    /// well under a millisecond on one core, and more threads spin on the cores the HTTP side needs
    /// (measured with wrk at 64 connections on 2 cores: 710 requests/s with 2 threads, 7,460 with 1).
    pub threads: usize,
}

/// What the server refuses, and when.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests waiting for the inference thread; one more is answered 503 with Retry-After.
    pub queue: usize,
    /// A request's whole life (reading its body, waiting, inference); past it, 408.
    pub timeout: Duration,
    /// Request bodies above it are answered 413.
    pub body_bytes: usize,
    /// Pictures above it (width × height) are refused before they are decoded.
    pub max_pixels: u64,
}

/// Checks `--host`: an IP address or a host name, as written (`[::1]` without its brackets); whether
/// it resolves is known when the server starts.
pub fn parse_host(text: &str) -> Result<String, String> {
    let host = text.trim();
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
        return Err(format!(
            "'{text}' is not a host: write an IP address (127.0.0.1, 0.0.0.0, ::1) or a name (localhost)"
        ));
    }
    Ok(host.to_string())
}

/// Parses a byte count: `4194304`, `512K`, `4M` (binary units, as `--body-limit` takes them).
pub fn parse_byte_count(text: &str) -> Result<usize, String> {
    let trimmed = text.trim();
    let (digits, unit) = match trimmed.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => trimmed.split_at(at),
        None => (trimmed, ""),
    };
    let scale: usize = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(format!("'{text}' is not a size: write bytes, or a number with K, M or G")),
    };
    match digits.parse::<usize>().ok().and_then(|n| n.checked_mul(scale)) {
        Some(bytes) if bytes > 0 => Ok(bytes),
        _ => Err(format!("'{text}' is not a positive size: write bytes, or a number with K, M or G")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_take_binary_units() {
        assert_eq!(parse_byte_count("4096"), Ok(4096));
        assert_eq!(parse_byte_count("512K"), Ok(512 << 10));
        assert_eq!(parse_byte_count("4M"), Ok(4 << 20));
        assert_eq!(parse_byte_count("1gib"), Ok(1 << 30));
        for bad in ["", "0", "M", "4X", "-1", "99999999999999999999G"] {
            assert!(parse_byte_count(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts_are_addresses_or_names() {
        assert_eq!(parse_host("localhost"), Ok("localhost".to_string()));
        assert_eq!(parse_host("0.0.0.0"), Ok("0.0.0.0".to_string()));
        assert_eq!(parse_host("[::1]"), Ok("::1".to_string()));
        for bad in ["", " ", "[]", "local host", "http://localhost"] {
            assert!(parse_host(bad).is_err(), "{bad}");
        }
    }
}
