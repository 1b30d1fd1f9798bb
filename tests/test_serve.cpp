// `tim serve` run as a subprocess on the loopback, with the shipped Fashion-MNIST model: 16
// concurrent clients get the images the library computes in this process (pixel for pixel, and
// the same PNG as the request served alone), bad requests get 4xx JSON errors and the server stays
// healthy, the API key, the queue limit, a client that goes away, SIGTERM.
#include <doctest/doctest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "tim/core/cast.hpp"
#include "tim/cpu/per_sample_network.hpp"
#include "tim/io/png.hpp"
#include "tim/sampler/settings.hpp"
#include "tim/tim.hpp"

#include "serve_process.hpp"  // after tim/tim.hpp (Eigen before httplib.h)

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;
using namespace tim_test::serve;

//! One image a test expects: its class, seed, sample index and step count.
struct Row {
  std::int64_t label;
  std::uint64_t seed, index;
  int steps;
};

//! The pixels of each row as the library gives them in this process: the model's metadata
//! settings (steps as given), rows of one seed and step count in sampler calls of exactly
//! batch_size rows (padded by repeating the last row); per_sample: through tim::PerSampleNetwork.
struct Expected {
  tim::io::PngImage png;
  std::vector<float> values;  // (1, 32, 32)
};

std::vector<Expected> reference_images(const std::vector<Row>& rows, std::int64_t batch_size, bool per_sample = false) {
  static auto model = tim::load_c2i<float>(TIM_SHIPPED_MODEL);
  const auto metadata = tim::io::SafetensorsFile::open(TIM_SHIPPED_MODEL).metadata();
  std::vector<Expected> images(rows.size());
  for (std::size_t first = 0; first < rows.size(); first += static_cast<std::size_t>(batch_size)) {
    // Callers list rows of one (seed, steps) together, in groups of batch_size.
    std::vector<Row> call(rows.begin() + static_cast<std::ptrdiff_t>(first),
                          rows.begin() + static_cast<std::ptrdiff_t>(std::min(rows.size(), first + batch_size)));
    const std::size_t real = call.size();
    while (static_cast<std::int64_t>(call.size()) < batch_size) call.push_back(call.back());
    tim::SampleRequest request;
    request.steps = call.front().steps;
    const auto s = tim::resolve_sample_settings(request, metadata);
    const std::int64_t B = batch_size, H = s.latent_size->height.value, W = s.latent_size->width.value;
    auto noise = tim::Tensor<double>::empty({B, 1, H, W});
    auto labels = tim::Tensor<std::int64_t>::empty({B});
    std::vector<std::uint64_t> indices;
    for (std::int64_t b = 0; b < B; ++b) {
      REQUIRE(call[b].seed == call.front().seed);
      REQUIRE(call[b].steps == call.front().steps);
      const auto z = tim::initial_noise({1, 1, H, W}, call[b].seed, call[b].index);
      std::copy_n(z.data(), H * W, noise.data() + b * H * W);
      labels.data()[b] = call[b].label;
      indices.push_back(call[b].index);
    }
    const tim::SamplerOptions<> options{.cfg_scale = s.cfg_scale.value,
                                        .guidance_low = s.guidance_low.value,
                                        .guidance_high = s.guidance_high.value,
                                        .stochasticity = s.stochasticity.value,
                                        .mode = s.mode.value,
                                        .seed = call.front().seed,
                                        .sample_indices = indices};
    const auto latents = [&] {
      if (per_sample) {
        const tim::PerSampleNetwork exact{model};
        tim::TransitionSampler sampler{exact, std::get<tim::OtFm>(s.transport.value), s.schedule.value};
        return tim::cast<float>(sampler.sample(noise, labels, options).x);
      }
      tim::TransitionSampler sampler{model, std::get<tim::OtFm>(s.transport.value), s.schedule.value};
      return tim::cast<float>(sampler.sample(noise, labels, options).x);
    }();
    for (std::size_t b = 0; b < real; ++b) {
      images[first + b].png = tim::io::latent_image(latents, static_cast<std::int64_t>(b));
      images[first + b].values.assign(latents.data() + b * H * W, latents.data() + (b + 1) * H * W);
    }
  }
  return images;
}

}  // namespace

