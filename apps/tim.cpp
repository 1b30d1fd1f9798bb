// The `tim` command-line program: inspect a checkpoint, run one network evaluation on inputs
// from a safetensors file, sample latents and images, for class-conditional (labels) and
// text-to-image (caption features) models. One function pair per subcommand (add_*: options,
// run_*: work), so bench and eval slot in the same way. Usage and exit codes: docs/cli.md.
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "cuda_backend.hpp"
#include "image_grid.hpp"
#include "tim/io/png.hpp"
#include "tim/io/yaml_config.hpp"
#include "tim/tim.hpp"
#include "tim/vae/diffusers_config.hpp"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

//! A subcommand: its CLI11 parser (options, --help) and what runs when it is chosen.
struct Subcommand {
  CLI::App* command = nullptr;
  std::function<void()> run;
};

// ---------------------------------------------------------------------------------------------
// Options shared by several subcommands, declared once.

struct ModelOptions {
  std::string model_path;
  std::string config_path;  // empty: no --config
};

//! How a subcommand takes its checkpoint.
enum class ModelArgument { positional, option, optional_option };

//! --model (or a positional MODEL; `optional_option`: --model, the shipped model when absent) and --config.
void add_model_options(CLI::App& command, ModelOptions& options, ModelArgument argument) {
  if (argument == ModelArgument::positional)
    command.add_option("model", options.model_path, "Checkpoint (.safetensors)")->required();
  else if (argument == ModelArgument::option)
    command.add_option("-m,--model", options.model_path, "Checkpoint (.safetensors)")->required();
  else
    command.add_option("-m,--model", options.model_path,
                       "Checkpoint (.safetensors); default: the shipped Fashion-MNIST model tim-fmnist.safetensors");
  command.add_option("-c,--config", options.config_path,
                     "Released TiM YAML config: gives num_heads and new_condition when the checkpoint cannot; "
                     "its other network keys are checked against the checkpoint");
}

struct ComputeOptions {
  int threads = 0;
  CLI::Option* threads_option = nullptr;  // to tell "not given" from a value
  bool verbose = false;
  std::string device = "cpu";          // cpu or cuda
  std::string precision = "float32";  // the GPU model's storage: float32 or bfloat16
  CLI::Option* precision_option = nullptr;

  bool cuda() const { return device == "cuda"; }
};

//! --threads, --device, --precision and --verbose, for subcommands that compute.
void add_compute_options(CLI::App& command, ComputeOptions& options) {
  options.threads_option = command.add_option(
      "-j,--threads", options.threads, "CPU threads, 1 to 4096 (default: the number of physical cores)");
  command.add_option("--device", options.device,
                     "cpu (default) or cuda: the GPU, class-conditional models (needs a build with -DTIM_CUDA=ON)");
  options.precision_option = command.add_option(
      "--precision", options.precision,
      "With --device cuda: the network's storage and arithmetic, float32 (default) or bfloat16 (float32 "
      "accumulation)");
  command.add_flag("-v,--verbose", options.verbose, "Report timings on stderr");
}

//! Checks --device and --precision before anything is loaded (exit code 1, the option named).
void check_compute_options(const ComputeOptions& options) {
  tim::check(options.device == "cpu" || options.device == "cuda", "--device must be cpu or cuda, got '",
             options.device, "'");
  tim::check(options.precision == "float32" || options.precision == "bfloat16",
             "--precision must be float32 or bfloat16, got '", options.precision, "'");
  tim::check(options.cuda() || options.precision_option == nullptr || options.precision_option->count() == 0 ||
                 options.precision == "float32",
             "--precision ", options.precision, " needs --device cuda (the CPU runs float32)");
}

constexpr int max_threads = 4096;  // far beyond any machine; guards against a typo spawning a million threads

//! Applies --threads; validated here so the message names the option (exit code 1).
void apply_threads(const ComputeOptions& options) {
  if (options.threads_option == nullptr || options.threads_option->count() == 0) return;
  tim::check(options.threads >= 1, "--threads must be at least 1, got ", options.threads);
  tim::check(options.threads <= max_threads, "--threads ", options.threads, " is more than ", max_threads);
  tim::set_num_threads(options.threads);
}

// ---------------------------------------------------------------------------------------------
// Loading a checkpoint, with the errors a user can act on.

//! PyTorch checkpoints (pickles, or zip archives of pickles) cannot be read safely here.
[[noreturn]] void fail_pytorch(const std::string& path) {
  tim::fail(path, ": this is a PyTorch pickle checkpoint, which tim does not read (unpickling runs arbitrary code); "
                  "convert it to .safetensors with tools/convert_t2i_checkpoint.py (see docs/t2i.md)");
}

bool has_pytorch_extension(const std::string& path) {
  std::string extension = fs::path(path).extension().string();
  std::transform(extension.begin(), extension.end(), extension.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  return extension == ".bin" || extension == ".pt" || extension == ".pth" || extension == ".ckpt";
}

//! Whether the file starts like torch.save output: a zip archive or a pickle (protocol 2..5).
bool has_pytorch_magic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char head[4] = {};
  if (!in.read(reinterpret_cast<char*>(head), sizeof head)) return false;
  const bool zip = head[0] == 'P' && head[1] == 'K' && head[2] == 3 && head[3] == 4;
  const bool pickle = head[0] == 0x80 && head[1] >= 2 && head[1] <= 5;
  return zip || pickle;
}

//! Rethrows a loading failure, first with a better message where the file is not a TiM at all
//! (a PyTorch pickle, another model's safetensors).
[[noreturn]] void explain_load_failure(const std::string& path, const tim::Error& e) {
  if (has_pytorch_magic(path)) fail_pytorch(path);
  // A valid safetensors file without the network's first tensor is some other model.
  std::optional<tim::io::SafetensorsFile> file;
  try {
    file.emplace(tim::io::SafetensorsFile::open(path));
  } catch (const tim::Error&) {
    throw e;  // the file itself is unreadable; the first message says why
  }
  if (!file->contains("x_embedder.proj.weight")) {
    std::ostringstream names;
    const auto& tensors = file->tensors();
    for (std::size_t i = 0; i < tensors.size() && i < 5; ++i) names << (i ? ", " : "") << tensors[i].name;
    if (tensors.size() > 5) names << ", ...";
    if (tensors.empty()) names << "none";
    tim::fail(path, " is not a TiM checkpoint (class-conditional or text-to-image): no tensor "
              "'x_embedder.proj.weight' (", tensors.size(), " tensors: ", names.str(), ")");
  }
  throw e;
}

using C2IModel = tim::nn::C2IModel<float>;
using T2IModel = tim::nn::T2IModel<float>;

//! A checkpoint as the program runs it: a class-conditional or a text-to-image network, in float.
struct LoadedModel {
  std::variant<C2IModel, T2IModel> model;
  std::optional<tim::io::YamlNetworkConfig> yaml;

  bool text_to_image() const { return std::holds_alternative<T2IModel>(model); }
  //! What both kinds share (channels, patch, hidden size, ...).
  const tim::nn::BackboneConfig& backbone() const {
    return std::visit([](const auto& m) -> const tim::nn::BackboneConfig& { return m.config; }, model);
  }
  std::string describe() const {
    return std::visit([](const auto& m) { return m.config.describe(); }, model);
  }
  std::int64_t parameter_count() const {
    return std::visit([](const auto& m) { return m.parameter_count(); }, model);
  }
  const std::vector<std::string>& ignored() const { return backbone().ignored; }
};

//! The model as float, C2I or T2I as its tensor names say (tim::detect_model_kind), configured
//! from shapes, then --config, then __metadata__; the YAML's other keys are checked against the result.
LoadedModel load_model(const ModelOptions& options) {
  if (has_pytorch_extension(options.model_path)) fail_pytorch(options.model_path);
  std::optional<tim::io::YamlNetworkConfig> yaml;
  tim::nn::ConfigOverrides overrides;
  if (!options.config_path.empty()) {
    yaml = tim::io::read_yaml_network_config(options.config_path);
    overrides = yaml->overrides();
  }
  std::optional<std::variant<C2IModel, T2IModel>> model;
  try {
    if (tim::detect_model_kind(options.model_path) == tim::nn::ModelKind::t2i)
      model.emplace(std::in_place_type<T2IModel>, tim::load_t2i<float>(options.model_path, overrides));
    else
      model.emplace(std::in_place_type<C2IModel>, tim::load_c2i<float>(options.model_path, overrides));
  } catch (const tim::Error& e) {
    explain_load_failure(options.model_path, e);
  }
  if (yaml) std::visit([&](const auto& m) { yaml->check_against(m.config); }, *model);
  return {std::move(*model), std::move(yaml)};
}

//! With --device cuda: the class-conditional model on the GPU in `precision`, configured as
//! load_model configures it (shapes, then --config, then __metadata__).
tim_cli::CudaModel load_cuda_model(const ModelOptions& options, const std::string& precision) {
  if (has_pytorch_extension(options.model_path)) fail_pytorch(options.model_path);
  std::optional<tim::io::YamlNetworkConfig> yaml;
  tim::nn::ConfigOverrides overrides;
  if (!options.config_path.empty()) {
    yaml = tim::io::read_yaml_network_config(options.config_path);
    overrides = yaml->overrides();
  }
  std::optional<tim_cli::CudaModel> gpu;
  try {
    tim::check(tim::detect_model_kind(options.model_path) != tim::nn::ModelKind::t2i, options.model_path,
               " is a text-to-image (T2I) TiM: --device cuda runs class-conditional models only so far; run it on "
               "the CPU (drop --device cuda)");
    gpu.emplace(tim_cli::CudaModel::load(options.model_path, precision, overrides));
  } catch (const tim::Error& e) {
    explain_load_failure(options.model_path, e);
  }
  if (yaml) yaml->check_against(gpu->c2i_config());
  return std::move(*gpu);
}

// ---------------------------------------------------------------------------------------------
// tim inspect

struct InspectOptions {
  ModelOptions model;
};

std::string truncated(const std::string& text, std::size_t limit = 100) {
  std::string one_line;
  for (char ch : text) one_line += (ch == '\n' || ch == '\r') ? ' ' : ch;
  if (one_line.size() <= limit) return one_line;
  return one_line.substr(0, limit) + "... (" + std::to_string(text.size()) + " chars)";
}

