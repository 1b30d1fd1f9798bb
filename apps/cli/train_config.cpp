// The settings of `tim train`: defaults (tools/reference/train.py's), the training YAML and the
// checks of every value (train_config.hpp, docs/training.md "tim train").
#include "train_config.hpp"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <filesystem>
#include <set>
#include <string>
#include <utility>
#include <variant>

#include "tim/core/decimal.hpp"
#include "tim/core/error.hpp"
#include "tim/io/yaml_objective.hpp"
#include "tim/train/image_folder.hpp"

namespace tim_cli {

namespace {

using YamlReader = tim::io::objective_yaml_detail::Reader;

std::int64_t yaml_integer(const YamlReader& reader, const YAML::Node& node, const std::string& where) {
  const double v = reader.number(node, where);
  if (v != std::floor(v) || std::fabs(v) > 9.0e15) reader.error(where, "must be a whole number, got '" + node.Scalar() + "'");
  return static_cast<std::int64_t>(v);
}

// The transport's time-sampling constants, when it has them (OT-FM, TrigFlow, EDM).
template <class Transport>
nlohmann::json time_sampling_json(const Transport& tr) {
  if constexpr (requires { tr.p_mean; tr.p_std; })
    return {{"P_mean", tr.p_mean}, {"P_std", tr.p_std}};
  else
    return nlohmann::json::object();
}

}  // namespace

void read_train_yaml(const std::string& path, TrainSettings& s) {
  s.config_path = path;
  s.objective = tim::io::read_objective_config(path);  // model.transport, transition_loss, dropout
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    tim::fail("malformed YAML config '", path, "': ", e.what());
  }
  const YamlReader reader(path);
  const auto present = [](const YAML::Node& n) { return n && !n.IsNull(); };

  // model.network.params: the released names; other released keys (use_checkpoint, ...) are not ours to check.
  if (const YAML::Node network = root["model"]["network"]; present(network)) {
    if (!network.IsMap()) reader.error("model.network", "must be a mapping");
    if (const YAML::Node params = network["params"]; present(params)) {
      if (!params.IsMap()) reader.error("model.network.params", "must be a mapping");
      const auto integer = [&](const char* key, std::int64_t& out) {
        if (const YAML::Node n = params[key]; present(n)) out = yaml_integer(reader, n, std::string("model.network.params.") + key);
      };
      integer("hidden_size", s.hidden);
      integer("depth", s.depth);
      integer("num_heads", s.heads);
      integer("patch_size", s.patch);
      integer("lora_hidden_size", s.adaln_hidden);
      integer("num_classes", s.num_classes);
      if (const YAML::Node n = params["mlp_ratio"]; present(n)) s.mlp_ratio = reader.number(n, "model.network.params.mlp_ratio");
      for (const char* key : {"in_channels", "input_size"})
        if (const YAML::Node n = params[key]; present(n)) {
          const auto v = yaml_integer(reader, n, std::string("model.network.params.") + key);
          (std::string(key) == "in_channels" ? s.in_channels : s.input_size) = v;
        }
      // tim train builds the released C2I layout only: these must say so when given.
      for (const char* key : {"qk_norm", "use_new_embed", "distance_aware"})
        if (const YAML::Node n = params[key]; present(n) && !reader.boolean(n, std::string("model.network.params.") + key))
          reader.error(std::string("model.network.params.") + key,
                       "tim train builds networks with qk-norm, a delta embedder and interval-aware qkv only (True)");
      if (const YAML::Node n = params["new_condition"]; present(n)) {
        const std::string v = reader.text(n, "model.network.params.new_condition");
        if (v != "t-r") reader.error("model.network.params.new_condition", "tim train builds new_condition t-r only, got '" + v + "'");
      }
    }
  }

  // data: (ours)
  if (const YAML::Node data = root["data"]; present(data)) {
    reader.only(data, {"source", "path", "split", "channels", "height", "width"}, "data", "tim train's data section");
    if (const YAML::Node n = data["source"]; present(n)) s.data_source = reader.text(n, "data.source");
    if (const YAML::Node n = data["path"]; present(n)) s.data_path = reader.text(n, "data.path");
    if (const YAML::Node n = data["split"]; present(n)) s.split = reader.text(n, "data.split");
    if (const YAML::Node n = data["channels"]; present(n)) s.image_channels = yaml_integer(reader, n, "data.channels");
    if (const YAML::Node n = data["height"]; present(n)) s.image_height = yaml_integer(reader, n, "data.height");
    if (const YAML::Node n = data["width"]; present(n)) s.image_width = yaml_integer(reader, n, "data.width");
  }

