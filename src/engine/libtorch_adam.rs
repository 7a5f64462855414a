//! libtorch's own `torch::optim::Adam` / `AdamW`, held here instead of inside tch's `nn::Optimizer`, so
//! that its state can be saved with a checkpoint and restored on resume.
//!
//! Why: tch's `nn::Adam` keeps its C++ optimizer pointer private and torch-sys's C API never touches an
//! optimizer's state (tch-rs issue 360), so a run resumed with `nn::Adam` would start with fresh moment
//! estimates. [`LibtorchAdam`] makes the very calls `nn::Adam` makes — `ato_adam` / `ato_adamw` with the
//! same arguments, `ato_add_parameters` for every trainable variable of the store with its group, in the
//! store's order, `ato_set_learning_rate`, `ato_step`, `ato_free` — so training is bit for bit what
//! `nn::Adam` does, and reaches the optimizer's per-parameter `AdamParamState` (step, `exp_avg`,
//! `exp_avg_sq`) through the C++ shim `src/adam_state.cpp`.

use super::AdamSettings;
use anyhow::{Result, bail, ensure};
use std::ffi::{CStr, c_char};
use tch::{Tensor, nn};
use torch_sys::{C_optimizer, C_tensor};

unsafe extern "C" {
    fn mnist_adam_state_read(
        optimizer: *mut C_optimizer,
        param: *const C_tensor,
        step: *mut i64,
        exp_avg: *mut *mut C_tensor,
        exp_avg_sq: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn mnist_adam_state_write(
        optimizer: *mut C_optimizer,
        param: *const C_tensor,
        step: i64,
        exp_avg: *const C_tensor,
        exp_avg_sq: *const C_tensor,
    ) -> *mut c_char;
}

/// Turns a malloc-ed error message (or NULL) into a `Result`, freeing it.
fn checked(message: *mut c_char) -> Result<()> {
    if message.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null answer is a NUL-terminated string malloc-ed by libtorch's C API or the shim,
    // freed once here.
    let text = unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned();
    unsafe { libc::free(message.cast()) };
    bail!("{}", crate::error_text::first_line(&text).trim())
}

/// torch-sys's last error, as tch reads it after every `ato_*` call.
fn last_error() -> Result<()> {
    // SAFETY: returns NULL or a malloc-ed message that the caller frees (`checked` does).
    checked(unsafe { torch_sys::get_and_reset_last_err() })
}

/// One parameter's Adam state: the steps taken and the two moment estimates (copies).
pub struct ParamState {
    pub step: i64,
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
}

/// A `torch::optim::Adam` (or `AdamW`) owned through torch-sys's C API, freed on drop.
pub struct LibtorchAdam {
    raw: *mut C_optimizer,
}

impl LibtorchAdam {
    /// What `nn::Adam { beta1, beta2, wd: 0, eps, amsgrad: false }.build_copt(lr)` makes, or with weight
    /// decay `nn::AdamW { .., wd: weight_decay, .. }`'s.
    pub fn new(adam: AdamSettings, lr: f64) -> Result<LibtorchAdam> {
        let AdamSettings { beta1, beta2, eps, weight_decay } = adam;
        // SAFETY: plain numbers in; a pointer (or NULL with the error set) out.
        let raw = unsafe {
            if weight_decay > 0.0 {
                torch_sys::ato_adamw(lr, beta1, beta2, weight_decay, eps, false)
            } else {
                torch_sys::ato_adam(lr, beta1, beta2, 0.0, eps, false)
            }
        };
        last_error()?;
        ensure!(!raw.is_null(), "libtorch could not create the Adam optimizer");
        Ok(LibtorchAdam { raw })
    }

    /// [`new`](Self::new) over the trainable variables of `store`, as `OptimizerConfig::build` adds them:
    /// in the store's order, each in its group.
    pub fn over_store(adam: AdamSettings, store: &nn::VarStore, lr: f64) -> Result<LibtorchAdam> {
        let mut optimizer = LibtorchAdam::new(adam, lr)?;
        let variables = match store.variables_.lock() {
            Ok(variables) => variables,
            Err(poisoned) => poisoned.into_inner(),
        };
        for var in &variables.trainable_variables {
            optimizer.add_parameters(&var.tensor, var.group)?;
        }
        Ok(optimizer)
    }

    /// Adds `tensor` to parameter group `group` (created with the optimizer's defaults if new).
    pub fn add_parameters(&mut self, tensor: &Tensor, group: usize) -> Result<()> {
        // SAFETY: `raw` is live; libtorch keeps its own reference to the tensor.
        unsafe { torch_sys::ato_add_parameters(self.raw, tensor.as_ptr() as *mut C_tensor, group) };
        last_error()
    }

    /// The learning rate of every group.
    pub fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        // SAFETY: `raw` is live.
        unsafe { torch_sys::ato_set_learning_rate(self.raw, lr) };
        last_error()
    }

    /// The learning rate of group `group` only.
    pub fn set_learning_rate_group(&mut self, group: usize, lr: f64) -> Result<()> {
        // SAFETY: `raw` is live.
        unsafe { torch_sys::ato_set_learning_rate_group(self.raw, group, lr) };
        last_error()
    }

    /// Clears the parameters' gradients (libtorch's `zero_grad`, which drops the `.grad` tensors).
    pub fn zero_grad(&mut self) -> Result<()> {
        // SAFETY: `raw` is live.
        unsafe { torch_sys::ato_zero_grad(self.raw) };
        last_error()
    }

    /// One update of every parameter from its `.grad`.
    pub fn step(&mut self) -> Result<()> {
        // SAFETY: `raw` is live.
        unsafe { torch_sys::ato_step(self.raw) };
        last_error()
    }

    /// The state of `param` (one of the optimizer's parameters); `None` before the first step.
    pub fn state(&self, param: &Tensor) -> Result<Option<ParamState>> {
        let (mut step, mut exp_avg, mut exp_avg_sq) = (0i64, std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: `raw` and `param` are live; the shim hands over two new tensors (or NULLs) that we own.
        checked(unsafe { mnist_adam_state_read(self.raw, param.as_ptr(), &mut step, &mut exp_avg, &mut exp_avg_sq) })?;
        if exp_avg.is_null() || exp_avg_sq.is_null() {
            return Ok(None);
        }
        // SAFETY: each pointer is a fresh heap `torch::Tensor`, owned (and freed) by the tch tensor.
        let (exp_avg, exp_avg_sq) = unsafe { (Tensor::from_ptr(exp_avg), Tensor::from_ptr(exp_avg_sq)) };
        Ok(Some(ParamState { step, exp_avg, exp_avg_sq }))
    }

    /// Replaces the state of `param` with `state` (copied to the parameter's device): the next step
    /// continues as if the optimizer had taken `state.step` steps itself.
    pub fn set_state(&mut self, param: &Tensor, state: &ParamState) -> Result<()> {
        // SAFETY: every pointer is live for the call; the shim copies the tensors.
        checked(unsafe {
            mnist_adam_state_write(
                self.raw,
                param.as_ptr(),
                state.step,
                state.exp_avg.as_ptr(),
                state.exp_avg_sq.as_ptr(),
            )
        })
    }
}

impl Drop for LibtorchAdam {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `ato_adam`/`ato_adamw` and is freed once.
        unsafe { torch_sys::ato_free(self.raw) };
        let _ = last_error();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    const SETTINGS: AdamSettings = AdamSettings { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };

    fn parameter() -> Tensor {
        Tensor::from_slice(&[1f32, -2.0, 3.0]).set_requires_grad(true)
    }

    fn take_step(optimizer: &mut LibtorchAdam, p: &Tensor) {
        optimizer.zero_grad().unwrap();
        (p * p).sum(Kind::Float).backward();
        optimizer.step().unwrap();
    }

    #[test]
    fn the_state_reads_back_and_a_restored_optimizer_steps_the_same() {
        for weight_decay in [0.0, 0.01] {
            let settings = AdamSettings { weight_decay, ..SETTINGS };
            let (a, b) = (parameter(), parameter());
            let mut first = LibtorchAdam::new(settings, 0.1).unwrap();
            first.add_parameters(&a, 0).unwrap();
            assert!(first.state(&a).unwrap().is_none(), "no state before the first step");
            take_step(&mut first, &a);
            take_step(&mut first, &a);
            let state = first.state(&a).unwrap().unwrap();
            assert_eq!(state.step, 2);
            assert_eq!(state.exp_avg.size(), [3]);

            let mut second = LibtorchAdam::new(settings, 0.1).unwrap();
            second.add_parameters(&b, 0).unwrap();
            tch::no_grad(|| b.shallow_clone().copy_(&a));
            second.set_state(&b, &state).unwrap();
            take_step(&mut first, &a);
            take_step(&mut second, &b);
            assert!(a.equal(&b), "weight decay {weight_decay}: the restored optimizer took the same step");
            assert_eq!(second.state(&b).unwrap().unwrap().step, 3);
        }
    }

    #[test]
    fn foreign_tensors_and_bad_shapes_are_one_line_errors() {
        let p = parameter();
        let mut optimizer = LibtorchAdam::new(SETTINGS, 0.1).unwrap();
        optimizer.add_parameters(&p, 0).unwrap();
        let other = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        let foreign = optimizer.state(&other).err().unwrap().to_string();
        assert_eq!(foreign, "the tensor is not one of the optimizer's parameters");
        let wrong = ParamState { step: 1, exp_avg: Tensor::zeros([2], (Kind::Float, Device::Cpu)), exp_avg_sq: other };
        let shape = optimizer.set_state(&p, &wrong).err().unwrap().to_string();
        assert_eq!(shape, "the moments' shapes are not the parameter's");
    }
}