TEST_CASE("serve: 16 concurrent clients get the library's images, each as if served alone") {
  constexpr std::int64_t batch_size = 8;
  Server server("--batch-size 8 --seed 21");
  // 16 requests: seeded ones (seed 5, classes and first indices of their own), unseeded ones
  // (the server's seed 21, indices from its counter), and some with 2 steps (another batch key).
  std::vector<json> requests;
  for (int i = 0; i < 16; ++i) {
    json r;
    if (i % 4 == 3) {
      r = {{"prompt", "Bag"}, {"steps", 2}, {"seed", 5}, {"first_index", 100 + i}};
    } else if (i % 2 == 0) {
      r = {{"class", i % 10}, {"seed", 5}, {"first_index", 10 * i}, {"n", 1 + i % 3}};
    } else {
      r = {{"labels", json::array({i % 10, (i + 3) % 10})}};
    }
    r["return_latents"] = true;
    requests.push_back(r);
  }
  std::vector<json> answers(requests.size());
  std::vector<std::string> failures(requests.size());
  std::vector<std::thread> clients;
  for (std::size_t i = 0; i < requests.size(); ++i)
    clients.emplace_back([&, i] {
      auto client = server.client();
      const auto res = client.Post("/v1/images/generations", requests[i].dump(), "application/json");
      if (res && res->status == 200)
        answers[i] = json::parse(res->body);
      else
        failures[i] = res ? std::to_string(res->status) + " " + res->body : "no answer: " + httplib::to_string(res.error());
    });
  for (auto& t : clients) t.join();

  // Every image, grouped by (seed, steps) for the reference; each checked against the request.
  struct Served {
    Row row;
    std::string png, latents;
  };
  std::map<std::pair<std::uint64_t, int>, std::vector<Served>> groups;
  std::set<std::uint64_t> unseeded_indices;
  std::size_t images = 0;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    INFO("request ", requests[i].dump(), " failed with ", failures[i],
         failures[i].empty() ? std::string() : "; the server's log:\n" + read_text(server.log));
    REQUIRE(answers[i].is_object());
    const auto& data = answers[i]["data"];
    const auto& r = requests[i];
    const std::size_t n = r.contains("labels") ? r["labels"].size() : r.value("n", 1);
    REQUIRE(data.size() == n);
    for (std::size_t k = 0; k < n; ++k) {
      const std::int64_t label = r.contains("labels") ? r["labels"][k].get<std::int64_t>()
                                 : r.contains("class") ? r["class"].get<std::int64_t>()
                                                       : 8;  // "Bag"
      CHECK(data[k]["class"] == label);
      const auto seed = data[k]["seed"].get<std::uint64_t>(), index = data[k]["sample_index"].get<std::uint64_t>();
      if (r.contains("seed")) {
        CHECK(seed == 5);
        CHECK(index == r["first_index"].get<std::uint64_t>() + k);
      } else {
        CHECK(seed == 21);
        CHECK(unseeded_indices.insert(index).second);  // fresh indices: never two alike
      }
      const int steps = r.value("steps", 4);
      groups[{seed, steps}].push_back({Row{label, seed, index, steps}, data[k]["b64_json"].get<std::string>(),
                                       data[k]["latents_b64"].get<std::string>()});
      ++images;
    }
  }
  for (const auto& [key, members] : groups) {
    std::vector<Row> rows;
    for (const auto& m : members) rows.push_back(m.row);
    // The server computes every row on its own, on one thread (tim::PerSampleNetwork): the
    // reference is each row sampled alone through the same adaptor.
    const auto expected = reference_images(rows, 1, /*per_sample=*/true);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const auto got = decode_png(members[i].png, server.dir);
      INFO("seed ", rows[i].seed, " index ", rows[i].index, " class ", rows[i].label);
      CHECK(got.width == 32);
      CHECK(got.height == 32);
      CHECK(got.channels == 1);
      // The metadata of tim sample (sample_png_text): the A1111 text and the tim JSON chunk.
      std::map<std::string, std::string> text;
      for (const auto& chunk : got.text) text[chunk.key] = chunk.text;
      CHECK(text["parameters"].find("Seed: " + std::to_string(rows[i].seed) + ",") != std::string::npos);
      CHECK(text["parameters"].find("Sample index: " + std::to_string(rows[i].index)) != std::string::npos);
      const auto record = json::parse(text["tim"], nullptr, /*allow_exceptions=*/false);
      REQUIRE(record.is_object());
      CHECK(record.value("sample_index", std::uint64_t{0} - 1) == rows[i].index);
      CHECK(record.value("label", std::int64_t{-1}) == rows[i].label);
      CHECK(got.pixels == expected[i].png.pixels);
      CHECK(floats_of(members[i].latents) == expected[i].values);  // bit for bit
    }
    // The comparison sees what batching could change: the same rows sampled in batched calls of
    // batch_size rows (other GEMM shapes) differ from the served values in the last bits.
    if (key.second == 4) {
      const auto batched = reference_images(rows, batch_size);
      std::size_t differing = 0;
      for (std::size_t i = 0; i < rows.size(); ++i) differing += batched[i].values != expected[i].values;
      CHECK(differing > 0);
    }
  }
  // The calls were shared: fewer sampler calls than requests.
  auto client = server.client();
  const auto health = client.Get("/health");
  REQUIRE(health);
  CHECK(health->status == 200);
  const auto h = json::parse(health->body);
  CHECK(h["images_sampled"] == images);
  CHECK(h["sampler_calls"].get<std::int64_t>() < static_cast<std::int64_t>(requests.size()));
  // A seeded request served alone later gives the very same PNG.
  const json again = post(client, requests[2]);
  CHECK(again["data"][0]["b64_json"] == answers[2]["data"][0]["b64_json"]);
  CHECK(server.terminate() == 0);
  CHECK(read_text(server.log).find("\"POST /v1/images/generations\" 200") != std::string::npos);
}

