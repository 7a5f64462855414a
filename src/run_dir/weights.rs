//! The run's tensors as safetensors files (readable by Python's `safetensors.torch.load_file`): the
//! weights (`model.safetensors`, `best.safetensors`, `initial.safetensors`) and the optimizer's state.
//! Loading checks the file as a whole first and then every tensor against the architecture in
//! `config.json`, so a checkpoint from another model is one clear error naming the tensor.

use super::layout::{BEST_WEIGHTS_FILE, CONFIG_FILE, OPTIMIZER_FILE, WEIGHTS_FILE};
use crate::error_text::{io_reason, torch_error, torch_write_error};
use crate::files::write_atomically;
use anyhow::{Context, Result, bail, ensure};
use std::fs::{self, File};
use std::path::Path;
use tch::{Tensor, nn};

/// The tensor of `optimizer.safetensors` that says which epoch its state belongs to.
const OPTIMIZER_EPOCH: &str = "epoch";

/// Saves every variable of `vs` to `path` (safetensors, names as in the variable store).
pub fn save_weights(vs: &nn::VarStore, path: &Path) -> Result<()> {
    write_atomically(path, |tmp| vs.save(tmp).map_err(torch_write_error))
}

/// Saves named tensors to `path` (safetensors).
pub fn save_tensors(tensors: &[(String, Tensor)], path: &Path) -> Result<()> {
    let on_cpu: Vec<(String, Tensor)> =
        tensors.iter().map(|(n, t)| (n.clone(), t.to_device(tch::Device::Cpu))).collect();
    write_atomically(path, |tmp| Tensor::write_safetensors(&on_cpu, tmp).map_err(torch_write_error))
}

/// Reads named tensors from a safetensors file. The file is checked first (present, readable, as long
/// as its header says), because the safetensors reader's own errors are Rust debug dumps
/// (`IoError(Os { code: 2, .. })`, `MetadataIncompleteBuffer`) that tell a user nothing.
pub fn load_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    check_safetensors_file(path)?;
    Tensor::read_safetensors(path)
        .map_err(torch_error)
        .with_context(|| format!("{}: not a readable safetensors file", path.display()))
}

/// Safetensors' own limit on the JSON header (100 MB): a larger length means "not safetensors".
const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// Checks that `path` is a whole safetensors file: an 8-byte little-endian header length, a JSON header,
/// and exactly as many data bytes as the header's largest `data_offsets` end. Each problem is one plain
/// sentence naming the file and what to do.
fn check_safetensors_file(path: &Path) -> Result<()> {
    let shown = path.display();
    let (mut file, size) = open_weights_file(path)?;
    let truncated = |needed: u64| {
        anyhow::anyhow!(
            "{shown}: truncated ({size} of the {needed} bytes its header describes): it was cut off while being \
             written or copied; copy it again or retrain"
        )
    };
    let header = read_header(&mut file, size, path, truncated)?;
    let header_len = header.len() as u64;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|_| anyhow::anyhow!("{shown}: not a safetensors file (its header is not a JSON object)"))?;
    let data_len = header
        .iter()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .filter_map(|(_, tensor)| tensor.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    let expected = 8 + header_len + data_len;
    if size < expected {
        return Err(truncated(expected));
    }
    ensure!(
        size == expected,
        "{shown}: {} bytes longer than its header describes: not a file written by mnist-tch",
        size - expected
    );
    Ok(())
}

/// The weights file at `path`, opened, and its size; a missing file says which command writes it.
fn open_weights_file(path: &Path) -> Result<(File, u64)> {
    let shown = path.display();
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let hint = match path.file_name().and_then(|n| n.to_str()) {
                Some(BEST_WEIGHTS_FILE) => {
                    "only `mnist-tch train --save-best` writes it (use model.safetensors, or retrain with --save-best)"
                }
                Some(WEIGHTS_FILE) => {
                    "the run has no weights yet (it has not completed an epoch) or the file was removed"
                }
                _ => "no such file",
            };
            bail!("{shown} is missing: {hint}");
        }
        Err(err) => bail!("{shown}: cannot be read: {}", io_reason(&err)),
    };
    let metadata = file.metadata().with_context(|| format!("{shown}: cannot be read"))?;
    if metadata.is_dir() {
        bail!("{shown}: is a directory, not a weights file");
    }
    Ok((file, metadata.len()))
}

