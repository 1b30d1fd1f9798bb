// `tim serve` with a text-to-image model on the loopback: a small random T2I network taking the
// golden Gemma-3 encoder's 32-wide features (tests/data/golden_gemma/released_pattern). Every
// served image is compared bit for bit with what `tim sample --text-encoder DIR --prompt P` writes
// for the same seed and sample index (the reference: the program's own run of that prompt alone),
// with prompts queued together so that they share sampler calls (the number of calls is checked);
// the bad requests get 4xx JSON errors and the server stays healthy.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "random_t2i_checkpoint.hpp"
#include "tim/text/tokenizer.hpp"
#include "tim/tim.hpp"

#include "serve_process.hpp"  // after tim/tim.hpp (Eigen before httplib.h)

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace tim_test::serve;

const std::string encoder_dir = std::string(TIM_TEST_DATA_DIR) + "/golden_gemma/released_pattern";
constexpr std::int64_t max_length = 12;  // the server's and the reference's --max-length

std::string quote(const std::string& text) {
  std::string quoted = "'";
  for (char ch : text) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return quoted + "'";
}

//! A random T2I network on 3-channel 8x8 latents (images without a decoder), caption width 32.
struct T2IModel {
  fs::path dir = fs::temp_directory_path() / ("tim_serve_t2i_" + std::to_string(::getpid()));
  std::string path = (dir / "t2i.safetensors").string();
  T2IModel() {
    fs::create_directories(dir);
    const auto checkpoint = tim_test::random_t2i_checkpoint(tim_test::t2i_config(16, 2, 2, 1, 3, 32, 16), 5);
    tim::io::SafetensorsWriter writer;
    for (const auto& info : checkpoint.tensors()) writer.add(info.name, checkpoint.load<float>(info.name));
    for (const auto& [key, value] : checkpoint.metadata()) writer.set_metadata(key, value);
    writer.set_metadata("image_size", "8x8x3");
    writer.write(path);
  }
  ~T2IModel() {
    std::error_code ignored;
    fs::remove_all(dir, ignored);
  }
};

//! What `tim sample` writes for one prompt alone at one sample index: the latents (float32, the
//! values `return_latents` answers) and the PNG's pixels.
struct Reference {
  std::vector<float> values;
  std::vector<unsigned char> pixels;
};

Reference tim_sample(const std::string& model, const fs::path& dir, const std::string& prompt, std::uint64_t seed,
                     std::uint64_t index, const std::string& settings) {
  static int counter = 0;
  const fs::path run = dir / ("reference_" + std::to_string(counter++));
  fs::create_directories(run);
  const std::string out = (run / "out.safetensors").string();
  const std::string command = quote(TIM_EXECUTABLE) + " sample --model " + quote(model) + " --text-encoder " +
                              quote(encoder_dir) + " --prompt " + quote(prompt) + " --max-length " +
                              std::to_string(max_length) + " --seed " + std::to_string(seed) + " --first-index " +
                              std::to_string(index) + " --size 6x4 --threads 2 " + settings + " --out " + quote(out) +
                              " --png-dir " + quote((run / "png").string()) + " 2> " + quote((run / "err.txt").string());
  const int status = std::system(command.c_str());
  INFO(command, "\n", read_text(run / "err.txt"));
  REQUIRE(status == 0);
  Reference reference;
  const auto latents = tim::io::SafetensorsFile::open(out).load<float>("latents");
  REQUIRE(latents.shape() == tim::Shape{1, 3, 4, 6});
  reference.values.assign(latents.data(), latents.data() + latents.numel());
  char name[32];
  std::snprintf(name, sizeof name, "%06llu.png", static_cast<unsigned long long>(index));
  reference.pixels = tim::io::read_png((run / "png" / name).string()).pixels;
  return reference;
}

}  // namespace

