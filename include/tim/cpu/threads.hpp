// Thread control for the CPU backend: one OpenMP team shared by Eigen's GEMM and our loops.
#pragma once

#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "tim/core/error.hpp"

namespace tim {

//! Physical cores of this machine (hyper-threads counted once), read from Linux's topology
//! files; falls back to std::thread::hardware_concurrency() elsewhere.
inline int physical_core_count() {
  std::set<std::pair<std::string, std::string>> cores;
  const unsigned logical = std::max(1u, std::thread::hardware_concurrency());
  for (unsigned cpu = 0; cpu < logical; ++cpu) {
    const std::string base = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    std::ifstream package(base + "physical_package_id"), core(base + "core_id");
    std::string p, c;
    if (!(package >> p) || !(core >> c)) return static_cast<int>(logical);
    cores.emplace(p, c);
  }
  return cores.empty() ? static_cast<int>(logical) : static_cast<int>(cores.size());
}

namespace detail {
//! Whether the thread count has been set, by the user or by the default below.
inline std::atomic<bool>& threads_chosen() {
  static std::atomic<bool> chosen{false};
  return chosen;
}
}  // namespace detail

//! Sets the number of threads every CPU operation uses (GEMM and element-wise loops).
//! The default, when this is not called before the first operation, is physical_core_count().
inline void set_num_threads(int threads) {
  check(threads >= 1, "set_num_threads: thread count must be >= 1, got ", threads);
  omp_set_num_threads(threads);
  Eigen::setNbThreads(threads);
  detail::threads_chosen() = true;
}

//! The thread count CPU operations use now.
inline int num_threads() { return omp_get_max_threads(); }

namespace detail {
//! Applies the default thread count once, before the first CPU operation, unless the user
//! has already chosen one with set_num_threads (which must not be overridden).
inline void ensure_default_threads() {
  static const bool done = [] {
    if (!threads_chosen()) set_num_threads(physical_core_count());
    return true;
  }();
  (void)done;
}
}  // namespace detail

}  // namespace tim
