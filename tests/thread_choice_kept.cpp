// A thread count chosen with tim::set_num_threads before the first CPU operation must survive
// that operation (the library applies its default lazily, on first use, and once overrode the
// user's choice there). A program of its own: the choice is process-wide and made only once.
#include <cstdio>

#include "tim/tim.hpp"

int main() {
  tim::set_num_threads(1);
  float x[4] = {1, 2, 3, 4}, w[4] = {1, 0, 0, 1}, y[4];
  tim::cpu::linear_forward(y, x, w, static_cast<const float*>(nullptr), 2, 2, 2);
  if (tim::num_threads() != 1) {
    std::printf("FAIL: set_num_threads(1) before the first operation gave %d threads after it\n", tim::num_threads());
    return 1;
  }
  std::printf("ok: the thread count chosen before the first operation is kept\n");
  return 0;
}