TEST_CASE("serve: bad requests get a 4xx JSON error naming the problem, and the server stays healthy") {
  Server server("--batch-size 2 --max-body 4096");
  auto client = server.client();
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"{", "not valid JSON"},
      {"[1, 2]", "must be a JSON object"},
      {"{\"class\": 1, \"cfg_scale\": 1e999}", "not valid JSON"},
      {"{\"class\": 1, \"cfg_scale\": NaN}", "not valid JSON"},
      {"{\"class\": 1, \"colour\": \"red\"}", "unknown field 'colour'"},
      {"{}", "nothing to sample"},
      {"{\"prompt\": \"a spaceship\"}", "field 'prompt': 'a spaceship' is not a class"},
      {"{\"prompt\": \"a spaceship\"}", "so a 'prompt' must name a class: free text needs a text-to-image model"},
      {"{\"prompt\": \"Bag\", \"size\": \"32x32\", \"n\": 1, \"text\": 1}", "unknown field 'text'"},
      {"{\"class\": 11}", "field 'class' must be in [0, 10]"},
      {"{\"class\": \"1\", \"labels\": [1]}", "cannot be used together"},
      {"{\"labels\": [1, 2], \"n\": 3}", "'labels' has 2 entries"},
      {"{\"labels\": []}", "field 'labels' must have 1 to 16 entries"},
      {"{\"labels\": [1, \"x\"]}", "field 'labels': 'x' is not a class"},
      {"{\"class\": 1, \"n\": 0}", "field 'n' must be in [1, 16]"},
      {"{\"class\": 1, \"n\": 17}", "field 'n' must be in [1, 16]"},
      {"{\"class\": 1, \"n\": \"2\"}", "field 'n' must be an integer, got a string"},
      {"{\"class\": 1, \"n\": 2.0}", "field 'n' must be an integer"},
      {"{\"class\": 1, \"steps\": 0}", "field 'steps' must be in [1, 1000]"},
      {"{\"class\": 1, \"steps\": 1001}", "field 'steps' must be in [1, 1000]"},
      {"{\"class\": 1, \"steps\": 99999999999999999999}", "field 'steps' must be"},
      {"{\"class\": 1, \"cfg_scale\": \"high\"}", "field 'cfg_scale' must be a number, got a string"},
      {"{\"class\": 1, \"guidance_low\": 0.8, \"guidance_high\": 0.2}", "field 'guidance_low' 0.8 is greater than"},
      {"{\"class\": 1, \"stochasticity\": -1}", "field 'stochasticity' must be a finite number >= 0"},
      {"{\"class\": 1, \"mode\": \"fast\"}", "field 'mode'"},
      {"{\"class\": 1, \"schedule\": \"1,2\"}", "field 'schedule'"},
      {"{\"class\": 1, \"size\": \"33x32\"}", "multiples of 4"},
      {"{\"class\": 1, \"size\": \"4096x4096\"}", "limit of 1048576 pixels"},
      {"{\"class\": 1, \"size\": \"big\"}", "field 'size' must be WIDTHxHEIGHT"},
      {"{\"class\": 1, \"response_format\": \"url\"}", "field 'response_format' must be \"b64_json\""},
      {"{\"class\": 1, \"model\": \"dall-e-3\"}", "serves 'tim-fmnist', not 'dall-e-3'"},
      {"{\"class\": 1, \"seed\": -1}", "field 'seed' must be an integer in [0, 18446744073709551615]"},
      {"{\"class\": 1, \"seed\": 1.5}", "field 'seed' must be an integer"},
      {"{\"class\": 1, \"first_index\": 3}", "field 'first_index' needs 'seed'"},
      {"{\"class\": 1, \"transport\": \"vp\", \"stochasticity\": 0.5}", "needs the ot-fm transport"},
      {"{\"class\": 1, \"t_max\": 0.2, \"t_min\": 0.5}", "must be greater than"},
  };
  check_bad_requests(client, bad);
  // Too large a body: 413 before anything is parsed.
  const auto large = client.Post("/v1/images/generations", "{\"prompt\": \"" + std::string(5000, 'a') + "\"}",
                                 "application/json");
  REQUIRE(large);
  CHECK(large->status == 413);
  CHECK(json::parse(large->body)["error"]["type"] == "request_too_large");
  const auto missing = client.Get("/v2/nothing");
  REQUIRE(missing);
  CHECK(missing->status == 404);
  CHECK(json::parse(missing->body).contains("error"));
  // Still healthy, and still serving.
  const auto health = client.Get("/health");
  REQUIRE(health);
  CHECK(health->status == 200);
  CHECK(json::parse(health->body)["status"] == "ok");
  const json ok = post(client, {{"prompt", "trouser"}, {"steps", 1}});
  CHECK(ok["data"][0]["class"] == 1);
  // `size` is WIDTHxHEIGHT, as OpenAI spells it.
  const json wide = post(client, {{"class", 1}, {"steps", 1}, {"size", "32x16"}, {"return_latents", true}});
  CHECK(wide["tim"]["size"] == "32x16");
  CHECK(wide["data"][0]["latents_shape"] == json::array({1, 16, 32}));
  const auto png = decode_png(wide["data"][0]["b64_json"], server.dir);
  CHECK(png.width == 32);
  CHECK(png.height == 16);
  const auto models = client.Get("/v1/models");
  REQUIRE(models);
  CHECK(json::parse(models->body)["data"][0]["id"] == "tim-fmnist");
}

