// Peak resident memory of sampling TiM-XL/2 at batch 1 against the checkpoint's size (issue 6:
// under 1.3x). A random TiM-XL/2 checkpoint in float32 (the released dtype; bench/
// random_checkpoint.hpp, about 2.7 GB) is written once to a temporary file; then a child process
// loads it with tim::load_c2i<float> (memory-mapped, zero-copy) and samples 2 guided steps (the
// network on 2B = 2 rows) from a 4 x 32 x 32 latent; its peak resident set (getrusage of the
// child: ru_maxrss, file-backed pages of the mapping included) is the measurement. Each step runs
// in its own process so the benchmark harness's own memory is not counted and OpenMP is never
// used across a fork.
//
// Run: bench/bench_memory [--benchmark_out=...]    (TIM_BENCH_TMPDIR: where the 2.7 GB file goes,
// default /tmp; it is removed at exit)
// Counters: peak_rss_MB, checkpoint_MB, ratio = peak / checkpoint, seconds of the child.
#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
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

//! The random TiM-XL/2 checkpoint file, written by a child process on first use.
const std::string& checkpoint() {
  static const std::string path = [] {
    const char* folder = std::getenv("TIM_BENCH_TMPDIR");
    std::string file = std::string(folder ? folder : "/tmp") + "/tim_bench_xl2_" + std::to_string(getpid()) +
                       ".safetensors";
    const auto written = in_child([&] {
      const tim_bench::RandomCheckpoint source(tim_bench::tim_xl2_config());
      tim::io::SafetensorsWriter writer;
      for (const auto& info : source.tensors()) writer.add(info.name, source.load<float>(info.name, info.shape));
      writer.write(file);
    });
    if (!written.ok) file.clear();
    return file;
  }();
  return path;
}

void remove_checkpoint() {
  if (!checkpoint().empty()) std::filesystem::remove(checkpoint());
}

void BM_SampleXL2PeakMemory(benchmark::State& state) {
  const std::string& path = checkpoint();
  if (path.empty()) {
    state.SkipWithError("could not write the random TiM-XL/2 checkpoint");
    return;
  }
  const double file_bytes = static_cast<double>(std::filesystem::file_size(path));
  ChildResult result;
  for (auto _ : state) {
    result = in_child([&] {
      const auto model = tim::load_c2i<float>(path);
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

BENCHMARK(BM_SampleXL2PeakMemory)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  remove_checkpoint();
  return 0;
}
