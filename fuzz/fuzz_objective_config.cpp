// libFuzzer target for the training-objective YAML reader (tim/io/yaml_objective.hpp): any input
// must either give a valid ObjectiveConfig or throw tim::Error; a crash, a sanitizer report,
// another exception type or a config outside the documented ranges is a bug.
// Seeds: fuzz/corpus/objective_config/.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "tim/io/yaml_objective.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto c = tim::io::parse_objective_config(std::string_view(reinterpret_cast<const char*>(data), size),
                                                   "config.yaml");
    if (!(c.diffusion_ratio >= 0 && c.diffusion_ratio <= 1)) std::abort();
    if (!(c.consistency_ratio >= 0 && c.consistency_ratio <= 1)) std::abort();
    if (!(c.label_dropout >= 0 && c.label_dropout <= 1)) std::abort();
    if (!(c.differential_epsilon > 0) || !std::isfinite(c.differential_epsilon)) std::abort();
    if (!(c.t_min() < c.t_max()) || !(c.sigma_d() > 0)) std::abort();
    if (!std::isfinite(c.enhance.w_gt) || !std::isfinite(c.enhance.w_cond)) std::abort();
  } catch (const tim::Error&) {
  }
  return 0;
}
