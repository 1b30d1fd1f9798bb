// The transition sampler (SPEC 6) with callable models whose every call is recorded: the
// guidance window's strict boundaries, the stochasticity conditions, noise that depends only on
// (seed, sample, step, element), cancellation, the trajectory, diffusion mode (also through the
// network: c_noise(t) twice), input validation, and no allocation inside the step loop (callables,
// the C2I and the T2I network).
#include <doctest/doctest.h>

#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "compare.hpp"
#include "golden_source.hpp"
#include "tim/tim.hpp"

#include "allocation_counter.hpp"

namespace {

using tim::Tensor;
using Labels = Tensor<std::int64_t>;

//! A model that records every call and returns F = 0.5 x + 0.1 label + 0.01 t - 0.02 r, so the
//! conditional and null halves differ and every input shows in the output.
struct Recorder {
  struct Call {
    std::int64_t rows;
    double t, r;
    std::vector<std::int64_t> labels;
  };
  std::vector<Call>* calls;

  void operator()(Tensor<double>& F, const Tensor<double>& x, double t, double r, const Labels& y) const {
    const std::int64_t rows = x.dim(0), per_row = x.numel() / rows;
    if (calls) calls->push_back({rows, t, r, std::vector<std::int64_t>(y.data(), y.data() + rows)});
    for (std::int64_t i = 0; i < x.numel(); ++i)
      F.data()[i] = 0.5 * x.data()[i] + 0.1 * double(y.data()[i / per_row]) + 0.01 * t - 0.02 * r;
  }
  static double value(double x, std::int64_t label, double t, double r) {
    return 0.5 * x + 0.1 * double(label) + 0.01 * t - 0.02 * r;
  }
};

Labels make_labels(std::vector<std::int64_t> values) {
  auto y = Labels::empty({std::int64_t(values.size())});
  std::copy(values.begin(), values.end(), y.data());
  return y;
}

Tensor<double> make_noise(std::int64_t batch, std::int64_t per_sample, std::uint64_t seed = 5) {
  return tim::initial_noise({batch, per_sample}, seed);
}

std::vector<bool> guided_steps(const std::vector<Recorder::Call>& calls, std::int64_t batch) {
  std::vector<bool> guided;
  for (const auto& c : calls) guided.push_back(c.rows == 2 * batch);
  return guided;
}

std::string error_of(auto&& body) {
  try {
    body();
  } catch (const tim::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("sample mode spellings") {
  CHECK(tim::parse_sample_mode("transition") == tim::SampleMode::transition);
  CHECK(tim::parse_sample_mode("diffusion") == tim::SampleMode::diffusion);
  CHECK(tim::parse_sample_mode("ddiffusion") == tim::SampleMode::diffusion);
  CHECK_THROWS_WITH_AS(tim::parse_sample_mode("ode"),
                       "unknown sample mode 'ode' (expected transition, diffusion or ddiffusion)", tim::Error);
}

TEST_CASE("guidance window: the first step from t = T_max is never guided with the window [0, 1]") {
  std::vector<Recorder::Call> calls;
  tim::TransitionSampler sampler{Recorder{&calls}, tim::OtFm{}, tim::linspace_schedule(4)};
  const auto y = make_labels({1, 3});
  sampler.sample(make_noise(2, 5), y, {.cfg_scale = 2.0, .null_label = 7});
  REQUIRE(calls.size() == 4);
  CHECK(guided_steps(calls, 2) == std::vector<bool>{false, true, true, true});
  CHECK(calls[0].t == 1.0);
  CHECK(calls[0].labels == std::vector<std::int64_t>{1, 3});
  CHECK(calls[1].labels == std::vector<std::int64_t>{1, 3, 7, 7});  // conditional rows, then null rows
}

TEST_CASE("guidance window: boundaries are strict, as fractions of T_max") {
  std::vector<Recorder::Call> calls;
  const auto y = make_labels({0});
  SUBCASE("OT-FM, window [0.2, 0.6]: t = 0.6 and t = 0.2 are not guided") {
    tim::TransitionSampler sampler{Recorder{&calls}, tim::OtFm{},
                                   tim::grid_schedule({1.0, 0.8, 0.6, 0.4, 0.2, 0.0})};
    sampler.sample(make_noise(1, 3), y, {.cfg_scale = 2.5, .guidance_low = 0.2, .guidance_high = 0.6, .null_label = 1});
    CHECK(guided_steps(calls, 1) == std::vector<bool>{false, false, false, true, false});
  }
  SUBCASE("EDM, window [0.1, 0.6] of T_max = 80: exactly 0.6 * 80 and 0.1 * 80 are outside") {
    const double high = 0.6 * 80.0, low = 0.1 * 80.0;
    tim::TransitionSampler sampler{Recorder{&calls}, tim::Edm{},
                                   tim::grid_schedule({80.0, high, std::nextafter(high, 0.0), std::nextafter(low, 80.0),
                                                       low, 0.01})};
    sampler.sample(make_noise(1, 3), y, {.cfg_scale = 2.5, .guidance_low = 0.1, .guidance_high = 0.6, .null_label = 1});
    CHECK(guided_steps(calls, 1) == std::vector<bool>{false, false, true, true, false});
  }
  SUBCASE("cfg_scale must exceed 1") {
    tim::TransitionSampler sampler{Recorder{&calls}, tim::OtFm{}, tim::linspace_schedule(4)};
    sampler.sample(make_noise(1, 3), y, {.cfg_scale = 1.0});
    CHECK(guided_steps(calls, 1) == std::vector<bool>{false, false, false, false});
    calls.clear();
    sampler.sample(make_noise(1, 3), y, {.cfg_scale = std::nextafter(1.0, 2.0), .null_label = 1});
    CHECK(guided_steps(calls, 1) == std::vector<bool>{false, true, true, true});
  }
  CHECK(tim::guidance_applies(2.0, 0.0, 0.6, 0.6, 1.0) == false);
  CHECK(tim::guidance_applies(2.0, 0.0, 0.6, std::nextafter(0.6, 0.0), 1.0) == true);
  CHECK(tim::guidance_applies(2.0, 0.0, 1.0, 1.0, 1.0) == false);
  CHECK(tim::guidance_applies(2.0, 0.3, 1.0, 0.3, 1.0) == false);
}

TEST_CASE("guidance: F = F_u + cfg (F_c - F_u), combined in double") {
  const auto y = make_labels({2, 4});
  const auto z = make_noise(2, 3);
  const double cfg = 2.5, t = 0.5, r = 0.0;
  tim::TransitionSampler sampler{Recorder{nullptr}, tim::OtFm{}, tim::grid_schedule({t, r})};
  const auto result = sampler.sample(z, y, {.cfg_scale = cfg, .null_label = 9});
  for (std::int64_t i = 0; i < z.numel(); ++i) {
    const double x = z.data()[i];
    const double F_c = Recorder::value(x, y.data()[i / 3], t, r), F_u = Recorder::value(x, 9, t, r);
    const double F = F_u + cfg * (F_c - F_u);
    CHECK(result.x.data()[i] == x - (t - r) * F);
  }
}

TEST_CASE("stochasticity: only when s > 0, t < T_max and r' > T_min (r' = r in transition mode), with the stream (seed, sample, step)") {
  const auto y = make_labels({0, 1});
  const auto z = make_noise(2, 6);
  const std::uint64_t seed = 77;
  const double s = 0.3;
  std::vector<bool> flags;
  auto record = [&](const tim::StepInfo<>& info) {
    flags.push_back(info.stochastic);
    return true;
  };
  tim::TransitionSampler sampler{Recorder{nullptr}, tim::OtFm{}, tim::linspace_schedule(4)};
  const auto result =
      sampler.sample(z, y, {.stochasticity = s, .seed = seed, .first_sample_index = 10, .on_step = record});
  CHECK(flags == std::vector<bool>{false, true, true, false});

  // The same run by hand: deterministic first and last steps, noisy middle steps drawing
  // normal(seed, 10 + b, step, element).
  const auto times = tim::linspace(1.0, 0.0, 5);
  std::vector<double> x(z.data(), z.data() + z.numel());
  for (int i = 0; i < 4; ++i) {
    const double t = times[i], r = times[i + 1];
    for (std::size_t j = 0; j < x.size(); ++j) {
      const std::int64_t b = std::int64_t(j) / 6, e = std::int64_t(j) % 6;
      const double F = Recorder::value(x[j], y.data()[b], t, r);
      if (flags[i])
        x[j] = tim::math::ot_fm::stochastic_transition(x[j], F, t, r, s,
                                                       tim::random::normal(seed, 10 + b, std::uint32_t(i), e));
      else
        x[j] = x[j] - (t - r) * F;
    }
  }
  for (std::size_t j = 0; j < x.size(); ++j) CHECK(result.x.data()[j] == x[j]);

  flags.clear();
  sampler.sample(z, y, {.stochasticity = 0.0, .on_step = record});
  CHECK(flags == std::vector<bool>{false, false, false, false});
  flags.clear();
  tim::TransitionSampler inner{Recorder{nullptr}, tim::OtFm{}, tim::grid_schedule({0.9, 0.5, 0.1})};
  inner.sample(z, y, {.stochasticity = s, .on_step = record});
  CHECK(flags == std::vector<bool>{true, true});

  CHECK(tim::stochasticity_applies(0.2, 1.0, 0.5, 1.0, 0.0) == false);
  CHECK(tim::stochasticity_applies(0.2, 0.5, 0.0, 1.0, 0.0) == false);
  CHECK(tim::stochasticity_applies(0.2, 0.5, 0.25, 1.0, 0.0) == true);
  CHECK(tim::stochasticity_applies(0.0, 0.5, 0.25, 1.0, 0.0) == false);
}

TEST_CASE("stochasticity needs OT-FM; options are validated") {
  const auto y = make_labels({0});
  const auto z = make_noise(1, 4);
  tim::TransitionSampler trig{Recorder{nullptr}, tim::TrigFlow{}, tim::linspace_schedule(4)};
  CHECK(error_of([&] { trig.sample(z, y, {.stochasticity = 0.2}); }) ==
        "sampler: stochasticity 0.2 needs a transport with a stochastic transition (only ot-fm has one), got "
        "'trigflow'");
  tim::TransitionSampler sampler{Recorder{nullptr}, tim::OtFm{}, tim::linspace_schedule(4)};
  CHECK(error_of([&] { sampler.sample(z, y, {.stochasticity = -0.1}); }).find("finite number >= 0") !=
        std::string::npos);
  CHECK(error_of([&] { sampler.sample(z, make_labels({0, 1}), {}); }) ==
        "sampler: labels must have shape [1] (one per sample), got [2]");
  CHECK(error_of([&] { sampler.sample(z, y, {.sample_indices = {1, 2}}); }) ==
        "sampler: sample_indices has 2 entries for a batch of 1");
  CHECK(error_of([&] { sampler.sample(z, y, {.cfg_scale = 2.0}); }).find("set SamplerOptions::null_label") !=
        std::string::npos);
  CHECK(error_of([&] { sampler.sample(z, y, {.cfg_scale = NAN}); }).find("cfg_scale must be finite") !=
        std::string::npos);
  tim::TransitionSampler bad_grid{Recorder{nullptr}, tim::OtFm{}, tim::grid_schedule({1.0, 1.0, 0.0})};
  CHECK(error_of([&] { bad_grid.sample(z, y); }).find("strictly decreasing") != std::string::npos);
}

TEST_CASE("the same seed gives the same sample whatever the batch composition and order") {
  // Guided, stochastic, 5 steps; samples are identified by their stream index.
  const std::int64_t per_sample = 7;
  const auto z_all = tim::initial_noise({4, per_sample}, 3);
  const std::vector<std::int64_t> label_of{0, 1, 2, 3};
  const tim::SamplerOptions<> base{.cfg_scale = 2.0, .stochasticity = 0.3, .seed = 99, .null_label = 4};
  tim::TransitionSampler sampler{Recorder{nullptr}, tim::OtFm{}, tim::linspace_schedule(5)};
  const auto full = sampler.sample(z_all, make_labels(label_of), base);

  auto run = [&](std::vector<std::uint64_t> members) {
    auto z = Tensor<double>::empty({std::int64_t(members.size()), per_sample});
    std::vector<std::int64_t> labels;
    for (std::size_t k = 0; k < members.size(); ++k) {
      std::copy_n(z_all.data() + members[k] * per_sample, per_sample, z.data() + k * per_sample);
      labels.push_back(label_of[members[k]]);
    }
    auto options = base;
    options.sample_indices = members;
    return sampler.sample(z, make_labels(labels), options).x;
  };
  for (const auto& members : {std::vector<std::uint64_t>{2, 0}, std::vector<std::uint64_t>{3},
                              std::vector<std::uint64_t>{1, 3, 0, 2}}) {
    const auto x = run(members);
    for (std::size_t k = 0; k < members.size(); ++k)
      CHECK(std::equal(x.data() + k * per_sample, x.data() + (k + 1) * per_sample,
                       full.x.data() + members[k] * per_sample));
  }
  // first_sample_index: samples 2 and 3 as a batch of their own.
  auto tail = Tensor<double>::empty({2, per_sample});
  std::copy_n(z_all.data() + 2 * per_sample, 2 * per_sample, tail.data());
  auto options = base;
  options.first_sample_index = 2;
  const auto x = sampler.sample(tail, make_labels({2, 3}), options).x;
  CHECK(std::equal(x.data(), x.data() + 2 * per_sample, full.x.data() + 2 * per_sample));
  // A different seed changes the result.
  options.seed = 100;
  const auto other = sampler.sample(tail, make_labels({2, 3}), options).x;
  CHECK(!std::equal(other.data(), other.data() + 2 * per_sample, full.x.data() + 2 * per_sample));
}

TEST_CASE("initial_noise: per-sample streams") {
  const auto batch = tim::initial_noise({3, 2, 5}, 11);
  const auto single = tim::initial_noise({1, 2, 5}, 11, 2);
  CHECK(std::equal(single.data(), single.data() + 10, batch.data() + 20));
  for (int e = 0; e < 10; ++e)
    CHECK(batch.data()[10 + e] == tim::random::normal(11, 1, tim::random::initial_noise_step, std::uint64_t(e)));
}

TEST_CASE("trajectory: N + 1 states from z to x_N, equal to what the callback saw") {
  const auto y = make_labels({0, 1});
  const auto z = make_noise(2, 4);
  std::vector<std::vector<double>> seen;
  tim::TransitionSampler sampler{Recorder{nullptr}, tim::OtFm{}, tim::linspace_schedule(6)};
  const auto result = sampler.sample(z, y, {.keep_trajectory = true, .on_step = [&](const tim::StepInfo<>& info) {
                                              CHECK(info.steps == 6);
                                              CHECK(info.step == int(seen.size()));
                                              seen.emplace_back(info.x.data(), info.x.data() + info.x.numel());
                                              return true;
                                            }});
  CHECK(result.trajectory.shape() == tim::Shape{7, 2, 4});
  CHECK(result.steps_done == 6);
  CHECK(!result.cancelled);
  CHECK(result.times.size() == 7);
  CHECK(std::equal(z.data(), z.data() + 8, result.trajectory.data()));
  for (int i = 0; i < 6; ++i) CHECK(std::equal(seen[i].begin(), seen[i].end(), result.trajectory.data() + (i + 1) * 8));
  CHECK(std::equal(result.x.data(), result.x.data() + 8, result.trajectory.data() + 6 * 8));
  CHECK(sampler.sample(z, y).trajectory.empty_tensor());
}

TEST_CASE("callback cancellation stops after the step and says so") {
  const auto y = make_labels({0});
  const auto z = make_noise(1, 4);
  std::vector<Recorder::Call> calls;
  tim::TransitionSampler sampler{Recorder{&calls}, tim::OtFm{}, tim::linspace_schedule(5)};
  const auto result = sampler.sample(
      z, y, {.keep_trajectory = true, .on_step = [](const tim::StepInfo<>& info) { return info.step < 1; }});
  CHECK(result.cancelled);
  CHECK(result.steps_done == 2);
  CHECK(calls.size() == 2);
  CHECK(result.trajectory.shape() == tim::Shape{3, 1, 4});
  CHECK(std::equal(result.x.data(), result.x.data() + 4, result.trajectory.data() + 2 * 4));
  // Stopping at the first step leaves one step done.
  const auto first = sampler.sample(z, y, {.on_step = [](const tim::StepInfo<>&) { return false; }});
  CHECK(first.cancelled);
  CHECK(first.steps_done == 1);
  // Declining to continue after the last step cancels nothing.
  tim::TransitionSampler one{Recorder{nullptr}, tim::OtFm{}, tim::linspace_schedule(1)};
  const auto done = one.sample(z, y, {.on_step = [](const tim::StepInfo<>&) { return false; }});
  CHECK(!done.cancelled);
  CHECK(done.steps_done == 1);
}

TEST_CASE("diffusion mode: the model gets r = t, the update still moves to the next time") {
  const auto y = make_labels({0});
  const auto z = make_noise(1, 3);
  for (const char* spelling : {"diffusion", "ddiffusion"}) {
    std::vector<Recorder::Call> calls;
    tim::TransitionSampler sampler{Recorder{&calls}, tim::OtFm{}, tim::linspace_schedule(4)};
    const auto result = sampler.sample(z, y, {.mode = tim::parse_sample_mode(spelling)});
    REQUIRE(calls.size() == 4);
    for (std::size_t i = 0; i < 4; ++i) CHECK(calls[i].r == calls[i].t);
    CHECK(result.steps_done == 4);
    // x_r = x_t - (t - r) F(x_t, t, t)
    std::vector<double> x(z.data(), z.data() + 3);
    const auto times = tim::linspace(1.0, 0.0, 5);
    for (int i = 0; i < 4; ++i)
      for (auto& v : x) v = v - (times[i] - times[i + 1]) * Recorder::value(v, 0, times[i], times[i]);
    for (int j = 0; j < 3; ++j) CHECK(result.x.data()[j] == x[j]);
  }
}

TEST_CASE("diffusion mode with stochasticity: every step after the first is stochastic, the last included") {
  // SPEC 6 (as released): the condition is t < T_max and r' > T_min with r' the network's second
  // time, which is t in diffusion mode; so the last step (r = T_min) is stochastic too.
  const auto y = make_labels({0, 1});
  const auto z = make_noise(2, 5);
  const std::uint64_t seed = 31;
  const double s = 0.2;
  std::vector<bool> flags;
  tim::TransitionSampler sampler{Recorder{nullptr}, tim::OtFm{}, tim::linspace_schedule(4)};
  const auto result = sampler.sample(z, y, {.stochasticity = s, .mode = tim::SampleMode::diffusion, .seed = seed,
                                            .on_step = [&](const tim::StepInfo<>& info) {
                                              flags.push_back(info.stochastic);
                                              return true;
                                            }});
  CHECK(flags == std::vector<bool>{false, true, true, true});
  // By hand: F(x_t, t, t) and the stochastic transition towards the grid time r.
  const auto times = tim::linspace(1.0, 0.0, 5);
  std::vector<double> x(z.data(), z.data() + z.numel());
  for (int i = 0; i < 4; ++i) {
    const double t = times[i], r = times[i + 1];
    for (std::size_t j = 0; j < x.size(); ++j) {
      const std::int64_t b = std::int64_t(j) / 5, e = std::int64_t(j) % 5;
      const double F = Recorder::value(x[j], y.data()[b], t, t);
      x[j] = i == 0 ? x[j] - (t - r) * F
                    : tim::math::ot_fm::stochastic_transition(x[j], F, t, r, s,
                                                              tim::random::normal(seed, b, std::uint32_t(i), e));
    }
  }
  for (std::size_t j = 0; j < x.size(); ++j) CHECK(result.x.data()[j] == x[j]);
}

TEST_CASE("network: transition mode feeds c_noise(t), c_noise(r); diffusion mode c_noise(t) twice") {
  auto file = tim::io::SafetensorsFile::open(std::string(TIM_TEST_DATA_DIR) + "/sampler_golden/model.safetensors");
  const auto model = tim::nn::load_c2i<double>(file);
  const auto z = tim::initial_noise({2, 4, 8, 8}, 1);
  const auto y = make_labels({1, 5});
  const tim::Edm edm;
  const double t = 30.0, r = 2.0;
  for (auto mode : {tim::SampleMode::transition, tim::SampleMode::diffusion}) {
    tim::TransitionSampler sampler{model, edm, tim::grid_schedule({t, r})};
    const auto result = sampler.sample(z, y, {.mode = mode});
    auto t_in = Tensor<double>::empty({2}), r_in = Tensor<double>::empty({2});
    t_in.data()[0] = t_in.data()[1] = edm.c_noise(t);
    r_in.data()[0] = r_in.data()[1] = edm.c_noise(mode == tim::SampleMode::diffusion ? t : r);
    Tensor<double> F;
    model.forward(F, z, t_in, r_in, y);
    const auto c = edm.coefficients(t, r);
    for (std::int64_t i = 0; i < z.numel(); ++i) CHECK(result.x.data()[i] == c.a * z.data()[i] + c.b * F.data()[i]);
  }
  // Labels are checked against the network's classes (5 is the null class here).
  tim::TransitionSampler sampler{model, edm, tim::linspace_schedule(2)};
  CHECK(error_of([&] { sampler.sample(z, make_labels({1, 6})); }) ==
        "sampler: label 6 at index 1 is outside [0, 5] (5 is the null class)");
}

TEST_CASE("no allocation inside the step loop after the first step") {
  const auto y = make_labels({0, 1, 2});
  const auto z = make_noise(3, 64);
  long during_steps = -1;
  auto measure = [&](const tim::StepInfo<>& info) {
    if (info.step == 0) {
      tim_test::start_counting_allocations();
    } else if (info.step == info.steps - 1) {
      during_steps = tim_test::stop_counting_allocations();
    }
    return true;
  };
  tim::TransitionSampler sampler{Recorder{nullptr}, tim::OtFm{}, tim::linspace_schedule(8)};
  SUBCASE("guided, stochastic, with trajectory") {
    sampler.sample(z, y, {.cfg_scale = 2.0, .stochasticity = 0.2, .null_label = 3, .keep_trajectory = true,
                          .on_step = measure});
    CHECK(during_steps == 0);
  }
  SUBCASE("plain") {
    sampler.sample(z, y, {.on_step = measure});
    CHECK(during_steps == 0);
  }
  SUBCASE("the counter sees what allocates: malloc, operator new, Eigen temporaries") {
    // A model that allocates once per call through each path. The counter runs from the first
    // step's callback to the last one's, so it sees the evaluations of steps 1..7: 7 x 3.
    static void* volatile kept_malloc = nullptr;
    static std::unique_ptr<double[]> kept_new;
    auto allocating = [](Tensor<double>& F, const Tensor<double>& x, double, double, const Labels&) {
      std::free(kept_malloc);
      kept_malloc = std::malloc(64);
      kept_new = std::make_unique<double[]>(16);
      Eigen::MatrixXd temporary = Eigen::MatrixXd::Constant(8, 8, kept_new[0] + 1.0);
      for (std::int64_t i = 0; i < x.numel(); ++i) F.data()[i] = 0.5 * x.data()[i] + temporary.sum();
    };
    tim::TransitionSampler counted{allocating, tim::OtFm{}, tim::linspace_schedule(8)};
    counted.sample(z, y, {.on_step = measure});
    CHECK(during_steps == 3 * 7);
  }
  SUBCASE("the network in float, guided steps alternating with unguided ones") {
    auto file = tim::io::SafetensorsFile::open(std::string(TIM_TEST_DATA_DIR) + "/sampler_golden/model.safetensors");
    const auto model = tim::nn::load_c2i<float>(file);
    const auto latents = tim::initial_noise({3, 4, 8, 8}, 1);
    tim::TransitionSampler network{model, tim::OtFm{}, tim::linspace_schedule(8)};
    network.sample(latents, y, {.cfg_scale = 2.0, .guidance_high = 0.95, .on_step = measure});
    // The sampler sizes the workspace for 2B rows before the first step; guided steps reuse it.
    CHECK(during_steps == 0);
  }
  SUBCASE("the T2I network in float, guided (2B caption rows) alternating with unguided steps, stochastic") {
    const auto model = tim::load_t2i<float>(std::string(TIM_TEST_DATA_DIR) + "/sampler_golden_t2i/model.safetensors");
    auto file = tim::io::SafetensorsFile::open(std::string(TIM_TEST_DATA_DIR) + "/sampler_golden_t2i/cfg_stochastic.safetensors");
    auto model_with_null = model;
    model_with_null.set_null_caption(file.load<float>("input.null_cap_feats"));
    const auto cap_feats = file.load<float>("input.cap_feats");
    const auto latents = tim::initial_noise({3, 4, 8, 8}, 1);
    tim::TransitionSampler network{model_with_null, tim::OtFm{}, tim::linspace_schedule(8)};
    network.sample(latents, cap_feats,
                   {.cfg_scale = 2.0, .guidance_high = 0.95, .stochasticity = 0.2, .keep_trajectory = true,
                    .on_step = measure});
    CHECK(during_steps == 0);
  }
}

TEST_CASE("a model passed as an lvalue is kept by reference, a temporary by value") {
  std::vector<Recorder::Call> calls;
  Recorder recorder{&calls};
  tim::TransitionSampler by_reference{recorder, tim::OtFm{}, tim::linspace_schedule(2)};
  static_assert(std::is_same_v<decltype(by_reference), tim::TransitionSampler<Recorder&, tim::OtFm, tim::LinspaceSchedule>>);
  tim::TransitionSampler by_value{Recorder{&calls}, tim::OtFm{}, tim::linspace_schedule(2)};
  static_assert(std::is_same_v<decltype(by_value), tim::TransitionSampler<Recorder, tim::OtFm, tim::LinspaceSchedule>>);
  // The returning form of a callable model.
  auto returning = [](const Tensor<double>& x, double, double, const Labels&) { return x.clone(); };
  tim::TransitionSampler sampler{returning, tim::VeSde{}, tim::linspace_schedule(3)};
  const auto z = make_noise(1, 2);
  const auto result = sampler.sample(z, make_labels({0}));
  // x_r = x_t + (t - r) x_t each step: the product of (1 + t_i - t_{i+1}).
  const auto times = tim::linspace(100.0, 0.02, 4);
  double factor = 1;
  for (int i = 0; i < 3; ++i) factor *= 1 + (times[i] - times[i + 1]);
  CHECK(result.x.data()[0] == doctest::Approx(z.data()[0] * factor).epsilon(1e-14));
}

TEST_CASE("the backend's sampling operations (tim::cpu) are the scalar formulas") {
  // The functors of math/sampling.hpp, run by cpu::for_each; tim::cuda runs the same functors.
  const std::int64_t B = 2, per_sample = 11, n = B * per_sample;  // rows not a multiple of 4
  std::vector<double> noise(n), expected(n);
  tim::cpu::normal_forward(noise.data(), B, per_sample, 42, 5, tim::random::initial_noise_step);
  for (std::int64_t b = 0; b < B; ++b)
    tim::random::fill_normal(expected.data() + b * per_sample, per_sample, 42, 5 + b, tim::random::initial_noise_step);
  CHECK(noise == expected);
  const auto from_initial_noise = tim::initial_noise({B, per_sample}, 42, 5);
  CHECK(std::equal(expected.begin(), expected.end(), from_initial_noise.data()));

  std::vector<double> F(n);
  for (std::int64_t i = 0; i < n; ++i) F[i] = std::sin(0.37 * double(i)) - 0.2;
  auto x = noise, by_hand = noise;
  const tim::OtFm transport;
  tim::cpu::transition_forward(x.data(), F.data(), n, transport.coefficients(0.75, 0.5));
  for (std::int64_t j = 0; j < n; ++j) by_hand[j] = by_hand[j] - 0.25 * F[j];
  CHECK(x == by_hand);

  const std::vector<std::uint64_t> streams{3, 9};
  tim::cpu::stochastic_transition_forward(x.data(), F.data(), streams.data(), B, per_sample, transport, 0.5, 0.25, 0.2,
                                          7, 1);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t e = 0; e < per_sample; ++e) {
      const std::size_t j = static_cast<std::size_t>(b * per_sample + e);
      by_hand[j] = tim::math::ot_fm::stochastic_transition(by_hand[j], F[j], 0.5, 0.25, 0.2,
                                                           tim::random::normal(7, streams[b], 1, std::uint64_t(e)));
    }
  CHECK(x == by_hand);

  auto guided = F;
  tim::cpu::guidance_forward(guided.data(), n / 2, 3.0);
  for (std::int64_t j = 0; j < n / 2; ++j) CHECK(guided[j] == F[n / 2 + j] + 3.0 * (F[j] - F[n / 2 + j]));
  for (std::int64_t j = n / 2; j < n; ++j) CHECK(guided[j] == F[j]);

  std::vector<float> narrow(n);
  std::vector<tim::bfloat16> bf(n);
  tim::cpu::convert(narrow.data(), F.data(), std::size_t(n));
  tim::cpu::convert(bf.data(), F.data(), std::size_t(n));
  for (std::int64_t j = 0; j < n; ++j) {
    CHECK(narrow[j] == static_cast<float>(F[j]));
    CHECK(bf[j].bits == tim::bfloat16(static_cast<float>(F[j])).bits);
  }
}

TEST_CASE("CPU attention allocates nothing after its first call, at any key count") {
  // 8192 keys: with all keys in one product Eigen packs on the heap (3 allocations per product
  // here), and `(q k^T) * scale` as one expression makes a heap temporary: both are excluded.
  const std::int64_t B = 1, heads = 2, queries = 70, keys = 8192, hd = 72;
  std::vector<float> q(B * heads * queries * hd), k(B * heads * keys * hd), v(k.size()), out(B * queries * heads * hd);
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = std::sin(0.1f * float(i));
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = std::cos(0.07f * float(i)), v[i] = std::sin(0.05f * float(i));
  tim::cpu::attention_forward(out.data(), q.data(), k.data(), v.data(), B, heads, queries, keys, hd, 0.1);
  const auto first = out;
  tim_test::start_counting_allocations();
  tim::cpu::attention_forward(out.data(), q.data(), k.data(), v.data(), B, heads, queries, keys, hd, 0.1);
  CHECK(tim_test::stop_counting_allocations() == 0);
  CHECK(out == first);
  // And the result is attention: one output value against a double-precision loop.
  const std::int64_t h = 1, n = 37, j = 5;
  std::vector<double> scores(keys);
  double top = -1e300, total = 0, value = 0;
  for (std::int64_t m = 0; m < keys; ++m) {
    double dot = 0;
    for (std::int64_t d = 0; d < hd; ++d) dot += double(q[(h * queries + n) * hd + d]) * double(k[(h * keys + m) * hd + d]);
    scores[m] = 0.1 * dot;
    top = std::max(top, scores[m]);
  }
  for (std::int64_t m = 0; m < keys; ++m) total += std::exp(scores[m] - top);
  for (std::int64_t m = 0; m < keys; ++m) value += std::exp(scores[m] - top) / total * double(v[(h * keys + m) * hd + j]);
  // |v| <= 1 and the weights sum to 1: float rounding of 72-term dots and an 8192-term softmax
  // stays below 1e-5 absolute (a relative 1e-7 per operation over ~1e4 accumulated terms).
  CHECK(std::abs(double(out[(n * heads + h) * hd + j]) - value) <= 1e-5);
}

