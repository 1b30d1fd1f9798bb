// bench_serve: images per second from `tim serve` on the loopback, at 1, 4 and 16 concurrent
// clients each asking for one image per request, against servers of --batch-size 1 (no batching:
// the requests are sampled one after another, the sequential baseline), 8 and 16. BM_Serve: the
// shipped Fashion-MNIST model (default settings: 4 steps, guided). BM_ServeT2I: a random
// text-to-image network (hidden 64, depth 4, patch 2, 3-channel 16x16 latents, written to a
// temporary file) with the golden Gemma-3 encoder folder of the tests
// (tests/data/golden_gemma/released_pattern, D 32), 4 steps guided at cfg 2.5; every client sends
// the same prompt, so the rows share one token count and may share calls; each request's prompt
// is encoded on the server's sampler thread (part of the measured time). One iteration: every
// client sends one request and all answers are in; items are images. The server is a child
// process (the `tim` program), started once per benchmark; TIM_BENCH_THREADS=n gives it
// --threads n. Results: docs/performance.md, "`tim serve` re-measured" (both benchmarks, idle,
// commit a1200f5).
#include <benchmark/benchmark.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../tests/random_t2i_checkpoint.hpp"

// After tim's headers: <resolv.h>, which httplib.h includes, defines a macro `_res`.
#include <httplib.h>

namespace {

namespace fs = std::filesystem;

struct ServerProcess {
  fs::path log;
  pid_t pid = -1;
  int port = 0;

  explicit ServerProcess(int batch_size, const std::string& model = TIM_SHIPPED_MODEL, const std::string& args = "") {
    log = fs::temp_directory_path() / ("tim_bench_serve_" + std::to_string(::getpid()) + ".txt");
    // TIM_BENCH_THREADS=n: the server's --threads (default: the library's, the physical cores).
    const char* threads = std::getenv("TIM_BENCH_THREADS");
    const std::string command = std::string("exec '") + TIM_EXECUTABLE + "' serve --port 0 --seed 1 --batch-size " +
                                std::to_string(batch_size) + (threads ? std::string(" --threads ") + threads : "") +
                                " --model '" + model + "' " + args + " 2> '" + log.string() + "'";
    pid = ::fork();
    if (pid == 0) {
      ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    const std::string marker = "listening on http://127.0.0.1:";
    for (int i = 0; i < 1200; ++i) {
      std::ifstream in(log);
      std::stringstream text;
      text << in.rdbuf();
      const auto found = text.str().find(marker);
      if (found != std::string::npos && text.str().find('\n', found) != std::string::npos) {
        port = std::stoi(text.str().substr(found + marker.size()));
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    throw std::runtime_error("tim serve did not start");
  }
  ~ServerProcess() {
    ::kill(pid, SIGTERM);
    ::waitpid(pid, nullptr, 0);
    fs::remove(log);
  }
};

//! Every client sends `body_of(c)` once per iteration; items are images.
template <class BodyOf>
void run_clients(benchmark::State& state, const ServerProcess& server, const BodyOf& body_of) {
  const int clients = static_cast<int>(state.range(0)), batch_size = static_cast<int>(state.range(1));
  std::vector<std::unique_ptr<httplib::Client>> connections;
  for (int c = 0; c < clients; ++c) {
    connections.push_back(std::make_unique<httplib::Client>("127.0.0.1", server.port));
    connections.back()->set_read_timeout(600, 0);
  }
  std::atomic<int> failures{0};
  const auto request = [&](int c) {
    const std::string body = body_of(c);
    const auto res = connections[static_cast<std::size_t>(c)]->Post("/v1/images/generations", body, "application/json");
    if (!res || res->status != 200) ++failures;
  };
  request(0);  // warm: the first call sizes the workspace
  for (auto _ : state) {
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) threads.emplace_back(request, c);
    for (auto& t : threads) t.join();
  }
  if (failures > 0) state.SkipWithError("some requests failed");
  state.SetItemsProcessed(state.iterations() * clients);
  state.counters["clients"] = clients;
  state.counters["batch_size"] = batch_size;
}

void BM_Serve(benchmark::State& state) {
  ServerProcess server(static_cast<int>(state.range(1)));
  run_clients(state, server, [](int c) { return "{\"class\": " + std::to_string(c % 10) + "}"; });
}

//! The random T2I checkpoint of BM_ServeT2I, written once.
std::string t2i_model() {
  static const std::string path = [] {
    const std::string file = (fs::temp_directory_path() / ("tim_bench_serve_t2i_" + std::to_string(::getpid()) +
                                                           ".safetensors")).string();
    const auto checkpoint = tim_test::random_t2i_checkpoint(tim_test::t2i_config(64, 4, 4, 2, 3, 32, 64), 1);
    tim::io::SafetensorsWriter writer;
    for (const auto& info : checkpoint.tensors())
      writer.add(info.name, info.dtype, info.shape, checkpoint.bytes(info.name).data());
    for (const auto& [key, value] : checkpoint.metadata()) writer.set_metadata(key, value);
    writer.set_metadata("image_size", "16x16x3");
    writer.write(file);
    std::atexit([] { fs::remove(fs::temp_directory_path() / ("tim_bench_serve_t2i_" + std::to_string(::getpid()) +
                                                              ".safetensors")); });
    return file;
  }();
  return path;
}

void BM_ServeT2I(benchmark::State& state) {
  ServerProcess server(static_cast<int>(state.range(1)), t2i_model(),
                       "--text-encoder '" TIM_TEST_DATA_DIR "/golden_gemma/released_pattern'");
  run_clients(state, server, [](int) {
    return std::string(R"({"prompt": "a red fox in the snow", "steps": 4, "cfg_scale": 2.5})");
  });
}

BENCHMARK(BM_Serve)
    ->ArgNames({"clients", "batch_size"})
    ->ArgsProduct({{1, 4, 16}, {1, 8, 16}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0);

BENCHMARK(BM_ServeT2I)
    ->ArgNames({"clients", "batch_size"})
    ->ArgsProduct({{1, 4, 16}, {1, 8, 16}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0);

}  // namespace

BENCHMARK_MAIN();
