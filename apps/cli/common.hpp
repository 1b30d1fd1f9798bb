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

//! The -march the program was compiled for (TIM_CPU_BASELINE, apps/CMakeLists.txt).
#if defined(TIM_CLI_CPU_BASELINE)
inline constexpr const char* cpu_baseline_name = TIM_CLI_CPU_BASELINE;
#else
inline constexpr const char* cpu_baseline_name = "the compiler's default";
#endif

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
Subcommand add_convert(CLI::App& app);  // convert.cpp
Subcommand add_train(CLI::App& app);  // train.cpp, train_config.cpp

//! Whether the option was given on the command line.
inline bool given(const CLI::Option* option) { return option != nullptr && option->count() > 0; }

// ---------------------------------------------------------------------------------------------
// Options shared by several subcommands, declared once.

struct ModelOptions {
  std::string model_path;
  std::string config_path;  // empty: no --config
  std::string weights = "stored";  // --weights stored|float: 16-bit linear weights kept as stored (CPU)
};

//! How a subcommand takes its checkpoint.
enum class ModelArgument { positional, option, optional_option };

//! --model (or a positional MODEL; `optional_option`: --model, the shipped model when absent), --config
//! and --weights.
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
//! `cpu_network`: the subcommand runs a TiM network, where --precision bfloat16 also applies on
//! the CPU (to its bfloat16 weights); elsewhere it needs --device cuda.
void check_compute_options(const ComputeOptions& options, bool cpu_network = false);

//! --precision as the CPU network's tim::Precision (the products with bfloat16 weights).
tim::Precision cpu_precision(const ComputeOptions& options);

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
  //! How the blocks' linear weights are held: "float32", or "bfloat16"/"float16"/"q8_0" as stored.
  std::string weights() const {
    return std::visit(
        [](const auto& m) -> std::string {
          if (m.blocks.empty() || m.blocks[0].attn.qkv.storage == tim::nn::WeightStorage::value) return "float32";
          return tim::nn::weight_storage_name(m.blocks[0].attn.qkv.storage);
        },
        model);
  }
  //! The precision of the products with bfloat16 weights (--precision, where this CPU runs it).
  tim::Precision precision = tim::Precision::float32;
  //! "cpu, float32" or "cpu, bfloat16", then ", bfloat16 weights" (or float16, q8_0) when stored so.
  std::string device() const {
    std::string d = precision == tim::Precision::bfloat16 ? "cpu, bfloat16" : "cpu, float32";
    if (weights() != "float32") d += ", " + weights() + " weights";
    return d;
  }
};

//! The model as float, C2I or T2I as its tensor names say (tim::detect_model_kind), configured
//! from shapes, then --config, then __metadata__; the YAML's other keys are checked against the
//! result. A PyTorch checkpoint, or a file that is not a TiM, fails with a message saying so.
//! Linear weights stored as bfloat16/float16 or q8_0 stay so (memory-mapped) unless --weights float
//! (q8_0: dequantised to float);
//! `precision` is the products' with bfloat16 weights (a note on stderr where this CPU lacks it).
LoadedModel load_model(const ModelOptions& options, tim::Precision precision = tim::Precision::float32);

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
