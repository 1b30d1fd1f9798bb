// tim bench: times one network evaluation on the CPU, like llama-bench (docs/cli.md).
#include <algorithm>
#include <cstdint>
#include <functional>
#include <iomanip>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common.hpp"
#include "tim/sampler/settings.hpp"

namespace tim_cli {

namespace {

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
  check_compute_options(options.compute, /*cpu_network=*/true);
  tim::check(!options.compute.cuda(), "tim bench measures the CPU; for the GPU run bench/bench_cuda_network "
             "(docs/cuda.md)");
  tim::check(options.batch >= 1, "--batch must be at least 1, got ", options.batch);
  tim::check(options.runs >= 1, "--runs must be at least 1, got ", options.runs);
  tim::check(options.warmup >= 0, "--warmup must be at least 0, got ", options.warmup);
  tim::check(options.caption_tokens >= 1, "--caption-tokens must be at least 1, got ", options.caption_tokens);
  tim::check(!given(options.height_option) || options.height >= 1, "--height must be at least 1, got ", options.height);
  tim::check(!given(options.width_option) || options.width >= 1, "--width must be at least 1, got ", options.width);

  const LoadedModel loaded = load_model(options.model, cpu_precision(options.compute));
  const auto& c = loaded.backbone();
  const bool text = loaded.text_to_image();
  // The latent size as `tim sample` resolves it: the options, else the model's metadata.
  const auto metadata = tim::io::SafetensorsFile::open(options.model.model_path).metadata();
  const auto size = tim::require_latent_size(tim::find_latent_size(
      given(options.height_option) ? std::optional<std::int64_t>(options.height) : std::nullopt,
      given(options.width_option) ? std::optional<std::int64_t>(options.width) : std::nullopt, metadata));
  const std::int64_t H = size.height.value, W = size.width.value;
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
                     {"precision", loaded.precision == tim::Precision::bfloat16 ? "bfloat16" : "float32"},
                     {"weights", loaded.weights()},
                     {"warmup", options.warmup},
                     {"runs", options.runs},
                     {"times_ms", ms},
                     {"median_ms", median},
                     {"min_ms", sorted.front()},
                     {"max_ms", sorted.back()},
                     {"gflop", gflop},
                     {"gflops", gflops},
                     {"tim_version", tim::version_string},
                     {"cpu_baseline", cpu_baseline_name},
                     {"kernels", nlohmann::json::object()}};
    for (const auto& [part, choice] : tim::cpu_dispatch::kernel_report()) j["kernels"][part] = choice;
    if (text) j["caption_tokens"] = options.caption_tokens;
    std::cout << j.dump() << '\n';
    return;
  }
  std::cout << std::fixed << std::setprecision(2) << "model: " << options.model.model_path << " ("
            << loaded.describe() << ", " << loaded.parameter_count() << " parameters)\n"
            << "input: batch " << B << ", latent " << c.in_channels << " x " << H << " x " << W << " (" << tokens
            << " tokens" << (text ? ", " + std::to_string(options.caption_tokens) + " caption tokens" : std::string())
            << "), " << loaded.device() << ", " << tim::num_threads() << " threads\n"
            << "forward: median " << median << " ms (min " << sorted.front() << ", max " << sorted.back() << ") over "
            << options.runs << " runs after " << options.warmup << " warm-up; " << gflop << " GFLOP -> " << gflops
            << " GFLOP/s\n"
            << "kernels (baseline " << cpu_baseline_name << "):\n";
  for (const auto& [part, choice] : tim::cpu_dispatch::kernel_report()) std::cout << "  " << part << ": " << choice << '\n';
}

}  // namespace

Subcommand add_bench(CLI::App& app) {
  auto options = std::make_shared<BenchOptions>();
  auto* command = app.add_subcommand(
      "bench", "Time one network evaluation on the CPU: the median over --runs after --warmup, and GFLOP/s (every "
               "matrix product 2 M N K, docs/performance.md)");
  add_model_options(*command, options->model, ModelArgument::option);
  command->add_option("-b,--batch", options->batch, "Batch size (default 1)");
  options->height_option =
      command->add_option("--height", options->height, "Latent height (default: the model's metadata)");
  options->width_option = command->add_option("--width", options->width, "Latent width (default: the model's metadata)");
  command->add_option("--caption-tokens", options->caption_tokens,
                      "Text-to-image models: caption tokens M of the random caption features (default 64)");
  command->add_option("--warmup", options->warmup, "Evaluations before timing (default 1)");
  command->add_option("-r,--runs", options->runs, "Timed evaluations; the median is reported (default 5)");
  command->add_flag("--json", options->json, "Print one JSON object (median_ms, gflops, times_ms, ...)");
  add_compute_options(*command, options->compute);
  return {command, [options] { run_bench(*options); }};
}

}  // namespace tim_cli