std::string human_bytes(std::uintmax_t bytes) {
  std::ostringstream o;
  o << bytes << " bytes";
  if (bytes >= 1024) o << std::fixed << std::setprecision(2) << " (" << static_cast<double>(bytes) / (1024.0 * 1024.0) << " MiB)";
  return o.str();
}

std::string with_source(const tim::nn::BackboneConfig& c, const std::string& key) {
  const auto found = c.provenance.find(key);
  if (found == c.provenance.end()) return "";
  std::string source = found->second;
  if (source == "config") source = "--config";
  return "  (from " + source + ")";
}

//! The detected configuration, one field per line: the fields of tim::nn::C2IConfig or
//! tim::nn::T2IConfig.
template <class Config>
void print_configuration(const Config& c) {
  constexpr bool text = std::is_same_v<Config, tim::nn::T2IConfig>;
  const auto yes_no = [](bool value) { return value ? "yes" : "no"; };
  std::cout << "configuration (" << (text ? "T2I" : "C2I") << " TiM):\n"
            << "  in_channels: " << c.in_channels << '\n'
            << "  out_channels: " << c.out_channels << '\n'
            << "  hidden: " << c.hidden << '\n'
            << "  depth: " << c.depth << '\n'
            << "  num_heads: " << c.num_heads << with_source(c, "num_heads") << '\n'
            << "  head_dim: " << c.head_dim() << '\n'
            << "  patch: " << c.patch << '\n';
  if constexpr (text)
    std::cout << "  caption_dim: " << c.caption_dim << "  (width of the caption features cap_feats)\n"
              << "  caption_hidden: " << c.caption_hidden << '\n';
  else
    std::cout << "  num_classes: " << c.num_classes << "  (label " << c.num_classes << " is the null class)\n";
  std::cout << "  adaln_hidden: " << c.adaln_hidden << '\n'
            << "  mlp_hidden: " << c.mlp_hidden << '\n'
            << "  final_adaln_hidden: " << c.final_adaln_hidden << '\n'
            << "  qk_norm: " << yes_no(c.qk_norm) << '\n';
  if constexpr (text) std::cout << "  cross_qk_norm: " << yes_no(c.cross_qk_norm) << '\n';
  std::cout << "  interval_qkv: " << yes_no(c.interval_qkv) << '\n'
            << "  separate_delta_embedder: " << yes_no(c.separate_delta_embedder) << '\n'
            << "  new_condition: " << tim::nn::new_condition_name(c.new_condition) << with_source(c, "new_condition")
            << '\n';
}

void run_inspect(const InspectOptions& options) {
  // Load first: a file that is not a TiM checkpoint fails before anything is printed.
  const LoadedModel loaded = load_model(options.model);
  const auto file = tim::io::SafetensorsFile::open(options.model.model_path);

  std::cout << "file: " << options.model.model_path << '\n';
  std::cout << "size on disk: " << human_bytes(fs::file_size(options.model.model_path)) << '\n';
  std::cout << "tensors: " << file.tensors().size() << '\n';
  std::map<std::string, std::pair<std::size_t, std::uint64_t>> by_dtype;  // count, elements
  for (const auto& info : file.tensors()) {
    auto& entry = by_dtype[std::string(tim::dtype_name(info.dtype))];
    ++entry.first;
    entry.second += static_cast<std::uint64_t>(info.shape.numel());
  }
  std::cout << "dtypes:\n";
  for (const auto& [name, entry] : by_dtype)
    std::cout << "  " << name << ": " << entry.first << " tensors, " << entry.second << " elements\n";

  std::cout << "metadata:";
  if (file.metadata().empty()) std::cout << " none";
  std::cout << '\n';
  for (const auto& [key, value] : file.metadata()) std::cout << "  " << truncated(key, 60) << ": " << truncated(value) << '\n';

  if (loaded.yaml) {
    std::cout << "config: " << loaded.yaml->path;
    if (loaded.yaml->empty()) std::cout << " (no network keys found)";
    std::cout << '\n';
  }

  std::visit([](const auto& model) { print_configuration(model.config); }, loaded.model);

  const auto parameters = loaded.parameter_count();
  std::cout << "parameters: " << parameters << " (" << std::fixed << std::setprecision(2)
            << static_cast<double>(parameters) / 1e6 << " M)\n";

  // Group ignored tensors by their top-level module.
  std::map<std::string, std::size_t> ignored;
  for (const auto& name : loaded.ignored()) ignored[name.substr(0, name.find('.'))]++;
  for (const auto& [module, count] : ignored) {
    std::cout << "ignored: " << module << ".* (" << count << " tensors";
    if (module == "projector") std::cout << ", training-only representation alignment";
    std::cout << ")\n";
  }
  if (ignored.empty()) std::cout << "ignored: nothing\n";
}

Subcommand add_inspect(CLI::App& app, InspectOptions& options) {
  auto* command = app.add_subcommand("inspect", "Print a checkpoint's detected configuration, parameter count, "
                                                "dtypes, metadata and ignored tensors");
  add_model_options(*command, options.model, ModelArgument::positional);
  return {command, [&options] { run_inspect(options); }};
}

// ---------------------------------------------------------------------------------------------
// tim forward

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
  if (!inputs.contains(name)) {
    std::ostringstream found;
    for (const auto& info : inputs.tensors()) found << (found.tellp() > 0 ? ", " : "") << info.name;
    tim::fail("inputs file '", inputs.path(), "' has no tensor '", name, "' (expected ", all_inputs, "; found: ",
              found.tellp() > 0 ? found.str() : std::string("none"), ")");
  }
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

bool same_file(const std::string& a, const std::string& b) {
  std::error_code error;
  return fs::exists(a, error) && fs::exists(b, error) && fs::equivalent(a, b, error);
}

//! Host tensors of float as double (the GPU model's interface, apps/cuda_backend.hpp) and double
//! as float (that interface, and the file format of latents and trajectories).
tim::Tensor<double> to_double(const tim::Tensor<float>& in) {
  auto out = tim::Tensor<double>::empty(in.shape());
  std::copy_n(in.data(), in.numel(), out.data());
  return out;
}
tim::Tensor<float> to_float(const tim::Tensor<double>& x) {
  auto out = tim::Tensor<float>::empty(x.shape());
  for (std::int64_t i = 0; i < x.numel(); ++i) out.data()[i] = static_cast<float>(x.data()[i]);
  return out;
}

void run_forward(const ForwardOptions& options) {
  apply_threads(options.compute);
  check_compute_options(options.compute);
  tim::check(!same_file(options.out_path, options.model.model_path) && !same_file(options.out_path, options.inputs_path),
             "--out '", options.out_path, "' would overwrite the model or the inputs file");

  const auto start = Clock::now();
  // On the CPU any TiM in float; with --device cuda a class-conditional one on the GPU.
  const bool cuda = options.compute.cuda();
  std::optional<LoadedModel> loaded;
  std::optional<tim_cli::CudaModel> gpu;
  if (cuda)
    gpu.emplace(load_cuda_model(options.model, options.compute.precision));
  else
    loaded.emplace(load_model(options.model));
  const tim::nn::BackboneConfig& c = cuda ? gpu->config() : loaded->backbone();
  const bool text = !cuda && loaded->text_to_image();
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
    const auto caption_dim = std::get<T2IModel>(loaded->model).config.caption_dim;
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
    const auto& model = std::get<T2IModel>(loaded->model);
    const auto cap_feats = inputs.load<float>("cap_feats");
    require_finite(cap_feats, "cap_feats", in);
    checked([&] { model.validate_inputs(x, t, r, cap_feats); });
    const auto forward_start = Clock::now();
    model.forward(out, x, t, r, cap_feats);
    forward_seconds = seconds_since(forward_start);
  } else {
    const std::int64_t num_classes = cuda ? gpu->c2i_config().num_classes : std::get<C2IModel>(loaded->model).config.num_classes;
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
      gpu->forward(out_double, to_double(x), to_double(t), to_double(r), y);
      forward_seconds = seconds_since(forward_start);
      out = to_float(out_double);
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
  writer.set_metadata("config", cuda ? gpu->config().describe() : loaded->describe());
  writer.set_metadata("device", cuda ? gpu->device() + ", " + options.compute.precision : std::string("cpu, float32"));
  writer.write(options.out_path);

  if (options.compute.verbose)
    std::cerr << std::fixed << std::setprecision(3) << "tim forward: loaded " << options.model.model_path << " in "
              << load_seconds << " s; forward of " << B << " x " << xs[1] << " x " << xs[2] << " x " << xs[3] << " on "
              << (cuda ? gpu->device() + " in " + options.compute.precision
                       : std::to_string(tim::num_threads()) + " threads")
              << " in " << forward_seconds << " s; total " << seconds_since(start) << " s; wrote " << options.out_path
              << '\n';
}

Subcommand add_forward(CLI::App& app, ForwardOptions& options) {
  auto* command = app.add_subcommand(
      "forward", "Evaluate the network once: out = F(x, t, r, y) (y: labels, or caption features for a text-to-image "
                 "model), inputs and output in safetensors files");
  add_model_options(*command, options.model, ModelArgument::option);
  command
      ->add_option("-i,--inputs", options.inputs_path,
                   "Inputs: x [B,C,H,W] F32, t [B] F32, r [B] F32 (network time inputs, after c_noise), and y [B] "
                   "I64 (class-conditional model) or cap_feats [B,M,cap_dim] F32 (text-to-image model)")
      ->required();
  command->add_option("-o,--out", options.out_path, "Output file: out [B,C,H,W] F32")->required();
  add_compute_options(*command, options.compute);
  return {command, [&options] { run_forward(options); }};
}

// ---------------------------------------------------------------------------------------------
// tim sample

#ifndef TIM_DEFAULT_MODEL  // the shipped model in the source tree (set by apps/CMakeLists.txt)
#define TIM_DEFAULT_MODEL ""
#endif
#ifndef TIM_INSTALLED_MODEL  // where `cmake --install` puts it
#define TIM_INSTALLED_MODEL ""
#endif

constexpr int default_steps = 4;
constexpr std::int64_t default_per_class = 8;