TEST_CASE("serve t2i: prompts queued together share sampler calls, each image bit-identical to tim sample --prompt") {
  const T2IModel model;
  const auto tokenizer = tim::text::Tokenizer::open(encoder_dir + "/tokenizer.model");
  const auto tokens = [&](const std::string& prompt) { return tokenizer.frame(prompt, max_length).length; };
  // Prompts of one token count share calls: find two such groups among some candidates.
  const std::vector<std::string> candidates = {"a red fox", "a red cat", "a blue fox", "a blue cat", "the lazy dog",
                                               "the quick dog", "a green tree", "an old house", "a big ship"};
  std::map<std::int64_t, std::vector<std::string>> by_length;
  for (const auto& p : candidates) by_length[tokens(p)].push_back(p);
  std::vector<std::vector<std::string>> groups;
  for (const auto& [length, members] : by_length)
    if (members.size() >= 2) groups.push_back(members);
  REQUIRE(groups.size() >= 2);
  const std::string long_prompt = "a red fox in the snow at sunset beside a frozen lake under a violet sky";
  REQUIRE(tokenizer.frame(long_prompt, max_length).truncated);

  // Requests (settings: 2 steps, guided with the null caption): seeded ones at first indices of
  // their own, one unseeded (the server's seed 9), one stochastic (another batch key).
  const std::string settings = R"("steps": 2, "cfg_scale": 2.0, "size": "6x4", "return_latents": true)";
  std::vector<json> requests = {
      json::parse(R"({"prompt": ")" + groups[0][0] + R"(", "seed": 4, "first_index": 10, "n": 2, )" + settings + "}"),
      json::parse(R"({"prompt": ")" + groups[0][1] + R"(", "seed": 4, "first_index": 20, )" + settings + "}"),
      json::parse(R"({"prompt": ")" + groups[1][0] + R"(", "seed": 4, "first_index": 30, "n": 3, )" + settings + "}"),
      json::parse(R"({"prompt": ")" + groups[1][1] + R"(", "seed": 4, "first_index": 40, )" + settings + "}"),
      json::parse(R"({"prompt": "café 🤖", "seed": 4, "first_index": 50, )" + settings + "}"),
      json::parse(R"({"prompt": ")" + long_prompt + R"(", "seed": 4, "first_index": 60, )" + settings + "}"),
      json::parse(R"({"prompt": ")" + groups[0][0] + R"(", "seed": 4, "first_index": 70, "stochasticity": 0.5, )" +
                  settings + "}"),
      json::parse(R"({"prompt": ")" + groups[0][1] + R"(", )" + settings + "}"),
  };
  // The calls the batching rule makes when every row is queued at once: one per (seed,
  // stochasticity, token count), none holding more than the batch size of 8 rows.
  std::set<std::tuple<std::uint64_t, double, std::int64_t>> keys;
  std::int64_t rows = 0;
  for (const auto& r : requests) {
    keys.insert({r.value("seed", std::uint64_t{9}), r.value("stochasticity", 0.0),
                 tokens(r["prompt"].get<std::string>())});
    rows += r.value("n", 1);
  }

  Server server("--text-encoder " + quote(encoder_dir) + " --max-length " + std::to_string(max_length) +
                    " --batch-size 8 --seed 9 --threads 2 --max-steps 100000",
                model.path);
  // The sampler thread is held by a long request while the others queue behind it; then that
  // client goes away (its call stops at the next step) and the queued rows are batched.
  HeldRequest blocker(server.port, R"({"prompt": "a long wait", "steps": 100000, "size": "6x4"})");
  REQUIRE(wait_for_queue(server, 1));
  std::vector<json> answers(requests.size());
  std::vector<std::thread> clients;
  for (std::size_t i = 0; i < requests.size(); ++i)
    clients.emplace_back([&, i] {
      auto client = server.client();
      const auto res = client.Post("/v1/images/generations", requests[i].dump(), "application/json");
      if (res) answers[i] = json{{"status", res->status}, {"body", res->body}};
    });
  const bool queued = wait_for_queue(server, 1 + rows);
  blocker.release();
  for (auto& t : clients) t.join();
  {
    INFO("the server's log:\n", read_text(server.log));
    REQUIRE(queued);
    const auto h = health(server);
    CHECK(h["images_sampled"] == rows);
    CHECK(h["sampler_calls"] == 1 + static_cast<std::int64_t>(keys.size()));  // the blocker's call, then one per key
    CHECK(keys.size() < requests.size());                                     // so some calls were shared
  }

  for (std::size_t i = 0; i < requests.size(); ++i) {
    const auto& r = requests[i];
    INFO("request ", r.dump(), " -> ", answers[i].dump().substr(0, 300));
    REQUIRE(answers[i].value("status", 0) == 200);
    const auto answer = json::parse(answers[i]["body"].get<std::string>());
    const std::string prompt = r["prompt"].get<std::string>();
    CHECK(answer["tim"]["prompt_tokens"] == tokens(prompt));
    CHECK(answer["tim"]["prompt_truncated"] == (prompt == long_prompt));
    CHECK(answer["tim"].contains("warnings") == (prompt == long_prompt));
    const auto& data = answer["data"];
    REQUIRE(data.size() == static_cast<std::size_t>(r.value("n", 1)));
    for (std::size_t k = 0; k < data.size(); ++k) {
      const auto seed = data[k]["seed"].get<std::uint64_t>(), index = data[k]["sample_index"].get<std::uint64_t>();
      CHECK(seed == r.value("seed", std::uint64_t{9}));
      if (r.contains("first_index")) CHECK(index == r["first_index"].get<std::uint64_t>() + k);
      CHECK(data[k]["prompt"] == prompt);
      CHECK_FALSE(data[k].contains("class"));
      const std::string extra = r.contains("stochasticity") ? "--steps 2 --cfg-scale 2 --stochasticity 0.5"
                                                            : "--steps 2 --cfg-scale 2";
      const auto expected = tim_sample(model.path, server.dir, prompt, seed, index, extra);
      INFO("image ", k, " seed ", seed, " index ", index);
      CHECK(floats_of(data[k]["latents_b64"]) == expected.values);  // bit for bit
      const auto png = decode_png(data[k]["b64_json"], server.dir);
      CHECK(png.width == 6);
      CHECK(png.height == 4);
      CHECK(png.channels == 3);
      CHECK(png.pixels == expected.pixels);
      // The prompt in the metadata: first in the A1111 text (iTXt for the UTF-8 one), the tim JSON.
      REQUIRE(png.find_text("parameters") != nullptr);
      CHECK(png.find_text("parameters")->rfind(prompt + "\nSteps: 2, ", 0) == 0);
      const auto record = json::parse(*png.find_text("tim"), nullptr, /*allow_exceptions=*/false);
      REQUIRE(record.is_object());
      CHECK(record.value("caption", std::string()) == prompt);
      CHECK(record.value("text_encoder", std::string()) == encoder_dir);
      CHECK(record.value("sample_index", std::uint64_t{0} - 1) == index);
    }
  }
  // The same request served alone gives the very same PNG.
  auto client = server.client();
  const json again = post(client, requests[2]);
  const json first = json::parse(answers[2]["body"].get<std::string>());
  CHECK(again["data"] == first["data"]);
  CHECK(server.terminate() == 0);
}

