// The training objective of a released TiM training YAML (configs/c2i/tim_*.yaml of the released
// code) as a tim::train::ObjectiveConfig:
//
//   model:
//     transport:
//       target: tim.schedulers.transports.OT_FM   # or TrigFlow, EDM, VP_SDE, VE_SDE
//       params: {P_mean: -0.4, P_std: 1.0, sigma_d: 1.0, T_max: 1.0, T_min: 0.0,
//                enhance_target: False, w_gt: 1.0, w_cond: 0.0, w_start: 0.0, w_end: 1.0}
//     transition_loss:            # earlier releases: unified_dcm_loss
//       {diffusion_ratio: 0.5, consistency_ratio: 0.1, derivative_type: dde,
//        differential_epsilon: 0.005, weight_time_type: sqrt, weight_time_tangent: True,
//        use_dir_loss: True, adaptive_weighting: True}   # the last two are tim's own keys
//     network: {params: {class_dropout_prob: 0.1, ...}}
//
// A key the released constructor does not take (or that tim does not add) is an error, as it is
// for the released code; a key left out takes the released constructor's default. Other
// sections (data, training, the network's shape keys) are not read here.
//
// Needs yaml-cpp, like tim/io/yaml_config.hpp.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "tim/core/error.hpp"
#include "tim/train/objective_config.hpp"
#include "tim/transport/transports.hpp"

namespace tim::io {

namespace objective_yaml_detail {

class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void error(const std::string& where, const std::string& what) const {
    fail("config '", source_, "': ", where, ": ", what);
  }

  YAML::Node child(const YAML::Node& map, const char* key, const std::string& where) const {
    if (!map.IsMap()) error(where, "must be a mapping");
    return map[key];
  }

  template <class V>
  V scalar(const YAML::Node& node, const std::string& where, const char* kind) const {
    if (!node.IsScalar()) error(where, std::string("must be ") + kind);
    try {
      return node.as<V>();
    } catch (const YAML::Exception&) {
      error(where, std::string("must be ") + kind + ", got '" + node.Scalar() + "'");
    }
  }
  double number(const YAML::Node& node, const std::string& where) const {
    const double v = scalar<double>(node, where, "a number");
    if (!std::isfinite(v)) error(where, "must be a finite number, got '" + node.Scalar() + "'");
    return v;
  }
  bool boolean(const YAML::Node& node, const std::string& where) const {
    return scalar<bool>(node, where, "a boolean (True/False)");
  }
  std::string text(const YAML::Node& node, const std::string& where) const {
    return scalar<std::string>(node, where, "a string");
  }

  //! Every key of `map` (a mapping, or null for none) must be in `allowed`.
  void only(const YAML::Node& map, const std::set<std::string>& allowed, const std::string& where,
            const std::string& owner) const {
    if (!map || map.IsNull()) return;
    if (!map.IsMap()) error(where, "must be a mapping");
    for (const auto& entry : map) {
      const std::string key = entry.first.IsScalar() ? entry.first.Scalar() : std::string("?");
      if (allowed.contains(key)) continue;
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      error(where + "." + key, "unknown key for " + owner + " (expected one of " + list + ")");
    }
  }

 private:
  std::string source_;
};

}  // namespace objective_yaml_detail

