// The shared options and checkpoint loading of the `tim` program (common.hpp).
#include "common.hpp"

#include <filesystem>
#include <iostream>
#include <sstream>
#include <system_error>

#include "tim/io/pytorch.hpp"

namespace tim_cli {

namespace fs = std::filesystem;

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
  command.add_option("--weights", options.weights,
                     "stored (default): on the CPU, bfloat16/float16 and q8_0 linear weights stay as stored, "
                     "memory-mapped (half, for q8_0 about a quarter, of the memory of float); float: every weight "
                     "widened (q8_0: dequantised) to float on load. The GPU widens to --precision either way");
}

void add_compute_options(CLI::App& command, ComputeOptions& options) {
  options.threads_option = command.add_option(
      "-j,--threads", options.threads, "CPU threads, 1 to 4096 (default: the number of physical cores)");
  command.add_option("--device", options.device,
                     "cpu (default) or cuda: the GPU (needs a build with -DTIM_CUDA=ON)");
  options.precision_option = command.add_option(
      "--precision", options.precision,
      "float32 (default) or bfloat16. With --device cuda: the network's storage and arithmetic (float32 "
      "accumulation). On the CPU (TiM networks): the products with bfloat16 weights, activations rounded to "
      "bfloat16 and float sums, where the CPU has AVX512-BF16 or AMX (float32 elsewhere, with a note)");
  command.add_flag("-v,--verbose", options.verbose, "Report timings on stderr");
}

void check_compute_options(const ComputeOptions& options, bool cpu_network) {
  tim::check(options.device == "cpu" || options.device == "cuda", "--device must be cpu or cuda, got '",
             options.device, "'");
  tim::check(options.precision == "float32" || options.precision == "bfloat16",
             "--precision must be float32 or bfloat16, got '", options.precision, "'");
  tim::check(cpu_network || options.cuda() || !given(options.precision_option) || options.precision == "float32",
             "--precision ", options.precision, " needs --device cuda (the CPU runs float32)");
}

tim::Precision cpu_precision(const ComputeOptions& options) {
  return tim::parse_precision(options.precision, "--precision");
}

namespace {
constexpr int max_threads = 4096;  // far beyond any machine; guards against a typo spawning a million threads
}  // namespace

void apply_threads(const ComputeOptions& options) {
  if (!given(options.threads_option)) return;
  tim::check(options.threads >= 1, "--threads must be at least 1, got ", options.threads);
  tim::check(options.threads <= max_threads, "--threads ", options.threads, " is more than ", max_threads);
  tim::set_num_threads(options.threads);
}

namespace {

//! Rethrows a loading failure, first with a better message where the file is not a TiM at all
//! (a PyTorch pickle, another model's safetensors).
[[noreturn]] void explain_load_failure(const std::string& path, const tim::Error& e) {
  if (tim::io::has_pytorch_magic(path)) tim::io::fail_pytorch_checkpoint(path);
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

//! --config, read and turned into the overrides of the network's configuration.
std::optional<tim::io::YamlNetworkConfig> read_config(const ModelOptions& options, tim::nn::ConfigOverrides& overrides) {
  if (options.config_path.empty()) return std::nullopt;
  auto yaml = tim::io::read_yaml_network_config(options.config_path);
  overrides = yaml.overrides();
  return yaml;
}

}  // namespace

LoadedModel load_model(const ModelOptions& options, tim::Precision precision) {
  const tim::nn::LoadOptions load{.weights = tim::nn::parse_weight_loading(options.weights, "--weights"),
                                  .precision = precision};
  tim::io::check_not_pytorch_checkpoint(options.model_path);
  tim::nn::ConfigOverrides overrides;
  std::optional<tim::io::YamlNetworkConfig> yaml = read_config(options, overrides);
  std::optional<std::variant<C2IModel, T2IModel>> model;
  try {
    if (tim::detect_model_kind(options.model_path) == tim::nn::ModelKind::t2i)
      model.emplace(std::in_place_type<T2IModel>, tim::load_t2i<float>(options.model_path, overrides, load));
    else
      model.emplace(std::in_place_type<C2IModel>, tim::load_c2i<float>(options.model_path, overrides, load));
  } catch (const tim::Error& e) {
    explain_load_failure(options.model_path, e);
  }
  if (yaml) std::visit([&](const auto& m) { yaml->check_against(m.config); }, *model);
  LoadedModel loaded{std::move(*model), std::move(yaml)};
  if (precision == tim::Precision::bfloat16) {
    if (loaded.weights() != "bfloat16")
      std::cerr << "tim: note: --precision bfloat16 on the CPU applies to bfloat16 weights; this model's are "
                << loaded.weights() << (options.weights == "stored" ? "" : " (--weights float)")
                << ", computed in float32\n";
    else if (tim::cpu_gemm::effective_precision(precision) != precision)
      std::cerr << "tim: note: --precision bfloat16: computing in float32 instead: " << tim::cpu_gemm::bf16_kernel().reason
                << '\n';
    else
      loaded.precision = precision;
  }
  return loaded;
}

tim_cli::CudaModel load_cuda_model(const ModelOptions& options, const std::string& precision) {
  tim::io::check_not_pytorch_checkpoint(options.model_path);
  tim::nn::ConfigOverrides overrides;
  std::optional<tim::io::YamlNetworkConfig> yaml = read_config(options, overrides);
  std::optional<tim_cli::CudaModel> gpu;
  try {
    gpu.emplace(tim_cli::CudaModel::load(options.model_path, precision, overrides));
  } catch (const tim::Error& e) {
    explain_load_failure(options.model_path, e);
  }
  if (yaml) {
    if (gpu->text_to_image())
      yaml->check_against(gpu->t2i_config());
    else
      yaml->check_against(gpu->c2i_config());
  }
  return std::move(*gpu);
}

std::string truncated(const std::string& text, std::size_t limit) {
  std::string one_line;
  for (char ch : text) one_line += (ch == '\n' || ch == '\r') ? ' ' : ch;
  if (one_line.size() <= limit) return one_line;
  return one_line.substr(0, limit) + "... (" + std::to_string(text.size()) + " chars)";
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code error;
  return fs::exists(a, error) && fs::exists(b, error) && fs::equivalent(a, b, error);
}

std::string tensor_names(const tim::io::SafetensorsFile& file) {
  std::string names;
  for (const auto& info : file.tensors()) names += (names.empty() ? "" : ", ") + info.name;
  return names.empty() ? "none" : names;
}

}  // namespace tim_cli
