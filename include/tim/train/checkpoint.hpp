// Training checkpoints: a folder with
//   model.safetensors  the EMA (or online) weights under the released names, with the recipe in
//                      __metadata__: a file `tim sample --model` loads directly;
//   state.safetensors  everything a resume needs, bit for bit: the online weights, the EMA, AdamW's
//                      moments and step count, the optimizer step, the data position, the seed and
//                      any random-generator state, the accumulated training time.
// Each file is written under a temporary name, flushed to disk and renamed over the old one, so a
// crash leaves the previous checkpoint or the new one, never half of one; resuming reads
// state.safetensors only (docs/training.md, "Checkpoints and resume").
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "tim/core/cast.hpp"
#include "tim/core/decimal.hpp"
#include "tim/core/dtype.hpp"
#include "tim/core/error.hpp"
#include "tim/io/atomic_file.hpp"
#include "tim/io/safetensors.hpp"
#include "tim/nn/parameters.hpp"
#include "tim/train/data_order.hpp"
#include "tim/train/optimizer.hpp"

namespace tim::train {

//! The `format` metadata of state.safetensors.
inline constexpr const char* training_state_format = "tim-train-state-v1";

//! The scalars of a run that are not tensors of the network.
struct TrainingProgress {
  std::int64_t step = 0;  //!< optimizer steps taken
  DataPosition data;      //!< where the next batch starts
  std::uint64_t seed = 0;  //!< the run's seed (counter-based streams are keyed by seed and step)
  double train_seconds = 0;
  //! The state of any stateful random generator the trainer keeps (empty when every random
  //! number is a counter-based function of seed and step, as tim/core/random.hpp's are).
  std::vector<std::uint64_t> random_state;
};

//! Which weights model.safetensors holds, and in which storage type.
struct ExportOptions {
  bool ema = true;             //!< the EMA weights (as train.py exports); false: the online weights
  DType dtype = DType::F32;    //!< F32, BF16 or F16
};

namespace detail {

template <class T>
void add_network(io::SafetensorsWriter& writer, const std::string& prefix, const nn::C2IModel<T>& network,
                 DType dtype = dtype_of<T>()) {
  nn::for_each_parameter(
      [&](const std::string& name, const Tensor<T>& p) {
        // x_embedder.proj.weight is held as (D, C p p): stored in the released (D, C, p, p).
        Shape shape = p.shape();
        if (name == std::string(nn::keys::x_embedder) + ".proj.weight")
          shape = Shape({network.config.hidden, network.config.in_channels, network.config.patch, network.config.patch});
        if (dtype == dtype_of<T>()) {
          writer.add(prefix + name, dtype, shape, p.data());
        } else if (dtype == DType::F32) {
          const auto c = cast<float>(p);
          writer.add(prefix + name, dtype, shape, c.data());
        } else if (dtype == DType::BF16) {
          const auto c = cast<bfloat16>(p);
          writer.add(prefix + name, dtype, shape, c.data());
        } else if (dtype == DType::F16) {
          const auto c = cast<float16>(p);
          writer.add(prefix + name, dtype, shape, c.data());
        } else {
          fail("checkpoint: cannot store weights as ", dtype_name(dtype), " (F32, BF16 or F16)");
        }
      },
      const_cast<nn::C2IModel<T>&>(network));
}

template <class T>
void read_network(const io::SafetensorsFile& file, const std::string& prefix, nn::C2IModel<T>& network) {
  nn::for_each_parameter(
      [&](const std::string& name, Tensor<T>& p) {
        const std::string key = prefix + name;
        check(file.contains(key), "training state '", file.path(), "': no tensor '", key,
              "' (the checkpoint is of another network)");
        const auto& info = file.info(key);
        check(info.dtype == dtype_of<T>(), "training state '", file.path(), "': '", key, "' is ", dtype_name(info.dtype),
              ", the run trains in ", dtype_name(dtype_of<T>()), " (a resume must be in the same precision)");
        check(info.shape.numel() == p.numel(), "training state '", file.path(), "': '", key, "' has shape ", info.shape,
              ", the network's is ", p.shape());
        const auto bytes = file.bytes(key);
        std::memcpy(p.data(), bytes.data(), bytes.size());
      },
      network);
}

inline std::int64_t read_scalar_i64(const io::SafetensorsFile& file, const std::string& key) {
  check(file.contains(key), "training state '", file.path(), "': no tensor '", key, "'");
  const auto t = file.load<std::int64_t>(key);
  check(t.numel() == 1, "training state '", file.path(), "': '", key, "' must hold one value, it has ", t.numel());
  return t.data()[0];
}

}  // namespace detail

//! Writes DIR/model.safetensors: the EMA (or online) weights of `model`/`ema` under the released
//! names, with `metadata` (the recipe, the trainer's settings for `tim sample`) plus what tim
//! reads (`num_heads`, `new_condition`) and `steps`, `weights`, `storage_dtype`.
template <class T>
void write_model_file(const std::string& dir, const nn::C2IModel<T>& model, const Ema<T>& ema, std::int64_t step,
                      const std::map<std::string, std::string>& metadata, ExportOptions options = {}) {
  io::SafetensorsWriter writer;
  detail::add_network(writer, "", options.ema ? ema.network() : model, options.dtype);
  for (const auto& [key, value] : metadata) writer.set_metadata(key, value);
  writer.set_metadata("num_heads", std::to_string(model.config.num_heads));
  writer.set_metadata("new_condition", std::string(nn::new_condition_name(model.config.new_condition)));
  writer.set_metadata("steps", std::to_string(step));
  writer.set_metadata("weights", options.ema ? "ema (decay " + shortest_decimal(ema.decay()) + ")" : "online");
  writer.set_metadata("storage_dtype", std::string(dtype_name(options.dtype)));
  io::write_safetensors_atomically(writer, dir + "/model.safetensors");
}

//! Writes a checkpoint of the run to folder `dir` (created if missing): state.safetensors first,
//! then model.safetensors, each atomically. `metadata` (the recipe) goes into both files.
template <class T>
void save_checkpoint(const std::string& dir, const nn::C2IModel<T>& model, const AdamW<T>& adamw, const Ema<T>& ema,
                     const TrainingProgress& progress, const std::map<std::string, std::string>& metadata,
                     ExportOptions options = {}) {
  std::error_code made;
  std::filesystem::create_directories(dir, made);
  check(!made, "cannot create checkpoint folder '", dir, "': ", made.message());
  io::SafetensorsWriter writer;
  detail::add_network(writer, "model.", model);
  detail::add_network(writer, "ema.", ema.network());
  detail::add_network(writer, "adamw.exp_avg.", adamw.exp_avg());
  detail::add_network(writer, "adamw.exp_avg_sq.", adamw.exp_avg_sq());
  const auto scalar = [&](const std::string& name, std::int64_t value) {
    writer.add(name, DType::I64, Shape({1}), &value);
  };
  scalar("step", progress.step);
  scalar("adamw.step", adamw.steps_taken());
  scalar("data.epoch", progress.data.epoch);
  scalar("data.offset", progress.data.offset);
  scalar("seed", static_cast<std::int64_t>(progress.seed));
  writer.add("train_seconds", DType::F64, Shape({1}), &progress.train_seconds);
  writer.add("random_state", DType::I64, Shape({static_cast<std::int64_t>(progress.random_state.size())}),
             progress.random_state.empty() ? nullptr : progress.random_state.data());
  for (const auto& [key, value] : metadata) writer.set_metadata(key, value);
  writer.set_metadata("format", training_state_format);
  writer.set_metadata("ema_decay", shortest_decimal(ema.decay()));
  const auto& o = adamw.options();
  writer.set_metadata("adamw", "beta1=" + shortest_decimal(o.beta1) + " beta2=" + shortest_decimal(o.beta2) +
                                   " eps=" + shortest_decimal(o.eps) + " weight_decay=" + shortest_decimal(o.weight_decay));
  io::write_safetensors_atomically(writer, dir + "/state.safetensors");
  write_model_file(dir, model, ema, progress.step, metadata, options);
}

//! The metadata (recipe) of DIR/state.safetensors, e.g. to rebuild the run's settings before
//! building the model; a tim::Error when the file is missing or not a training state.
inline std::map<std::string, std::string> read_checkpoint_metadata(const std::string& dir) {
  const auto file = io::SafetensorsFile::open(dir + "/state.safetensors");
  const auto& m = file.metadata();
  const auto format = m.find("format");
  check(format != m.end() && format->second == training_state_format, "'", file.path(), "' is not a tim training state (",
        "metadata 'format' must be '", training_state_format, "')");
  return m;
}

//! Restores a run from DIR/state.safetensors into `model`, `adamw` and `ema` (built for the same
//! network, with writable weights: nn::clone_parameters) and returns its progress. Bit-exact:
//! the stored tensors must have the run's element type. A tim::Error names the file and the
//! first tensor that is missing or differs; every tensor is checked before any is copied, so a
//! failed restore leaves the run as it was.
template <class T>
TrainingProgress load_checkpoint(const std::string& dir, nn::C2IModel<T>& model, AdamW<T>& adamw, Ema<T>& ema) {
  read_checkpoint_metadata(dir);
  const auto file = io::SafetensorsFile::open(dir + "/state.safetensors");
  // Check every tensor before writing any of them.
  for (const char* prefix : {"model.", "ema.", "adamw.exp_avg.", "adamw.exp_avg_sq."}) {
    nn::for_each_parameter(
        [&](const std::string& name, const Tensor<T>& p) {
          const std::string key = prefix + name;
          check(file.contains(key), "training state '", file.path(), "': no tensor '", key,
                "' (the checkpoint is of another network)");
          const auto& info = file.info(key);
          check(info.dtype == dtype_of<T>(), "training state '", file.path(), "': '", key, "' is ",
                dtype_name(info.dtype), ", the run trains in ", dtype_name(dtype_of<T>()),
                " (a resume must be in the same precision)");
          check(info.shape.numel() == p.numel(), "training state '", file.path(), "': '", key, "' has shape ",
                info.shape, ", the network's is ", p.shape());
        },
        model);
  }
  TrainingProgress progress;
  progress.step = detail::read_scalar_i64(file, "step");
  const std::int64_t adamw_steps = detail::read_scalar_i64(file, "adamw.step");
  progress.data.epoch = detail::read_scalar_i64(file, "data.epoch");
  progress.data.offset = detail::read_scalar_i64(file, "data.offset");
  progress.seed = static_cast<std::uint64_t>(detail::read_scalar_i64(file, "seed"));
  check(progress.step >= 0 && adamw_steps >= 0 && progress.data.epoch >= 0 && progress.data.offset >= 0,
        "training state '", file.path(), "': negative step, AdamW step or data position");
  check(file.contains("train_seconds") && file.info("train_seconds").shape.numel() == 1, "training state '",
        file.path(), "': no scalar 'train_seconds'");
  progress.train_seconds = file.load<double>("train_seconds").data()[0];
  check(file.contains("random_state"), "training state '", file.path(), "': no tensor 'random_state'");
  const auto random_state = file.load<std::int64_t>("random_state");
  for (std::int64_t i = 0; i < random_state.numel(); ++i)
    progress.random_state.push_back(static_cast<std::uint64_t>(random_state.data()[i]));
  detail::read_network(file, "model.", model);
  detail::read_network(file, "ema.", ema.network());
  detail::read_network(file, "adamw.exp_avg.", adamw.exp_avg());
  detail::read_network(file, "adamw.exp_avg_sq.", adamw.exp_avg_sq());
  adamw.set_steps_taken(adamw_steps);
  return progress;
}

}  // namespace tim::train
