// bench_serve: images per second from `tim serve` on the loopback with the shipped Fashion-MNIST
// model (default settings: 4 steps, guided), at 1, 4 and 16 concurrent clients each asking for one
// image per request, against servers of --batch-size 1 (no batching: the requests are sampled one
// after another, the sequential baseline), 8 and 16. One iteration: every client sends one request
// and all answers are in; items are images. The server is a child process (the `tim` program),
// started once per benchmark; TIM_BENCH_THREADS=n gives it --threads n. Results:
// docs/performance.md, "tim serve".
#include <benchmark/benchmark.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

namespace {

namespace fs = std::filesystem;

struct ServerProcess {
  fs::path log;
  pid_t pid = -1;
  int port = 0;

  explicit ServerProcess(int batch_size) {
    log = fs::temp_directory_path() / ("tim_bench_serve_" + std::to_string(::getpid()) + ".txt");
    // TIM_BENCH_THREADS=n: the server's --threads (default: the library's, the physical cores).
    const char* threads = std::getenv("TIM_BENCH_THREADS");
    const std::string command = std::string("exec '") + TIM_EXECUTABLE + "' serve --port 0 --seed 1 --batch-size " +
                                std::to_string(batch_size) + (threads ? std::string(" --threads ") + threads : "") +
                                " --model '" + TIM_SHIPPED_MODEL + "' 2> '" + log.string() + "'";
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

void BM_Serve(benchmark::State& state) {
  const int clients = static_cast<int>(state.range(0)), batch_size = static_cast<int>(state.range(1));
  ServerProcess server(batch_size);
  std::vector<std::unique_ptr<httplib::Client>> connections;
  for (int c = 0; c < clients; ++c) {
    connections.push_back(std::make_unique<httplib::Client>("127.0.0.1", server.port));
    connections.back()->set_read_timeout(600, 0);
  }
  int failures = 0;
  const auto request = [&](int c) {
    const std::string body = "{\"class\": " + std::to_string(c % 10) + "}";
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

BENCHMARK(BM_Serve)
    ->ArgNames({"clients", "batch_size"})
    ->ArgsProduct({{1, 4, 16}, {1, 8, 16}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0);

}  // namespace

BENCHMARK_MAIN();