  // train: (ours)
  if (const YAML::Node train = root["train"]; present(train)) {
    reader.only(train,
                {"batch_size", "seed", "learning_rate", "warmup_steps", "lr_schedule", "adam_beta1", "adam_beta2",
                 "adam_epsilon", "weight_decay", "max_grad_norm", "ema_decay", "max_steps", "time_budget_seconds",
                 "checkpoint_every", "log_every", "output_dir", "log_path", "threads", "export_dtype"},
                "train", "tim train's train section");
    const auto integer = [&](const char* key, auto& out) {
      if (const YAML::Node n = train[key]; present(n))
      {
        using Out = std::decay_t<decltype(out)>;
        const auto value = yaml_integer(reader, n, std::string("train.") + key);
        // Never a silent wrap (threads is an int): a value the field cannot hold is an error.
        tim::check(std::in_range<Out>(value), "tim train: train.", key, " is ", value, ", out of range");
        out = static_cast<Out>(value);
      }
    };
    const auto number = [&](const char* key, double& out) {
      if (const YAML::Node n = train[key]; present(n)) out = reader.number(n, std::string("train.") + key);
    };
    const auto text = [&](const char* key, std::string& out) {
      if (const YAML::Node n = train[key]; present(n)) out = reader.text(n, std::string("train.") + key);
    };
    integer("batch_size", s.batch);
    if (const YAML::Node n = train["seed"]; present(n)) {
      const auto v = yaml_integer(reader, n, "train.seed");
      if (v < 0) reader.error("train.seed", "must be >= 0");
      s.seed = static_cast<std::uint64_t>(v);
    }
    number("learning_rate", s.lr);
    integer("warmup_steps", s.warmup_steps);
    text("lr_schedule", s.lr_schedule);
    number("adam_beta1", s.beta1);
    number("adam_beta2", s.beta2);
    number("adam_epsilon", s.adam_eps);
    number("weight_decay", s.weight_decay);
    number("max_grad_norm", s.grad_clip);
    number("ema_decay", s.ema_decay);
    integer("max_steps", s.max_steps);
    number("time_budget_seconds", s.time_budget_seconds);
    integer("checkpoint_every", s.checkpoint_every);
    integer("log_every", s.log_every);
    text("output_dir", s.output_dir);
    text("log_path", s.log_path);
    integer("threads", s.threads);
    text("export_dtype", s.export_dtype);
  }
}

void TrainSettings::validate() const {
  objective.validate("tim train: the objective");
  const auto positive = [](std::int64_t v, const char* name) {
    tim::check(v >= 1, "tim train: ", name, " must be >= 1, got ", v);
  };
  positive(batch, "train.batch_size (--batch)");
  tim::check(data_source == "fashion-mnist" || data_source == "image-folder" || data_source == "latent-shards",
             "tim train: data.source (--data) must be fashion-mnist, image-folder or latent-shards, got '", data_source, "'");
  tim::check(split == "train" || split == "test" || split == "all",
             "tim train: data.split (--split) must be train, test or all, got '", split, "'");
  if (data_source == "image-folder") {
    positive(image_channels, "data.channels");
    tim::check(image_channels == 1 || image_channels == 3, "tim train: data.channels must be 1 or 3, got ", image_channels);
    positive(image_height, "data.height");
    positive(image_width, "data.width");
  }
  tim::check(data_source == "fashion-mnist" || !data_path.empty(), "tim train: data.path (--data-dir) is required for ",
             data_source);
  tim::check(num_classes >= 0, "tim train: model.network.params.num_classes must be >= 0 (0: the data set's), got ", num_classes);
  const auto unit = [](double v, const char* name, bool closed_top) {
    tim::check(std::isfinite(v) && v >= 0 && (closed_top ? v <= 1 : v < 1), "tim train: ", name, " must be in [0, 1",
               closed_top ? "]" : ")", ", got ", v);
  };
  tim::check(std::isfinite(lr) && lr > 0, "tim train: train.learning_rate (--lr) must be a positive number, got ", lr);
  tim::check(warmup_steps >= 0, "tim train: train.warmup_steps (--warmup-steps) must be >= 0, got ", warmup_steps);
  unit(beta1, "train.adam_beta1 (--beta1)", false);
  unit(beta2, "train.adam_beta2 (--beta2)", false);
  tim::check(std::isfinite(adam_eps) && adam_eps > 0, "tim train: train.adam_epsilon (--adam-eps) must be > 0, got ", adam_eps);
  tim::check(std::isfinite(weight_decay) && weight_decay >= 0,
             "tim train: train.weight_decay (--weight-decay) must be >= 0, got ", weight_decay);
  tim::check(std::isfinite(grad_clip) && grad_clip > 0, "tim train: train.max_grad_norm (--grad-clip) must be > 0, got ",
             grad_clip);
  unit(ema_decay, "train.ema_decay (--ema-decay)", true);
  tim::check(max_steps >= 0, "tim train: train.max_steps (--max-steps) must be >= 0, got ", max_steps);
  tim::check(std::isfinite(time_budget_seconds) && time_budget_seconds >= 0,
             "tim train: train.time_budget_seconds (--time-budget) must be >= 0, got ", time_budget_seconds);
  tim::check(max_steps > 0 || time_budget_seconds > 0,
             "tim train: no end given: set train.max_steps (--max-steps) or train.time_budget_seconds (--time-budget)");
  tim::check(checkpoint_every >= 0, "tim train: train.checkpoint_every (--checkpoint-every) must be >= 0, got ",
             checkpoint_every);
  positive(log_every, "train.log_every (--log-every)");
  tim::check(threads >= 0, "tim train: train.threads (--threads) must be >= 0 (0: tim's default), got ", threads);
  tim::check(!output_dir.empty(), "tim train: no output folder: set train.output_dir or --out (or --resume DIR)");
  (void)export_type();
  try {
    auto s = schedule();
    if (s.decay != tim::train::LrDecay::constant)
      tim::check(max_steps > 0, "tim train: train.lr_schedule ", lr_schedule,
                 " decays to train.max_steps (--max-steps), which is not set");
    s.validate();
  } catch (const tim::Error& e) {
    tim::fail("tim train: train.lr_schedule / warmup_steps: ", e.what());
  }
}

