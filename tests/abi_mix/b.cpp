// Compiled with or without TIM_USE_CBLAS (TIM_ABI_B_TARGET); calls a.cpp's run. When this file
// disagrees with a.cpp, run(tim::Tensor<float>&) names another tim::cpu here and the link fails.
#include <cstdio>

#include "tim/cpu/backend.hpp"

void run(tim::Tensor<float>& y);

int main() {
  auto y = tim::Tensor<float>::zeros({1, 2});
  run(y);
  std::printf("b.cpp: GEMMs through %s; y = [%g, %g]\n", tim::cpu::uses_blas ? "CBLAS" : "Eigen", y.data()[0],
              y.data()[1]);
  return y.data()[0] == 8.0f && y.data()[1] == 26.0f ? 0 : 1;
}
