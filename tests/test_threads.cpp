// The default thread count's pieces: OMP_NUM_THREADS parsing, and physical cores among a set of
// CPUs on a fake topology tree (hyper-threads counted once). The process-wide wiring (the default
// applied at the first operation, under taskset and OMP_NUM_THREADS) is tests/thread_default.cpp.
#include <doctest/doctest.h>

#include <array>
#include <filesystem>
#include <initializer_list>
#include <fstream>
#include <string>
#include <unistd.h>

#include "tim/tim.hpp"

using tim::detail::parse_omp_num_threads;
using tim::detail::physical_cores_among;

TEST_CASE("threads: OMP_NUM_THREADS gives its first entry when that is a positive integer") {
  CHECK(parse_omp_num_threads(nullptr) == 0);
  CHECK(parse_omp_num_threads("3") == 3);
  CHECK(parse_omp_num_threads("12") == 12);
  CHECK(parse_omp_num_threads("5,2") == 5);
  CHECK(parse_omp_num_threads(" 4 ") == 4);
  CHECK(parse_omp_num_threads(" 4 ,1") == 4);
  // invalid: the caller falls back to the cores
  CHECK(parse_omp_num_threads("") == 0);
  CHECK(parse_omp_num_threads("0") == 0);
  CHECK(parse_omp_num_threads("-2") == 0);
  CHECK(parse_omp_num_threads("+2") == 0);
  CHECK(parse_omp_num_threads("abc") == 0);
  CHECK(parse_omp_num_threads("3x") == 0);
  CHECK(parse_omp_num_threads("3 4") == 0);
  CHECK(parse_omp_num_threads(",3") == 0);
  CHECK(parse_omp_num_threads("99999999999") == 0);  // does not fit an int
}

namespace {
// root/cpuN/topology/{physical_package_id,core_id} for each (cpu, package, core).
struct FakeTopology {
  std::filesystem::path root;
  explicit FakeTopology(std::initializer_list<std::array<int, 3>> cpus)
      : root(std::filesystem::temp_directory_path() / ("tim-topology-" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(root);
    for (const auto& [cpu, package, core] : cpus) {
      const auto dir = root / ("cpu" + std::to_string(cpu)) / "topology";
      std::filesystem::create_directories(dir);
      std::ofstream(dir / "physical_package_id") << package << "\n";
      std::ofstream(dir / "core_id") << core << "\n";
    }
  }
  ~FakeTopology() { std::filesystem::remove_all(root); }
};
}  // namespace

TEST_CASE("threads: physical cores among a CPU set count hyper-threads once") {
  // cpus 0 and 4 are the two hyper-threads of core 0, 1 and 5 of core 1 (package 0); cpu 2 is
  // core 0 of package 1: the same core_id in another package is another core.
  const FakeTopology topology({{0, 0, 0}, {4, 0, 0}, {1, 0, 1}, {5, 0, 1}, {2, 1, 0}});
  const std::string root = topology.root.string();
  CHECK(physical_cores_among({0}, root) == 1);
  CHECK(physical_cores_among({0, 4}, root) == 1);
  CHECK(physical_cores_among({0, 1}, root) == 2);
  CHECK(physical_cores_among({0, 4, 1, 5}, root) == 2);
  CHECK(physical_cores_among({0, 2}, root) == 2);
  CHECK(physical_cores_among({0, 4, 1, 5, 2}, root) == 3);
  // a CPU without topology files: every CPU of the set counts as a core
  CHECK(physical_cores_among({0, 4, 7}, root) == 3);
  CHECK(physical_cores_among({}, root) == 1);
}

TEST_CASE("threads: the affinity count is at least 1 and at most the machine's cores") {
  const int affinity = tim::affinity_core_count();
  CHECK(affinity >= 1);
  CHECK(affinity <= tim::physical_core_count());
#if defined(__linux__)
  CHECK(!tim::detail::affinity_cpus().empty());  // the mask is readable
#endif
}