TEST_CASE("serve: a burst of connections waits in the listen queue, none is dropped") {
  // The server stopped (SIGSTOP) accepts nothing: the kernel completes the handshakes of as many
  // connections as the listen backlog holds and drops the others' SYNs. cpp-httplib's own
  // backlog of 5 held 6 of 16 (and a client dropped that way could later get no answer:
  // serve_http.hpp, widen_listen_backlog); the server's must hold all 16.
  Server server("--batch-size 1");
  constexpr int connections = 16;
  // However the test leaves (a failed REQUIRE throws), the sockets are closed and the server is
  // resumed. (Server's teardown is SIGKILL, which also ends a stopped process, so a stopped server
  // would not hang it; the sockets would leak.)
  struct Stopped {
    pid_t pid;
    std::vector<int> sockets;
    bool resume() { return ::kill(pid, SIGCONT) == 0; }
    ~Stopped() {
      resume();
      for (const int fd : sockets) ::close(fd);
    }
  } stopped{server.pid, {}};
  std::vector<int>& sockets = stopped.sockets;
  REQUIRE(::kill(server.pid, SIGSTOP) == 0);
  for (int i = 0; i < connections; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    REQUIRE(fd >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(server.port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const int started = ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address);
    CHECK((started == 0 || errno == EINPROGRESS));
    sockets.push_back(fd);
  }
  int established = 0;
  const auto deadline = std::chrono::steady_clock::now() + 3s;  // SYN retries come after 1 s
  std::vector<bool> done(sockets.size(), false);
  while (std::chrono::steady_clock::now() < deadline && established < connections) {
    for (std::size_t i = 0; i < sockets.size(); ++i) {
      if (done[i]) continue;
      pollfd p{sockets[i], POLLOUT, 0};
      int error = 0;
      socklen_t size = sizeof error;
      if (::poll(&p, 1, 0) == 1 && ::getsockopt(sockets[i], SOL_SOCKET, SO_ERROR, &error, &size) == 0 && error == 0) {
        done[i] = true;
        ++established;
      }
    }
    std::this_thread::sleep_for(20ms);
  }
  REQUIRE(stopped.resume());
  for (const int fd : sockets) ::close(fd);
  sockets.clear();
  CHECK(established == connections);
  CHECK(health(server)["status"] == "ok");
}

TEST_CASE("serve: --api-key, the queue limit, a client that goes away, SIGTERM") {
  SUBCASE("--api-key needs the bearer token on everything but /health") {
    Server server("--api-key s3cret --batch-size 1");
    auto client = server.client();
    const std::string body = json{{"class", 1}, {"steps", 1}}.dump();
    auto res = client.Post("/v1/images/generations", body, "application/json");
    REQUIRE(res);
    CHECK(res->status == 401);
    CHECK(json::parse(res->body)["error"]["type"] == "authentication_error");
    res = client.Post("/v1/images/generations", {{"Authorization", "Bearer s3creT"}}, body, "application/json");
    REQUIRE(res);
    CHECK(res->status == 401);
    res = client.Get("/v1/models");
    REQUIRE(res);
    CHECK(res->status == 401);
    res = client.Post("/v1/images/generations", {{"Authorization", "Bearer s3cret"}}, body, "application/json");
    REQUIRE(res);
    CHECK(res->status == 200);
    res = client.Get("/health");
    REQUIRE(res);
    CHECK(res->status == 200);
  }
  SUBCASE("a request past --max-queue gets 429") {
    Server server("--max-queue 2 --batch-size 1");
    auto client = server.client();
    const json error = post(client, {{"class", 1}, {"n", 3}}, 429);
    CHECK(error["error"]["type"] == "queue_full");
    post(client, {{"class", 1}, {"n", 2}, {"steps", 1}});
  }
  SUBCASE("a client that disconnects cancels its work") {
    Server server("--batch-size 1");
    {
      auto client = server.client(/*read_timeout_s=*/1);
      const auto res = client.Post("/v1/images/generations", json{{"class", 1}, {"steps", 1000}}.dump(),
                                   "application/json");
      CHECK(!res);  // timed out: the client closed the connection
    }
    auto client = server.client();
    bool idle = false;
    for (int i = 0; i < 100 && !idle; ++i) {
      const auto health = client.Get("/health");
      REQUIRE(health);
      idle = json::parse(health->body)["queued_images"] == 0;
      if (!idle) std::this_thread::sleep_for(100ms);
    }
    CHECK(idle);  // a 1000-step run takes far longer than the 1 s + 10 s waited here
    CHECK(read_text(server.log).find("\"POST /v1/images/generations\" 499") != std::string::npos);
    CHECK(json::parse(client.Get("/health")->body)["images_sampled"] == 0);
  }
  SUBCASE("SIGTERM finishes the request in flight, then the server exits") {
    Server server("--batch-size 1");
    json answer;
    std::thread request([&] {
      auto client = server.client();
      const auto res = client.Post("/v1/images/generations", json{{"class", 2}, {"steps", 100}}.dump(),
                                   "application/json");
      if (res && res->status == 200) answer = json::parse(res->body);
    });
    // SIGTERM once the request is in the queue (or already answered).
    auto probe = server.client();
    for (int i = 0; i < 200; ++i) {
      const auto health = probe.Get("/health");
      REQUIRE(health);
      const auto h = json::parse(health->body);
      if (h["queued_images"] != 0 || h["images_sampled"] != 0) break;
      std::this_thread::sleep_for(10ms);
    }
    CHECK(server.terminate() == 0);
    request.join();
    REQUIRE(answer.is_object());
    CHECK(answer["data"].size() == 1);
    CHECK(read_text(server.log).find("SIGTERM: finishing the requests in flight") != std::string::npos);
  }
}

TEST_CASE("serve: what cannot be served is refused at start, exit code 1 and a message") {
  const fs::path dir = fs::temp_directory_path() / ("tim_serve_start_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto run = [&](const std::string& args) {
    const fs::path err = dir / "stderr.txt";
    const int status = std::system((std::string("'") + TIM_EXECUTABLE + "' serve " + args + " 2> '" + err.string() +
                                    "' > /dev/null").c_str());
    return std::pair{WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_text(err)};
  };
  // (A text-to-image model without --text-encoder: test_serve_t2i.cpp.)
  auto [code, err] = run("--port 0 --batch-size 0");
  CHECK(code == 1);
  CHECK(err.find("--batch-size must be in [1, 1024], got 0") != std::string::npos);
  std::tie(code, err) = run("--port 0 --device cuda");
  CHECK(code == 1);
  // A port already taken.
  Server first("--batch-size 1");
  std::tie(code, err) = run("--port " + std::to_string(first.port) + " --model '" + TIM_SHIPPED_MODEL + "'");
  CHECK(code == 1);
  CHECK(err.find("cannot listen on 127.0.0.1:" + std::to_string(first.port)) != std::string::npos);
  std::error_code ignored;
  fs::remove_all(dir, ignored);
}

TEST_CASE("serve: a 1000-class model without class_names answers with the ImageNet-1k names") {
  // The shipped network with a random 1001-row class table, its metadata without the keys that
  // name or count its classes: a 1000-class model the program knows no names for but ImageNet's.
  const auto shipped = tim::io::SafetensorsFile::open(TIM_SHIPPED_MODEL);
  tim::io::SafetensorsWriter writer;
  for (const auto& info : shipped.tensors()) {
    if (info.name == "y_embedder.embedding_table.weight") {
      auto table = tim::Tensor<float>::empty({1001, info.shape[1]});
      for (std::int64_t i = 0; i < table.numel(); ++i) table.data()[i] = 0.02f * static_cast<float>((i * 7919) % 101 - 50);
      writer.add(info.name, table);
    } else {
      writer.add(info.name, shipped.load<float>(info.name).clone());
    }
  }
  for (const auto& [key, value] : shipped.metadata())
    if (key != "class_names" && key != "dataset" && key != "config" && key != "num_classes" && key != "null_class")
      writer.set_metadata(key, value);
  const fs::path model = fs::temp_directory_path() / ("tim_serve_imagenet_" + std::to_string(::getpid()) + ".safetensors");
  writer.write(model.string());
  std::vector<std::string> names;  // the committed list, read independently of the program
  {
    std::istringstream lines(read_text(TIM_IMAGENET_CLASSES));
    for (std::string line; std::getline(lines, line);) names.push_back(line);
  }
  REQUIRE(names.size() == 1000);
  {
    Server server("--batch-size 2", model.string());
    auto client = server.client();
    const auto models = client.Get("/v1/models");
    REQUIRE(models);
    const auto listed = json::parse(models->body).at("data").at(0).at("tim");
    CHECK(listed.at("num_classes") == 1000);
    CHECK(listed.at("class_names") == json(names));
    // A class name as the prompt resolves to its number; the answer names class 0 and 999.
    const auto by_name = post(client, {{"prompt", names[999]}, {"steps", 1}});
    CHECK(by_name.at("data").at(0).at("class") == 999);
    CHECK(by_name.at("data").at(0).at("class_name") == names[999]);
    const auto by_number = post(client, {{"class", 0}, {"steps", 1}});
    CHECK(by_number.at("data").at(0).at("class_name") == names[0]);
  }
  fs::remove(model);
}
