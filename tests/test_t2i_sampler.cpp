// The sampler with the text-to-image network: against float64 golden files written by our
// PyTorch reference sampler (tools/reference/make_t2i_sampler_golden.py, tests/data/
// sampler_golden_t2i/), double within 1e-10 and float within 1e-4 relative to the largest value;
// a guided step built by hand from two forward passes (conditional captions, then the null
// caption repeated for every sample); and the condition's checks.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "compare.hpp"
#include "golden_source.hpp"
#include "tim/tim.hpp"

namespace {

using tim::Tensor;

std::string golden_dir() { return std::string(TIM_TEST_DATA_DIR) + "/sampler_golden_t2i"; }

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
  auto model = tim::load_t2i<T>(golden_dir() + "/model.safetensors");
  auto file = tim::io::SafetensorsFile::open(golden_dir() + "/" + name + ".safetensors");
  const auto& meta = file.metadata();
  const auto z = file.load<double>("input.z");
  model.set_null_caption(file.load<T>("input.null_cap_feats"));
  const auto captions = file.load<T>("input.cap_feats");
  double worst = 0;
  for (int steps : parse_steps(meta.at("steps"))) {
    CAPTURE(steps);
    const auto expected = file.load<double>("output.x_" + std::to_string(steps) + "step");
    const auto expected_times = file.load<double>("output.times_" + std::to_string(steps) + "step");
    const auto result = std::visit(
        [&](auto transport) {
          tim::TransitionSampler sampler{model, transport, tim::linspace_schedule(steps)};
          return sampler.sample(z, captions, tim_test::sampler_options_of(meta));
        },
        tim::parse_transport(meta.at("transport")));
    REQUIRE(result.x.shape() == expected.shape());
    REQUIRE(result.times.size() == std::size_t(expected_times.numel()));
    CHECK(std::equal(result.times.begin(), result.times.end(), expected_times.data()));
    const double error = tim_test::relative_error(result.x.data(), expected.data(), std::size_t(expected.numel()));
    INFO("case ", name, " (", meta.at("note"), ") N=", steps, ": relative error ", error);
    CHECK(error <= tolerance);
    worst = std::max(worst, error);
  }
  return worst;
}

}  // namespace

TEST_CASE("T2I sampler golden: every case in double within 1e-10") {
  const auto names = case_names();
  REQUIRE(names.size() >= 3);
  for (const auto& name : names) {
    CAPTURE(name);
    MESSAGE(name, " (T2I, double): largest relative error ", run_case<double>(name, 1e-10));
  }
}

TEST_CASE("T2I sampler golden: every case with the network in float within 1e-4") {
  for (const auto& name : case_names()) {
    CAPTURE(name);
    MESSAGE(name, " (T2I, float network): largest relative error ", run_case<float>(name, 1e-4));
  }
}

TEST_CASE("T2I sampler golden: guidance and the null caption change the guided cases") {
  // Guards against a vacuous pass: sampled without guidance, or with another null caption, the
  // guided golden case comes out clearly different.
  auto model = tim::load_t2i<double>(golden_dir() + "/model.safetensors");
  auto file = tim::io::SafetensorsFile::open(golden_dir() + "/cfg_window.safetensors");
  const auto z = file.load<double>("input.z");
  const auto expected = file.load<double>("output.x_4step");
  const auto captions = file.load<double>("input.cap_feats");
  const auto null_cap_feats = file.load<double>("input.null_cap_feats");
  model.set_null_caption(null_cap_feats);
  tim::TransitionSampler sampler{model, tim::OtFm{}, tim::linspace_schedule(4)};
  auto options = tim_test::sampler_options_of(file.metadata());
  const auto difference = [&](const Tensor<double>& x) {
    return tim_test::relative_error(x.data(), expected.data(), std::size_t(expected.numel()));
  };
  CHECK(difference(sampler.sample(z, captions, options).x) <= 1e-10);
  auto unguided = options;
  unguided.cfg_scale = 1.0;
  CHECK(difference(sampler.sample(z, captions, unguided).x) > 1e-2);
  auto other_null = null_cap_feats.clone();
  for (std::int64_t i = 0; i < other_null.numel(); ++i) other_null.data()[i] *= -1.0;
  model.set_null_caption(other_null);  // the sampler holds the model by reference
  CHECK(difference(sampler.sample(z, captions, options).x) > 1e-2);
}

