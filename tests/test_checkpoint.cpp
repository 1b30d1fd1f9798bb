// Training checkpoints (tim/train/checkpoint.hpp): a round trip of every tensor and scalar, the
// exported model file loads as a C2I network with the EMA's bits, and a resumed run is bit-exact
// against an uninterrupted one (weights, EMA, AdamW moments, data position) over the whole
// training loop: loader, forward, backward, clip, AdamW, EMA.
//
// The loss is a stand-in (the objective of SPEC 7 lives elsewhere): L = sum(F^2) / 2 of the
// network output at times drawn from the counter-based generator keyed by (seed, step), so
// dL/dF = F. What is checked is the run management, which does not depend on the loss.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "tim/core/random.hpp"
#include "tim/nn/c2i_backward.hpp"
#include "tim/nn/c2i_training.hpp"
#include "tim/tim.hpp"
#include "tim/train/checkpoint.hpp"
#include "tim/train/loader.hpp"

namespace fs = std::filesystem;

namespace {

const std::string model_path = std::string(TIM_TEST_DATA_DIR) + "/optim_golden/model.safetensors";

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) {
    path = fs::temp_directory_path() / ("tim_checkpoint_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  std::string operator/(const std::string& child) const { return (path / child).string(); }
};

//! 40 latents (1, 4, 4) with labels 0 .. 2 (the golden network: 1 channel, 3 classes), one shard.
std::shared_ptr<tim::train::Dataset> tiny_data(const std::string& path) {
  const std::int64_t n = 40;
  const auto values = [&] {
    std::vector<float> v(static_cast<std::size_t>(n * 16));
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(tim::random::normal(3, i / 16, 0, i % 16));
    return v;
  }();
  std::vector<std::int64_t> labels(n);
  for (std::int64_t i = 0; i < n; ++i) labels[static_cast<std::size_t>(i)] = i % 3;
  tim::io::SafetensorsWriter writer;
  writer.add("latents", tim::DType::F32, {n, 1, 4, 4}, values.data());
  writer.add("labels", tim::DType::I64, {n}, labels.data());
  writer.write(path);
  return std::make_shared<tim::train::LatentShards>(std::vector<std::string>{path}, 3);
}

//! A training run over the stand-in loss.
struct Run {
  tim::nn::C2IModel<float> model;
  tim::nn::C2IGradients<float> grads;
  tim::train::AdamW<float> adamw;
  tim::train::GradientClipper<float> clipper;
  tim::train::Ema<float> ema;
  tim::train::LrSchedule schedule{.lr = 3e-3, .warmup_steps = 3};
  tim::train::TrainingProgress progress;
  tim::nn::C2ITrainingWorkspace<float, tim::cpu> ws;
  tim::Tensor<float> out, t, r;
  std::shared_ptr<tim::train::Dataset> data;
  std::unique_ptr<tim::train::BatchLoader> loader;
  static constexpr std::int64_t batch = 6;

  Run(std::shared_ptr<tim::train::Dataset> d, std::uint64_t seed)
      : model(tim::nn::clone_parameters(tim::nn::load_c2i<float>(tim::io::SafetensorsFile::open(model_path)))),
        grads(tim::nn::zero_gradients_like(model)),
        adamw(model, {}),
        clipper(grads),
        ema(model, 0.8),
        t(tim::Tensor<float>::empty({batch})),
        r(tim::Tensor<float>::empty({batch})),
        data(std::move(d)) {
    progress.seed = seed;
  }

  void start_loader() { loader = std::make_unique<tim::train::BatchLoader>(data, batch, progress.seed, progress.data, 2); }

  void step() {
    const auto& b = loader->next();
    for (std::int64_t i = 0; i < batch; ++i) {  // t, r from (seed, step): nothing to save but the step
      const auto words = tim::random::stream_block(progress.seed, static_cast<std::uint64_t>(progress.step), 7,
                                                   static_cast<std::uint32_t>(i));
      const double u = tim::random::uniform_open(words.v[0]), w = tim::random::uniform_open(words.v[1]);
      t.data()[i] = static_cast<float>(u);
      r.data()[i] = static_cast<float>(u * w);
    }
    tim::nn::c2i_training_forward(model, ws, out, b.x, t, r, b.labels);
    tim::nn::zero_gradients(grads);
    tim::nn::c2i_backward(model, ws, out, grads);  // dL/dF = F for L = |F|^2 / 2
    clipper.clip(grads, 0.5);
    adamw.step(model, grads, schedule.at(progress.step));
    ema.update(model);
    ++progress.step;
    progress.data = b.position_after;
  }
};

void check_same_bits(const tim::nn::C2IModel<float>& a, const tim::nn::C2IModel<float>& b, const char* what) {
  int compared = 0;
  tim::nn::for_each_parameter(
      [&](const std::string& name, const tim::Tensor<float>& x, const tim::Tensor<float>& y) {
        INFO(what << " " << name);
        REQUIRE(x.numel() == y.numel());
        CHECK(std::memcmp(x.data(), y.data(), sizeof(float) * x.numel()) == 0);
        ++compared;
      },
      const_cast<tim::nn::C2IModel<float>&>(a), const_cast<tim::nn::C2IModel<float>&>(b));
  CHECK(compared > 20);
}

bool same_bits(const tim::nn::C2IModel<float>& a, const tim::nn::C2IModel<float>& b) {
  bool same = true;
  tim::nn::for_each_parameter(
      [&](const std::string&, const tim::Tensor<float>& x, const tim::Tensor<float>& y) {
        same = same && std::memcmp(x.data(), y.data(), sizeof(float) * x.numel()) == 0;
      },
      const_cast<tim::nn::C2IModel<float>&>(a), const_cast<tim::nn::C2IModel<float>&>(b));
  return same;
}

}  // namespace