TEST_CASE("serve t2i: bad requests get a 4xx JSON error naming the problem, and the server stays healthy") {
  const T2IModel model;
  Server server("--text-encoder " + quote(encoder_dir) + " --batch-size 2", model.path);
  auto client = server.client();
  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"class": 1})", "field 'class': 't2i' is a text-to-image model; it samples from 'prompt'"},
      {R"({"prompt": "a fox", "labels": [1, 2]})", "field 'labels': 't2i' is a text-to-image model"},
      {R"({})", "nothing to sample: this text-to-image model needs 'prompt'"},
      {R"({"n": 2})", "nothing to sample: this text-to-image model needs 'prompt'"},
      {R"({"prompt": 3})", "field 'prompt' must be a string, got an integer"},
      {R"({"prompt": ["a", "b"]})", "field 'prompt' must be a string, got an array"},
      {R"({"prompt": null})", "field 'prompt' must be a string, got null"},
      {R"({"prompt": ""})", "field 'prompt' is empty"},
      {"{\"prompt\": \"caf\xff\"}", "not valid JSON"},
      {"{\"prompt\": \"caf\xff\"}", "ill-formed UTF-8"},
      {R"({"prompt": "\ud800"})", "not valid JSON"},
      {R"({"prompt": "a\u0000b"})", "field 'prompt' contains a NUL character"},
      {R"({"prompt": "a fox", "n": 17})", "field 'n' must be in [1, 16]"},
      {R"({"prompt": "a fox", "size": "big"})", "field 'size' must be WIDTHxHEIGHT"},
      {R"({"prompt": "a fox", "cfg_scale": "high"})", "field 'cfg_scale' must be a number"},
  };
  check_bad_requests(client, bad);
  // Still healthy, and still serving; /v1/models says what kind of model this is.
  const auto h = health(server);
  CHECK(h["status"] == "ok");
  CHECK(h["images_sampled"] == 0);
  const json ok = post(client, {{"prompt", "a red fox"}, {"steps", 1}});
  CHECK(ok["data"].size() == 1);
  CHECK(ok["tim"]["prompt_truncated"] == false);
  const auto models = client.Get("/v1/models");
  REQUIRE(models);
  const auto listed = json::parse(models->body).at("data").at(0);
  CHECK(listed.at("id") == "t2i");
  CHECK(listed.at("tim").at("kind") == "text-to-image");
  CHECK(listed.at("tim").at("max_length") == 256);
  CHECK(listed.at("tim").at("hidden_state") == "last");
  CHECK_FALSE(listed.at("tim").contains("class_names"));
  CHECK(listed.at("tim").at("default_size") == "8x8");
}

