// Thread control for the CPU backend: one OpenMP team shared by Eigen's GEMM and our loops.
// The default thread count respects OMP_NUM_THREADS and the process's CPU affinity.
#pragma once

#include <omp.h>
#if defined(__linux__)
#include <sched.h>
#endif

#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "tim/core/error.hpp"

namespace tim {

namespace detail {

//! Physical cores among the logical CPUs `cpus` (hyper-threads of one core counted once): the
//! distinct (physical_package_id, core_id) pairs read from `root`/cpuN/topology/. When a CPU's
//! files cannot be read, every CPU counts as a core (`cpus.size()`); at least 1.
inline int physical_cores_among(const std::vector<int>& cpus, const std::string& root = "/sys/devices/system/cpu") {
  std::set<std::pair<std::string, std::string>> cores;
  for (const int cpu : cpus) {
    const std::string base = root + "/cpu" + std::to_string(cpu) + "/topology/";
    std::ifstream package(base + "physical_package_id"), core(base + "core_id");
    std::string p, c;
    if (!(package >> p) || !(core >> c)) return std::max(1, static_cast<int>(cpus.size()));
    cores.emplace(p, c);
  }
  return std::max(1, static_cast<int>(cores.size()));
}

//! The logical CPUs this process may run on (its affinity mask, sched_getaffinity); empty when
//! that is unknown (not Linux, or the call failed).
inline std::vector<int> affinity_cpus() {
  std::vector<int> cpus;
#if defined(__linux__)
  // The mask may be larger than cpu_set_t's 1024 CPUs: grow it until the kernel's fits.
  for (int capacity = 1024; capacity <= (1 << 20); capacity *= 2) {
    cpu_set_t* set = CPU_ALLOC(capacity);
    if (!set) break;
    const std::size_t bytes = CPU_ALLOC_SIZE(capacity);
    CPU_ZERO_S(bytes, set);
    const bool ok = sched_getaffinity(0, bytes, set) == 0;
    const int error = errno;
    if (ok)
      for (int cpu = 0; cpu < capacity; ++cpu)
        if (CPU_ISSET_S(cpu, bytes, set)) cpus.push_back(cpu);
    CPU_FREE(set);
    if (ok || error != EINVAL) break;
  }
#endif
  return cpus;
}

//! The thread count OMP_NUM_THREADS asks for: its first entry ("3" or "3,1" give 3; spaces
//! around it allowed) when that is a positive decimal integer that fits an int, else 0 (unset,
//! empty or invalid: the caller falls back to the cores).
inline int parse_omp_num_threads(const char* value) {
  if (!value) return 0;
  std::string_view text(value);
  text = text.substr(0, text.find(','));
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!text.empty() && space(text.front())) text.remove_prefix(1);
  while (!text.empty() && space(text.back())) text.remove_suffix(1);
  if (text.empty() || text.front() < '0' || text.front() > '9') return 0;  // no sign, no empty entry
  int threads = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), threads);
  if (error != std::errc{} || end != text.data() + text.size() || threads < 1) return 0;
  return threads;
}

}  // namespace detail

//! Physical cores of this machine (hyper-threads counted once), read from Linux's topology
//! files; falls back to std::thread::hardware_concurrency() elsewhere.
inline int physical_core_count() {
  const int logical = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<int> cpus(static_cast<std::size_t>(logical));
  for (int cpu = 0; cpu < logical; ++cpu) cpus[static_cast<std::size_t>(cpu)] = cpu;
  return detail::physical_cores_among(cpus);
}

//! Physical cores among the CPUs this process may run on (its affinity mask: `taskset`, a
//! container's cpuset, a batch scheduler's binding), hyper-threads counted once; at least 1.
//! physical_core_count() where the mask is unknown.
inline int affinity_core_count() {
  const std::vector<int> cpus = detail::affinity_cpus();
  return cpus.empty() ? physical_core_count() : detail::physical_cores_among(cpus);
}

//! The thread count CPU operations start with: OMP_NUM_THREADS's first entry when it is a
//! positive integer, otherwise affinity_core_count().
inline int default_num_threads() {
  const int requested = detail::parse_omp_num_threads(std::getenv("OMP_NUM_THREADS"));
  return requested > 0 ? requested : affinity_core_count();
}

namespace detail {
//! Whether the thread count has been set, by the user or by the default below.
inline std::atomic<bool>& threads_chosen() {
  static std::atomic<bool> chosen{false};
  return chosen;
}
}  // namespace detail

//! Sets the number of threads every CPU operation uses (GEMM and element-wise loops).
//! The default, when this is not called before the first operation, is default_num_threads().
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
    if (!threads_chosen()) set_num_threads(default_num_threads());
    return true;
  }();
  (void)done;
}
}  // namespace detail

}  // namespace tim