//! The ObjectiveConfig of a parsed YAML document (`source` names it in messages).
inline train::ObjectiveConfig objective_config_from_yaml(const YAML::Node& root, const std::string& source) {
  using objective_yaml_detail::Reader;
  const Reader in(source);
  train::ObjectiveConfig config;
  if (!root.IsMap()) in.error("the document", "must be a mapping with a 'model' section");
  const YAML::Node model = root["model"];
  if (!model || !model.IsMap()) in.error("model", "missing (the released training YAML has model.transport and "
                                                  "model.transition_loss)");

  // model.transport: the class and its constructor's keyword arguments.
  const YAML::Node transport = model["transport"];
  if (!transport || !transport.IsMap()) in.error("model.transport", "missing (expected target: and params:)");
  in.only(transport, {"target", "params"}, "model.transport", "model.transport");
  const YAML::Node target_node = transport["target"];
  if (!target_node) in.error("model.transport.target", "missing (e.g. tim.schedulers.transports.OT_FM)");
  std::string target = in.text(target_node, "model.transport.target");
  const std::string prefix = "tim.schedulers.transports.";
  const std::string name = target.rfind(prefix, 0) == 0 ? target.substr(prefix.size()) : target;
  const YAML::Node params = transport["params"];
  const std::string pw = "model.transport.params";
  if (params && !params.IsNull() && !params.IsMap()) in.error(pw, "must be a mapping");
  const auto get = [&](const char* key) { return params && params.IsMap() ? params[key] : YAML::Node(); };
  const auto number_or = [&](const char* key, double fallback) {
    const YAML::Node n = get(key);
    return n && !n.IsNull() ? in.number(n, pw + "." + key) : fallback;
  };
  const std::set<std::string> enhance_keys{"enhance_target", "w_gt", "w_cond", "w_start", "w_end"};
  const auto with_enhance = [&](std::set<std::string> keys) {
    keys.insert(enhance_keys.begin(), enhance_keys.end());
    return keys;
  };
  if (name == "OT_FM") {
    in.only(params, with_enhance({"P_mean", "P_std", "sigma_d", "T_max", "T_min"}), pw, "OT_FM");
    config.transport = OtFm{.t_max = number_or("T_max", 1.0), .t_min = number_or("T_min", 0.0),
                            .sigma_d = number_or("sigma_d", 1.0), .p_mean = number_or("P_mean", 0.0),
                            .p_std = number_or("P_std", 1.0)};
  } else if (name == "TrigFlow") {
    in.only(params, with_enhance({"P_mean", "P_std", "sigma_d", "T_max", "T_min"}), pw, "TrigFlow");
    config.transport = TrigFlow{.t_max = number_or("T_max", 1.57), .t_min = number_or("T_min", 0.0),
                                .sigma_d = number_or("sigma_d", 0.5), .p_mean = number_or("P_mean", -1.0),
                                .p_std = number_or("P_std", 1.6)};
  } else if (name == "EDM") {
    in.only(params, with_enhance({"P_mean", "P_std", "sigma_d", "T_max", "T_min"}), pw, "EDM");
    config.transport = Edm{.t_max = number_or("T_max", 80.0), .t_min = number_or("T_min", 0.01),
                           .sigma_d = number_or("sigma_d", 0.5), .p_mean = number_or("P_mean", -1.2),
                           .p_std = number_or("P_std", 1.2)};
  } else if (name == "VP_SDE") {
    in.only(params, with_enhance({"beta_min", "beta_d", "epsilon_t", "T", "sigma_d"}), pw, "VP_SDE");
    const double eps_t = number_or("epsilon_t", 1e-5);
    config.transport = VpSde{.beta_min = number_or("beta_min", 0.1), .beta_d = number_or("beta_d", 19.9),
                             .eps_t = eps_t, .discrete_steps = number_or("T", 1000), .t_max = 1.0, .t_min = eps_t,
                             .sigma_d = number_or("sigma_d", 1.0)};
  } else if (name == "VE_SDE") {
    in.only(params, with_enhance({"sigma_min", "sigma_max", "sigma_d"}), pw, "VE_SDE");
    const double lo = number_or("sigma_min", 0.02), hi = number_or("sigma_max", 100.0);
    config.transport = VeSde{.sigma_min = lo, .sigma_max = hi, .t_max = hi, .t_min = lo,
                             .sigma_d = number_or("sigma_d", 1.0)};
  } else if (name == "OPT_1") {
    in.error("model.transport.target", "the released OPT_1 transport is not one of tim's five (OT_FM, TrigFlow, "
                                       "EDM, VP_SDE, VE_SDE) and is not supported");
  } else {
    in.error("model.transport.target", "unknown transport '" + target +
                                           "' (expected tim.schedulers.transports.OT_FM, TrigFlow, EDM, VP_SDE or "
                                           "VE_SDE)");
  }
  if (const auto n = get("enhance_target"); n && !n.IsNull()) config.enhance.enabled = in.boolean(n, pw + ".enhance_target");
  config.enhance.w_gt = number_or("w_gt", 1.0);
  config.enhance.w_cond = number_or("w_cond", 0.0);
  config.enhance.w_start = number_or("w_start", 0.0);
  config.enhance.w_end = number_or("w_end", 1.0);

  // model.transition_loss (released since 31d83ef) or model.unified_dcm_loss (before).
  const YAML::Node new_loss = model["transition_loss"], old_loss = model["unified_dcm_loss"];
  if (new_loss && old_loss) in.error("model", "has both transition_loss and unified_dcm_loss; keep one");
  const YAML::Node loss = new_loss ? new_loss : old_loss;
  const std::string lw = new_loss ? "model.transition_loss" : "model.unified_dcm_loss";
  if (!loss) in.error("model.transition_loss", "missing (or model.unified_dcm_loss, its earlier name)");
  if (!loss.IsNull() && !loss.IsMap()) in.error(lw, "must be a mapping");
  in.only(loss,
          {"diffusion_ratio", "consistency_ratio", "derivative_type", "differential_epsilon", "weight_t_and_r",
           "weight_time_type", "weight_time_tangent", "weight_time_sigmoid", "use_dir_loss", "adaptive_weighting"},
          lw, "the transition loss");
  const auto loss_key = [&](const char* key) { return loss.IsMap() ? loss[key] : YAML::Node(); };
  const auto loss_number = [&](const char* key, double& slot) {
    if (const auto n = loss_key(key); n && !n.IsNull()) slot = in.number(n, lw + "." + key);
  };
  const auto loss_bool = [&](const char* key, bool& slot) {
    if (const auto n = loss_key(key); n && !n.IsNull()) slot = in.boolean(n, lw + "." + key);
  };
  loss_number("diffusion_ratio", config.diffusion_ratio);
  loss_number("consistency_ratio", config.consistency_ratio);
  loss_number("differential_epsilon", config.differential_epsilon);
  loss_bool("weight_t_and_r", config.weight_t_and_r);
  loss_bool("weight_time_tangent", config.weight_time_tangent);
  loss_bool("weight_time_sigmoid", config.weight_time_sigmoid);
  loss_bool("use_dir_loss", config.directional_loss);
  loss_bool("adaptive_weighting", config.adaptive_weight);
  if (const auto n = loss_key("derivative_type"); n && !n.IsNull()) {
    const std::string kind = in.text(n, lw + ".derivative_type");
    if (kind == "jvp")
      in.error(lw + ".derivative_type", "'jvp' (a forward-mode Jacobian-vector product) is not supported; tim "
                                        "computes the derivative by the DDE finite difference ('dde')");
    if (kind != "dde") in.error(lw + ".derivative_type", "unknown derivative_type '" + kind + "' (expected dde)");
  }
  if (const auto n = loss_key("weight_time_type"); n && !n.IsNull()) {
    const std::string kind = in.text(n, lw + ".weight_time_type");
    try {
      config.weight_time = train::parse_time_weighting(kind);
    } catch (const Error& e) {
      in.error(lw + ".weight_time_type", e.what());
    }
  }

  // model.network.params.class_dropout_prob (the trainer's label dropout).
  if (const YAML::Node network = model["network"]; network && network.IsMap()) {
    if (const YAML::Node np = network["params"]; np && np.IsMap())
      if (const YAML::Node p = np["class_dropout_prob"]; p && !p.IsNull())
        config.label_dropout = in.number(p, "model.network.params.class_dropout_prob");
  }
  try {
    config.validate();
  } catch (const Error& e) {
    fail("config '", source, "': ", e.what());
  }
  return config;
}

//! The ObjectiveConfig of YAML text (`source` names it in messages); malformed YAML is a tim::Error.
inline train::ObjectiveConfig parse_objective_config(std::string_view text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    fail("malformed YAML config '", source, "': ", e.what());
  }
  try {
    return objective_config_from_yaml(root, source);
  } catch (const YAML::Exception& e) {
    fail("malformed YAML config '", source, "': ", e.what());
  }
}

//! The ObjectiveConfig of a released training YAML file.
//! Example: `auto objective = tim::io::read_objective_config("configs/c2i/tim_b_p4.yaml");`
inline train::ObjectiveConfig read_objective_config(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    fail("cannot open YAML config '", path, "' (missing or unreadable)");
  } catch (const YAML::Exception& e) {
    fail("malformed YAML config '", path, "': ", e.what());
  }
  try {
    return objective_config_from_yaml(root, path);
  } catch (const YAML::Exception& e) {
    fail("malformed YAML config '", path, "': ", e.what());
  }
}

}  // namespace tim::io
