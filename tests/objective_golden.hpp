// The objective goldens (tests/data/objective_golden/, tools/reference/make_objective_golden.py,
// seed 1701) and the float bound of a case, shared by test_objective.cpp and
// test_cli_train_step.cpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <variant>

#include "tim/io/safetensors.hpp"
#include "tim/io/yaml_objective.hpp"

namespace tim_test {

inline std::string objective_path(const std::string& name) {
  return std::string(TIM_TEST_DATA_DIR) + "/objective_golden/" + name;
}

//! The largest |d F* / d(dF/dt)| over the rows of golden case `name` (F* is linear in dF/dt):
//! t - r for OT-FM and VE, tan(t - r) for TrigFlow, k for EDM.
inline double dde_amplification(const std::string& name) {
  auto file = tim::io::SafetensorsFile::open(objective_path(name + ".safetensors"));
  const auto config = tim::io::read_objective_config(objective_path(name + ".yaml"));
  const auto t = file.load<double>("t"), r = file.load<double>("r");
  double largest = 0;
  for (std::int64_t b = 0; b < t.numel(); ++b)
    std::visit(
        [&](const auto& tr) {
          const double ti = t.data()[b], ri = r.data()[b];
          const double slope =
              tr.target_from_base(0.0, 0.0, 0.0, 1.0, ti, ri) - tr.target_from_base(0.0, 0.0, 0.0, 0.0, ti, ri);
          largest = std::max(largest, std::abs(slope));
        },
        config.transport);
  return largest;
}

//! The bound of the float objective against the float64 golden for case `name` (relative to each
//! tensor's largest value). A float forward's output carries a rounding error of about
//! delta = 4e-6 of its scale (each value a chain of a few layers of sums of at most K = 256
//! products, errors of random sign: sqrt(K) u = 1e-6 per layer, u = 6e-8). The DDE divides the
//! difference of two forwards by 2e, so dF/dt carries up to 2 delta / (2e) = delta / e
//! (e = 0.005: 8e-4), and F* that times the transport's coefficient c of dF/dt; F - F*, hence
//! dL/dF and the gradients (linear in it), the losses, carry delta (1 + c / e). The backward's
//! own float error adds 1e-5 at most (test_c2i_backward.cpp bounds it by 1e-4, measures 8e-7).
//! Issue 17 asked for 1e-4 in float; the DDE's 1/(2e) = 100x amplification of the forward's
//! rounding makes that unattainable for the objective at the released e (docs/training.md).
inline double float_objective_bound(const std::string& name) {
  const double delta = 4e-6, epsilon = 0.005;
  return delta * (1 + dde_amplification(name) / epsilon) + 1e-5;
}

}  // namespace tim_test
