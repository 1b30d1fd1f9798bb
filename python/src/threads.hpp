// The Python package's thread count (tim.set_num_threads, tim.num_threads): one for every Python
// thread, applied on the computing thread at the start of every computation (docs/python.md,
// "Threads, the GIL and Ctrl-C").
#pragma once

#include <omp.h>

#include <atomic>
#include <mutex>

#include "tim/cpu/threads.hpp"

namespace tim_python {

//! The package's thread count, one for every Python thread. OpenMP keeps its thread count per
//! thread (omp_set_num_threads sets the calling thread's nthreads-var), so tim.set_num_threads in
//! one Python thread would not reach a computation started from another; the count is stored
//! here instead and applied on the computing thread at the start of every computation.
//! 0: not set, tim::default_num_threads() (OMP_NUM_THREADS, else the physical cores).
inline std::atomic<int>& package_threads() {
  static std::atomic<int> threads{0};
  return threads;
}

//! tim::set_num_threads also sets Eigen's process-wide count: one caller at a time.
inline std::mutex& set_mutex() {
  static std::mutex mutex;
  return mutex;
}

inline void set_package_threads(int threads) {
  std::lock_guard lock(set_mutex());
  tim::set_num_threads(threads);  // checks threads >= 1
  package_threads() = threads;
}

//! Applies the package's thread count on the calling thread; returns it.
inline int apply_package_threads() {
  int threads = package_threads().load();
  if (threads == 0) {
    static const int fallback = tim::default_num_threads();
    threads = fallback;
  }
  if (omp_get_max_threads() != threads) {
    std::lock_guard lock(set_mutex());
    tim::set_num_threads(threads);
  }
  return threads;
}

}  // namespace tim_python