struct SampleOptions {
  ModelOptions model;  // model_path empty: the shipped model
  ComputeOptions compute;
  int steps = default_steps;
  double cfg_scale = 1.0;
  double guidance_low = 0.0;
  double guidance_high = 1.0;
  double stochasticity = 0.0;
  std::uint64_t seed = 0;
  std::uint64_t first_index = 0;
  std::string labels;  // "1,2,3"
  std::int64_t class_label = 0;
  std::string captions_path;  // text-to-image models: cap_feats (and null_cap_feats)
  std::int64_t num = 1;
  std::string transport;  // empty: the model's metadata, else ot-fm
  double t_max = 0, t_min = 0;
  std::string schedule = "linspace";
  std::string mode;  // empty: the model's metadata, else transition
  std::int64_t height = 0, width = 0;
  std::string noise_path;
  std::string out_path;
  bool trajectory = false;
  std::string png_dir;
  std::string grid_path;
  std::string vae_path;  // decode the latents with this VAE before writing images
  std::int64_t vae_tile = 0;     // > 0: decode in tiles of this many latent pixels (tim::vae::decode_tiled)
  std::int64_t vae_overlap = 8;  // latent pixels neighbouring tiles share
  std::int64_t per_class = default_per_class;
  // To tell "not given" from a value.
  CLI::Option *steps_option = nullptr, *labels_option = nullptr, *class_option = nullptr, *num_option = nullptr,
              *t_max_option = nullptr, *t_min_option = nullptr, *height_option = nullptr, *width_option = nullptr,
              *per_class_option = nullptr, *cfg_option = nullptr, *guidance_low_option = nullptr,
              *guidance_high_option = nullptr, *vae_overlap_option = nullptr;
};

bool given(const CLI::Option* option) { return option != nullptr && option->count() > 0; }

//! The shortest decimal spelling of `value` that reads back exactly (metadata, messages).
std::string decimal(double value) {
  char buffer[32];
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(buffer, sizeof buffer, "%.*g", digits, value);
    if (!std::isfinite(value) || std::strtod(buffer, nullptr) == value) break;
  }
  return buffer;
}

//! The shipped model: $TIM_DEFAULT_MODEL when set, else the installed copy, else the source tree's.
std::string default_model_path() {
  std::vector<std::string> candidates;
  const char* from_environment = std::getenv("TIM_DEFAULT_MODEL");
  if (from_environment != nullptr && *from_environment != '\0') {
    candidates.push_back(from_environment);
  } else {
    for (const char* path : {TIM_INSTALLED_MODEL, TIM_DEFAULT_MODEL})
      if (*path != '\0') candidates.push_back(path);
  }
  std::error_code error;
  for (const auto& path : candidates)
    if (fs::is_regular_file(path, error)) return path;
  std::ostringstream looked;
  for (std::size_t i = 0; i < candidates.size(); ++i) looked << (i ? ", " : "") << candidates[i];
  tim::fail("no --model given and the default model tim-fmnist.safetensors was not found (looked for ",
            candidates.empty() ? std::string("nothing: no location compiled in") : looked.str(),
            (from_environment != nullptr && *from_environment != '\0') ? ", from $TIM_DEFAULT_MODEL" : "",
            "); pass --model PATH.safetensors, or get the shipped Fashion-MNIST model: it belongs at "
            "models/tim-fmnist.safetensors in the tim source tree (`cmake --install` copies it to "
            "<prefix>/share/tim/models/), or train and export one (docs/training.md) and set TIM_DEFAULT_MODEL to "
            "its path");
}

//! "1, 2,3" -> {1, 2, 3}; every entry an integer.
std::vector<std::int64_t> parse_labels(const std::string& text) {
  std::vector<std::int64_t> labels;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    std::string part = text.substr(start, comma - start);
    part.erase(0, part.find_first_not_of(" \t"));
    part.erase(part.find_last_not_of(" \t") + 1);
    std::int64_t value = 0;
    const auto [end, error] = std::from_chars(part.data(), part.data() + part.size(), value);
    tim::check(!part.empty() && error == std::errc() && end == part.data() + part.size(), "--labels '", text,
               "': '", part, "' is not an integer (expected a comma-separated list such as 1,2,3)");
    labels.push_back(value);
    start = comma + 1;
  }
  return labels;
}

//! The first one or two integers of a size in metadata ("32x32x1", "32", "[32, 32]"): (H, W).
std::optional<std::pair<std::int64_t, std::int64_t>> parse_size(const std::string& text) {
  std::vector<std::int64_t> numbers;
  for (std::size_t i = 0; i < text.size() && numbers.size() < 2;) {
    if (!std::isdigit(static_cast<unsigned char>(text[i]))) {
      ++i;
      continue;
    }
    std::int64_t value = 0;
    const auto [end, error] = std::from_chars(text.data() + i, text.data() + text.size(), value);
    if (error != std::errc() || value <= 0) return std::nullopt;
    numbers.push_back(value);
    i = static_cast<std::size_t>(end - text.data());
  }
  if (numbers.empty()) return std::nullopt;
  return std::pair{numbers[0], numbers.size() > 1 ? numbers[1] : numbers[0]};
}

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  return text;
}

//! The class names a model's metadata gives: `class_names` (a JSON list of num_classes strings),
//! else the Fashion-MNIST names when `dataset` says fashion-mnist; otherwise none.
std::vector<std::string> class_names_of(const std::map<std::string, std::string>& metadata, std::int64_t num_classes) {
  if (const auto found = metadata.find("class_names"); found != metadata.end()) {
    const auto json = nlohmann::json::parse(found->second, nullptr, /*allow_exceptions=*/false);
    if (json.is_array() && static_cast<std::int64_t>(json.size()) == num_classes &&
        std::all_of(json.begin(), json.end(), [](const auto& name) { return name.is_string(); }))
      return json.template get<std::vector<std::string>>();
  }
  if (const auto found = metadata.find("dataset"); found != metadata.end()) {
    const std::string dataset = lowercase(found->second);
    const bool fashion = dataset.find("fashion-mnist") != std::string::npos ||
                         dataset.find("fashion_mnist") != std::string::npos ||
                         dataset.find("fashionmnist") != std::string::npos;
    if (fashion && num_classes == static_cast<std::int64_t>(tim::cli::fashion_mnist_classes.size()))
      return {tim::cli::fashion_mnist_classes.begin(), tim::cli::fashion_mnist_classes.end()};
  }
  return {};
}

std::string class_label_text(std::int64_t label, const std::vector<std::string>& names, std::int64_t num_classes) {
  if (label == num_classes) return "unconditional";
  if (label >= 0 && label < static_cast<std::int64_t>(names.size())) return names[static_cast<std::size_t>(label)];
  return "class " + std::to_string(label);
}

//! Fails unless the folder `path` would be written into exists (so a long run does not end in a
//! write error).
void require_parent_folder(const std::string& path, const char* option) {
  const fs::path parent = fs::path(path).parent_path();
  std::error_code error;
  tim::check(parent.empty() || fs::is_directory(parent, error), option, " '", path, "': the folder '", parent.string(),
             "' does not exist");
}

//! The initial noise z (B, C, H, W) of a --noise file: its tensor `z`, or its only tensor.
tim::Tensor<double> read_noise(const std::string& path) {
  const auto file = tim::io::SafetensorsFile::open(path);
  std::string name = "z";
  if (!file.contains(name)) {
    std::ostringstream found;
    for (const auto& info : file.tensors()) found << (found.tellp() > 0 ? ", " : "") << info.name;
    tim::check(file.tensors().size() == 1, "--noise '", path,
               "': expected a tensor 'z' [B, C, H, W] (or a file with a single tensor); found: ",
               found.tellp() > 0 ? found.str() : std::string("none"));
    name = file.tensors().front().name;
  }
  const auto& info = file.info(name);
  tim::check(info.dtype == tim::DType::F32 || info.dtype == tim::DType::F64, "--noise '", path, "': tensor '", name,
             "' has dtype ", tim::dtype_name(info.dtype), "; expected F32 or F64");
  tim::check(info.shape.rank() == 4 && info.shape[0] >= 1, "--noise '", path, "': tensor '", name,
             "' has shape ", info.shape, "; expected [B, C, H, W] with B >= 1");
  auto noise = file.load<double>(name).clone();  // owned: the file closes
  for (std::int64_t i = 0; i < noise.numel(); ++i)
    tim::check(std::isfinite(noise.data()[i]), "--noise '", path, "': tensor '", name,
               "' contains a non-finite value at index ", i);
  return noise;
}

//! The caption features of --captions in the network's precision (float): cap_feats [B, M, Dc]
//! and, when the file has it, the null caption null_cap_feats [1, M, Dc] (empty otherwise); the
//! captions' text when the file's __metadata__ `captions` lists B of them (tools/caption_features.py).
struct CaptionFeatures {
  tim::Tensor<float> cap_feats, null_cap_feats;
  std::vector<std::string> texts;
};

CaptionFeatures read_captions(const std::string& path, std::int64_t caption_dim) {
  const auto file = tim::io::SafetensorsFile::open(path);
  if (!file.contains("cap_feats")) {
    std::ostringstream found;
    for (const auto& info : file.tensors()) found << (found.tellp() > 0 ? ", " : "") << info.name;
    tim::fail("--captions '", path, "': expected a tensor 'cap_feats' [B, M, cap_dim] (and 'null_cap_feats' "
              "[1, M, cap_dim] for guidance); found: ", found.tellp() > 0 ? found.str() : std::string("none"));
  }
  // A floating tensor, every value finite, as float.
  const auto load = [&](const char* name) {
    const auto& info = file.info(name);
    const auto d = info.dtype;
    tim::check(d == tim::DType::F32 || d == tim::DType::F64 || d == tim::DType::F16 || d == tim::DType::BF16,
               "--captions '", path, "': tensor '", name, "' has dtype ", tim::dtype_name(d),
               "; expected a floating type (F32, F64, F16 or BF16)");
    auto tensor = file.load<float>(name).clone();  // owned: the file closes
    for (std::int64_t i = 0; i < tensor.numel(); ++i)
      tim::check(std::isfinite(tensor.data()[i]), "--captions '", path, "': tensor '", name,
                 "' contains a non-finite value at index ", i);
    return tensor;
  };
  const tim::Shape shape = file.info("cap_feats").shape;
  tim::check(shape.rank() == 3 && shape[0] >= 1 && shape[1] >= 1 && shape[2] == caption_dim, "--captions '", path,
             "': tensor 'cap_feats' has shape ", shape, "; expected [B, M, cap_dim] = [B, M, ", caption_dim,
             "] (the model's cap_dim) with B, M >= 1");
  CaptionFeatures captions;
  captions.cap_feats = load("cap_feats");
  if (file.contains("null_cap_feats")) {
    const tim::Shape null_shape = file.info("null_cap_feats").shape;
    tim::check(null_shape == tim::Shape{1, shape[1], caption_dim}, "--captions '", path,
               "': tensor 'null_cap_feats' has shape ", null_shape, "; expected [1, ", shape[1], ", ", caption_dim,
               "] (one null caption with the M of cap_feats)");
    captions.null_cap_feats = load("null_cap_feats");
  }
  if (const auto found = file.metadata().find("captions"); found != file.metadata().end()) {
    const auto json = nlohmann::json::parse(found->second, nullptr, /*allow_exceptions=*/false);
    if (json.is_array() && static_cast<std::int64_t>(json.size()) == shape[0] &&
        std::all_of(json.begin(), json.end(), [](const auto& text) { return text.is_string(); }))
      captions.texts = json.template get<std::vector<std::string>>();
  }
  return captions;
}

