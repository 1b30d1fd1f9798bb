// The default thread count, applied at the first CPU operation, as a process sees it: CTest runs
// this program under OMP_NUM_THREADS=... and under `taskset -c 0` (tests/CMakeLists.txt) with the
// count it must find. A program of its own: the default is process-wide and applied only once.
#include <cstdio>
#include <cstdlib>

#include "tim/tim.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::printf("usage: thread_default EXPECTED_THREADS\n");
    return 2;
  }
  const int expected = std::atoi(argv[1]);
  float x[4] = {1, 2, 3, 4}, w[4] = {1, 0, 0, 1}, y[4];
  tim::cpu::linear_forward(y, x, w, static_cast<const float*>(nullptr), 2, 2, 2);
  const char* env = std::getenv("OMP_NUM_THREADS");
  std::printf("OMP_NUM_THREADS=%s, affinity cores %d, machine cores %d: %d threads after the first operation\n",
              env ? env : "(unset)", tim::affinity_core_count(), tim::physical_core_count(), tim::num_threads());
  if (tim::num_threads() != expected) {
    std::printf("FAIL: expected %d threads\n", expected);
    return 1;
  }
  return 0;
}