TEST_CASE("checkpoint: resume after k steps gives the bits of an uninterrupted run") {
  TempDir tmp("resume");
  auto data = tiny_data(tmp / "shard.safetensors");
  const int k = 5, total = 12;  // 6 batches per epoch of 40 (tail of 4 dropped): crosses an epoch after the resume
  Run straight(data, 17);
  straight.start_loader();
  for (int s = 0; s < total; ++s) straight.step();

  const std::map<std::string, std::string> recipe{{"recipe", R"({"lr": 0.003})"}, {"transport", "ot-fm"}};
  {
    Run first(data, 17);
    first.start_loader();
    for (int s = 0; s < k; ++s) first.step();
    first.progress.train_seconds = 12.5;
    first.progress.random_state = {1, 0xFFFFFFFFFFFFFFFFull};
    tim::train::save_checkpoint(tmp / "ck", first.model, first.adamw, first.ema, first.progress, recipe);
  }  // the first run is gone: nothing but the folder carries over
  for (const auto& entry : fs::directory_iterator(tmp.path / "ck")) CHECK(entry.path().filename().string().find(".tmp-") == std::string::npos);

  Run resumed(data, 999);  // seed comes from the checkpoint
  CHECK(tim::train::read_checkpoint_metadata(tmp / "ck").at("transport") == "ot-fm");
  resumed.progress = tim::train::load_checkpoint(tmp / "ck", resumed.model, resumed.adamw, resumed.ema);
  CHECK(resumed.progress.step == k);
  CHECK(resumed.progress.seed == 17);
  CHECK(resumed.progress.train_seconds == 12.5);
  CHECK(resumed.progress.random_state == std::vector<std::uint64_t>{1, 0xFFFFFFFFFFFFFFFFull});
  CHECK(resumed.adamw.steps_taken() == k);
  CHECK(resumed.progress.data == tim::train::DataPosition{0, 30});
  resumed.start_loader();
  for (int s = k; s < total; ++s) resumed.step();
  CHECK(resumed.progress.data == straight.progress.data);
  CHECK(resumed.progress.data.epoch == 1);
  check_same_bits(resumed.model, straight.model, "weights");
  check_same_bits(resumed.ema.network(), straight.ema.network(), "EMA");
  check_same_bits(resumed.adamw.exp_avg(), straight.adamw.exp_avg(), "m");
  check_same_bits(resumed.adamw.exp_avg_sq(), straight.adamw.exp_avg_sq(), "v");

  // The check can fail: a resume that skips the optimizer state (fresh moments, step 0) differs.
  Run careless(data, 17);
  auto full = tim::train::load_checkpoint(tmp / "ck", careless.model, careless.adamw, careless.ema);
  careless.progress = full;
  careless.adamw = tim::train::AdamW<float>(careless.model, {});
  careless.start_loader();
  for (int s = k; s < total; ++s) careless.step();
  CHECK_FALSE(same_bits(careless.model, straight.model));
}

