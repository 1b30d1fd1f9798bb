// The settings of `tim train` (docs/training.md, "tim train"): train.py's defaults, then the
// training YAML (the released model.transport / model.transition_loss / model.network.params,
// plus tim's own `data:` and `train:` sections), then the command-line flags.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tim/core/dtype.hpp"
#include "tim/train/datasets.hpp"
#include "tim/train/objective_config.hpp"
#include "tim/train/optimizer.hpp"

namespace tim_cli {

//! Everything a run of `tim train` needs, resolved.
struct TrainSettings {
  std::string config_path;
  tim::train::ObjectiveConfig objective;

  // data: (ours)
  std::string data_source = "fashion-mnist";  // fashion-mnist, image-folder, latent-shards
  std::string data_path;                      // default: the Debian package's folder for fashion-mnist
  std::string split = "train";                // fashion-mnist
  std::int64_t image_channels = 1, image_height = 32, image_width = 32;  // image-folder

  // model.network.params (released names); in_channels and input_size come from the data.
  std::int64_t hidden = 192, depth = 4, heads = 4, patch = 4, adaln_hidden = 64;
  double mlp_ratio = 4.0;
  std::int64_t num_classes = 0;  // 0: the data set's
  std::optional<std::int64_t> in_channels, input_size;  // checked against the data when given

  // train: (ours), train.py's defaults
  std::int64_t batch = 64;
  std::uint64_t seed = 0;
  double lr = 1e-4;
  std::int64_t warmup_steps = 0;
  std::string lr_schedule = "constant";
  double beta1 = 0.9, beta2 = 0.95, adam_eps = 1e-6, weight_decay = 0.01;
  double grad_clip = 1.0;
  double ema_decay = 0.999;
  std::int64_t max_steps = 0;     // 0: none
  double time_budget_seconds = 0;  // 0: none
  std::int64_t checkpoint_every = 250;  // 0: only at the end
  std::int64_t log_every = 25;
  std::string output_dir;
  std::string log_path;  // default OUTPUT/log.jsonl
  int threads = 0;       // 0: tim's default
  std::string export_dtype = "float32";

  //! The settings that fix the training arithmetic (a resumed run must have the same ones), as
  //! JSON: the network, the objective, the optimizer, the batch, the seed and the data.
  nlohmann::json math_json() const;
  tim::DType export_type() const;
  tim::train::LrSchedule schedule() const;
  tim::train::AdamWOptions adamw() const;
  //! Checks every value; a tim::Error naming the key (YAML) and flag.
  void validate() const;
};

//! Reads `path` into `settings` (over its current values): tim::Error naming the key on a bad value.
void read_train_yaml(const std::string& path, TrainSettings& settings);

//! The data set the settings name (a tim::Error naming the folder or file when it cannot be read).
std::shared_ptr<const tim::train::Dataset> open_train_data(const TrainSettings& settings);

}  // namespace tim_cli
