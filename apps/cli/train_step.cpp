// tim train-step: one evaluation of the TiM training objective (tim/train/objective.hpp) on an
// explicit batch, for testing against other implementations: the weighted loss, the denoising
// loss and the gradient of every parameter under its released name (docs/cli.md). The EMA
// network of the guidance-enhanced target is the model itself.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <system_error>

#include "common.hpp"
#include "tim/io/atomic_file.hpp"
#include "tim/io/yaml_objective.hpp"
#include "tim/train/objective.hpp"

namespace tim_cli {

namespace {

struct TrainStepOptions {
  ModelOptions model;
  ComputeOptions compute;
  std::string batch_path;
  std::string out_path;
};

constexpr const char* train_step_inputs =
    "x [B,C,H,W] F32, z [B,C,H,W] F32, y [B] I64, t [B] F32, r [B] F32, optionally y_cond [B] I64";

//! The tensor `name` of the batch file with dtype `expected`, or a tim::Error saying what is wrong.
const tim::io::TensorInfo& batch_tensor(const tim::io::SafetensorsFile& file, const std::string& name,
                                        tim::DType expected) {
  if (!file.contains(name))
    tim::fail("batch file '", file.path(), "' has no tensor '", name, "' (expected ", train_step_inputs, "; found: ",
              tensor_names(file), ")");
  const auto& info = file.info(name);
  tim::check(info.dtype == expected, "tensor '", name, "' in ", file.path(), ": expected dtype ",
             tim::dtype_name(expected), ", got ", tim::dtype_name(info.dtype));
  return info;
}

//! Every value of `tensor` finite, or a tim::Error naming the tensor and the first offender.
void batch_finite(const tim::Tensor<float>& tensor, const std::string& name, const std::string& file) {
  for (std::int64_t i = 0; i < tensor.numel(); ++i)
    tim::check(std::isfinite(tensor.data()[i]), "tensor '", name, "' in ", file, ": value ", tensor.data()[i],
               " at flat index ", i, " is not finite");
}

//! Labels within [0, num_classes] (num_classes: the null class).
void batch_labels(const tim::Tensor<std::int64_t>& labels, const std::string& name, const std::string& file,
                  std::int64_t num_classes) {
  for (std::int64_t b = 0; b < labels.numel(); ++b)
    tim::check(labels.data()[b] >= 0 && labels.data()[b] <= num_classes, "tensor '", name, "' in ", file, ": label ",
               labels.data()[b], " at index ", b, " is outside [0, ", num_classes, "] (", num_classes,
               " = the null class)");
}

void run_train_step(const TrainStepOptions& options) {
  apply_threads(options.compute);
  for (const auto* input : {&options.model.model_path, &options.model.config_path, &options.batch_path})
    tim::check(!same_file(options.out_path, *input), "--out '", options.out_path,
               "' would overwrite the model, the config or the batch file");
  const auto start = Clock::now();
  LoadedModel loaded = load_model(options.model);
  tim::check(!loaded.text_to_image(), "tim train-step: '", options.model.model_path,
             "' is a text-to-image model; the objective is built for class-conditional (C2I) models");
  const auto model = tim::nn::clone_parameters(std::get<C2IModel>(loaded.model));
  const auto& c = model.config;
  const auto config = tim::io::read_objective_config(options.model.config_path);

  // The batch: x, z [B, C, H, W], y [B], t, r [B], optionally y_cond [B]; nothing else.
  const auto file = tim::io::SafetensorsFile::open(options.batch_path);
  const std::string& in = options.batch_path;
  const std::set<std::string> known{"x", "z", "y", "t", "r", "y_cond"};
  for (const auto& info : file.tensors())
    tim::check(known.contains(info.name), "batch file '", in, "': unexpected tensor '", info.name, "' (expected ",
               train_step_inputs, ")");
  const auto& x_info = batch_tensor(file, "x", tim::DType::F32);
  const tim::Shape& xs = x_info.shape;
  tim::check(xs.rank() == 4 && xs[0] > 0 && xs[1] == c.in_channels && xs[2] > 0 && xs[3] > 0 && xs[2] % c.patch == 0 &&
                 xs[3] % c.patch == 0,
             "tensor 'x' in ", in, ": expected shape [B, ", c.in_channels, ", H, W] with B >= 1 and H, W positive "
             "multiples of the patch size ", c.patch, ", got ", xs);
  const auto B = xs[0];
  const auto& z_info = batch_tensor(file, "z", tim::DType::F32);
  tim::check(z_info.shape == xs, "tensor 'z' in ", in, ": expected shape ", xs, " (that of x), got ", z_info.shape);
  for (const char* name : {"t", "r"}) {
    const auto& info = batch_tensor(file, name, tim::DType::F32);
    tim::check(info.shape == tim::Shape{B}, "tensor '", name, "' in ", in, ": expected shape [", B,
               "] (one per sample of x), got ", info.shape);
  }
  for (const char* name : {"y", "y_cond"}) {
    if (std::string(name) == "y_cond" && !file.contains(name)) continue;
    const auto& info = batch_tensor(file, name, tim::DType::I64);
    tim::check(info.shape == tim::Shape{B}, "tensor '", name, "' in ", in, ": expected shape [", B,
               "] (one per sample of x), got ", info.shape);
  }

  tim::train::ObjectiveBatch<float> batch;
  batch.x = file.load<float>("x");
  batch.z = file.load<float>("z");
  batch.t = file.load<float>("t");
  batch.r = file.load<float>("r");
  batch.labels = file.load<std::int64_t>("y");
  if (file.contains("y_cond")) batch.cond_labels = file.load<std::int64_t>("y_cond");
  for (const char* name : {"x", "z", "t", "r"}) {
    const auto& tensor = std::string(name) == "x" ? batch.x : std::string(name) == "z" ? batch.z
                         : std::string(name) == "t" ? batch.t : batch.r;
    batch_finite(tensor, name, in);
  }
  batch_labels(batch.labels, "y", in, c.num_classes);
  if (!batch.cond_labels.empty_tensor()) batch_labels(batch.cond_labels, "y_cond", in, c.num_classes);
  for (std::int64_t b = 0; b < B; ++b)
    tim::check(batch.r.data()[b] <= batch.t.data()[b], "tensors 't', 'r' in ", in, ": row ", b, " has r = ",
               batch.r.data()[b], " > t = ", batch.t.data()[b], " (r <= t)");
  batch.n_diffusion = tim::train::leading_diffusion_rows(batch.t, batch.r);

  auto grads = tim::nn::zero_gradients_like(model);
  tim::train::ObjectiveWorkspace<float> ws;
  const auto compute_start = Clock::now();
  const auto losses = tim::train::compute_loss_and_gradients(model, model, batch, config, ws, grads);
  const double compute_seconds = seconds_since(compute_start);

  tim::io::SafetensorsWriter writer;
  const float loss = static_cast<float>(losses.loss), denoising = static_cast<float>(losses.denoising_loss);
  writer.add("loss", tim::DType::F32, tim::Shape{}, &loss);
  writer.add("denoising_loss", tim::DType::F32, tim::Shape{}, &denoising);
  std::vector<float> per_sample(losses.per_sample.begin(), losses.per_sample.end());
  std::vector<float> weight(losses.weight.begin(), losses.weight.end());
  writer.add("per_sample", tim::DType::F32, tim::Shape{B}, per_sample.data());
  writer.add("weight", tim::DType::F32, tim::Shape{B}, weight.data());
  const std::string patch_weight = std::string(tim::nn::keys::x_embedder) + ".proj.weight";
  tim::nn::for_each_parameter(
      [&](const std::string& name, const tim::Tensor<float>& g) {
        // The patch embedding's weight is held as (D, C p p); the checkpoint's shape is (D, C, p, p).
        const tim::Shape shape = name == patch_weight ? tim::Shape{c.hidden, c.in_channels, c.patch, c.patch} : g.shape();
        writer.add("grad." + name, tim::DType::F32, shape, g.data());
      },
      grads);
  writer.set_metadata("model", options.model.model_path);
  writer.set_metadata("config", options.model.config_path);
  writer.set_metadata("batch", options.batch_path);
  writer.set_metadata("n_diffusion", std::to_string(batch.n_diffusion));
  writer.set_metadata("transport", std::string(tim::transport_name(config.transport)));
  writer.set_metadata("tim_version", tim::version_string);
  writer.set_metadata("device", "cpu, float32");
  tim::io::write_safetensors_atomically(writer, options.out_path);

  if (options.compute.verbose)
    std::cerr << std::fixed << std::setprecision(3) << "tim train-step: " << B << " x " << xs[1] << " x " << xs[2]
              << " x " << xs[3] << ", " << batch.n_diffusion << " diffusion rows, loss " << losses.loss
              << ", denoising loss " << losses.denoising_loss << "; objective and gradients in " << compute_seconds
              << " s on " << tim::num_threads() << " threads; total " << seconds_since(start) << " s; wrote "
              << options.out_path << '\n';
}

}  // namespace

Subcommand add_train_step(CLI::App& app) {
  auto options = std::make_shared<TrainStepOptions>();
  auto* command = app.add_subcommand(
      "train-step", "Evaluate the TiM training objective once on an explicit batch: the weighted loss, the denoising "
                    "loss and every parameter's gradient (the EMA network of the enhanced target is the model)");
  command->add_option("-m,--model", options->model.model_path, "Checkpoint (.safetensors) of a class-conditional TiM")
      ->required();
  command
      ->add_option("-c,--config", options->model.config_path,
                   "Released TiM training YAML: model.transport, model.transition_loss (or unified_dcm_loss), "
                   "model.network.params (docs/training.md)")
      ->required();
  command->add_option("-b,--batch", options->batch_path, std::string("Batch: ") + train_step_inputs +
                                                              "; the rows with r = t first (the diffusion rows)")
      ->required();
  command
      ->add_option("-o,--out", options->out_path,
                   "Output: loss, denoising_loss (F32 scalars), per_sample, weight [B] F32 and grad.<name> F32 for "
                   "every parameter under its released name")
      ->required();
  options->compute.threads_option = command->add_option(
      "-j,--threads", options->compute.threads, "CPU threads, 1 to 4096 (default: the number of physical cores)");
  command->add_flag("-v,--verbose", options->compute.verbose, "Report the loss and timings on stderr");
  return {command, [options] { run_train_step(*options); }};
}

}  // namespace tim_cli
