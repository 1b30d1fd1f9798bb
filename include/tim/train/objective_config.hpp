// The configuration of the TiM training objective, as the released training YAML gives it
// (`model.transport` with `target` and `params`, `model.transition_loss` (earlier releases:
// `model.unified_dcm_loss`), `model.network.params.class_dropout_prob`): the transport with its
// constants, the time pair layout, the DDE step, the time weighting, the guidance-enhanced
// target, and our own switches where the released code hard-wires a choice (the adaptive weight,
// the directional loss). Defaults are those of the released constructors, used when the YAML
// leaves a key out; `released_c2i()` gives the values of the released C2I configs. The YAML
// reader is tim/io/yaml_objective.hpp.
#pragma once

#include <cmath>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "tim/core/error.hpp"
#include "tim/math/objective.hpp"
#include "tim/transport/transports.hpp"

namespace tim::train {

using math::TimeWeighting;

//! The released spellings of weight_time_type.
inline constexpr std::string_view time_weighting_names[] = {"constant", "reciprocal", "sqrt", "square",
                                                            "Soft-Min-SNR"};

//! Parses a released weight_time_type ("constant", "reciprocal", "sqrt", "square",
//! "Soft-Min-SNR", exactly; the released code knows no other spelling). tim::Error otherwise.
inline TimeWeighting parse_time_weighting(std::string_view text) {
  for (int i = 0; i < 5; ++i)
    if (text == time_weighting_names[i]) return static_cast<TimeWeighting>(i);
  fail("unknown weight_time_type '", text, "' (expected one of constant, reciprocal, sqrt, square, Soft-Min-SNR)");
}

inline std::string_view time_weighting_name(TimeWeighting w) { return time_weighting_names[static_cast<int>(w)]; }

//! The guidance-enhanced target (released transport params enhance_target, w_gt, w_cond,
//! w_start, w_end): for rows with w_start <= t <= w_end (absolute times, not fractions of T_max),
//! the target's base becomes w_gt base + w_cond F_c + (1 - w_gt - w_cond) F_u with the EMA
//! network's conditional and unconditional outputs at r = t.
struct EnhancedTarget {
  bool enabled = false;
  double w_gt = 1.0;
  double w_cond = 0.0;
  double w_start = 0.0;
  double w_end = 1.0;
};

//! Everything the objective needs besides the networks and the batch.
struct ObjectiveConfig {
  AnyTransport transport = OtFm{.p_mean = 0.0};  // released OT_FM defaults: P_mean 0, P_std 1
  double diffusion_ratio = 0.0;     // share of rows with r = t (released default 0; configs 0.5)
  double consistency_ratio = 0.0;   // share of rows with r = T_min (released default 0; configs 0.1)
  double differential_epsilon = 0.005;  // DDE half step
  bool weight_t_and_r = true;       // d = t - r (else d = t)
  TimeWeighting weight_time = TimeWeighting::constant;
  bool weight_time_tangent = false;
  bool weight_time_sigmoid = false;
  EnhancedTarget enhance;
  double label_dropout = 0.1;       // network.params.class_dropout_prob (the trainer drops labels)
  // Ours: the released code hard-wires these (adaptive weighting always; trainer_c2i.py passes
  // use_dir_loss=True).
  bool adaptive_weight = true;
  double adaptive_eps = 10e-6;      // released adaptive_weighting(loss, eps=10e-6), = 1e-5
  bool directional_loss = true;

  //! The values of the released C2I configs (configs/c2i/tim_*.yaml): OT-FM with P_mean -0.4,
  //! P_std 1, diffusion 0.5, consistency 0.1, epsilon 0.005, sqrt weighting with the tangent map.
  static ObjectiveConfig released_c2i() {
    ObjectiveConfig c;
    c.transport = OtFm{};
    c.diffusion_ratio = 0.5;
    c.consistency_ratio = 0.1;
    c.weight_time = TimeWeighting::sqrt;
    c.weight_time_tangent = true;
    return c;
  }

  double t_max() const {
    return std::visit([](const auto& tr) { return tr.t_max; }, transport);
  }
  double t_min() const {
    return std::visit([](const auto& tr) { return tr.t_min; }, transport);
  }
  double sigma_d() const {
    return std::visit([](const auto& tr) { return tr.sigma_d; }, transport);
  }

  //! Throws tim::Error naming the first field out of its range (`where` prefixes the message).
  void validate(const std::string& where = "objective config") const {
    const auto ratio = [&](double v, const char* name) {
      check(std::isfinite(v) && v >= 0 && v <= 1, where, ": ", name, " must be in [0, 1], got ", v);
    };
    ratio(diffusion_ratio, "diffusion_ratio");
    ratio(consistency_ratio, "consistency_ratio");
    ratio(label_dropout, "class_dropout_prob");
    check(diffusion_ratio + consistency_ratio <= 1, where, ": diffusion_ratio + consistency_ratio must not exceed 1, got ",
          diffusion_ratio, " + ", consistency_ratio,
          " (the released code would then count rows with r = T_min among the diffusion rows)");
    check(std::isfinite(differential_epsilon) && differential_epsilon > 0, where,
          ": differential_epsilon must be a positive number, got ", differential_epsilon);
    check(std::isfinite(adaptive_eps) && adaptive_eps > 0, where, ": adaptive_eps must be a positive number, got ",
          adaptive_eps);
    for (const auto& [v, name] : {std::pair{enhance.w_gt, "w_gt"}, std::pair{enhance.w_cond, "w_cond"},
                                  std::pair{enhance.w_start, "w_start"}, std::pair{enhance.w_end, "w_end"}})
      check(std::isfinite(v), where, ": ", name, " must be a finite number, got ", v);
    std::visit(
        [&](const auto& tr) {
          check(std::isfinite(tr.t_max) && std::isfinite(tr.t_min) && tr.t_min < tr.t_max, where,
                ": the transport's time range needs T_min < T_max, got T_min ", tr.t_min, ", T_max ", tr.t_max);
          check(std::isfinite(tr.sigma_d) && tr.sigma_d > 0, where, ": sigma_d must be a positive number, got ",
                tr.sigma_d);
        },
        transport);
  }
};

}  // namespace tim::train