//! A transport with its range: --transport and --t-max/--t-min, else the model's metadata
//! (`transport`, `t_max`, `t_min`), else OT-FM's defaults.
tim::AnyTransport choose_transport(const SampleOptions& options, const std::map<std::string, std::string>& metadata) {
  tim::AnyTransport transport;
  bool from_metadata = false;
  if (!options.transport.empty()) {
    try {
      transport = tim::parse_transport(options.transport);
    } catch (const tim::Error& e) {
      tim::fail("--transport: ", e.what());
    }
  } else if (const auto found = metadata.find("transport"); found != metadata.end()) {
    try {
      transport = tim::parse_transport(found->second);
      from_metadata = true;
    } catch (const tim::Error& e) {
      tim::fail("the model's metadata 'transport': ", e.what(), "; pass --transport");
    }
  }
  double t_max = std::visit([](const auto& tr) { return tr.t_max; }, transport);
  double t_min = std::visit([](const auto& tr) { return tr.t_min; }, transport);
  auto metadata_number = [&](const char* key, double& value) {
    const auto found = metadata.find(key);
    if (!from_metadata || found == metadata.end()) return;
    char* end = nullptr;
    const double parsed = std::strtod(found->second.c_str(), &end);
    if (end != found->second.c_str() && *end == '\0' && std::isfinite(parsed)) value = parsed;
  };
  metadata_number("t_max", t_max);
  metadata_number("t_min", t_min);
  if (given(options.t_max_option)) t_max = options.t_max;
  if (given(options.t_min_option)) t_min = options.t_min;
  tim::check(std::isfinite(t_max) && std::isfinite(t_min) && t_max > t_min, "--t-max ", decimal(t_max),
             " must be greater than --t-min ", decimal(t_min), " (both finite)");
  tim::set_time_range(transport, t_max, t_min);
  return transport;
}

tim::SampleMode choose_mode(const SampleOptions& options, const std::map<std::string, std::string>& metadata) {
  try {
    if (!options.mode.empty()) return tim::parse_sample_mode(options.mode);
  } catch (const tim::Error& e) {
    tim::fail("--mode: ", e.what());
  }
  if (const auto found = metadata.find("sample_type"); found != metadata.end()) {
    try {
      return tim::parse_sample_mode(found->second);
    } catch (const tim::Error& e) {
      tim::fail("the model's metadata 'sample_type': ", e.what(), "; pass --mode");
    }
  }
  return tim::SampleMode::transition;
}

//! The step count and guidance a run uses: each from its option, else the model's metadata
//! (sample_steps, sample_cfg_scale, sample_guidance_low, sample_guidance_high: the defaults its
//! trainer measured, tools/reference/train.py --export-sampling), else the program's default.
struct SamplingDefaults {
  int steps = default_steps;
  double cfg_scale = 1.0, guidance_low = 0.0, guidance_high = 1.0;
};

SamplingDefaults sampling_defaults(const SampleOptions& options, const std::map<std::string, std::string>& metadata) {
  SamplingDefaults d;
  const auto from_metadata = [&](const CLI::Option* option, const char* key, double& value) {
    const auto found = metadata.find(key);
    if (given(option) || found == metadata.end()) return;
    const std::string& text = found->second;
    char* end = nullptr;
    value = std::strtod(text.c_str(), &end);
    tim::check(!text.empty() && end == text.c_str() + text.size() && std::isfinite(value), "the model's metadata '",
               key, "' is '", text, "', not a finite number");
  };
  double steps = d.steps;
  from_metadata(options.steps_option, "sample_steps", steps);
  tim::check(steps >= 1 && steps <= 1e6 && steps == std::floor(steps), "the model's metadata 'sample_steps' must be a "
             "whole number >= 1, got ", decimal(steps));
  d.steps = given(options.steps_option) ? options.steps : static_cast<int>(steps);
  d.cfg_scale = options.cfg_scale;
  d.guidance_low = options.guidance_low;
  d.guidance_high = options.guidance_high;
  from_metadata(options.cfg_option, "sample_cfg_scale", d.cfg_scale);
  from_metadata(options.guidance_low_option, "sample_guidance_low", d.guidance_low);
  from_metadata(options.guidance_high_option, "sample_guidance_high", d.guidance_high);
  tim::check(d.guidance_low <= d.guidance_high, "the guidance window [", decimal(d.guidance_low), ", ",
             decimal(d.guidance_high), "] (from the options and the model's metadata) is empty: --guidance-low must "
             "not exceed --guidance-high");
  return d;
}

//! Checks the options that need no model, so mistakes fail before anything is loaded.
void check_sample_options(const SampleOptions& o) {
  const bool grid = !o.grid_path.empty(), labels = given(o.labels_option), single_class = given(o.class_option);
  const bool captions = !o.captions_path.empty();
  tim::check(!given(o.steps_option) || o.steps >= 1, "--steps must be at least 1, got ", o.steps);
  tim::check(std::isfinite(o.cfg_scale), "--cfg-scale must be a finite number, got ", o.cfg_scale);
  tim::check(std::isfinite(o.guidance_low) && std::isfinite(o.guidance_high),
             "--guidance-low and --guidance-high must be finite numbers");
  // Both given: checked here; one from the model's metadata: checked once it is read.
  tim::check(!given(o.guidance_low_option) || !given(o.guidance_high_option) || o.guidance_low <= o.guidance_high,
             "--guidance-low ", decimal(o.guidance_low),
             " is greater than --guidance-high ", decimal(o.guidance_high),
             " (the guidance window [low, high] is in fractions of t_max)");
  tim::check(std::isfinite(o.stochasticity) && o.stochasticity >= 0,
             "--stochasticity must be a finite number >= 0, got ", o.stochasticity);
  tim::check(!given(o.height_option) || o.height >= 1, "--height must be at least 1, got ", o.height);
  tim::check(!given(o.width_option) || o.width >= 1, "--width must be at least 1, got ", o.width);
  tim::check(o.vae_tile >= 0, "--vae-tile must be >= 0 latent pixels (0: untiled), got ", o.vae_tile);
  tim::check(o.vae_tile == 0 || !o.vae_path.empty(), "--vae-tile needs --vae");
  tim::check(!given(o.vae_overlap_option) || o.vae_tile > 0, "--vae-overlap needs --vae-tile");
  tim::check(o.vae_tile == 0 || (o.vae_overlap >= 0 && o.vae_overlap < o.vae_tile), "--vae-overlap must be in [0, ",
             "--vae-tile) = [0, ", o.vae_tile, "), got ", o.vae_overlap);
  if (!o.mode.empty()) choose_mode(o, {});  // spelling only; the model may choose later
  if (!o.transport.empty()) choose_transport(o, {});
  // What to sample: labels or classes (class-conditional models), captions (text-to-image models).
  tim::check(!(labels && single_class), "--labels and --class cannot be used together: give a list or one class");
  tim::check(!(captions && (labels || single_class)), "--captions cannot be combined with --labels or --class: a "
             "text-to-image model draws one sample per caption, a class-conditional one per label");
  tim::check(!given(o.num_option) || single_class, "--num needs --class (the class to draw --num samples of)");
  tim::check(!given(o.num_option) || o.num >= 1, "--num must be at least 1, got ", o.num);
  tim::check(!given(o.per_class_option) || grid, "--per-class needs --grid");
  tim::check(!given(o.per_class_option) || !captions,
             "--per-class cannot be used with --captions: the grid shows one sample per caption");
  tim::check(o.per_class >= 1, "--per-class must be at least 1, got ", o.per_class);
  if (grid && !captions)
    tim::check(!labels && !single_class && o.noise_path.empty(), "--grid samples every class itself; "
               "it cannot be combined with --labels, --class or --noise");
  if (!o.noise_path.empty()) {
    tim::check(labels || single_class || captions,
               "--noise needs --labels (one label per noise sample), --class or --captions");
    tim::check(!given(o.num_option), "--num cannot be used with --noise: the batch size is the noise's");
  }
  tim::check(grid || labels || single_class || captions,
             "nothing to sample: give --labels 1,2,3, --class K [--num N] or --grid OUT.png (class-conditional "
             "models), or --captions FEATS.safetensors (text-to-image models)");
  // What to write.
  tim::check(!o.out_path.empty() || !o.png_dir.empty() || grid,
             "no output: give --out OUT.safetensors, --png-dir DIR or --grid OUT.png");
  tim::check(!o.trajectory || !o.out_path.empty(), "--trajectory needs --out (the trajectory is stored there)");
  if (!o.out_path.empty()) require_parent_folder(o.out_path, "--out");
  if (grid) require_parent_folder(o.grid_path, "--grid");
}

//! Shows "step i/N" on stderr while sampling, only when stderr is a terminal.
struct Progress {
  bool enabled = ::isatty(::fileno(stderr)) != 0;
  Clock::time_point start = Clock::now();

