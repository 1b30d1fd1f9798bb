// `tim train` run as a subprocess on a tiny latent-shard data set written here: its first step
// against the same step done by hand in this process with the library (the released
// initialisation, the loader, the noise and time draws, compute_loss_and_gradients, clipping,
// AdamW, EMA: the same bits), the loss falling over a short run, a resumed run bit for bit equal
// to an uninterrupted one, the exported model sampled by `tim sample`, and bad configs and flags.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_run.hpp"
#include "tim/core/random.hpp"
#include "tim/io/yaml_objective.hpp"
#include "tim/tim.hpp"
#include "tim/train/init.hpp"
#include "tim/train/loader.hpp"
#include "tim/train/objective.hpp"
#include "tim/train/optimizer.hpp"

namespace {

using tim_test::quote;

constexpr std::int64_t samples = 12, channels = 2, height = 4, width = 4, classes = 3;

//! A shard of 12 latents [2, 4, 4] with labels 0 .. 2 into `path`.
void write_shard(const std::string& path) {
  std::vector<float> latents(static_cast<std::size_t>(samples * channels * height * width));
  for (std::size_t i = 0; i < latents.size(); ++i)
    latents[i] = static_cast<float>(0.8 * std::sin(0.61 * static_cast<double>(i)) + 0.1 * std::cos(2.3 * static_cast<double>(i)));
  std::vector<std::int64_t> labels(samples);
  for (std::int64_t i = 0; i < samples; ++i) labels[static_cast<std::size_t>(i)] = i % classes;
  tim::io::SafetensorsWriter writer;
  writer.add("latents", tim::DType::F32, tim::Shape{samples, channels, height, width}, latents.data());
  writer.add("labels", tim::DType::I64, tim::Shape{samples}, labels.data());
  writer.write(path);
}

//! The training YAML: the released objective keys (OT-FM, the released C2I loss settings but a
//! larger consistency share), a tiny network, tim's data: and train: sections.
std::string config_text(const std::string& shard, const std::string& extra_train = "") {
  return "model:\n"
         "  transport:\n"
         "    target: tim.schedulers.transports.OT_FM\n"
         "    params:\n"
         "      P_mean: -0.4\n"
         "      P_std: 1.0\n"
         "  transition_loss:\n"
         "    diffusion_ratio: 0.5\n"
         "    consistency_ratio: 0.25\n"
         "    derivative_type: dde\n"
         "    differential_epsilon: 0.005\n"
         "    weight_time_type: sqrt\n"
         "    weight_time_tangent: True\n"
         "    use_dir_loss: False\n"
         "  network:\n"
         "    target: tim.models.c2i.tim_model.TiM\n"
         "    params:\n"
         "      hidden_size: 16\n"
         "      depth: 1\n"
         "      num_heads: 2\n"
         "      patch_size: 2\n"
         "      lora_hidden_size: 8\n"
         "      in_channels: 2\n"
         "      num_classes: 3\n"
         "      class_dropout_prob: 0.25\n"
         "data:\n"
         "  source: latent-shards\n"
         "  path: " + shard + "\n"
         "train:\n"
         "  batch_size: 4\n"
         "  seed: 5\n"
         "  learning_rate: 0.003\n"
         "  warmup_steps: 2\n"
         "  ema_decay: 0.9\n"
         "  max_grad_norm: 1.0\n"
         "  checkpoint_every: 0\n"
         "  log_every: 1\n"
         "  threads: 1\n" + extra_train;
}

struct Setup {
  tim_test::TempDir dir;
  std::string shard = dir.file("shard.safetensors"), config = dir.file("train.yaml");
  Setup() {
    write_shard(shard);
    tim_test::write_text(config, config_text(shard));
  }
};

std::vector<nlohmann::json> read_log(const std::string& path) {
  std::vector<nlohmann::json> rows;
  std::istringstream in(tim_test::read_text(path));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

//! Whether tensor `name` of `file` holds exactly the bits of `t`.
bool same_bits(const tim::io::SafetensorsFile& file, const std::string& name, const tim::Tensor<float>& t) {
  if (!file.contains(name) || file.info(name).dtype != tim::DType::F32 || file.info(name).shape.numel() != t.numel())
    return false;
  const auto bytes = file.bytes(name);
  return bytes.size() == static_cast<std::size_t>(t.numel()) * sizeof(float) &&
         std::memcmp(bytes.data(), t.data(), bytes.size()) == 0;
}

}  // namespace

TEST_CASE("tim train: the first step is the library's step done by hand, bit for bit") {
  Setup s;
  const std::string out = s.dir.file("run");
  tim_test::check_success(tim_test::run_tim(s.dir, "train --quiet --config " + quote(s.config) + " --max-steps 1 --out " + quote(out)));

  // The same step in this process, from the definitions (docs/training.md, "tim train").
  const auto objective = tim::io::read_objective_config(s.config);
  const std::uint64_t seed = 5;
  const std::int64_t B = 4;
  tim::set_num_threads(1);
  auto model = tim::train::init_c2i<float>(tim::train::c2i_training_config(channels, 16, 1, 2, 2, 8, 4.0, classes), seed);
  tim::train::AdamW<float> adamw(model, {});
  tim::train::Ema<float> ema(model, 0.9);
  auto grads = tim::nn::zero_gradients_like(model);
  tim::train::GradientClipper<float> clipper(grads);
  auto data = std::make_shared<tim::train::LatentShards>(std::vector<std::string>{s.shard});
  tim::train::BatchLoader loader(data, B, seed, {}, 0);
  const auto& b = loader.next();
  tim::train::ObjectiveBatch<float> batch;
  batch.x = b.x;
  batch.z = tim::Tensor<float>::empty(b.x.shape());
  const std::int64_t row = channels * height * width;
  std::vector<double> normals(static_cast<std::size_t>(row));
  for (std::int64_t i = 0; i < B; ++i) {  // step 0: sample index 0 B + i of the "NOIS" stream
    tim::random::fill_normal(normals.data(), static_cast<std::uint64_t>(row), seed, static_cast<std::uint64_t>(i), 0x4E4F4953u);
    for (std::int64_t e = 0; e < row; ++e) batch.z.data()[i * row + e] = static_cast<float>(normals[static_cast<std::size_t>(e)]);
  }
  batch.n_diffusion = tim::train::sample_time_pairs(objective, batch.t, batch.r, B, seed, 0);
  batch.cond_labels = b.labels;
  batch.labels = tim::train::drop_labels(b.labels, objective.label_dropout, classes, seed, 0);
  tim::train::ObjectiveWorkspace<float> ws;
  const auto losses = tim::train::compute_loss_and_gradients(model, ema.network(), batch, objective, ws, grads);
  const double norm = clipper.clip(grads, 1.0);
  tim::train::LrSchedule schedule{.lr = 0.003, .warmup_steps = 2};
  adamw.step(model, grads, schedule.at(0));
  ema.update(model);

  const auto state = tim::io::SafetensorsFile::open(out + "/state.safetensors");
  int compared = 0;
  tim::nn::for_each_parameter(
      [&](const std::string& name, const tim::Tensor<float>& p, const tim::Tensor<float>& e, const tim::Tensor<float>& m,
          const tim::Tensor<float>& v) {
        CAPTURE(name);
        CHECK(same_bits(state, "model." + name, p));
        CHECK(same_bits(state, "ema." + name, e));
        CHECK(same_bits(state, "adamw.exp_avg." + name, m));
        CHECK(same_bits(state, "adamw.exp_avg_sq." + name, v));
        ++compared;
      },
      model, ema.network(), adamw.exp_avg(), adamw.exp_avg_sq());
  CHECK(compared > 20);
  const auto rows = read_log(out + "/log.jsonl");
  REQUIRE(rows.size() == 1);
  CHECK(rows[0]["step"] == 1);
  CHECK(rows[0]["loss"].get<double>() == losses.denoising_loss);
  CHECK(rows[0]["loss_weighted"].get<double>() == losses.loss);
  CHECK(rows[0]["grad_norm"].get<double>() == norm);
  CHECK(rows[0]["lr"].get<double>() == schedule.at(0));
  // The step moved the weights (the comparison is not of two initial states): the initial
  // final linear is zero, after the step it is not.
  bool moved = false;
  for (std::int64_t i = 0; i < model.final_layer.linear.weight.numel(); ++i)
    moved = moved || model.final_layer.linear.weight.data()[i] != 0.0f;
  CHECK(moved);
}

TEST_CASE("tim train: the loss falls, and a resumed run has the bits of an uninterrupted one") {
  Setup s;
  const std::string straight = s.dir.file("straight"), split = s.dir.file("split");
  const std::string base = "train --quiet --config " + quote(s.config);
  tim_test::check_success(tim_test::run_tim(s.dir, base + " --max-steps 6 --out " + quote(straight)));
  tim_test::check_success(tim_test::run_tim(s.dir, base + " --max-steps 3 --out " + quote(split)));
  tim_test::check_success(tim_test::run_tim(s.dir, base + " --max-steps 6 --resume " + quote(split)));
  const auto a = tim::io::SafetensorsFile::open(straight + "/state.safetensors");
  const auto b = tim::io::SafetensorsFile::open(split + "/state.safetensors");
  int compared = 0;
  for (const auto& info : a.tensors()) {
    CAPTURE(info.name);
    if (info.name == "train_seconds") continue;
    REQUIRE(b.contains(info.name));
    CHECK(b.info(info.name).shape == info.shape);
    const auto x = a.bytes(info.name), y = b.bytes(info.name);
    REQUIRE(x.size() == y.size());
    CHECK(std::memcmp(x.data(), y.data(), x.size()) == 0);
    ++compared;
  }
  CHECK(compared == static_cast<int>(b.tensors().size()) - 1);
  CHECK(compared > 80);
  // The logs: six rows each, the same losses (the resumed log continues the first three rows).
  const auto la = read_log(straight + "/log.jsonl"), lb = read_log(split + "/log.jsonl");
  REQUIRE(la.size() == 6);
  REQUIRE(lb.size() == 6);
  for (std::size_t i = 0; i < 6; ++i) {
    CHECK(lb[i]["step"] == static_cast<int>(i + 1));
    CHECK(la[i]["loss"] == lb[i]["loss"]);
    CHECK(la[i]["grad_norm"] == lb[i]["grad_norm"]);
  }

  SUBCASE("a longer run lowers the denoising loss") {
    const std::string longer = s.dir.file("longer");
    tim_test::check_success(tim_test::run_tim(s.dir, base + " --max-steps 60 --lr 0.01 --out " + quote(longer)));
    const auto rows = read_log(longer + "/log.jsonl");
    REQUIRE(rows.size() == 60);
    double first = 0, last = 0;
    for (std::size_t i = 0; i < 10; ++i) {
      first += rows[i]["loss"].get<double>();
      last += rows[50 + i]["loss"].get<double>();
    }
    INFO("mean loss of steps 1-10: ", first / 10, ", of steps 51-60: ", last / 10);
    CHECK(last < 0.8 * first);
  }

  SUBCASE("resuming with other training arithmetic is refused, naming the setting") {
    tim_test::check_user_error(tim_test::run_tim(s.dir, base + " --max-steps 8 --lr 0.01 --resume " + quote(split)),
                               {"optimizer.learning_rate", "differ"});
  }
}

TEST_CASE("tim train: model.safetensors is sampled by tim sample") {
  Setup s;
  const std::string out = s.dir.file("run"), samples_out = s.dir.file("samples.safetensors");
  tim_test::check_success(tim_test::run_tim(s.dir, "train --quiet --config " + quote(s.config) + " --max-steps 2 --out " + quote(out)));
  tim_test::check_success(tim_test::run_tim(
      s.dir, "sample --model " + quote(out + "/model.safetensors") + " --class 1 --num 2 --steps 1 --seed 3 --out " + quote(samples_out)));
  const auto file = tim::io::SafetensorsFile::open(samples_out);
  CHECK(file.info("latents").shape == tim::Shape{2, channels, height, width});  // the size from image_size metadata
  const auto latents = file.load<float>("latents");
  for (std::int64_t i = 0; i < latents.numel(); ++i) REQUIRE(std::isfinite(latents.data()[i]));
}

TEST_CASE("tim train: bad configs and flags are errors naming the key") {
  Setup s;
  const std::string out = s.dir.file("run");
  const auto run_with = [&](const std::string& extra_train, const std::string& flags) {
    const std::string config = s.dir.file("bad.yaml");
    tim_test::write_text(config, config_text(s.shard, extra_train));
    return tim_test::run_tim(s.dir, "train --quiet --config " + quote(config) + " --out " + quote(out) + " " + flags);
  };
  tim_test::check_user_error(run_with("", ""), {"no end given", "train.max_steps"});
  tim_test::check_user_error(run_with("  batch_size_typo: 3\n", "--max-steps 1"), {"train.batch_size_typo", "unknown key"});
  tim_test::check_user_error(run_with("", "--max-steps 1 --batch 0"), {"train.batch_size", ">= 1"});
  tim_test::check_user_error(run_with("", "--max-steps 1 --lr -1"), {"train.learning_rate", "positive"});
  tim_test::check_user_error(run_with("", "--max-steps 1 --ema-decay 1.5"), {"train.ema_decay"});
  tim_test::check_user_error(run_with("  lr_schedule: cosine\n", "--time-budget 5"), {"cosine", "train.max_steps"});
  tim_test::check_user_error(run_with("  lr_schedule: wavy\n", "--max-steps 1"), {"wavy"});
  tim_test::check_user_error(run_with("", "--max-steps 1 --heads 3"), {"num_heads"});
  tim_test::check_user_error(run_with("", "--max-steps 1 --patch 3"), {"patch_size"});
  tim_test::check_user_error(run_with("", "--max-steps 1 --data image-jar"), {"data.source"});
  tim_test::check_user_error(run_with("", "--max-steps 1 --data-dir " + quote(s.dir.file("missing"))), {"missing"});
  tim_test::check_user_error(run_with("", "--max-steps 1 --batch 13"), {"12 samples", "batch of 13"});
  tim_test::check_user_error(run_with("", "--max-steps 1 --diffusion-ratio 1.5"), {"diffusion_ratio"});
  tim_test::check_user_error(run_with("", "--max-steps 1 --resume " + quote(s.dir.file("nowhere"))), {"nowhere"});
  tim_test::check_user_error(run_with("", "--max-steps 1 --export-dtype float8"), {"export_dtype"});
  // The released network keys must agree with the data and with what tim train builds.
  std::string text = config_text(s.shard);
  const auto replace = [&](const std::string& from, const std::string& to) {
    std::string t = text;
    t.replace(t.find(from), from.size(), to);
    tim_test::write_text(s.dir.file("net.yaml"), t);
    return tim_test::run_tim(s.dir, "train --quiet --max-steps 1 --config " + quote(s.dir.file("net.yaml")) + " --out " + quote(out));
  };
  tim_test::check_user_error(replace("in_channels: 2", "in_channels: 4"), {"in_channels", "2 channels"});
  // Latent shards take num_classes as the class count (more classes than the labels use is fine).
  tim_test::check_user_error(replace("num_classes: 3", "num_classes: 2"), {"label 2", "outside 0 .. 1"});
  tim_test::check_user_error(replace("hidden_size: 16", "hidden_size: 16\n      qk_norm: False"), {"qk_norm"});
  tim_test::check_user_error(replace("batch_size: 4", "batch_size: 4.5"), {"train.batch_size", "whole number"});
  tim_test::check_user_error(replace("learning_rate: 0.003", "learning_rate: fast"), {"train.learning_rate", "a number"});
  tim_test::check_user_error(replace("P_mean: -0.4", "P_mean: -0.4\n      P_typo: 1"), {"P_typo"});
  CHECK_FALSE(std::filesystem::exists(out + "/state.safetensors"));
}
