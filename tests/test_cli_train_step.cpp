// `tim train-step` run as a subprocess on the objective goldens (tests/data/objective_golden/,
// tools/reference/make_objective_golden.py, seed 1701): the loss and every gradient against the
// PyTorch reference's autograd in float, bit for bit against the library run in this process
// (compiled like the program), and the errors of bad batches and configs.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "cli_run.hpp"
#include "compare.hpp"
#include "golden_source.hpp"
#include "gradient_check.hpp"
#include "objective_golden.hpp"
#include "tim/io/yaml_objective.hpp"
#include "tim/tim.hpp"
#include "tim/train/objective.hpp"

namespace {

using tim_test::objective_path;
const auto golden_file = [](const std::string& name) { return objective_path(name); };

//! The batch tensors of golden case `name` (x, z, y, y_cond, t, r) into `path`, with `edit` applied
//! to the writer's list: drop a tensor, or replace one.
void write_batch(const std::string& name, const std::string& path, const std::string& drop = "",
                 const std::function<void(tim::io::SafetensorsWriter&)>& extra = {}) {
  auto file = tim::io::SafetensorsFile::open(golden_file(name + ".safetensors"));
  tim::io::SafetensorsWriter writer;
  for (const char* tensor : {"x", "z", "y", "y_cond", "t", "r"}) {
    if (drop == tensor) continue;
    const auto& info = file.info(tensor);
    const auto bytes = file.bytes(tensor);
    writer.add(tensor, info.dtype, info.shape, bytes.data());
  }
  if (extra) extra(writer);
  writer.write(path);
}

std::string train_step_args(const std::string& config, const std::string& batch, const std::string& out) {
  return "train-step --threads 1 --model " + tim_test::quote(golden_file("model.safetensors")) + " --config " +
         tim_test::quote(config) + " --batch " + tim_test::quote(batch) + " --out " + tim_test::quote(out);
}

}  // namespace

TEST_CASE("tim train-step: loss and every gradient against the reference (float) and the library (bits)") {
  // The float bound of test_objective.cpp's float test (objective_golden.hpp: the float forward's
  // rounding amplified by the DDE's 1/(2e)): 5.3e-4 to 6.5e-4 for these three cases.
  for (const char* name : {"plain", "enhanced", "trigflow"}) {
    INFO("case ", std::string(name));
    tim_test::TempDir dir;
    const std::string batch = dir.file("batch.safetensors"), out = dir.file("out.safetensors");
    write_batch(name, batch);
    tim_test::check_success(tim_test::run_tim(dir, train_step_args(golden_file(std::string(name) + ".yaml"), batch, out)));
    auto result = tim::io::SafetensorsFile::open(out);
    auto golden = tim::io::SafetensorsFile::open(golden_file(std::string(name) + ".safetensors"));
    const double bound = tim_test::float_objective_bound(name);
    for (const char* scalar : {"loss", "denoising_loss"}) {
      REQUIRE(result.info(scalar).shape == tim::Shape{});
      const double got = result.load<float>(scalar).data()[0], want = golden.load<double>(scalar).data()[0];
      CHECK(std::abs(got - want) <= bound * std::abs(want));
    }
    std::size_t gradients = 0;
    double worst = 0;
    for (const auto& info : golden.tensors()) {
      if (info.name.rfind("grad.", 0) != 0) continue;
      ++gradients;
      REQUIRE(result.contains(info.name));
      CHECK(result.info(info.name).shape == info.shape);  // released shapes, x_embedder.proj.weight (D, C, p, p)
      CHECK(result.info(info.name).dtype == tim::DType::F32);
      const auto got = result.load<float>(info.name);
      const auto want = golden.load<double>(info.name);
      const double error = tim_test::gradient_error(got.data(), want.data(), static_cast<std::size_t>(want.numel()));
      worst = std::max(worst, error);
      CHECK(error <= bound);
    }
    std::size_t written = 0;
    for (const auto& info : result.tensors()) written += info.name.rfind("grad.", 0) == 0;
    CHECK(written == gradients);
    CHECK(gradients == 40);
    MESSAGE(std::string(name), ": tim train-step against the golden: largest gradient error ", worst);

    // The same computation in this process: the same bits.
    auto model_file = tim::io::SafetensorsFile::open(golden_file("model.safetensors"));
    const auto model = tim::nn::clone_parameters(tim::nn::load_c2i<float>(model_file));
    const auto config = tim::io::read_objective_config(golden_file(std::string(name) + ".yaml"));
    tim::train::ObjectiveBatch<float> b;
    b.x = golden.load<float>("x");
    b.z = golden.load<float>("z");
    b.t = golden.load<float>("t");
    b.r = golden.load<float>("r");
    b.labels = golden.load<std::int64_t>("y");
    b.cond_labels = golden.load<std::int64_t>("y_cond");
    b.n_diffusion = tim::train::leading_diffusion_rows(b.t, b.r);
    auto grads = tim::nn::zero_gradients_like(model);
    tim::train::ObjectiveWorkspace<float> ws;
    tim::set_num_threads(1);
    const auto losses = tim::train::compute_loss_and_gradients(model, model, b, config, ws, grads);
    CHECK(result.load<float>("loss").data()[0] == static_cast<float>(losses.loss));
    tim::nn::for_each_parameter(
        [&](const std::string& parameter, const tim::Tensor<float>& g) {
          const auto got = result.load<float>("grad." + parameter);
          CHECK_MESSAGE(std::equal(g.data(), g.data() + g.numel(), got.data()), parameter);
        },
        grads);
  }
}