  bool operator()(const tim::StepInfo<>& info) const {
    if (!enabled) return true;
    std::fprintf(stderr, "\rtim sample: step %d/%d  t %.4g -> %.4g%s  %.1f s\033[K", info.step + 1, info.steps,
                 info.t, info.r, info.guided ? " (guided)" : "", seconds_since(start));
    if (info.step + 1 == info.steps) std::fputc('\n', stderr);
    std::fflush(stderr);
    return true;
  }
  //! The same line without the step's times (a GPU run reports only its position).
  bool operator()(int step, int steps) const {
    if (!enabled) return true;
    std::fprintf(stderr, "\rtim sample: step %d/%d  %.1f s\033[K", step + 1, steps, seconds_since(start));
    if (step + 1 == steps) std::fputc('\n', stderr);
    std::fflush(stderr);
    return true;
  }
};

//! "key: value" lines of the generation parameters, for a PNG's "parameters" text chunk.
std::string parameters_text(const std::vector<std::pair<std::string, std::string>>& parameters) {
  std::string text;
  for (const auto& [key, value] : parameters) text += key + ": " + value + "\n";
  return text;
}

//! What is sampled: labels (B; none for a text-to-image model, whose rows are its captions), the
//! initial noise (B, C, H, W) and each row's sample index (the noise stream its initial noise and
//! its stochastic steps draw from).
struct SampleBatch {
  std::vector<std::int64_t> labels;
  tim::Tensor<double> noise;
  std::vector<std::uint64_t> sample_indices;
  std::string noise_source;  // for the metadata: the --noise file, or how the noise was generated
};

//! The labels of --labels, --class/--num or --grid (every class, --per-class each), or the
//! --noise file's batch with --labels or --class; each checked against the model's classes.
std::vector<std::int64_t> choose_labels(const SampleOptions& options, std::int64_t num_classes,
                                        std::optional<std::int64_t> noise_batch) {
  std::vector<std::int64_t> labels;
  if (!options.grid_path.empty()) {
    for (std::int64_t label = 0; label < num_classes; ++label) labels.insert(labels.end(), options.per_class, label);
  } else if (given(options.labels_option)) {
    labels = parse_labels(options.labels);
  } else {
    labels.assign(static_cast<std::size_t>(noise_batch.value_or(options.num)), options.class_label);
  }
  if (noise_batch)
    tim::check(static_cast<std::int64_t>(labels.size()) == *noise_batch, "--labels gives ", labels.size(),
               " labels but the --noise tensor has ", *noise_batch, " samples");
  for (std::size_t b = 0; b < labels.size(); ++b) {
    if (labels[b] >= 0 && labels[b] <= num_classes) continue;
    const std::string range = " is outside [0, " + std::to_string(num_classes) + "] (classes 0.." +
                              std::to_string(num_classes - 1) + ", " + std::to_string(num_classes) +
                              " = unconditional)";
    if (given(options.class_option)) tim::fail("--class ", labels[b], range);
    tim::fail("--labels: label ", labels[b], " at index ", b, range);
  }
  return labels;
}

//! The latent size (H, W): --height/--width where given, else the model's metadata
//! (`latent_size`, else `image_size`); an error when neither says.
std::pair<std::int64_t, std::int64_t> latent_size(const CLI::Option* height_option, std::int64_t height,
                                                  const CLI::Option* width_option, std::int64_t width,
                                                  const std::map<std::string, std::string>& metadata) {
  std::optional<std::pair<std::int64_t, std::int64_t>> native;
  for (const char* key : {"latent_size", "image_size"})
    if (const auto found = metadata.find(key); !native && found != metadata.end()) native = parse_size(found->second);
  tim::check(native || (given(height_option) && given(width_option)),
             "the model's metadata gives no latent size (no 'latent_size' or 'image_size' key): pass --height and "
             "--width (in latent pixels, multiples of the patch size)");
  return {given(height_option) ? height : native->first, given(width_option) ? width : native->second};
}

//! The batch: for a class-conditional model its labels (num_classes checks them), for a
//! text-to-image one `captions` rows; then the noise, from --noise (whose batch must agree) or
//! generated.
SampleBatch make_batch(const SampleOptions& options, const tim::nn::BackboneConfig& c, std::int64_t num_classes,
                       std::optional<std::int64_t> captions, const std::map<std::string, std::string>& metadata,
                       const tim::AnyTransport& transport, double t_0) {
  SampleBatch batch;
  const auto choose_rows = [&](std::optional<std::int64_t> noise_batch) -> std::int64_t {
    if (!captions) {
      batch.labels = choose_labels(options, num_classes, noise_batch);
      return static_cast<std::int64_t>(batch.labels.size());
    }
    tim::check(!noise_batch || *noise_batch == *captions, "--captions gives ", *captions,
               " captions but the --noise tensor has ", noise_batch.value_or(0), " samples");
    return *captions;
  };
  if (!options.noise_path.empty()) {
    batch.noise = read_noise(options.noise_path);
    const tim::Shape& shape = batch.noise.shape();
    tim::check(shape[1] == c.in_channels, "--noise '", options.noise_path, "': shape ", shape, " has ", shape[1],
               " channels; the model has ", c.in_channels);
    tim::check(!given(options.height_option) || options.height == shape[2], "--height ", options.height,
               " disagrees with the --noise shape ", shape);
    tim::check(!given(options.width_option) || options.width == shape[3], "--width ", options.width,
               " disagrees with the --noise shape ", shape);
    tim::check(shape[2] % c.patch == 0 && shape[3] % c.patch == 0, "height ", shape[2], " and width ", shape[3],
               " must be multiples of the model's patch size ", c.patch);
    choose_rows(shape[0]);
    for (std::int64_t b = 0; b < shape[0]; ++b)
      batch.sample_indices.push_back(options.first_index + static_cast<std::uint64_t>(b));
    batch.noise_source = options.noise_path;
    return batch;
  }

  const std::int64_t B = choose_rows(std::nullopt);
  const auto [H, W] = latent_size(options.height_option, options.height, options.width_option, options.width, metadata);
  tim::check(H % c.patch == 0 && W % c.patch == 0, "height ", H, " and width ", W,
             " must be multiples of the model's patch size ", c.patch);
  // Row b draws sample index first + b; in a class --grid, column k of every row draws first + k,
  // so a column shows one noise under every class (row K equals `--class K --num per-class`).
  const std::int64_t distinct = options.grid_path.empty() || captions ? B : options.per_class;
  const auto drawn = tim::initial_noise({distinct, c.in_channels, H, W}, options.seed, options.first_index);
  batch.noise = tim::Tensor<double>::empty({B, c.in_channels, H, W});
  const std::int64_t per_sample = c.in_channels * H * W;
  for (std::int64_t b = 0; b < B; ++b) {
    std::copy_n(drawn.data() + (b % distinct) * per_sample, per_sample, batch.noise.data() + b * per_sample);
    batch.sample_indices.push_back(options.first_index + static_cast<std::uint64_t>(b % distinct));
  }
  batch.noise_source = "tim::initial_noise, seed " + std::to_string(options.seed) + ", row b from sample_indices[b]";
  // VE's noise has standard deviation t: start from t_0 z (docs/sampling.md, "Noise scale").
  if (std::holds_alternative<tim::VeSde>(transport)) {
    for (std::int64_t i = 0; i < batch.noise.numel(); ++i) batch.noise.data()[i] *= t_0;
    batch.noise_source += ", times t_0 = " + decimal(t_0);
  }
  return batch;
}

constexpr std::int64_t caption_grid_columns = 8;

//! The PNGs of --grid and --png-dir from float latents (B, C, H, W), C = 1 or 3: rows by class
//! (class-conditional), or the samples in batch order, 8 to a row, without labels (text-to-image:
//! batch.labels is empty; `caption_texts` go into each sample's parameters when known).
void write_images(const SampleOptions& options, const tim::Tensor<float>& latents, const SampleBatch& batch,
                  const std::vector<std::string>& class_names, std::int64_t num_classes,
                  const std::vector<std::string>& caption_texts,
                  const std::vector<std::pair<std::string, std::string>>& parameters) {
  const auto B = latents.dim(0);
  const auto C = static_cast<int>(latents.dim(1));
  const auto H = static_cast<int>(latents.dim(2)), W = static_cast<int>(latents.dim(3));
  const bool by_class = !batch.labels.empty();
  // Pixels as the released scripts write them: the C2I mapping, or the T2I one for a T2I model.
  const auto mapping = by_class ? tim::cli::PixelMapping::c2i : tim::cli::PixelMapping::t2i;
  auto image_of = [&](std::int64_t b) {
    return tim::cli::latent_image(latents.data() + b * C * H * W, C, H, W, mapping);
  };
  auto label_of = [&](std::int64_t b) { return batch.labels[static_cast<std::size_t>(b)]; };

  std::vector<tim::cli::GridRow> rows;
  if (by_class) {
    // One row per class, in label order; each row's samples in batch order.
    std::map<std::int64_t, std::vector<std::int64_t>> members_of_class;
    for (std::int64_t b = 0; b < B; ++b) members_of_class[label_of(b)].push_back(b);
    for (const auto& [label, members] : members_of_class) {
      rows.push_back({class_label_text(label, class_names, num_classes), {}});
      for (const auto b : members) rows.back().images.push_back(image_of(b));
    }
  } else {
    for (std::int64_t b = 0; b < B; ++b) {
      if (b % caption_grid_columns == 0) rows.push_back({"", {}});
      rows.back().images.push_back(image_of(b));
    }
  }
  const auto grid = tim::cli::labelled_grid(rows, tim::cli::grid_scale(H, W));
  const std::vector<tim::io::PngText> grid_text{{"parameters", parameters_text(parameters)}, {"Software", "tim"}};
  if (!options.grid_path.empty()) tim::io::write_png(options.grid_path, grid, grid_text);
  if (options.png_dir.empty()) return;

  for (std::int64_t b = 0; b < B; ++b) {
    char name[64];
    auto sample_parameters = parameters;
    if (by_class) {
      std::snprintf(name, sizeof name, "sample_%04lld_class_%lld.png", static_cast<long long>(b),
                    static_cast<long long>(label_of(b)));
      sample_parameters.emplace_back("label", std::to_string(label_of(b)) + " (" +
                                                  class_label_text(label_of(b), class_names, num_classes) + ")");
    } else {
      std::snprintf(name, sizeof name, "sample_%04lld.png", static_cast<long long>(b));
      sample_parameters.emplace_back("caption_index", std::to_string(b));
      if (!caption_texts.empty())
        sample_parameters.emplace_back("caption", truncated(caption_texts[static_cast<std::size_t>(b)], 1000));
    }
    sample_parameters.emplace_back("sample_index", std::to_string(batch.sample_indices[static_cast<std::size_t>(b)]));
    tim::io::write_png((fs::path(options.png_dir) / name).string(), image_of(b),
                       {{"parameters", parameters_text(sample_parameters)}, {"Software", "tim"}});
  }
  tim::io::write_png((fs::path(options.png_dir) / "grid.png").string(), grid, grid_text);
}