tim::DType TrainSettings::export_type() const {
  if (export_dtype == "float32") return tim::DType::F32;
  if (export_dtype == "bfloat16") return tim::DType::BF16;
  if (export_dtype == "float16") return tim::DType::F16;
  tim::fail("tim train: train.export_dtype (--export-dtype) must be float32, bfloat16 or float16, got '", export_dtype, "'");
}

tim::train::LrSchedule TrainSettings::schedule() const {
  return {.lr = lr, .warmup_steps = warmup_steps, .decay = tim::train::parse_lr_decay(lr_schedule), .total_steps = max_steps};
}

tim::train::AdamWOptions TrainSettings::adamw() const {
  return {.beta1 = beta1, .beta2 = beta2, .eps = adam_eps, .weight_decay = weight_decay};
}

nlohmann::json TrainSettings::math_json() const {
  const auto& o = objective;
  nlohmann::json transport = std::visit([](const auto& tr) { return time_sampling_json(tr); }, o.transport);
  transport["name"] = std::string(tim::transport_name(o.transport));
  transport["T_min"] = o.t_min();
  transport["T_max"] = o.t_max();
  transport["sigma_d"] = o.sigma_d();
  return {
      {"network", {{"hidden_size", hidden}, {"depth", depth}, {"num_heads", heads}, {"patch_size", patch},
                   {"lora_hidden_size", adaln_hidden}, {"mlp_ratio", mlp_ratio}, {"num_classes", num_classes}}},
      {"objective",
       {{"transport", transport},
        {"diffusion_ratio", o.diffusion_ratio},
        {"consistency_ratio", o.consistency_ratio},
        {"differential_epsilon", o.differential_epsilon},
        {"weight_time_type", std::string(tim::train::time_weighting_name(o.weight_time))},
        {"weight_time_tangent", o.weight_time_tangent},
        {"weight_time_sigmoid", o.weight_time_sigmoid},
        {"weight_t_and_r", o.weight_t_and_r},
        {"enhance_target", o.enhance.enabled},
        {"w_gt", o.enhance.w_gt},
        {"w_cond", o.enhance.w_cond},
        {"w_start", o.enhance.w_start},
        {"w_end", o.enhance.w_end},
        {"class_dropout_prob", o.label_dropout},
        {"adaptive_weighting", o.adaptive_weight},
        {"use_dir_loss", o.directional_loss}}},
      {"optimizer",
       {{"learning_rate", lr}, {"warmup_steps", warmup_steps}, {"lr_schedule", lr_schedule}, {"adam_beta1", beta1},
        {"adam_beta2", beta2}, {"adam_epsilon", adam_eps}, {"weight_decay", weight_decay}, {"max_grad_norm", grad_clip},
        {"ema_decay", ema_decay}}},
      {"batch_size", batch},
      {"seed", seed},
      {"data", {{"source", data_source}, {"path", data_path}, {"split", split}, {"channels", image_channels},
                {"height", image_height}, {"width", image_width}}},
  };
}

std::shared_ptr<const tim::train::Dataset> open_train_data(const TrainSettings& s) {
  if (s.data_source == "fashion-mnist") {
    const auto split = s.split == "train"  ? tim::train::FashionMnistSplit::train
                       : s.split == "test" ? tim::train::FashionMnistSplit::test
                                           : tim::train::FashionMnistSplit::all;
    return std::make_shared<tim::train::FashionMnist>(
        s.data_path.empty() ? std::string(tim::train::fashion_mnist_default_dir) : s.data_path, split);
  }
  if (s.data_source == "latent-shards") {
    if (std::filesystem::is_regular_file(s.data_path))
      return std::make_shared<tim::train::LatentShards>(std::vector<std::string>{s.data_path}, s.num_classes);
    return std::make_shared<tim::train::LatentShards>(s.data_path, s.num_classes);
  }
  return std::make_shared<tim::train::ImageFolder>(s.data_path, s.image_channels, s.image_height, s.image_width);
}

}  // namespace tim_cli