TEST_CASE("serve t2i: what cannot be served is refused at start, exit code 1 and a message") {
  const T2IModel model;
  const auto run = [&](const std::string& args) {
    const fs::path err = model.dir / "stderr.txt";
    const int status = std::system((quote(TIM_EXECUTABLE) + " serve --port 0 " + args + " 2> " + quote(err.string()) +
                                    " > /dev/null").c_str());
    return std::pair{WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_text(err)};
  };
  auto [code, err] = run("--model " + quote(model.path));
  CHECK(code == 1);
  CHECK(err.find("is a text-to-image (T2I) TiM: its requests are prompts, so give --text-encoder DIR") !=
        std::string::npos);
  std::tie(code, err) = run("--model " + quote(TIM_SHIPPED_MODEL) + " --text-encoder " + quote(encoder_dir));
  CHECK(code == 1);
  CHECK(err.find("--text-encoder needs a text-to-image model") != std::string::npos);
  std::tie(code, err) = run("--model " + quote(TIM_SHIPPED_MODEL) + " --max-length 8");
  CHECK(code == 1);
  CHECK(err.find("--max-length and --hidden-state need --text-encoder DIR") != std::string::npos);
  std::tie(code, err) = run("--model " + quote(model.path) + " --text-encoder " + quote(encoder_dir) +
                            " --max-length 0");
  CHECK(code == 1);
  CHECK(err.find("--max-length must be at least 1") != std::string::npos);
  std::tie(code, err) = run("--model " + quote(model.path) + " --text-encoder " +
                            quote(std::string(TIM_TEST_DATA_DIR) + "/golden_gemma/gqa_layer_types"));
  CHECK(code == 1);
  CHECK(err.find("--text-encoder '") != std::string::npos);
  CHECK(err.find("missing tokenizer.model") != std::string::npos);
}