//! The latent decoder of --vae, in float: the SD VAE (AutoencoderKL, C2I-256 latents) or the DC-AE
//! (AutoencoderDC, C2I-512 and T2I latents), on the CPU or (with --device cuda) on the GPU.
//! Decodes one sample at a time, so memory stays that of one image whatever the batch.
struct VaeDecoder {
  std::optional<tim::vae::SdVaeDecoder<float>> sd;
  std::optional<tim::vae::DcAeDecoder<float>> dc;
  std::optional<tim_cli::CudaVaeDecoder> gpu;  // with --device cuda: the weights on the GPU (sd, dc dropped)
  tim::vae::TileOptions tiles{.tile = 0};       // tile 0: untiled
  std::string description;                     // the decoder's describe(); empty: no decoder
  std::int64_t channels = 0, scale = 1;         // latent channels, image size per latent size

  //! The GPU decoder as tim::vae::decode_tiled sees a decoder.
  struct GpuTiles {
    struct {
      std::int64_t latent_channels = 0, scale = 1;
      std::int64_t upscale() const { return scale; }
    } config;
    const tim_cli::CudaVaeDecoder* gpu = nullptr;
    tim::Tensor<float> decode(const tim::Tensor<float>& latents) const { return gpu->decode(latents); }
  };

  bool empty() const { return description.empty(); }
  bool on_gpu() const { return gpu.has_value(); }
  const std::string& describe() const { return description; }
  std::int64_t latent_channels() const { return channels; }
  std::int64_t upscale() const { return scale; }
  //! One sample's images, tiled when tiles.tile > 0.
  tim::Tensor<float> decode_one(const tim::Tensor<float>& latent) const {
    if (tiles.tile == 0) return gpu ? gpu->decode(latent) : sd ? sd->decode(latent) : dc->decode(latent);
    if (gpu) {
      GpuTiles adapter;
      adapter.config.latent_channels = latent_channels();
      adapter.config.scale = upscale();
      adapter.gpu = &*gpu;
      return tim::vae::decode_tiled(adapter, latent, tiles);
    }
    return sd ? tim::vae::decode_tiled(*sd, latent, tiles) : tim::vae::decode_tiled(*dc, latent, tiles);
  }
  //! images (B, 3, H, W) from latents (B, L, h, w).
  tim::Tensor<float> decode(const tim::Tensor<float>& latents) const {
    const std::int64_t B = latents.dim(0), per_latent = latents.numel() / B;
    tim::Tensor<float> images;
    for (std::int64_t b = 0; b < B; ++b) {
      auto one = tim::Tensor<float>::empty({1, latents.dim(1), latents.dim(2), latents.dim(3)});
      std::copy_n(latents.data() + b * per_latent, per_latent, one.data());
      const auto image = decode_one(one);
      if (b == 0) images = tim::Tensor<float>::empty({B, image.dim(1), image.dim(2), image.dim(3)});
      std::copy_n(image.data(), image.numel(), images.data() + b * image.numel());
    }
    return images;
  }
};

//! Loads --vae: the safetensors weights, an SD VAE (it has post_quant_conv.weight) or a DC-AE
//! (decoder.conv_in.weight without it), plus what the config.json beside them says when there is
//! one (the diffusers layout): its class must match, its norm_num_groups / attention_head_dim /
//! decoder_in_shortcut / scaling_factor are used. Checks that the decoder takes the model's latents.
VaeDecoder load_vae(const std::string& path, const tim::nn::BackboneConfig& c, bool cuda,
                    const tim::vae::TileOptions& tiles) {
  try {
    const auto file = tim::io::SafetensorsFile::open(path);
    const bool sd_vae = file.contains("post_quant_conv.weight");
    tim::check(sd_vae || file.contains("decoder.conv_in.weight"), "not a VAE decoder: it has neither "
               "'post_quant_conv.weight' (an SD VAE, AutoencoderKL) nor 'decoder.conv_in.weight' (a DC-AE, AutoencoderDC)");
    const char* kind = sd_vae ? "AutoencoderKL" : "AutoencoderDC";
    const auto config = tim::vae::read_diffusers_vae_config_beside(path);
    if (config) {
      tim::check(config->class_name.empty() || config->class_name == kind, "the config.json beside it describes a ",
                 config->class_name, " but the weights are an ", kind, sd_vae ? " (SD VAE)" : " (DC-AE)");
      tim::check(!config->shift_factor || *config->shift_factor == 0, "the config.json beside it has shift_factor ",
                 decimal(*config->shift_factor), "; tim decodes latents with zero shift only (SPEC 8)");
    }
    VaeDecoder decoder;
    decoder.tiles = tiles;
    if (sd_vae) {
      tim::vae::SdVaeOptions vae_options;  // sd-vae-ft-ema's values unless config.json says otherwise
      if (config && config->norm_num_groups) vae_options.groups = *config->norm_num_groups;
      if (config && config->scaling_factor) vae_options.scaling_factor = *config->scaling_factor;
      decoder.sd.emplace(tim::vae::load_sd_vae_decoder<float>(file, vae_options));
      decoder.description = decoder.sd->config.describe();
      decoder.channels = decoder.sd->config.latent_channels;
      decoder.scale = decoder.sd->config.upscale();
    } else {
      tim::vae::DcAeOptions vae_options;  // dc-ae-f32c32-sana-1.1's values unless config.json says otherwise
      if (config && config->attention_head_dim) vae_options.attention_head_dim = *config->attention_head_dim;
      if (config && config->decoder_in_shortcut) vae_options.in_shortcut = *config->decoder_in_shortcut;
      if (config && config->scaling_factor) vae_options.scaling_factor = *config->scaling_factor;
      decoder.dc.emplace(tim::vae::load_dc_ae_decoder<float>(file, vae_options));
      decoder.description = decoder.dc->config.describe();
      decoder.channels = decoder.dc->config.latent_channels;
      decoder.scale = decoder.dc->config.upscale();
    }
    tim::check(decoder.latent_channels() == c.in_channels, "the decoder takes latents with ",
               decoder.latent_channels(), " channels, but the model samples ", c.in_channels);
    if (cuda) {  // the weights now live on the GPU: drop the host copy (637 MB for the DC-AE)
      decoder.gpu = sd_vae ? tim_cli::CudaVaeDecoder::upload(*decoder.sd) : tim_cli::CudaVaeDecoder::upload(*decoder.dc);
      decoder.sd.reset();
      decoder.dc.reset();
    }
    return decoder;
  } catch (const tim::Error& e) {
    tim::fail("--vae '", path, "': ", e.what());
  }
}

