// Compiled with TIM_USE_CBLAS (tim::blas): y (1, 2) = x W^T through OpenBLAS.
#include "tim/cpu/backend.hpp"

static_assert(tim::cpu::uses_blas, "a.cpp must be built against tim::blas");

void run(tim::Tensor<float>& y) {
  const float x[3] = {1, 2, 3}, w[6] = {0, 1, 2, 3, 4, 5};
  tim::cpu::linear_forward(y.data(), x, w, static_cast<const float*>(nullptr), 1, 3, 2);
}