TEST_CASE("tim train-step: bad batches and configs are errors naming the tensor or key, and write nothing") {
  tim_test::TempDir dir;
  const std::string config = golden_file("plain.yaml");
  const std::string out = dir.file("out.safetensors");
  const auto run_batch = [&](const std::string& drop, const std::function<void(tim::io::SafetensorsWriter&)>& extra) {
    const std::string batch = dir.file("bad.safetensors");
    write_batch("plain", batch, drop, extra);
    return tim_test::run_tim(dir, train_step_args(config, batch, out));
  };
  const auto floats = [](std::int64_t n) { return std::vector<float>(static_cast<std::size_t>(n), 0.5f); };
  const auto expect = [&](const tim_test::RunResult& result, const std::vector<std::string>& parts) {
    tim_test::check_user_error(result, parts);
    CHECK(!std::filesystem::exists(out));
  };
  expect(run_batch("z", {}), {"has no tensor 'z'", "x [B,C,H,W] F32, z [B,C,H,W] F32"});
  expect(run_batch("t", {}), {"has no tensor 't'"});
  expect(run_batch("x",
                   [&](auto& w) {
                     const std::vector<double> x(5 * 2 * 4 * 6, 0.1);
                     w.add("x", tim::DType::F64, tim::Shape{5, 2, 4, 6}, x.data());
                   }),
         {"tensor 'x'", "expected dtype F32, got F64"});
  expect(run_batch("x",
                   [&](auto& w) {
                     const auto x = floats(5 * 3 * 4 * 6);
                     w.add("x", tim::DType::F32, tim::Shape{5, 3, 4, 6}, x.data());
                   }),
         {"tensor 'x'", "expected shape [B, 2, H, W]", "[5, 3, 4, 6]"});
  expect(run_batch("x",
                   [&](auto& w) {
                     const auto x = floats(5 * 2 * 4 * 5);
                     w.add("x", tim::DType::F32, tim::Shape{5, 2, 4, 5}, x.data());
                   }),
         {"tensor 'x'", "multiples of the patch size 2"});
  expect(run_batch("z",
                   [&](auto& w) {
                     const auto z = floats(5 * 2 * 4 * 4);
                     w.add("z", tim::DType::F32, tim::Shape{5, 2, 4, 4}, z.data());
                   }),
         {"tensor 'z'", "expected shape [5, 2, 4, 6] (that of x)"});
  expect(run_batch("t",
                   [&](auto& w) {
                     const auto t = floats(4);
                     w.add("t", tim::DType::F32, tim::Shape{4}, t.data());
                   }),
         {"tensor 't'", "expected shape [5]"});
  expect(run_batch("y",
                   [&](auto& w) {
                     const std::vector<std::int32_t> y(5, 1);
                     w.add("y", tim::DType::I32, tim::Shape{5}, y.data());
                   }),
         {"tensor 'y'", "expected dtype I64, got I32"});
  expect(run_batch("y",
                   [&](auto& w) {
                     const std::vector<std::int64_t> y{1, 2, 9, 0, 0};
                     w.add("y", tim::DType::I64, tim::Shape{5}, y.data());
                   }),
         {"tensor 'y'", "label 9 at index 2", "5 = the null class"});
  expect(run_batch("r",
                   [&](auto& w) {
                     const std::vector<float> r{0.7f, 0.35f, 0.95f, 0.1f, 0.0f};  // row 2: t = 0.9
                     w.add("r", tim::DType::F32, tim::Shape{5}, r.data());
                   }),
         {"row 2 has r = 0.95 > t = 0.9"});
  expect(run_batch("x",
                   [&](auto& w) {
                     auto x = floats(5 * 2 * 4 * 6);
                     x[7] = NAN;
                     w.add("x", tim::DType::F32, tim::Shape{5, 2, 4, 6}, x.data());
                   }),
         {"tensor 'x'", "flat index 7 is not finite"});
  expect(run_batch("", [&](auto& w) {
           const auto extra = floats(5);
           w.add("weights", tim::DType::F32, tim::Shape{5}, extra.data());
         }),
         {"unexpected tensor 'weights'"});

  // Configs: an unknown key, a bad value, a missing section; --out onto an input.
  const std::string batch = dir.file("batch.safetensors");
  write_batch("plain", batch);
  const auto with_config = [&](const std::string& text) {
    const std::string path = dir.file("config.yaml");
    tim_test::write_text(path, text);
    return tim_test::run_tim(dir, train_step_args(path, batch, out));
  };
  std::string yaml = tim_test::read_text(config);
  const auto replaced = [&](const std::string& from, const std::string& to) {
    std::string text = yaml;
    const auto at = text.find(from);
    REQUIRE(at != std::string::npos);
    return text.replace(at, from.size(), to);
  };
  expect(with_config(replaced("weight_time_type: sqrt", "weight_time_type: cubic")),
         {"config.yaml", "weight_time_type", "unknown weight_time_type 'cubic'"});
  expect(with_config(replaced("differential_epsilon: 0.005", "differential_epsilon: 0.005\n    epsilon: 2")),
         {"model.transition_loss.epsilon: unknown key"});
  expect(with_config(replaced("transition_loss:", "loss_typo:")), {"model.transition_loss: missing"});
  expect(with_config(replaced("num_heads: 2", "num_heads: 4")), {"num_heads"});
  tim_test::check_user_error(tim_test::run_tim(dir, train_step_args(config, batch, batch)), {"would overwrite"});
  CHECK(tim::io::SafetensorsFile::open(batch).contains("x"));  // untouched
}