void run_sample(const SampleOptions& options) {
  apply_threads(options.compute);
  check_compute_options(options.compute);
  check_sample_options(options);

  const auto start = Clock::now();
  ModelOptions model_options = options.model;
  if (model_options.model_path.empty()) model_options.model_path = default_model_path();
  const std::string& model_path = model_options.model_path;
  for (const auto* out : {&options.out_path, &options.grid_path})
    tim::check(out->empty() || (!same_file(*out, model_path) && !same_file(*out, options.noise_path) &&
                                !same_file(*out, options.captions_path)),
               "'", *out, "' would overwrite the model, the noise or the captions file");

  // On the CPU any TiM in float; with --device cuda a class-conditional one on the GPU.
  const bool cuda = options.compute.cuda();
  std::optional<LoadedModel> loaded;
  std::optional<tim_cli::CudaModel> gpu;
  if (cuda)
    gpu.emplace(load_cuda_model(model_options, options.compute.precision));
  else
    loaded.emplace(load_model(model_options));
  const tim::nn::BackboneConfig& c = cuda ? gpu->config() : loaded->backbone();
  const bool text = !cuda && loaded->text_to_image();
  const auto metadata = tim::io::SafetensorsFile::open(model_path).metadata();
  const SamplingDefaults settings = sampling_defaults(options, metadata);
  // The decoder, loaded (and checked against the model) before anything is sampled.
  const VaeDecoder vae_decoder = options.vae_path.empty()
                                    ? VaeDecoder{}
                                    : load_vae(options.vae_path, c, cuda,
                                               {.tile = options.vae_tile, .overlap = options.vae_overlap});
  const double load_seconds = seconds_since(start);

  // A class-conditional model samples labels, a text-to-image one captions.
  if (text) {
    const char* given_instead = given(options.labels_option)  ? "--labels"
                                : given(options.class_option) ? "--class"
                                                              : "a class --grid";
    tim::check(!options.captions_path.empty(), model_path, " is a text-to-image (T2I) TiM: it samples from caption "
               "features, not from ", given_instead, "; give --captions FEATS.safetensors (cap_feats [B, M, cap_dim], "
               "and null_cap_feats [1, M, cap_dim] for guidance; tools/caption_features.py writes them)");
  } else {
    tim::check(options.captions_path.empty(), "--captions needs a text-to-image model; ", model_path,
               " is a class-conditional (C2I) TiM: give --labels, --class or --grid");
  }
  std::optional<CaptionFeatures> captions;
  if (text) {
    captions = read_captions(options.captions_path, std::get<T2IModel>(loaded->model).config.caption_dim);
    tim::check(settings.cfg_scale <= 1 || !captions->null_cap_feats.empty_tensor(), "--cfg-scale ",
               decimal(settings.cfg_scale), " needs the null caption for guidance, but the --captions file '",
               options.captions_path, "' has no tensor 'null_cap_feats' [1, M, cap_dim] (tools/caption_features.py "
               "writes it: the features of the empty caption)");
  }
  const std::int64_t num_classes = text  ? 0
                                   : cuda ? gpu->c2i_config().num_classes
                                          : std::get<C2IModel>(loaded->model).config.num_classes;

  // The settings, each from its option, else the model's metadata, else the default.
  const tim::AnyTransport transport = choose_transport(options, metadata);
  const double t_max = std::visit([](const auto& tr) { return tr.t_max; }, transport);
  const double t_min = std::visit([](const auto& tr) { return tr.t_min; }, transport);
  tim::check(options.stochasticity == 0 || std::holds_alternative<tim::OtFm>(transport), "--stochasticity ",
             decimal(options.stochasticity),
             " needs the ot-fm transport (the only one with a stochastic transition), not ",
             tim::transport_name(transport));
  const tim::SampleMode mode = choose_mode(options, metadata);
  const bool listed_times = options.schedule.find(',') != std::string::npos;
  const int steps_asked = given(options.steps_option) ? options.steps : (listed_times ? 0 : settings.steps);
  tim::AnySchedule schedule;
  std::vector<double> times;
  try {
    schedule = tim::parse_schedule(options.schedule, steps_asked);
    times = tim::make_time_grid(schedule, t_max, t_min);
  } catch (const tim::Error& e) {
    tim::fail("--schedule: ", e.what());
  }
  const int steps = static_cast<int>(times.size()) - 1;

  // Images: the latents themselves (1 or 3 channels), or what --vae decodes them into.
  const bool images = !options.png_dir.empty() || !options.grid_path.empty();
  tim::check(!images || !vae_decoder.empty() || c.in_channels == 1 || c.in_channels == 3,
             "PNG output (--png-dir, --grid) needs latents with 1 (gray) or 3 (RGB) channels; this model's have ",
             c.in_channels, ", which need a VAE decoder to become images: give --vae "
             "diffusion_pytorch_model.safetensors (docs/vae.md)");

  const std::optional<std::int64_t> caption_count =
      captions ? std::optional<std::int64_t>(captions->cap_feats.dim(0)) : std::nullopt;
  const SampleBatch batch = make_batch(options, c, num_classes, caption_count, metadata, transport, times.front());
  const auto B = batch.noise.dim(0);
  auto labels = tim::Tensor<std::int64_t>::empty({static_cast<std::int64_t>(batch.labels.size())});
  std::copy(batch.labels.begin(), batch.labels.end(), labels.data());

  // Every generation parameter, for the safetensors metadata and the PNG text chunks.
  std::string indices_text;
  for (std::size_t b = 0; b < batch.sample_indices.size(); ++b) {
    if (b > 0) indices_text += ',';
    indices_text += std::to_string(batch.sample_indices[b]);
  }
  std::vector<std::pair<std::string, std::string>> parameters{
      {"model", model_path},
      {"steps", std::to_string(steps)},
      {"cfg_scale", decimal(settings.cfg_scale)},
      {"guidance_low", decimal(settings.guidance_low)},
      {"guidance_high", decimal(settings.guidance_high)},
      {"stochasticity", decimal(options.stochasticity)},
      {"seed", std::to_string(options.seed)},
      {"first_sample_index", std::to_string(options.first_index)},
      {"sample_indices", indices_text},
      {"transport", std::string(tim::transport_name(transport))},
      {"t_max", decimal(t_max)},
      {"t_min", decimal(t_min)},
      {"schedule", schedule.describe()},
      {"mode", std::string(tim::sample_mode_name(mode))},
      {"noise", batch.noise_source},
      {"height", std::to_string(batch.noise.dim(2))},
      {"width", std::to_string(batch.noise.dim(3))},
      {"device", cuda ? gpu->device() + ", " + options.compute.precision : std::string("cpu, float32")},
      {"tim_version", tim::version_string},
  };
  if (!options.model.config_path.empty())
    parameters.insert(parameters.begin() + 1, {"config", options.model.config_path});
  if (text) parameters.insert(parameters.begin() + 1, {"captions", options.captions_path});
  if (!vae_decoder.empty()) {
    parameters.insert(parameters.begin() + 1, {"vae", options.vae_path});
    parameters.insert(parameters.begin() + 2, {"vae_config", vae_decoder.describe()});
  }

  if (!options.png_dir.empty()) {  // before sampling, so a bad folder fails fast
    std::error_code error;
    fs::create_directories(options.png_dir, error);
    tim::check(fs::is_directory(options.png_dir, error), "--png-dir '", options.png_dir, "': cannot create the folder",
               error ? ": " + error.message() : std::string());
  }

  const auto sample_start = Clock::now();
  const tim::SamplerOptions<> sampler_options{.cfg_scale = settings.cfg_scale,
                                            .guidance_low = settings.guidance_low,
                                            .guidance_high = settings.guidance_high,
                                            .stochasticity = options.stochasticity,
                                            .mode = mode,
                                            .seed = options.seed,
                                            .sample_indices = batch.sample_indices,
                                            .keep_trajectory = options.trajectory,
                                            .on_step = Progress{}};
  const tim::SampleResult result = std::visit(
      [&](auto chosen) {
        if (text) {
          auto& network = std::get<T2IModel>(loaded->model);
          if (!captions->null_cap_feats.empty_tensor()) network.set_null_caption(captions->null_cap_feats);
          tim::TransitionSampler sampler{network, chosen, schedule};
          return sampler.sample(batch.noise, captions->cap_feats, sampler_options);
        }
        if (cuda) {
          // The whole run on the GPU (the state stays on the device); progress instead of on_step.
          tim::SamplerOptions<> gpu_options = sampler_options;
          gpu_options.on_step = {};
          return gpu->sample(chosen, schedule, batch.noise, labels, gpu_options,
                             [progress = Progress{}](int step, int steps) { return progress(step, steps); });
        }
        tim::TransitionSampler sampler{std::get<C2IModel>(loaded->model), chosen, schedule};
        return sampler.sample(batch.noise, labels, sampler_options);
      },
      transport);
  const double sample_seconds = seconds_since(sample_start);
  const tim::Tensor<float> latents = to_float(result.x);
  const auto decode_start = Clock::now();
  const tim::Tensor<float> decoded = vae_decoder.empty() ? tim::Tensor<float>{} : vae_decoder.decode(latents);
  const double decode_seconds = seconds_since(decode_start);

  if (!options.out_path.empty()) {
    tim::io::SafetensorsWriter writer;
    writer.add("latents", latents);
    if (!vae_decoder.empty()) writer.add("images", decoded);
    if (!text) writer.add("labels", labels);
    if (options.trajectory) {
      writer.add("trajectory", to_float(result.trajectory));
      writer.add("times", tim::DType::F64, tim::Shape{static_cast<std::int64_t>(result.times.size())},
                 result.times.data());
    }
    for (const auto& [key, value] : parameters) writer.set_metadata(key, value);
    writer.write(options.out_path);
  }
  if (images)
    write_images(options, vae_decoder.empty() ? latents : decoded, batch, text ? std::vector<std::string>{} : class_names_of(metadata, num_classes),
                 num_classes, captions ? captions->texts : std::vector<std::string>{}, parameters);

  if (options.compute.verbose)
    std::cerr << std::fixed << std::setprecision(3) << "tim sample: loaded " << model_path << " in " << load_seconds
              << " s; " << B << " samples of " << latents.dim(1) << " x " << latents.dim(2) << " x " << latents.dim(3)
              << ", " << steps << " steps on "
              << (cuda ? gpu->device() + " in " + options.compute.precision
                       : std::to_string(tim::num_threads()) + " threads")
              << " in " << sample_seconds << " s"
              << (vae_decoder.empty() ? std::string()
                                      : "; decoded to " + std::to_string(decoded.dim(2)) + " x " +
                                            std::to_string(decoded.dim(3)) + " images on the " + (vae_decoder.on_gpu() ? "GPU" : "CPU") + " in " +
                                            decimal(std::round(decode_seconds * 1000) / 1000) + " s")
              << "; total " << seconds_since(start) << " s\n";
}