TEST_CASE("checkpoint: model.safetensors is the EMA under the released names, loadable by load_c2i") {
  TempDir tmp("export");
  auto data = tiny_data(tmp / "shard.safetensors");
  Run run(data, 4);
  run.start_loader();
  for (int s = 0; s < 3; ++s) run.step();
  tim::train::save_checkpoint(tmp / "ck", run.model, run.adamw, run.ema, run.progress,
                              {{"recipe", "{}"}, {"sample_type", "transition"}});
  const auto file = tim::io::SafetensorsFile::open(tmp / "ck/model.safetensors");
  CHECK(file.metadata().at("num_heads") == "2");
  CHECK(file.metadata().at("new_condition") == "t-r");
  CHECK(file.metadata().at("steps") == "3");
  CHECK(file.metadata().at("weights") == "ema (decay 0.8)");
  CHECK(file.metadata().at("sample_type") == "transition");
  CHECK(file.info("x_embedder.proj.weight").shape == tim::Shape({8, 1, 2, 2}));
  const auto loaded = tim::nn::load_c2i<float>(file);
  check_same_bits(loaded, run.ema.network(), "exported EMA");
  CHECK_FALSE(same_bits(loaded, run.model));  // the EMA, not the online weights
  // bfloat16 storage, online weights.
  tim::train::write_model_file(tmp / "ck", run.model, run.ema, 3, {}, {.ema = false, .dtype = tim::DType::BF16});
  const auto bf16 = tim::io::SafetensorsFile::open(tmp / "ck/model.safetensors");
  CHECK(bf16.info("blocks.0.attn.qkv.weight").dtype == tim::DType::BF16);
  CHECK(bf16.metadata().at("weights") == "online");
  const auto w = bf16.load<float>("blocks.0.attn.qkv.weight");
  CHECK(w.data()[5] == static_cast<float>(tim::bfloat16(run.model.blocks[0].attn.qkv.weight.data()[5])));
}

TEST_CASE("checkpoint: bad or foreign state files are errors naming the file, and a failed restore changes nothing") {
  TempDir tmp("bad");
  auto data = tiny_data(tmp / "shard.safetensors");
  Run run(data, 4);
  CHECK_THROWS_WITH_AS(tim::train::load_checkpoint(tmp / "none", run.model, run.adamw, run.ema),
                       doctest::Contains("state.safetensors"), tim::Error);
  fs::create_directories(tmp / "foreign");
  fs::copy_file(model_path, tmp / "foreign/state.safetensors");
  CHECK_THROWS_WITH_AS(tim::train::load_checkpoint(tmp / "foreign", run.model, run.adamw, run.ema),
                       doctest::Contains("is not a tim training state"), tim::Error);
  // A state of another precision: rejected before anything is copied.
  {
    auto d = tim::nn::clone_parameters(tim::nn::load_c2i<double>(tim::io::SafetensorsFile::open(model_path)));
    tim::train::AdamW<double> adamw(d, {});
    tim::train::Ema<double> ema(d, 0.5);
    for (auto& x : std::vector<double*>{d.label_table.data()}) x[0] = 123.0;
    tim::train::save_checkpoint(tmp / "double", d, adamw, ema, {}, {});
  }
  const auto before = tim::nn::clone_parameters(run.model);
  CHECK_THROWS_WITH_AS(tim::train::load_checkpoint(tmp / "double", run.model, run.adamw, run.ema),
                       doctest::Contains("the run trains in F32"), tim::Error);
  CHECK(same_bits(before, run.model));
  // A truncated state file.
  tim::train::save_checkpoint(tmp / "cut", run.model, run.adamw, run.ema, {}, {});
  fs::resize_file(tmp / "cut/state.safetensors", fs::file_size(tmp / "cut/state.safetensors") - 10);
  CHECK_THROWS_WITH_AS(tim::train::load_checkpoint(tmp / "cut", run.model, run.adamw, run.ema),
                       doctest::Contains("cut/state.safetensors"), tim::Error);
}
