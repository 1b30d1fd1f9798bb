// tim forward: one network evaluation out = F(x, t, r, y) (or cap_feats for a text-to-image
// model), inputs and output in safetensors files (docs/cli.md).
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "common.hpp"
#include "tim/core/cast.hpp"

namespace tim_cli {

namespace {

struct ForwardOptions {
  ModelOptions model;
  ComputeOptions compute;
  std::string inputs_path;
  std::string out_path;
};

//! What `tim forward` reads from its inputs file, for messages.
constexpr const char* class_inputs = "x [B,C,H,W] F32, t [B] F32, r [B] F32, y [B] I64";
constexpr const char* caption_inputs = "x [B,C,H,W] F32, t [B] F32, r [B] F32, cap_feats [B,M,cap_dim] F32";

//! The tensor `name` of the inputs file, after checking it exists and has dtype `expected`;
//! `all_inputs` lists what the file should hold.
const tim::io::TensorInfo& require_input(const tim::io::SafetensorsFile& inputs, const std::string& name,
                                         tim::DType expected, const char* all_inputs) {
  if (!inputs.contains(name))
    tim::fail("inputs file '", inputs.path(), "' has no tensor '", name, "' (expected ", all_inputs, "; found: ",
              tensor_names(inputs), ")");
  const auto& info = inputs.info(name);
  tim::check(info.dtype == expected, "tensor '", name, "' in ", inputs.path(), ": expected dtype ",
             tim::dtype_name(expected), ", got ", tim::dtype_name(info.dtype));
  return info;
}

//! Every value finite; the message gives the first offender's flat and multi-dimensional index.
void require_finite(const tim::Tensor<float>& tensor, const std::string& name, const std::string& file) {
  const float* data = tensor.data();
  for (std::int64_t i = 0; i < tensor.numel(); ++i) {
    if (std::isfinite(data[i])) continue;
    std::ostringstream position;
    std::int64_t rest = i;
    std::vector<std::int64_t> index(static_cast<std::size_t>(tensor.rank()));
    for (int axis = tensor.rank() - 1; axis >= 0; --axis) {
      index[static_cast<std::size_t>(axis)] = rest % tensor.dim(axis);
      rest /= tensor.dim(axis);
    }
    for (std::size_t axis = 0; axis < index.size(); ++axis) position << (axis ? ", " : "") << index[axis];
    tim::fail("input '", name, "' contains a non-finite value (", std::isnan(data[i]) ? "NaN" : "inf", ") at index ", i,
              " [", position.str(), "] in ", file, "; x, t, r and cap_feats must be finite");
  }
}

void run_forward(const ForwardOptions& options) {
  apply_threads(options.compute);
  check_compute_options(options.compute, /*cpu_network=*/true);
  tim::check(!same_file(options.out_path, options.model.model_path) && !same_file(options.out_path, options.inputs_path),
             "--out '", options.out_path, "' would overwrite the model or the inputs file");

  const auto start = Clock::now();
  // Any TiM: on the CPU in float, with --device cuda on the GPU in --precision.
  const bool cuda = options.compute.cuda();
  std::optional<LoadedModel> loaded;
  std::optional<tim_cli::CudaModel> gpu;
  if (cuda)
    gpu.emplace(load_cuda_model(options.model, options.compute.precision));
  else
    loaded.emplace(load_model(options.model, cpu_precision(options.compute)));
  const tim::nn::BackboneConfig& c = cuda ? gpu->config() : loaded->backbone();
  const bool text = cuda ? gpu->text_to_image() : loaded->text_to_image();
  const double load_seconds = seconds_since(start);

  // The condition is y (labels) for a C2I model, cap_feats (caption features) for a T2I one.
  const auto inputs = tim::io::SafetensorsFile::open(options.inputs_path);
  const std::string& in = options.inputs_path;
  const char* all_inputs = text ? caption_inputs : class_inputs;
  const auto& x_info = require_input(inputs, "x", tim::DType::F32, all_inputs);
  const auto& t_info = require_input(inputs, "t", tim::DType::F32, all_inputs);
  const auto& r_info = require_input(inputs, "r", tim::DType::F32, all_inputs);
  const auto& condition_info = text ? require_input(inputs, "cap_feats", tim::DType::F32, all_inputs)
                                    : require_input(inputs, "y", tim::DType::I64, all_inputs);

  const tim::Shape& xs = x_info.shape;
  tim::check(xs.rank() == 4, "tensor 'x' in ", in, ": expected shape [B, ", c.in_channels, ", H, W], got ", xs);
  const auto B = xs[0];
  tim::check(B > 0, "tensor 'x' in ", in, ": batch size is 0 (shape ", xs, ")");
  tim::check(xs[1] == c.in_channels, "tensor 'x' in ", in, ": expected shape [B, ", c.in_channels,
             ", H, W] (the model has ", c.in_channels, " input channels), got ", xs);
  tim::check(xs[2] > 0 && xs[3] > 0 && xs[2] % c.patch == 0 && xs[3] % c.patch == 0, "tensor 'x' in ", in,
             ": height ", xs[2], " and width ", xs[3], " must be positive multiples of the model's patch size ", c.patch,
             " (shape ", xs, ")");
  for (const auto* info : {&t_info, &r_info})
    tim::check(info->shape == tim::Shape{B}, "tensor '", info->name, "' in ", in, ": expected shape [", B,
               "] (one per sample of x), got ", info->shape);
  if (text) {
    const auto caption_dim = cuda ? gpu->t2i_config().caption_dim : std::get<T2IModel>(loaded->model).config.caption_dim;
    const tim::Shape& cs = condition_info.shape;
    tim::check(cs.rank() == 3 && cs[0] == B && cs[1] >= 1 && cs[2] == caption_dim, "tensor 'cap_feats' in ", in,
               ": expected shape [B, M, cap_dim] = [", B, ", M, ", caption_dim,
               "] (one caption per sample of x, M >= 1 tokens, the model's cap_dim), got ", cs);
  } else {
    tim::check(condition_info.shape == tim::Shape{B}, "tensor 'y' in ", in, ": expected shape [", B,
               "] (one per sample of x), got ", condition_info.shape);
  }

  const auto x = inputs.load<float>("x");
  const auto t = inputs.load<float>("t");
  const auto r = inputs.load<float>("r");
  require_finite(x, "x", in);
  require_finite(t, "t", in);
  require_finite(r, "r", in);

  tim::Tensor<float> out;
  double forward_seconds = 0;
  // The library's own input rules (should they ever grow) run before the timed forward pass.
  const auto checked = [&in](const auto& validate) {
    try {
      validate();
    } catch (const tim::Error& e) {
      tim::fail(in, ": ", e.what());
    }
  };
  if (text) {
    const auto cap_feats = inputs.load<float>("cap_feats");
    require_finite(cap_feats, "cap_feats", in);
    if (cuda) {
      // The GPU model takes and returns host tensors in double (its storage is --precision).
      tim::Tensor<double> out_double;
      const auto forward_start = Clock::now();
      gpu->forward(out_double, tim::cast<double>(x), tim::cast<double>(t), tim::cast<double>(r), cap_feats);
      forward_seconds = seconds_since(forward_start);
      out = tim::cast<float>(out_double);
    } else {
      const auto& model = std::get<T2IModel>(loaded->model);
      checked([&] { model.validate_inputs(x, t, r, cap_feats); });
      const auto forward_start = Clock::now();
      model.forward(out, x, t, r, cap_feats);
      forward_seconds = seconds_since(forward_start);
    }
  } else {
    const std::int64_t num_classes =
        cuda ? gpu->c2i_config().num_classes : std::get<C2IModel>(loaded->model).config.num_classes;
    const auto y = inputs.load<std::int64_t>("y");
    for (std::int64_t b = 0; b < B; ++b) {
      const auto label = y.data()[b];
      tim::check(label >= 0 && label <= num_classes, "tensor 'y' in ", in, ": label ", label, " at index ", b,
                 " is outside [0, ", num_classes, "] (classes 0..", num_classes - 1, ", ", num_classes,
                 " = the null class)");
    }
    if (cuda) {
      // The GPU model takes and returns host tensors in double (its storage is --precision).
      tim::Tensor<double> out_double;
      const auto forward_start = Clock::now();
      gpu->forward(out_double, tim::cast<double>(x), tim::cast<double>(t), tim::cast<double>(r), y);
      forward_seconds = seconds_since(forward_start);
      out = tim::cast<float>(out_double);
    } else {
      const auto& model = std::get<C2IModel>(loaded->model);
      checked([&] { model.validate_inputs(x, t, r, y); });
      const auto forward_start = Clock::now();
      model.forward(out, x, t, r, y);
      forward_seconds = seconds_since(forward_start);
    }
  }

  tim::io::SafetensorsWriter writer;
  writer.add("out", out);
  writer.set_metadata("model", options.model.model_path);
  writer.set_metadata("inputs", options.inputs_path);
  writer.set_metadata("tim_version", tim::version_string);
  writer.set_metadata("config", cuda ? gpu->describe() : loaded->describe());
  writer.set_metadata("device", cuda ? gpu->device() + ", " + options.compute.precision : loaded->device());
  writer.write(options.out_path);

  if (options.compute.verbose)
    std::cerr << std::fixed << std::setprecision(3) << "tim forward: loaded " << options.model.model_path << " in "
              << load_seconds << " s; forward of " << B << " x " << xs[1] << " x " << xs[2] << " x " << xs[3] << " on "
              << (cuda ? gpu->device() + " in " + options.compute.precision
                       : std::to_string(tim::num_threads()) + " threads")
              << " in " << forward_seconds << " s; total " << seconds_since(start) << " s; wrote " << options.out_path
              << '\n';
}

}  // namespace

Subcommand add_forward(CLI::App& app) {
  auto options = std::make_shared<ForwardOptions>();
  auto* command = app.add_subcommand(
      "forward", "Evaluate the network once: out = F(x, t, r, y) (y: labels, or caption features for a text-to-image "
                 "model), inputs and output in safetensors files");
  add_model_options(*command, options->model, ModelArgument::option);
  command
      ->add_option("-i,--inputs", options->inputs_path,
                   "Inputs: x [B,C,H,W] F32, t [B] F32, r [B] F32 (network time inputs, after c_noise), and y [B] "
                   "I64 (class-conditional model) or cap_feats [B,M,cap_dim] F32 (text-to-image model)")
      ->required();
  command->add_option("-o,--out", options->out_path, "Output file: out [B,C,H,W] F32")->required();
  add_compute_options(*command, options->compute);
  return {command, [options] { run_forward(*options); }};
}

}  // namespace tim_cli