Subcommand add_sample(CLI::App& app, SampleOptions& options) {
  auto* command = app.add_subcommand(
      "sample", "Generate latents (and images, for 1- or 3-channel models) with the any-step transition sampler");
  add_model_options(*command, options.model, ModelArgument::optional_option);
  options.steps_option = command->add_option("-n,--steps", options.steps,
                                             "Sampling steps N >= 1 (default: the model's metadata, else " +
                                                 std::to_string(default_steps) + "; a listed --schedule gives its own)");
  options.cfg_option = command->add_option(
      "--cfg-scale", options.cfg_scale,
      "Classifier-free guidance scale; guidance only when > 1 (default: the model's metadata, else 1)");
  options.guidance_low_option = command->add_option(
      "--guidance-low", options.guidance_low,
      "Guidance window start, a fraction of t_max (default: the model's metadata, else 0)");
  options.guidance_high_option = command->add_option(
      "--guidance-high", options.guidance_high,
      "Guidance window end, a fraction of t_max; above 1 guides the first step too (default: the model's metadata, "
      "else 1)");
  command->add_option("--stochasticity", options.stochasticity,
                      "OT-FM stochasticity s >= 0 (default 0: deterministic)");
  command->add_option("--seed", options.seed, "Seed of the noise generator (default 0)");
  command->add_option("--first-index", options.first_index,
                      "Sample index of the first batch row: row b draws noise stream first + b (default 0)");
  options.labels_option = command->add_option("--labels", options.labels, "Class labels, one per sample: 1,2,3");
  options.class_option = command->add_option("--class", options.class_label, "One class for every sample");
  options.num_option = command->add_option("--num", options.num, "Number of samples of --class (default 1)");
  command->add_option("--captions", options.captions_path,
                      "Text-to-image models: caption features, a safetensors file with cap_feats [B,M,cap_dim] (one "
                      "sample per caption) and null_cap_feats [1,M,cap_dim] (needed for --cfg-scale > 1)");
  command->add_option("--transport", options.transport,
                      "ot-fm, trigflow, edm, vp or ve (default: the model's metadata, else ot-fm)");
  options.t_max_option = command->add_option("--t-max", options.t_max, "Largest time (default: the transport's)");
  options.t_min_option = command->add_option("--t-min", options.t_min, "Smallest time (default: the transport's)");
  command->add_option("--schedule", options.schedule,
                      "linspace (default), shift:S, karras:RHO, or a decreasing list of times 1,0.5,0");
  command->add_option("--mode", options.mode,
                      "transition or diffusion (ddiffusion) (default: the model's metadata, else transition)");
  options.height_option =
      command->add_option("--height", options.height, "Latent height (default: the model's metadata)");
  options.width_option =
      command->add_option("--width", options.width, "Latent width (default: the model's metadata)");
  command->add_option("--noise", options.noise_path,
                      "Initial noise: a safetensors file with z [B,C,H,W] F32/F64 (default: generated from --seed)");
  command->add_option("-o,--out", options.out_path,
                      "Output: latents [B,C,H,W] F32, labels [B] I64 (class-conditional models) and the parameters "
                      "in __metadata__");
  command->add_flag("--trajectory", options.trajectory,
                    "Also store trajectory [N+1,B,C,H,W] F32 and times [N+1] F64 in --out");
  command->add_option("--vae", options.vae_path,
                      "Decode the latents into images with this VAE before writing --png-dir/--grid (and 'images' "
                      "into --out): a diffusion_pytorch_model.safetensors of an SD VAE (AutoencoderKL, e.g. "
                      "sd-vae-ft-ema) or a DC-AE (AutoencoderDC, e.g. dc-ae-f32c32-sana-1.1); a config.json beside "
                      "it gives norm_num_groups, attention_head_dim, decoder_in_shortcut and scaling_factor "
                      "(default: the released decoders' values). Decodes in float, on the GPU with --device cuda");
  command->add_option("--vae-tile", options.vae_tile,
                      "Decode in tiles of this many latent pixels with blended seams (bounded memory for large "
                      "images; tiles see only themselves, so the image differs slightly; docs/vae.md). Default 0: "
                      "untiled");
  options.vae_overlap_option = command->add_option("--vae-overlap", options.vae_overlap,
                      "With --vae-tile: latent pixels neighbouring tiles share, in [0, tile) (default 8)");
  command->add_option("--png-dir", options.png_dir,
                      "Write one PNG per sample and a labelled grid.png into this folder");
  command->add_option("--grid", options.grid_path,
                      "Sample --per-class images of every class and write a labelled grid PNG (with --captions: "
                      "a grid of the caption samples, 8 to a row)");
  options.per_class_option = command->add_option(
      "--per-class", options.per_class,
      "Samples per class for --grid (default " + std::to_string(default_per_class) + ")");
  add_compute_options(*command, options.compute);
  return {command, [&options] { run_sample(options); }};
}

// ---------------------------------------------------------------------------------------------
// tim bench

struct BenchOptions {
  ModelOptions model;
  ComputeOptions compute;
  std::int64_t batch = 1;
  std::int64_t height = 0, width = 0;
  std::int64_t caption_tokens = 64;
  int warmup = 1;
  int runs = 5;
  bool json = false;
  CLI::Option *height_option = nullptr, *width_option = nullptr;
};

//! Random inputs for one evaluation (x ~ U(-1, 1), t in (0.5, 1), r in (0, 0.5), labels b mod
//! classes, caption features ~ U(-1, 1)), seeded so repeated benchmarks see the same data.
tim::Tensor<float> bench_uniform(const tim::Shape& shape, std::mt19937& engine, float lo, float hi) {
  auto tensor = tim::Tensor<float>::empty(shape);
  std::uniform_real_distribution<float> uniform(lo, hi);
  for (std::int64_t i = 0; i < tensor.numel(); ++i) tensor.data()[i] = uniform(engine);
  return tensor;
}

void run_bench(const BenchOptions& options) {
  apply_threads(options.compute);
  check_compute_options(options.compute);
  tim::check(!options.compute.cuda(), "tim bench measures the CPU; for the GPU run bench/bench_cuda_network "
             "(docs/cuda.md)");
  tim::check(options.batch >= 1, "--batch must be at least 1, got ", options.batch);
  tim::check(options.runs >= 1, "--runs must be at least 1, got ", options.runs);
  tim::check(options.warmup >= 0, "--warmup must be at least 0, got ", options.warmup);
  tim::check(options.caption_tokens >= 1, "--caption-tokens must be at least 1, got ", options.caption_tokens);
  tim::check(!given(options.height_option) || options.height >= 1, "--height must be at least 1, got ", options.height);
  tim::check(!given(options.width_option) || options.width >= 1, "--width must be at least 1, got ", options.width);

  const LoadedModel loaded = load_model(options.model);
  const auto& c = loaded.backbone();
  const bool text = loaded.text_to_image();
  const auto metadata = tim::io::SafetensorsFile::open(options.model.model_path).metadata();
  const auto [H, W] = latent_size(options.height_option, options.height, options.width_option, options.width, metadata);
  tim::check(H % c.patch == 0 && W % c.patch == 0, "height ", H, " and width ", W,
             " must be multiples of the model's patch size ", c.patch);

  const std::int64_t B = options.batch;
  std::mt19937 engine(2024);
  const auto x = bench_uniform({B, c.in_channels, H, W}, engine, -1, 1);
  const auto t = bench_uniform({B}, engine, 0.5f, 1);
  const auto r = bench_uniform({B}, engine, 0, 0.5f);
  tim::Tensor<float> out;
  std::function<void()> evaluate;
  double flops = 0;
  tim::Tensor<float> cap_feats;
  tim::Tensor<std::int64_t> labels;
  if (text) {
    const auto& model = std::get<T2IModel>(loaded.model);
    cap_feats = bench_uniform({B, options.caption_tokens, model.config.caption_dim}, engine, -1, 1);
    flops = tim::nn::forward_flops(model.config, B, H, W, options.caption_tokens);
    evaluate = [&] { model.forward(out, x, t, r, cap_feats); };
  } else {
    const auto& model = std::get<C2IModel>(loaded.model);
    labels = tim::Tensor<std::int64_t>::empty({B});
    for (std::int64_t b = 0; b < B; ++b) labels.data()[b] = b % model.config.num_classes;
    flops = tim::nn::forward_flops(model.config, B, H, W);
    evaluate = [&] { model.forward(out, x, t, r, labels); };
  }

  for (int i = 0; i < options.warmup; ++i) evaluate();
  std::vector<double> ms;
  for (int i = 0; i < options.runs; ++i) {
    const auto start = Clock::now();
    evaluate();
    ms.push_back(seconds_since(start) * 1e3);
  }
  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  const std::size_t n = sorted.size();
  const double median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
  const double gflop = flops * 1e-9, gflops = flops / (median * 1e-3) * 1e-9;
  const std::int64_t tokens = (H / c.patch) * (W / c.patch);

  if (options.json) {
    nlohmann::json j{{"model", options.model.model_path},
                     {"kind", text ? "t2i" : "c2i"},
                     {"config", loaded.describe()},
                     {"parameters", loaded.parameter_count()},
                     {"batch", B},
                     {"height", H},
                     {"width", W},
                     {"tokens", tokens},
                     {"threads", tim::num_threads()},
                     {"precision", "float32"},
                     {"warmup", options.warmup},
                     {"runs", options.runs},
                     {"times_ms", ms},
                     {"median_ms", median},
                     {"min_ms", sorted.front()},
                     {"max_ms", sorted.back()},
                     {"gflop", gflop},
                     {"gflops", gflops},
                     {"tim_version", tim::version_string}};
    if (text) j["caption_tokens"] = options.caption_tokens;
    std::cout << j.dump() << '\n';
    return;
  }
  std::cout << std::fixed << std::setprecision(2) << "model: " << options.model.model_path << " ("
            << loaded.describe() << ", " << loaded.parameter_count() << " parameters)\n"
            << "input: batch " << B << ", latent " << c.in_channels << " x " << H << " x " << W << " (" << tokens
            << " tokens" << (text ? ", " + std::to_string(options.caption_tokens) + " caption tokens" : std::string())
            << "), float32, " << tim::num_threads() << " threads\n"
            << "forward: median " << median << " ms (min " << sorted.front() << ", max " << sorted.back() << ") over "
            << options.runs << " runs after " << options.warmup << " warm-up; " << gflop << " GFLOP -> " << gflops
            << " GFLOP/s\n";
}

Subcommand add_bench(CLI::App& app, BenchOptions& options) {
  auto* command = app.add_subcommand(
      "bench", "Time one network evaluation on the CPU: the median over --runs after --warmup, and GFLOP/s (every "
               "matrix product 2 M N K, docs/performance.md)");
  add_model_options(*command, options.model, ModelArgument::option);
  command->add_option("-b,--batch", options.batch, "Batch size (default 1)");
  options.height_option = command->add_option("--height", options.height, "Latent height (default: the model's metadata)");
  options.width_option = command->add_option("--width", options.width, "Latent width (default: the model's metadata)");
  command->add_option("--caption-tokens", options.caption_tokens,
                      "Text-to-image models: caption tokens M of the random caption features (default 64)");
  command->add_option("--warmup", options.warmup, "Evaluations before timing (default 1)");
  command->add_option("-r,--runs", options.runs, "Timed evaluations; the median is reported (default 5)");
  command->add_flag("--json", options.json, "Print one JSON object (median_ms, gflops, times_ms, ...)");
  add_compute_options(*command, options.compute);
  return {command, [&options] { run_bench(options); }};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tim: run class-conditional and text-to-image Transition Models (TiM) on the CPU", "tim"};
  app.set_version_flag("--version", std::string("tim ") + tim::version_string);
  app.require_subcommand(1);
  app.footer("Exit codes: 0 success, 1 error (message on stderr), other: command-line usage error. See docs/cli.md.");

  // The options structs outlive parsing; each subcommand's run reads its own.
  InspectOptions inspect_options;
  ForwardOptions forward_options;
  SampleOptions sample_options;
  BenchOptions bench_options;
  const std::vector<Subcommand> subcommands{add_inspect(app, inspect_options), add_forward(app, forward_options),
                                            add_sample(app, sample_options), add_bench(app, bench_options)};

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (const auto& subcommand : subcommands)
      if (subcommand.command->parsed()) subcommand.run();
  } catch (const tim::Error& e) {
    std::cerr << "tim: error: " << e.what() << '\n';
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "tim: error: out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "tim: error: " << e.what() << '\n';
    return 1;
  }
  return 0;
}
