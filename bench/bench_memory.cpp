// Peak resident memory of sampling TiM-XL/2 at batch 1 against the checkpoint's size (issue 6:
// under 1.3x). A random TiM-XL/2 checkpoint in float32 (the released dtype; bench/
// random_checkpoint.hpp, about 2.7 GB) is written once to a temporary file; then a child process
// loads it with tim::load_c2i<float> (memory-mapped, zero-copy) and samples 2 guided steps (the
// network on 2B = 2 rows) from a 4 x 32 x 32 latent; its peak resident set (getrusage of the
// child: ru_maxrss, file-backed pages of the mapping included) is the measurement. Each step runs
// in its own process so the benchmark harness's own memory is not counted and OpenMP is never
// used across a fork.
//
// The same with the linear weights stored as bfloat16 (a converted checkpoint, 1.35 GB): loaded as
// stored (/weights:bfloat16, memory-mapped views, float32 products) and widened to float on load
// (/weights:bfloat16/widened, the behaviour before the views). TiM-B/4 variants run the same at
// a small size (about 0.5 GB in float32).
//
// Run: bench/bench_memory [--benchmark_out=...]    (TIM_BENCH_TMPDIR: where the files go,
// default /tmp; they are removed at exit)
// Counters: peak_rss_MB, checkpoint_MB, ratio = peak / checkpoint, seconds of the child.
#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <utility>
#include <string>

#include "random_checkpoint.hpp"
#include "tim/tim.hpp"

namespace {

struct ChildResult {
  bool ok = false;
  double peak_bytes = 0, seconds = 0;
};

//! Runs `work` in a child process; its exit status and peak resident set.
template <class Work>
ChildResult in_child(Work work) {
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = fork();
  if (pid < 0) return {};
  if (pid == 0) {
    try {
      work();
      std::_Exit(0);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_memory: %s\n", e.what());
      std::_Exit(1);
    }
  }
  int status = 0;
  rusage usage{};
  if (wait4(pid, &status, 0, &usage) != pid) return {};
  ChildResult result;
  result.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  result.peak_bytes = static_cast<double>(usage.ru_maxrss) * 1024.0;  // Linux: kilobytes
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

enum class Model { b4, xl2 };

//! The random checkpoint file of `model` with linear weights in `linear_dtype` (F32 or BF16),
//! written by a child process on first use.
std::map<std::pair<Model, tim::DType>, std::string> paths;  // the files written (empty: failed)

const std::string& checkpoint(Model model, tim::DType linear_dtype) {
  const auto found = paths.find({model, linear_dtype});
  if (found != paths.end()) return found->second;
  const char* folder = std::getenv("TIM_BENCH_TMPDIR");
  std::string file = std::string(folder ? folder : "/tmp") + "/tim_bench_" + (model == Model::b4 ? "b4_" : "xl2_") +
                     std::string(tim::dtype_name(linear_dtype)) + "_" + std::to_string(getpid()) + ".safetensors";
  const auto written = in_child([&] {
    const tim_bench::RandomCheckpoint source(model == Model::b4 ? tim_bench::tim_b4_config() : tim_bench::tim_xl2_config(),
                                             0, 0.02f, linear_dtype);
    tim::io::SafetensorsWriter writer;
    for (const auto& info : source.tensors()) {
      if (info.dtype == tim::DType::BF16)
        writer.add(info.name, source.load<tim::bfloat16>(info.name, info.shape));
      else
        writer.add(info.name, source.load<float>(info.name, info.shape));
    }
    writer.write(file);
  });
  if (!written.ok) file.clear();
  return paths.emplace(std::pair{model, linear_dtype}, file).first->second;
}

void remove_checkpoints() {
  for (const auto& [key, path] : paths)
    if (!path.empty()) std::filesystem::remove(path);
}

void BM_SamplePeakMemory(benchmark::State& state, Model which, tim::DType linear_dtype, tim::nn::WeightLoading weights) {
  const std::string& path = checkpoint(which, linear_dtype);
  if (path.empty()) {
    state.SkipWithError("could not write the random checkpoint");
    return;
  }
  const double file_bytes = static_cast<double>(std::filesystem::file_size(path));
  ChildResult result;
  for (auto _ : state) {
    result = in_child([&] {
      const auto model = tim::load_c2i<float>(path, {}, {.weights = weights});
      auto labels = tim::Tensor<std::int64_t>::empty({1});
      labels.data()[0] = 207;
      const auto noise = tim::initial_noise(tim::Shape{1, model.config.in_channels, 32, 32}, /*seed=*/0);
      tim::TransitionSampler sampler{model, tim::OtFm{}, tim::linspace_schedule(2)};
      const auto out = sampler.sample(noise, labels, {.cfg_scale = 2.0, .guidance_high = 1.01});
      benchmark::DoNotOptimize(out.x.data());
    });
    if (!result.ok) {
      state.SkipWithError("the sampling child failed");
      return;
    }
  }
  state.counters["peak_rss_MB"] = result.peak_bytes * 1e-6;
  state.counters["checkpoint_MB"] = file_bytes * 1e-6;
  state.counters["ratio"] = result.peak_bytes / file_bytes;
  state.counters["child_seconds"] = result.seconds;
}

}  // namespace

void register_benchmarks() {
  using tim::DType;
  using tim::nn::WeightLoading;
  struct Case {
    const char* name;
    Model model;
    DType dtype;
    WeightLoading weights;
  };
  for (const Case& k : {Case{"BM_SampleXL2PeakMemory", Model::xl2, DType::F32, WeightLoading::stored},
                        Case{"BM_SampleXL2PeakMemory/weights:bfloat16", Model::xl2, DType::BF16, WeightLoading::stored},
                        Case{"BM_SampleXL2PeakMemory/weights:bfloat16/widened", Model::xl2, DType::BF16,
                             WeightLoading::widened},
                        Case{"BM_SampleB4PeakMemory", Model::b4, DType::F32, WeightLoading::stored},
                        Case{"BM_SampleB4PeakMemory/weights:bfloat16", Model::b4, DType::BF16, WeightLoading::stored},
                        Case{"BM_SampleB4PeakMemory/weights:bfloat16/widened", Model::b4, DType::BF16,
                             WeightLoading::widened}}) {
    const Case c = k;
    benchmark::RegisterBenchmark(c.name, [c](benchmark::State& s) { BM_SamplePeakMemory(s, c.model, c.dtype, c.weights); })
        ->Iterations(1)
        ->Unit(benchmark::kSecond)
        ->UseRealTime();
  }
}

int main(int argc, char** argv) {
  register_benchmarks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  remove_checkpoints();
  return 0;
}
