// The `tim` command-line program: inspect a checkpoint, run one network evaluation on inputs
// from a safetensors file. One function pair per subcommand (add_*: options, run_*: work), so
// sample, bench and eval slot in the same way. Usage and exit codes: docs/cli.md.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "tim/io/yaml_config.hpp"
#include "tim/tim.hpp"

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

//! --model (or a positional MODEL) and --config.
void add_model_options(CLI::App& command, ModelOptions& options, bool positional_model) {
  if (positional_model)
    command.add_option("model", options.model_path, "Checkpoint (.safetensors)")->required();
  else
    command.add_option("-m,--model", options.model_path, "Checkpoint (.safetensors)")->required();
  command.add_option("-c,--config", options.config_path,
                     "Released TiM YAML config: gives num_heads and new_condition when the checkpoint cannot; "
                     "its other network keys are checked against the checkpoint");
}

struct ComputeOptions {
  int threads = 0;
  CLI::Option* threads_option = nullptr;  // to tell "not given" from a value
  bool verbose = false;
};

//! --threads and --verbose, for subcommands that compute.
void add_compute_options(CLI::App& command, ComputeOptions& options) {
  options.threads_option = command.add_option(
      "-j,--threads", options.threads, "CPU threads, 1 to 4096 (default: the number of physical cores)");
  command.add_flag("-v,--verbose", options.verbose, "Report timings on stderr");
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
                  "convert it to .safetensors (see docs/usage.md)");
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

struct LoadedModel {
  tim::nn::C2IModel<float> model;
  std::optional<tim::io::YamlNetworkConfig> yaml;
};

