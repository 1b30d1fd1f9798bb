// What the subcommands of the `tim` program share: the subcommand type, the options every
// computing subcommand takes (--model/--config, --threads/--device/--precision/--verbose), and
// loading a checkpoint with the errors a user can act on. Usage and exit codes: docs/cli.md.
#pragma once

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "cuda_backend.hpp"
#include "tim/io/yaml_config.hpp"
#include "tim/tim.hpp"

namespace tim_cli {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

//! A subcommand: its CLI11 parser (options, --help) and what runs when it is chosen. `run` owns
//! the options the parser fills.
struct Subcommand {
  CLI::App* command = nullptr;
  std::function<void()> run;
};

//! The subcommands, each in its own file (inspect.cpp, forward.cpp, sample.cpp, bench.cpp, encode.cpp).
Subcommand add_inspect(CLI::App& app);
Subcommand add_forward(CLI::App& app);
Subcommand add_sample(CLI::App& app);
Subcommand add_bench(CLI::App& app);
Subcommand add_encode(CLI::App& app);
Subcommand add_serve(CLI::App& app);  // serve.cpp
Subcommand add_decode(CLI::App& app);  // decode.cpp
Subcommand add_train_step(CLI::App& app);  // train_step.cpp
Subcommand add_train(CLI::App& app);  // train.cpp, train_config.cpp

//! Whether the option was given on the command line.
inline bool given(const CLI::Option* option) { return option != nullptr && option->count() > 0; }

// ---------------------------------------------------------------------------------------------
// Options shared by several subcommands, declared once.

struct ModelOptions {
  std::string model_path;
  std::string config_path;  // empty: no --config
};

//! How a subcommand takes its checkpoint.
enum class ModelArgument { positional, option, optional_option };

//! --model (or a positional MODEL; `optional_option`: --model, the shipped model when absent) and --config.
void add_model_options(CLI::App& command, ModelOptions& options, ModelArgument argument);

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
void add_compute_options(CLI::App& command, ComputeOptions& options);

//! Checks --device and --precision before anything is loaded (exit code 1, the option named).
void check_compute_options(const ComputeOptions& options);

//! Applies --threads; validated here so the message names the option (exit code 1).
void apply_threads(const ComputeOptions& options);

// ---------------------------------------------------------------------------------------------
// Loading a checkpoint.

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
//! from shapes, then --config, then __metadata__; the YAML's other keys are checked against the
//! result. A PyTorch checkpoint, or a file that is not a TiM, fails with a message saying so.
LoadedModel load_model(const ModelOptions& options);

//! With --device cuda: the class-conditional model on the GPU in `precision`, configured as
//! load_model configures it (shapes, then --config, then __metadata__).
tim_cli::CudaModel load_cuda_model(const ModelOptions& options, const std::string& precision);

// ---------------------------------------------------------------------------------------------
// Small helpers.

//! `text` on one line, cut at `limit` characters with the full length noted.
std::string truncated(const std::string& text, std::size_t limit = 100);

//! Whether both paths exist and name the same file.
bool same_file(const std::string& a, const std::string& b);

//! "a, b, c" of the tensor names of `file`, or "none".
std::string tensor_names(const tim::io::SafetensorsFile& file);

}  // namespace tim_cli
