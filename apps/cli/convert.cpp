// tim convert IN OUT --to bfloat16|float16|q8_0|float32: a safetensors checkpoint with its floating
// tensors stored in another type (tim/io/convert.hpp holds the rules; docs/cli.md).
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include "common.hpp"
#include "tim/io/convert.hpp"
#include "tim/io/pytorch.hpp"

namespace tim_cli {

namespace {

struct ConvertOptions {
  std::string input, output, to;
};

std::string convert_size_text(std::uintmax_t bytes) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(2) << static_cast<double>(bytes) / (1024.0 * 1024.0) << " MiB";
  return o.str();
}

void run_convert(const ConvertOptions& options) {
  const tim::io::ConvertTarget to = tim::io::parse_convert_target(options.to, "--to");
  tim::check(!options.output.empty(), "OUT: the output path is empty");
  tim::check(options.input != options.output && !same_file(options.input, options.output), "OUT '", options.output,
             "' is the input file: tim convert never overwrites its input");
  tim::io::check_not_pytorch_checkpoint(options.input);  // .bin/.pt: the Python converter (no C++ reader)
  const auto input = tim::io::SafetensorsFile::open(options.input);
  tim::io::ConversionSummary summary;
  const auto writer = tim::io::convert_safetensors(input, to, &summary);
  tim::io::write_safetensors_atomically(writer, options.output);
  std::cout << "wrote " << options.output << " (" << tim::io::convert_target_name(to) << ", "
            << convert_size_text(std::filesystem::file_size(options.output)) << "; input "
            << convert_size_text(std::filesystem::file_size(options.input)) << ")\n"
            << "  quantised to q8_0: " << summary.quantised << " matrices\n"
            << "  converted: " << summary.converted << " floating tensors\n"
            << "  dequantised: " << summary.dequantised << " q8_0 matrices\n"
            << "  kept as stored: " << summary.kept << " tensors\n";
}

}  // namespace

Subcommand add_convert(CLI::App& app) {
  auto options = std::make_shared<ConvertOptions>();
  auto* command = app.add_subcommand("convert", "Store a safetensors checkpoint's floating tensors as bfloat16, float16, "
                                                "float32, or q8_0 (8-bit blocks for the linear layers' weights)");
  command->add_option("IN", options->input, "Input checkpoint (.safetensors)")->required();
  command->add_option("OUT", options->output, "Output checkpoint (written whole through a temporary file)")->required();
  command->add_option("--to", options->to, "bfloat16, float16, q8_0 or float32")->required();
  return {command, [options] { run_convert(*options); }};
}

}  // namespace tim_cli
