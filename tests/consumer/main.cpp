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
  // LayerNorm runs the variant chosen by CPUID (tim/cpu/dispatch.hpp), whatever flags this file has:
  // (x - 2.5) / sqrt(1.25 + 1e-5) for x = 1..4.
  const float row[4] = {1, 2, 3, 4};
  float normed[4];
  tim::cpu::layernorm_forward(normed, row, static_cast<const float*>(nullptr), static_cast<const float*>(nullptr), 1,
                              4, 1e-5);
  bool layernorm_ok = true;
  for (int j = 0; j < 4; ++j)
    layernorm_ok = layernorm_ok && std::fabs(normed[j] - (row[j] - 2.5) / std::sqrt(1.25 + 1e-5)) < 1e-6;
  std::printf("%s", tim::cpu_dispatch::kernel_report_text().c_str());
  return (y[0] == 8.0f && y[1] == 26.0f && layernorm_ok) ? 0 : 1;
}
