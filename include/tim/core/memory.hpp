// Host memory as a backend sees it: aligned allocation, fill, and the three copies of the backend
// contract (within the backend, from the host, to the host), which on the host are all memcpy.
// Free of Eigen and OpenMP, so Tensor<T, tim::cpu> is usable (io/, the sampler's interface)
// without the CPU backend's operations; tim::cpu inherits these.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <new>

namespace tim {

//! The memory half of the CPU backend (tim::cpu derives from it).
struct HostMemory {
  static constexpr std::size_t alignment = 64;

  //! Uninitialised host memory for `n` elements, 64-byte aligned.
  template <class T>
  static std::shared_ptr<T> allocate(std::size_t n) {
    void* p = ::operator new(std::max<std::size_t>(n, 1) * sizeof(T), std::align_val_t{alignment});
    return std::shared_ptr<T>(static_cast<T*>(p), [](T* q) { ::operator delete(q, std::align_val_t{alignment}); });
  }
  //! data[0 .. n) = value.
  template <class T>
  static void fill(T* data, std::size_t n, T value) {
    std::fill(data, data + n, value);
  }
  //! n elements within the backend's memory (here: host to host).
  template <class T>
  static void copy(T* out, const T* in, std::size_t n) {
    if (n) std::memcpy(out, in, n * sizeof(T));
  }
  //! n elements from host memory `host` into the backend's memory.
  template <class T>
  static void copy_from_host(T* out, const T* host, std::size_t n) {
    copy(out, host, n);
  }
  //! n elements from the backend's memory into host memory `host`; complete on return.
  template <class T>
  static void copy_to_host(T* host, const T* in, std::size_t n) {
    copy(host, in, n);
  }
  //! Waits for every operation enqueued so far (host operations are complete on return).
  static void synchronize() {}
};

}  // namespace tim
