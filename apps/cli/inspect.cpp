// tim inspect MODEL: what tim understands of a checkpoint, without running it (docs/cli.md).
#include <cstdint>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>

#include "common.hpp"
#include "tim/io/q8_0.hpp"

namespace tim_cli {

namespace {

struct InspectOptions {
  ModelOptions model;
};

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

//! The file's size, tensors by dtype and metadata.
void print_file(const tim::io::SafetensorsFile& file, const std::string& path) {
  std::cout << "file: " << path << '\n';
  std::cout << "size on disk: " << human_bytes(std::filesystem::file_size(path)) << '\n';
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
}

//! For a file with q8_0 matrices (tim convert --to q8_0): how many, how the network holds them
//! (`weights`: "q8_0" on the CPU, "float32" with --weights float), and which layers they are,
//! the block index written as * (e.g. "blocks.*.attn.qkv (28)").
void print_q8_0_layers(const tim::io::Q8_0Layout& layout, const std::string& weights) {
  if (layout.empty()) return;
  std::map<std::string, std::size_t> layers;
  for (const auto& name : layout.tensors) {
    std::string layer = name.size() > 7 && name.ends_with(".weight") ? name.substr(0, name.size() - 7) : name;
    if (layer.rfind("blocks.", 0) == 0) {
      const auto dot = layer.find('.', 7);
      if (dot != std::string::npos) layer = "blocks.*" + layer.substr(dot);
    }
    ++layers[layer];
  }
  std::cout << "q8_0: " << layout.tensors.size() << " matrices (int8 values, float16 scales per 32 inputs), held as "
            << (weights == "q8_0" ? "q8_0" : weights + " (dequantised)") << ":";
  for (const auto& [layer, count] : layers) std::cout << ' ' << layer << " (" << count << ')';
  std::cout << '\n';
}

void run_inspect(const InspectOptions& options) {
  // Load first: a file that is not a TiM checkpoint fails before anything is printed.
  const LoadedModel loaded = load_model(options.model);
  const auto file = tim::io::SafetensorsFile::open(options.model.model_path);
  print_file(file, options.model.model_path);

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
  print_q8_0_layers(tim::io::read_q8_0_layout(file), loaded.weights());
}

}  // namespace

Subcommand add_inspect(CLI::App& app) {
  auto options = std::make_shared<InspectOptions>();
  auto* command = app.add_subcommand("inspect", "Print a checkpoint's detected configuration, parameter count, "
                                                "dtypes, metadata and ignored tensors");
  add_model_options(*command, options->model, ModelArgument::positional);
  return {command, [options] { run_inspect(*options); }};
}

}  // namespace tim_cli