//! The model as float, configured from shapes, then --config, then __metadata__; the YAML's
//! other keys are checked against the result.
LoadedModel load_model(const ModelOptions& options) {
  if (has_pytorch_extension(options.model_path)) fail_pytorch(options.model_path);
  std::optional<tim::io::YamlNetworkConfig> yaml;
  tim::nn::ConfigOverrides overrides;
  if (!options.config_path.empty()) {
    yaml = tim::io::read_yaml_network_config(options.config_path);
    overrides = yaml->overrides();
  }
  std::optional<tim::nn::C2IModel<float>> model;
  try {
    model.emplace(tim::load_c2i<float>(options.model_path, overrides));
  } catch (const tim::Error& e) {
    if (has_pytorch_magic(options.model_path)) fail_pytorch(options.model_path);
    // A valid safetensors file without the network's first tensor is some other model.
    std::optional<tim::io::SafetensorsFile> file;
    try {
      file.emplace(tim::io::SafetensorsFile::open(options.model_path));
    } catch (const tim::Error&) {
      throw e;  // the file itself is unreadable; the first message says why
    }
    if (!file->contains("x_embedder.proj.weight")) {
      std::ostringstream names;
      const auto& tensors = file->tensors();
      for (std::size_t i = 0; i < tensors.size() && i < 5; ++i) names << (i ? ", " : "") << tensors[i].name;
      if (tensors.size() > 5) names << ", ...";
      if (tensors.empty()) names << "none";
      tim::fail(options.model_path, " is not a class-conditional TiM checkpoint: no tensor 'x_embedder.proj.weight' (",
                tensors.size(), " tensors: ", names.str(), ")");
    }
    throw;
  }
  if (yaml) yaml->check_against(model->config);
  return {std::move(*model), std::move(yaml)};
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

std::string with_source(const tim::nn::C2IConfig& c, const std::string& key) {
  const auto found = c.provenance.find(key);
  if (found == c.provenance.end()) return "";
  std::string source = found->second;
  if (source == "config") source = "--config";
  return "  (from " + source + ")";
}

void run_inspect(const InspectOptions& options) {
  // Load first: a file that is not a C2I checkpoint fails before anything is printed.
  const LoadedModel loaded = load_model(options.model);
  const auto& c = loaded.model.config;
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

  std::cout << "configuration (C2I TiM):\n"
            << "  in_channels: " << c.in_channels << '\n'
            << "  out_channels: " << c.out_channels << '\n'
            << "  hidden: " << c.hidden << '\n'
            << "  depth: " << c.depth << '\n'
            << "  num_heads: " << c.num_heads << with_source(c, "num_heads") << '\n'
            << "  head_dim: " << c.head_dim() << '\n'
            << "  patch: " << c.patch << '\n'
            << "  num_classes: " << c.num_classes << "  (label " << c.num_classes << " is the null class)\n"
            << "  adaln_hidden: " << c.adaln_hidden << '\n'
            << "  mlp_hidden: " << c.mlp_hidden << '\n'
            << "  final_adaln_hidden: " << c.final_adaln_hidden << '\n'
            << "  qk_norm: " << (c.qk_norm ? "yes" : "no") << '\n'
            << "  interval_qkv: " << (c.interval_qkv ? "yes" : "no") << '\n'
            << "  separate_delta_embedder: " << (c.separate_delta_embedder ? "yes" : "no") << '\n'
            << "  new_condition: " << tim::nn::new_condition_name(c.new_condition) << with_source(c, "new_condition")
            << '\n';

  const auto parameters = loaded.model.parameter_count();
  std::cout << "parameters: " << parameters << " (" << std::fixed << std::setprecision(2)
            << static_cast<double>(parameters) / 1e6 << " M)\n";

  // Group ignored tensors by their top-level module.
  std::map<std::string, std::size_t> ignored;
  for (const auto& name : c.ignored) ignored[name.substr(0, name.find('.'))]++;
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
  add_model_options(*command, options.model, /*positional_model=*/true);
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

//! The tensor `name` of the inputs file, after checking it exists and has dtype `expected`.
const tim::io::TensorInfo& require_input(const tim::io::SafetensorsFile& inputs, const std::string& name,
                                         tim::DType expected) {
  if (!inputs.contains(name)) {
    std::ostringstream found;
    for (const auto& info : inputs.tensors()) found << (found.tellp() > 0 ? ", " : "") << info.name;
    tim::fail("inputs file '", inputs.path(), "' has no tensor '", name,
              "' (expected x [B,C,H,W] F32, t [B] F32, r [B] F32, y [B] I64; found: ",
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
              " [", position.str(), "] in ", file, "; x, t and r must be finite");
  }
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code error;
  return fs::exists(a, error) && fs::exists(b, error) && fs::equivalent(a, b, error);
}

void run_forward(const ForwardOptions& options) {
  apply_threads(options.compute);
  tim::check(!same_file(options.out_path, options.model.model_path) && !same_file(options.out_path, options.inputs_path),
             "--out '", options.out_path, "' would overwrite the model or the inputs file");

  const auto start = Clock::now();
  const LoadedModel loaded = load_model(options.model);
  const auto& model = loaded.model;
  const auto& c = model.config;
  const double load_seconds = seconds_since(start);

  const auto inputs = tim::io::SafetensorsFile::open(options.inputs_path);
  const std::string& in = options.inputs_path;
  const auto& x_info = require_input(inputs, "x", tim::DType::F32);
  const auto& t_info = require_input(inputs, "t", tim::DType::F32);
  const auto& r_info = require_input(inputs, "r", tim::DType::F32);
  const auto& y_info = require_input(inputs, "y", tim::DType::I64);

  const tim::Shape& xs = x_info.shape;
  tim::check(xs.rank() == 4, "tensor 'x' in ", in, ": expected shape [B, ", c.in_channels, ", H, W], got ", xs);
  const auto B = xs[0];
  tim::check(B > 0, "tensor 'x' in ", in, ": batch size is 0 (shape ", xs, ")");
  tim::check(xs[1] == c.in_channels, "tensor 'x' in ", in, ": expected shape [B, ", c.in_channels,
             ", H, W] (the model has ", c.in_channels, " input channels), got ", xs);
  tim::check(xs[2] > 0 && xs[3] > 0 && xs[2] % c.patch == 0 && xs[3] % c.patch == 0, "tensor 'x' in ", in,
             ": height ", xs[2], " and width ", xs[3], " must be positive multiples of the model's patch size ", c.patch,
             " (shape ", xs, ")");
  for (const auto* info : {&t_info, &r_info, &y_info})
    tim::check(info->shape == tim::Shape{B}, "tensor '", info->name, "' in ", in, ": expected shape [", B,
               "] (one per sample of x), got ", info->shape);

  const auto x = inputs.load<float>("x");
  const auto t = inputs.load<float>("t");
  const auto r = inputs.load<float>("r");
  const auto y = inputs.load<std::int64_t>("y");
  require_finite(x, "x", in);
  require_finite(t, "t", in);
  require_finite(r, "r", in);
  for (std::int64_t b = 0; b < B; ++b) {
    const auto label = y.data()[b];
    tim::check(label >= 0 && label <= c.num_classes, "tensor 'y' in ", in, ": label ", label, " at index ", b,
               " is outside [0, ", c.num_classes, "] (classes 0..", c.num_classes - 1, ", ", c.num_classes,
               " = the null class)");
  }
  try {
    model.validate_inputs(x, t, r, y);  // the library's own rules, should they ever grow
  } catch (const tim::Error& e) {
    tim::fail(in, ": ", e.what());
  }

  const auto forward_start = Clock::now();
  tim::Tensor<float> out;
  model.forward(out, x, t, r, y);
  const double forward_seconds = seconds_since(forward_start);

  tim::io::SafetensorsWriter writer;
  writer.add("out", out);
  writer.set_metadata("model", options.model.model_path);
  writer.set_metadata("inputs", options.inputs_path);
  writer.set_metadata("tim_version", tim::version_string);
  writer.set_metadata("config", c.describe());
  writer.write(options.out_path);

  if (options.compute.verbose)
    std::cerr << std::fixed << std::setprecision(3) << "tim forward: loaded " << options.model.model_path << " in "
              << load_seconds << " s; forward of " << B << " x " << xs[1] << " x " << xs[2] << " x " << xs[3] << " on "
              << tim::num_threads() << " threads in " << forward_seconds << " s; total " << seconds_since(start)
              << " s; wrote " << options.out_path << '\n';
}

Subcommand add_forward(CLI::App& app, ForwardOptions& options) {
  auto* command = app.add_subcommand(
      "forward", "Evaluate the network once: out = F(x, t, r, y), inputs and output in safetensors files");
  add_model_options(*command, options.model, /*positional_model=*/false);
  command
      ->add_option("-i,--inputs", options.inputs_path,
                   "Inputs: x [B,C,H,W] F32, t [B] F32, r [B] F32 (network time inputs, after c_noise), y [B] I64")
      ->required();
  command->add_option("-o,--out", options.out_path, "Output file: out [B,C,H,W] F32")->required();
  add_compute_options(*command, options.compute);
  return {command, [&options] { run_forward(options); }};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tim: run class-conditional Transition Models (TiM) on the CPU", "tim"};
  app.set_version_flag("--version", std::string("tim ") + tim::version_string);
  app.require_subcommand(1);
  app.footer("Exit codes: 0 success, 1 error (message on stderr), other: command-line usage error. See docs/cli.md.");

  // The options structs outlive parsing; each subcommand's run reads its own.
  InspectOptions inspect_options;
  ForwardOptions forward_options;
  const std::vector<Subcommand> subcommands{add_inspect(app, inspect_options), add_forward(app, forward_options)};

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
