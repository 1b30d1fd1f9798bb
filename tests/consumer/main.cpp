// Uses the public header and checks one real computation, so linking alone is not a pass.
#include <tim/tim.hpp>

#include <cmath>
#include <cstdio>

int main() {
  auto weight = tim::Tensor<float>::zeros({2, 3});
  for (int i = 0; i < 6; ++i) weight.data()[i] = static_cast<float>(i);
  const float x[3] = {1, 2, 3};
  float y[2];
  tim::cpu::linear_forward(y, x, weight.data(), static_cast<const float*>(nullptr), 1, 3, 2);
  std::printf("tim %s: y = [%g, %g]\n", tim::version_string, y[0], y[1]);
  return (y[0] == 8.0f && y[1] == 26.0f) ? 0 : 1;
}