TEST_CASE("T2I sampler: a guided step is F_u + cfg (F_c - F_u), the null caption repeated for every sample") {
  auto model = tim::load_t2i<double>(golden_dir() + "/model.safetensors");
  auto file = tim::io::SafetensorsFile::open(golden_dir() + "/cfg_stochastic.safetensors");  // B = 3, M = 4
  const auto z = file.load<double>("input.z");
  const auto cap_feats = file.load<double>("input.cap_feats");
  const auto null_cap_feats = file.load<double>("input.null_cap_feats");
  const std::int64_t B = z.dim(0), M = cap_feats.dim(1), Dc = cap_feats.dim(2);
  const double t = 0.5, r = 0.125, cfg = 2.5;
  model.set_null_caption(null_cap_feats);
  tim::TransitionSampler sampler{model, tim::OtFm{}, tim::grid_schedule({t, r})};
  const auto result = sampler.sample(z, cap_feats, {.cfg_scale = cfg});

  // By hand: F_c from the B captions, F_u from B copies of the null caption, in separate passes.
  auto t_in = Tensor<double>::empty({B}), r_in = Tensor<double>::empty({B});
  std::fill_n(t_in.data(), B, t);
  std::fill_n(r_in.data(), B, r);
  auto null_rows = Tensor<double>::empty({B, M, Dc});
  for (std::int64_t b = 0; b < B; ++b) std::copy_n(null_cap_feats.data(), M * Dc, null_rows.data() + b * M * Dc);
  Tensor<double> F_c, F_u;
  model.forward(F_c, z, t_in, r_in, cap_feats);
  model.forward(F_u, z, t_in, r_in, null_rows);
  std::vector<double> expected(static_cast<std::size_t>(z.numel()));
  for (std::int64_t i = 0; i < z.numel(); ++i) {
    const double F = F_u.data()[i] + cfg * (F_c.data()[i] - F_u.data()[i]);
    expected[static_cast<std::size_t>(i)] = z.data()[i] - (t - r) * F;
  }
  // One batch of 2B rows against two of B rows: equal up to the rounding of the batched kernels.
  TIM_CHECK_CLOSE(result.x.data(), expected.data(), expected.size(), 1e-12, 1e-12);
}

TEST_CASE("T2I sampler: the caption condition is checked, naming the tensor and the expected shape") {
  auto model = tim::load_t2i<float>(golden_dir() + "/model.safetensors");  // cap_dim 8
  const auto z = tim::initial_noise({2, 4, 8, 8}, 1);
  const auto features = [](std::vector<std::int64_t> shape) {
    auto t = Tensor<float>::empty(tim::Shape(std::move(shape)));
    std::fill_n(t.data(), t.numel(), 0.5f);
    return t;
  };
  const auto cap_feats = features({2, 5, 8});
  tim::TransitionSampler sampler{model, tim::OtFm{}, tim::linspace_schedule(4)};
  using tim_test::error_of;
  CHECK(error_of([&] { sampler.sample(z, features({2, 8})); }) ==
        "sampler: cap_feats must have shape [B, M, cap_dim] = [2, M, 8] (one caption per sample, M >= 1 tokens), "
        "got [2, 8]");
  CHECK(error_of([&] { sampler.sample(z, features({3, 5, 8})); }).find("= [2, M, 8]") != std::string::npos);
  CHECK(error_of([&] { sampler.sample(z, features({2, 5, 6})); }).find("got [2, 5, 6]") != std::string::npos);
  CHECK(error_of([&] { sampler.sample(z, features({2, 0, 8})); }).find("M >= 1") != std::string::npos);
  CHECK(error_of([&] { sampler.sample(z, {}); }).find("sampler: cap_feats must have shape") != std::string::npos);
  // Guidance needs the model's null caption; without guidance it may be left out.
  CHECK(error_of([&] { sampler.sample(z, cap_feats, {.cfg_scale = 2.0}); }) ==
        "sampler: guidance needs the model's null caption: call T2IModel::set_null_caption with the null "
        "caption's features, shape [1, 5, 8]");
  CHECK(error_of([&] { sampler.sample(z, cap_feats); }) == "<no error>");
  CHECK(error_of([&] { sampler.sample(z, cap_feats, {.cfg_scale = 2.0, .guidance_high = 0.2}); }) ==
        "<no error>");  // the window [0, 0.2] holds no step of the 4-step grid: nothing is guided
  // The null caption is checked when it is set, and against the captions' M when it is used.
  CHECK(error_of([&] { model.set_null_caption(features({2, 5, 8})); }) ==
        "null caption: null_cap_feats must have shape [1, M, cap_dim] = [1, M, 8] (M >= 1 tokens), got [2, 5, 8]");
  CHECK(error_of([&] { model.set_null_caption(features({1, 5, 6})); }).find("got [1, 5, 6]") != std::string::npos);
  model.set_null_caption(features({1, 4, 8}));
  CHECK(error_of([&] { sampler.sample(z, cap_feats, {.cfg_scale = 2.0}); }) ==
        "sampler: the null caption has 4 tokens, the captions 5; guidance pairs them row by row, so both need the "
        "same M (pad them alike)");
  model.set_null_caption(features({1, 5, 8}));
  CHECK(error_of([&] { sampler.sample(z, cap_feats, {.cfg_scale = 2.0}); }) == "<no error>");
  CHECK(error_of([&] { sampler.sample(z, cap_feats, {.null_label = 3}); })
            .find("null_label is for FlowFunction models") != std::string::npos);
  // The network's own checks still apply to what the sampler cannot see (x must be an image).
  CHECK(error_of([&] { sampler.sample(tim::initial_noise({2, 256}, 1), cap_feats); })
            .find("input 'x': expected shape [B, C, H, W]") != std::string::npos);
}
