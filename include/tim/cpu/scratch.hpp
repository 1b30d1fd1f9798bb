// Per-thread scratch memory of the CPU backend's operations (backend.hpp, gemm_bf16.hpp).
#pragma once

#include <cstdint>
#include <memory>

#include "tim/core/memory.hpp"

namespace tim::detail {

//! `n` elements of scratch memory owned by the calling thread, 64-byte aligned, grown on demand
//! and kept for the thread's lifetime (OpenMP's worker threads persist), so a loop of same-sized
//! calls allocates only on its first. The alignment is fixed because Eigen's vectorised
//! reductions peel to an aligned address: with a varying alignment the same row would be summed
//! in a different order depending on which thread ran it. One buffer per thread and type: valid
//! until the thread's next call with the same T.
template <class T>
T* thread_scratch(std::int64_t n) {
  struct Buffer {
    std::shared_ptr<T> data;
    std::int64_t size = 0;
  };
  thread_local Buffer buffer;
  if (buffer.size < n) {
    buffer.data = HostMemory::allocate<T>(static_cast<std::size_t>(n));
    buffer.size = n;
  }
  return buffer.data.get();
}

}  // namespace tim::detail
