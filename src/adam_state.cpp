// Reads and writes the per-parameter state of libtorch's torch::optim::Adam / AdamW — the optimizer
// that tch's nn::Adam drives through torch-sys's C API (`ato_adam`, `ato_add_parameters`, `ato_step`),
// which never touches that state. src/engine/libtorch_adam.rs holds the optimizer itself through the same
// C API and calls these two functions to save a checkpoint's state and to restore it on resume.
//
// An `optimizer` is what `ato_adam`/`ato_adamw` return, torch-sys's `torch::optim::Optimizer*`; a `tensor`
// is what tch's `Tensor::as_ptr()` gives, a `torch::Tensor*`. Every function returns NULL on success or
// an error message (malloc-ed, freed by the caller with free()): no C++ exception crosses into Rust.
//
// Compiled by build.rs with the cc crate against the libtorch that tch links, with the same
// _GLIBCXX_USE_CXX11_ABI.

#include "shim_errors.h"

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

namespace {

using mnist_shim::copy_message;
using mnist_shim::guarded;
constexpr const char* kUnknown = "unknown C++ exception in the optimizer state";

// Whether `param` is one of the tensors the optimizer updates (the state is keyed by its TensorImpl).
bool holds(torch::optim::Optimizer& optimizer, const torch::Tensor& param) {
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) {
      if (p.unsafeGetTensorImpl() == param.unsafeGetTensorImpl()) {
        return true;
      }
    }
  }
  return false;
}

// Copies State (AdamParamState or AdamWParamState) of `param` out: step 0 and undefined moments before
// the first step.
template <typename State>
void read(torch::optim::Optimizer& optimizer, const torch::Tensor& param, int64_t* step,
          torch::Tensor** exp_avg, torch::Tensor** exp_avg_sq) {
  auto found = optimizer.state().find(param.unsafeGetTensorImpl());
  if (found == optimizer.state().end()) {
    return;
  }
  auto& state = static_cast<State&>(*found->second);
  *step = state.step();
  *exp_avg = new torch::Tensor(state.exp_avg().detach().clone());
  *exp_avg_sq = new torch::Tensor(state.exp_avg_sq().detach().clone());
}

// Replaces the State of `param` with copies of the given moments, on the parameter's device and dtype.
template <typename State>
void write(torch::optim::Optimizer& optimizer, const torch::Tensor& param, int64_t step,
           const torch::Tensor& exp_avg, const torch::Tensor& exp_avg_sq) {
  if (exp_avg.sizes() != param.sizes() || exp_avg_sq.sizes() != param.sizes()) {
    throw std::invalid_argument("the moments' shapes are not the parameter's");
  }
  auto state = std::make_unique<State>();
  state->step(step);
  state->exp_avg(exp_avg.detach().to(param.options()).clone(at::MemoryFormat::Preserve));
  state->exp_avg_sq(exp_avg_sq.detach().to(param.options()).clone(at::MemoryFormat::Preserve));
  optimizer.state()[param.unsafeGetTensorImpl()] = std::move(state);
}

bool is_adamw(torch::optim::Optimizer* optimizer) {
  if (dynamic_cast<torch::optim::AdamW*>(optimizer) != nullptr) {
    return true;
  }
  if (dynamic_cast<torch::optim::Adam*>(optimizer) != nullptr) {
    return false;
  }
  throw std::invalid_argument("the optimizer is neither torch::optim::Adam nor AdamW");
}

}  // namespace

extern "C" {

// The state of `param` in `optimizer`: its step count and copies of exp_avg and exp_avg_sq (new
// tensors, owned by the caller), or step 0 and NULLs before the optimizer's first step.
char* mnist_adam_state_read(torch::optim::Optimizer* optimizer, const torch::Tensor* param, int64_t* step,
                            torch::Tensor** exp_avg, torch::Tensor** exp_avg_sq) {
  *step = 0;
  *exp_avg = nullptr;
  *exp_avg_sq = nullptr;
  return guarded(kUnknown, [&] {
    if (!holds(*optimizer, *param)) {
      throw std::invalid_argument("the tensor is not one of the optimizer's parameters");
    }
    if (is_adamw(optimizer)) {
      read<torch::optim::AdamWParamState>(*optimizer, *param, step, exp_avg, exp_avg_sq);
    } else {
      read<torch::optim::AdamParamState>(*optimizer, *param, step, exp_avg, exp_avg_sq);
    }
  });
}

// Sets the state of `param` in `optimizer`: the step count the next step continues from and the two
// moment estimates (copied), as if the optimizer had taken those steps itself.
char* mnist_adam_state_write(torch::optim::Optimizer* optimizer, const torch::Tensor* param, int64_t step,
                             const torch::Tensor* exp_avg, const torch::Tensor* exp_avg_sq) {
  return guarded(kUnknown, [&] {
    if (!holds(*optimizer, *param)) {
      throw std::invalid_argument("the tensor is not one of the optimizer's parameters");
    }
    if (step < 0) {
      throw std::invalid_argument("a negative step count");
    }
    if (is_adamw(optimizer)) {
      write<torch::optim::AdamWParamState>(*optimizer, *param, step, *exp_avg, *exp_avg_sq);
    } else {
      write<torch::optim::AdamParamState>(*optimizer, *param, step, *exp_avg, *exp_avg_sq);
    }
  });
}

}  // extern "C"
