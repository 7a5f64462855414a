// The few calls of libtorch's own distributed engine (c10d) that mnist-tch needs, as `extern "C"`
// functions for src/distributed.rs: a TCPStore for the rendezvous, a ProcessGroupGloo on top of it (or,
// for CUDA ranks, the ProcessGroupNCCL that the separately built src/nccl.cpp makes), and in-place
// all-reduce (sum), broadcast and barrier of tch tensors. tch has no bindings for c10d.
//
// Every function returns NULL on success or an error message (malloc-ed, freed by
// mnist_c10d_free_error): no C++ exception crosses into Rust. A `tensor` is what tch's
// `Tensor::as_ptr()` gives, which torch-sys's C++ wrapper defines as `torch::Tensor*`.
//
// Compiled by build.rs with the cc crate against the libtorch that tch links, with the same
// _GLIBCXX_USE_CXX11_ABI; the symbols come from libtorch_cpu.so, Gloo's headers from Debian's
// libgloo-dev (the wheel ships c10d's headers but not Gloo's).

#include "shim_errors.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

struct mnist_c10d_group {
  c10::intrusive_ptr<c10d::Backend> group;
};

// Makes a backend other than Gloo over `store` (a `c10::intrusive_ptr<c10d::Store>*`): src/nccl.cpp's
// `mnist_nccl_new_backend`, found by src/distributed.rs in its own shared object. NULL or a malloc-ed
// message; `*backend` receives a new `c10::intrusive_ptr<c10d::Backend>*`.
typedef char* (*mnist_c10d_backend_factory)(void* store, int rank, int world, int64_t timeout_ms,
                                            void** backend);

namespace {

using mnist_shim::copy_message;
using mnist_shim::guarded;
constexpr const char* kUnknown = "unknown C++ exception in c10d";

// While the store connects, c10d logs every retry with a C++ backtrace on stderr; the failure itself is
// reported in one line by the caller. Quiet unless the user asked for c10's logs (TORCH_CPP_LOG_LEVEL).
class QuietRendezvous {
 public:
  QuietRendezvous() : saved_(FLAGS_caffe2_log_level) {
    if (std::getenv("TORCH_CPP_LOG_LEVEL") == nullptr) {
      FLAGS_caffe2_log_level = std::max<int32_t>(saved_, 3);  // FATAL only
    }
  }
  ~QuietRendezvous() { FLAGS_caffe2_log_level = saved_; }

 private:
  int32_t saved_;
};

// Waits for a collective; Gloo enforces the group's timeout inside the operation.
void run(const c10::intrusive_ptr<c10d::Work>& work) {
  work->wait();
}

}  // namespace

extern "C" {

// Joins the group of `world` processes as `rank`: connects to (or, with `host_store`, hosts) the
// TCPStore at host:port (`agent_store`: torchrun's agent hosts it; else rank 0 does, with
// `host_store`), then lets Gloo connect every pair of processes. `timeout_ms` bounds the
// rendezvous and every later collective. `prefix` keeps this group's store keys apart from the
// launcher's own. `factory` NULL: Gloo; else the backend it makes.
char* mnist_c10d_new_group(const char* host, uint16_t port, int rank, int world, int agent_store,
                           int host_store, int64_t timeout_ms, const char* prefix,
                           mnist_c10d_backend_factory factory, mnist_c10d_group** out) {
  *out = nullptr;
  QuietRendezvous quiet;
  return guarded(kUnknown, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions store_options;
    store_options.port = port;
    store_options.isServer = host_store != 0;
    if (agent_store == 0) {
      // Our own store: every process counts itself in, and rank 0's waits for all of them.
      store_options.numWorkers = static_cast<std::size_t>(world);
    }
    store_options.timeout = timeout;
    store_options.multiTenant = true;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), store_options);
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), store);
    if (factory != nullptr) {
      c10::intrusive_ptr<c10d::Store> shared = prefixed;
      void* made = nullptr;
      if (char* error = factory(&shared, rank, world, timeout_ms, &made)) {
        std::string message(error);
        std::free(error);
        throw std::runtime_error(message);
      }
      auto* backend = static_cast<c10::intrusive_ptr<c10d::Backend>*>(made);
      *out = new mnist_c10d_group{*backend};
      delete backend;
      return;
    }
    auto options = c10d::ProcessGroupGloo::Options::create_default(timeout);
    auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, world, options);
    *out = new mnist_c10d_group{group};
  });
}

// Sums `tensor` over every process, in place.
char* mnist_c10d_all_reduce_sum(mnist_c10d_group* group, const at::Tensor* tensor) {
  return guarded(kUnknown, [&] {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;
    run(group->group->allreduce(tensors, options));
  });
}

// Copies `tensor` of process `root` into `tensor` of every other process.
char* mnist_c10d_broadcast(mnist_c10d_group* group, const at::Tensor* tensor, int root) {
  return guarded(kUnknown, [&] {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    run(group->group->broadcast(tensors, options));
  });
}

// Returns once every process has called it.
char* mnist_c10d_barrier(mnist_c10d_group* group) {
  return guarded(kUnknown, [&] { run(group->group->barrier()); });
}

void mnist_c10d_free_group(mnist_c10d_group* group) {
  try {
    delete group;
  } catch (...) {
  }
}

void mnist_c10d_free_error(char* message) {
  std::free(message);
}

}  // extern "C"
