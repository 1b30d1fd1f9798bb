// The sampler with the network against float64 golden files written by our PyTorch reference
// sampler (tools/reference/make_sampler_golden.py): every case (OT-FM with guidance 2.5 on
// [0, 0.6], stochastic OT-FM, TrigFlow, EDM in diffusion mode, VP, VE with a window) at 1, 4 and
// 16 steps; double within 1e-10, float within 1e-4, relative to the largest value; time grids
// bit-identical to torch.linspace.
#include <doctest/doctest.h>

#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "compare.hpp"
#include "golden_source.hpp"
#include "tim/tim.hpp"

namespace {

std::string golden_dir() { return std::string(TIM_TEST_DATA_DIR) + "/sampler_golden"; }

std::vector<std::string> case_names() {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(golden_dir()))
    if (entry.path().extension() == ".safetensors" && entry.path().stem() != "model")
      names.push_back(entry.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<int> parse_steps(const std::string& text) {
  std::vector<int> steps;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, ',');) steps.push_back(std::stoi(part));
  return steps;
}

//! Samples case `name` with the network in T; returns the largest relative error over its step counts.
template <class T>
double run_case(const std::string& name, double tolerance) {
  const auto model = tim::load_c2i<T>(golden_dir() + "/model.safetensors");
  auto file = tim::io::SafetensorsFile::open(golden_dir() + "/" + name + ".safetensors");
  const auto& meta = file.metadata();
  const auto z = file.load<double>("input.z");
  const auto y = file.load<std::int64_t>("input.y");
  const auto options = tim_test::sampler_options_of(meta);
  CHECK(std::stoll(meta.at("null_label")) == model.config.num_classes);
  double worst = 0;
  for (int steps : parse_steps(meta.at("steps"))) {
    CAPTURE(steps);
    const auto expected = file.load<double>("output.x_" + std::to_string(steps) + "step");
    const auto expected_times = file.load<double>("output.times_" + std::to_string(steps) + "step");
    const auto result = std::visit(
        [&](auto transport) {
          tim::TransitionSampler sampler{model, transport, tim::linspace_schedule(steps)};
          return sampler.sample(z, y, options);
        },
        tim::parse_transport(meta.at("transport")));
    REQUIRE(result.x.shape() == expected.shape());
    REQUIRE(result.times.size() == std::size_t(expected_times.numel()));
    CHECK(std::equal(result.times.begin(), result.times.end(), expected_times.data()));
    const double error = tim_test::relative_error(result.x.data(), expected.data(), std::size_t(expected.numel()));
    INFO("case ", name, " (", meta.at("transport"), ", ", meta.at("note"), ") N=", steps, ": relative error ", error);
    CHECK(error <= tolerance);
    worst = std::max(worst, error);
  }
  return worst;
}

}  // namespace

TEST_CASE("sampler golden: every case in double within 1e-10") {
  const auto names = case_names();
  REQUIRE(names.size() >= 6);
  for (const auto& name : names) {
    CAPTURE(name);
    MESSAGE(name, " (double): largest relative error ", run_case<double>(name, 1e-10));
  }
}

TEST_CASE("sampler golden: every case with the network in float within 1e-4") {
  for (const auto& name : case_names()) {
    CAPTURE(name);
    MESSAGE(name, " (float network): largest relative error ", run_case<float>(name, 1e-4));
  }
}
