// How the C++ shims (src/c10d.cpp, src/adam_state.cpp, src/nccl.cpp) report failure to Rust: each
// `extern "C"` function runs its body through `guarded`, which returns NULL on success or the exception's
// message copied with malloc (freed by the caller with free()), so no C++ exception crosses into C or
// Rust. c10::Error's what() carries a C++ backtrace: only the message itself is kept.

#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

namespace mnist_shim {

// `message` in memory the Rust side frees with free().
inline char* copy_message(const std::string& message) {
  char* copy = static_cast<char*>(std::malloc(message.size() + 1));
  if (copy != nullptr) {
    std::memcpy(copy, message.c_str(), message.size() + 1);
  }
  return copy;
}

// Runs `body`; NULL, or the message of what it threw (`unknown` for something that is not an exception).
template <typename Body>
char* guarded(const char* unknown, Body body) {
  try {
    body();
    return nullptr;
  } catch (const c10::Error& e) {
    return copy_message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return copy_message(e.what());
  } catch (...) {
    return copy_message(unknown);
  }
}

}  // namespace mnist_shim
