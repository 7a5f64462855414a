// libtorch's NCCL process group (c10d::ProcessGroupNCCL, in libtorch_cuda.so) for CUDA ranks, in a
// shared object of its own: src/c10d.cpp (linked into mnist-tch) creates the store and, when the ranks
// are on CUDA, asks this library for the backend instead of Gloo. The binary itself never links
// libtorch_cuda.so; src/distributed.rs loads this library (and with it libtorch_cuda, libcudart and
// libnccl) with libloading only then.
//
// Built by scripts/build_nccl.sh against the pip wheels' headers: torch's own c10d headers, NCCL's
// (nvidia-nccl-cu13), the CUDA runtime's (nvidia/cu13), cccl's `nv/target` (the nvidia-cuda-cccl wheel)
// and triton's `crt/host_config.h`, with the same _GLIBCXX_USE_CXX11_ABI as libtorch.
//
// The function returns NULL on success or an error message (malloc-ed, freed with free()): no C++
// exception crosses into C or Rust.

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include "shim_errors.h"

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

extern "C" {

// A ProcessGroupNCCL of `world` ranks over `store` (a `c10::intrusive_ptr<c10d::Store>*`), as rank
// `rank`, its collectives bounded by `timeout_ms`; `*backend` receives a new
// `c10::intrusive_ptr<c10d::Backend>*` that the caller owns.
char* mnist_nccl_new_backend(void* store, int rank, int world, int64_t timeout_ms, void** backend) {
  *backend = nullptr;
  return mnist_shim::guarded("unknown C++ exception creating the NCCL process group", [&] {
    auto& shared = *static_cast<c10::intrusive_ptr<c10d::Store>*>(store);
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = std::chrono::milliseconds(timeout_ms);
    auto group = c10::make_intrusive<c10d::ProcessGroupNCCL>(shared, rank, world, options);
    *backend = new c10::intrusive_ptr<c10d::Backend>(group);
  });
}

}  // extern "C"