/// The JSON header's bytes; `truncated(n)` is the error of a file shorter than the `n` bytes its length
/// field says.
fn read_header(file: &mut File, size: u64, path: &Path, truncated: impl Fn(u64) -> anyhow::Error) -> Result<Vec<u8>> {
    use std::io::Read;
    let shown = path.display();
    if size < 8 {
        bail!("{shown}: truncated or empty ({size} bytes): not a complete safetensors file; copy it again or retrain");
    }
    let mut length = [0u8; 8];
    file.read_exact(&mut length).with_context(|| format!("{shown}: cannot be read"))?;
    let header_len = u64::from_le_bytes(length);
    if header_len > MAX_SAFETENSORS_HEADER {
        bail!("{shown}: not a safetensors file (its first 8 bytes are not a header length)");
    }
    if 8 + header_len > size {
        return Err(truncated(8 + header_len));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).with_context(|| format!("{shown}: cannot be read"))?;
    Ok(header)
}

/// Loads `path` into `vs`, which must already hold the architecture's variables. Every tensor must be
/// present with the same shape and dtype, and the file must hold nothing else.
pub fn load_weights(vs: &mut nn::VarStore, path: &Path) -> Result<()> {
    load_weights_except(vs, path, &[])
}

/// Like [`load_weights`], leaving the variables named in `skip` as they are (a re-initialised head):
/// the file's tensors of those names are ignored, whatever their shape.
pub fn load_weights_except(vs: &mut nn::VarStore, path: &Path, skip: &[String]) -> Result<()> {
    let mut file_tensors = load_tensors(path)?;
    // In name order, so the tensor an error names does not depend on the file's layout.
    file_tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vs.variables();
    expected.retain(|name, _| !skip.contains(name));
    file_tensors.retain(|(name, _)| !skip.contains(name));
    for (name, tensor) in &file_tensors {
        let Some(var) = expected.remove(name) else {
            bail!(
                "{}: unexpected tensor '{name}' {:?}: not part of the architecture in {CONFIG_FILE}",
                path.display(),
                tensor.size()
            );
        };
        ensure!(
            var.size() == tensor.size(),
            "{}: tensor '{name}' has shape {:?}, the architecture in {CONFIG_FILE} needs {:?}",
            path.display(),
            tensor.size(),
            var.size()
        );
        ensure!(
            var.kind() == tensor.kind(),
            "{}: tensor '{name}' has dtype {:?}, expected {:?}",
            path.display(),
            tensor.kind(),
            var.kind()
        );
        let mut var = var;
        tch::no_grad(|| var.f_copy_(tensor)).with_context(|| format!("{}: copying '{name}'", path.display()))?;
    }
    if let Some(name) = expected.keys().min() {
        bail!("{}: tensor '{name}' is missing (the architecture in {CONFIG_FILE} needs it)", path.display());
    }
    Ok(())
}

/// Saves the optimizer's state of `epoch`, tagged with the epoch so a state that does not belong to the
/// weights beside it is never restored. An engine without state (autograd) leaves no file: a stale one
/// from an earlier engine is removed.
pub fn save_optimizer_state(dir: &Path, state: &[(String, Tensor)], epoch: usize) -> Result<()> {
    let path = dir.join(OPTIMIZER_FILE);
    if state.is_empty() {
        return match fs::remove_file(&path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(err).with_context(|| format!("{}: cannot remove the stale optimizer state", path.display()))
            }
            _ => Ok(()),
        };
    }
    let mut tagged: Vec<(String, Tensor)> = state.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    tagged.push((OPTIMIZER_EPOCH.into(), Tensor::from_slice(&[epoch as i64])));
    save_tensors(&tagged, &path)
}

/// The optimizer state saved with `epoch`, if the run has one for that epoch.
pub fn load_optimizer_state(dir: &Path, epoch: usize) -> Result<Option<Vec<(String, Tensor)>>> {
    let path = dir.join(OPTIMIZER_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let mut state = load_tensors(&path)?;
    let tagged = state.iter().position(|(name, _)| name == OPTIMIZER_EPOCH);
    if let Some(index) = tagged {
        let (_, saved_epoch) = state.remove(index);
        let saved_epoch = saved_epoch.f_int64_value(&[0]).map_err(torch_error)?;
        if saved_epoch != epoch as i64 {
            return Ok(None);
        }
    }
    Ok(Some(state))
}
