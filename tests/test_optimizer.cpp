// The optimizer (tim/train/optimizer.hpp) against PyTorch itself: torch.optim.AdamW,
// torch.nn.utils.clip_grad_norm_ and the EMA by torch._foreach_lerp_, stepped as
// tools/reference/train.py steps (tests/data/optim_golden/, written by
// tools/reference/make_optim_golden.py, seed 1717), in double and in float; the learning-rate
// schedule against train.py's lr_at (in the golden) and closed forms; no allocation in a step;
// bits independent of the thread count.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "allocation_counter.hpp"
#include "compare.hpp"
#include "tim/tim.hpp"
#include "tim/train/optimizer.hpp"

namespace {

const std::string golden_dir = std::string(TIM_TEST_DATA_DIR) + "/optim_golden";

// The golden's settings (make_optim_golden.py's OPTIONS).
constexpr double lr = 1e-2, weight_decay = 0.1, max_norm = 40.0, ema_decay = 0.9;
constexpr int steps = 4;

//! Runs the golden's four steps with tim::train: lr from the schedule, clip, AdamW, EMA.
template <class T>
struct Run {
  tim::nn::C2IModel<T> model;
  tim::nn::C2IGradients<T> grads;
  tim::train::AdamW<T> adamw;
  tim::train::GradientClipper<T> clipper;
  tim::train::Ema<T> ema;
  tim::train::LrSchedule schedule{.lr = lr, .warmup_steps = 2};
  std::vector<double> norms, lrs;

  explicit Run(const tim::io::SafetensorsFile& model_file)
      : model(tim::nn::clone_parameters(tim::nn::load_c2i<T>(model_file))),
        grads(tim::nn::zero_gradients_like(model)),
        adamw(model, {.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-6, .weight_decay = weight_decay}),
        clipper(grads),
        ema(model, ema_decay) {
    norms.reserve(16);
    lrs.reserve(16);
  }

  void set_gradients(const tim::io::SafetensorsFile& golden, int k) {
    tim::nn::for_each_parameter(
        [&](const std::string& name, tim::Tensor<T>& g) {
          const auto stored = golden.load<T>("grad." + std::to_string(k) + "." + name);
          REQUIRE(stored.numel() == g.numel());
          std::copy(stored.data(), stored.data() + stored.numel(), g.data());
        },
        grads);
  }

  void step() {
    const double rate = schedule.at(adamw.steps_taken());
    lrs.push_back(rate);
    norms.push_back(clipper.clip(grads, max_norm));
    adamw.step(model, grads, rate);
    ema.update(model);
  }
};

//! Compares every tensor of `network` with `prefix` + name in the golden, |a - b| <= atol.
template <class T>
void check_against(const tim::nn::C2IModel<T>& network, const tim::io::SafetensorsFile& golden,
                   const std::string& prefix, double atol) {
  int checked = 0;
  tim::nn::for_each_parameter(
      [&](const std::string& name, const tim::Tensor<T>& p) {
        const auto expected = golden.load<double>(prefix + name);
        INFO(prefix << name);
        REQUIRE(expected.numel() == p.numel());
        TIM_CHECK_CLOSE(p.data(), expected.data(), static_cast<std::size_t>(p.numel()), 0.0, atol);
        ++checked;
      },
      const_cast<tim::nn::C2IModel<T>&>(network));
  CHECK(checked > 20);
}

double max_abs(const tim::io::SafetensorsFile& golden, const std::string& prefix) {
  double m = 0;
  for (const auto& info : golden.tensors()) {
    if (info.name.rfind(prefix, 0) != 0) continue;
    const auto t = golden.load<double>(info.name);
    for (std::int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::abs(t.data()[i]));
  }
  return m;
}

// Error analysis (unit roundoff u: 2^-53 double, 2^-24 float). The gradients are given, so no
// error feeds back through them. Per step each of m, v, the denominator and the update takes a
// handful of roundings (<= 8 u relative each); torch and tim order some of them differently
// (torch's vectorised lerp and addcdiv may fuse multiply-adds), so each side is within ~8 u per
// operation of the exact value and the two within twice that. With |g| / sqrt(v_hat) <= 1 /
// sqrt(1 - beta2) ~ 4.5 (at k <= 4 steps), an update's absolute error is <= lr 64 u, and the
// parameter's after k steps <= k (64 u lr + 4 u |p|). The clip coefficient's rounding (double
// norm here, torch's float norm) scales a step's gradients by 1 + O(u) which AdamW's m / sqrt(v)
// cancels up to eps. Bound used: 64 k u (max |p| + 1), and for m, v: 64 k u max |g|, max g^2.
template <class T>
double bound(double scale) {
  return 64.0 * steps * std::numeric_limits<T>::epsilon() / 2 * scale;
}

template <class T>
void golden_test(const char* tag) {
  const auto model_file = tim::io::SafetensorsFile::open(golden_dir + "/model.safetensors");
  const auto golden = tim::io::SafetensorsFile::open(golden_dir + "/steps.safetensors");
  Run<T> run(model_file);
  for (int k = 0; k < steps; ++k) {
    run.set_gradients(golden, k);
    run.step();
  }
  CHECK(run.adamw.steps_taken() == steps);
  const auto lrs = golden.load<double>("lr", {steps});
  for (int k = 0; k < steps; ++k) CHECK(run.lrs[k] == lrs.data()[k]);  // train.py's lr_at, exactly
  // Norms: of the same given gradients; tim sums squares in double. Against torch's double norm
  // within 8 u_double relative; against torch's float norm within torch's float summation
  // (pairwise over ~4,000 values: 16 u_float relative).
  const auto norm64 = golden.load<double>("norm64", {steps});
  const auto norm32 = golden.load<double>("norm32", {steps});
  for (int k = 0; k < steps; ++k) {
    if constexpr (std::is_same_v<T, double>)
      CHECK(std::abs(run.norms[k] - norm64.data()[k]) <= 8 * 1.1e-16 * norm64.data()[k]);
    else
      CHECK(std::abs(run.norms[k] - norm32.data()[k]) <= 16 * 6e-8 * norm32.data()[k]);
  }
  const double p_scale = std::max(max_abs(golden, "param64."), max_abs(golden, "ema64.")) + 1.0;
  const double g_max = max_abs(golden, "grad.");
  const std::string own = tag;  // "64" or "32": torch in the same precision
  check_against(run.model, golden, "param" + own + ".", bound<T>(p_scale));
  check_against(run.ema.network(), golden, "ema" + own + ".", bound<T>(p_scale));
  check_against(run.adamw.exp_avg(), golden, "m" + own + ".", bound<T>(g_max));
  check_against(run.adamw.exp_avg_sq(), golden, "v" + own + ".", bound<T>(g_max * g_max));
  if constexpr (std::is_same_v<T, float>) {
    // float against torch's double run: the same bound (each side within half of it of exact).
    check_against(run.model, golden, "param64.", bound<T>(p_scale));
  }
}

}  // namespace

TEST_CASE("AdamW, clip and EMA against torch.optim.AdamW, clip_grad_norm_ and lerp: double") {
  golden_test<double>("64");
}

TEST_CASE("AdamW, clip and EMA against torch.optim.AdamW, clip_grad_norm_ and lerp: float") {
  golden_test<float>("32");
}

TEST_CASE("AdamW: the golden would see a misplaced eps, a missing weight decay or bias correction") {
  // The golden's tiny-gradient tensor (label table, |g| ~ 1e-6) makes eps matter: with eps inside
  // the square root its update would be ~1000x smaller. Check that the golden's movement of that
  // tensor is of the order lr per step (so the comparison above can see the difference), and that
  // weight decay and bias correction move parameters by more than the float bound.
  const auto model_file = tim::io::SafetensorsFile::open(golden_dir + "/model.safetensors");
  const auto golden = tim::io::SafetensorsFile::open(golden_dir + "/steps.safetensors");
  const std::string tiny = "y_embedder.embedding_table.weight";
  const auto before = model_file.load<double>(tiny);
  const auto after = golden.load<double>("param64." + tiny);
  double moved = 0;
  for (std::int64_t i = 0; i < before.numel(); ++i) moved = std::max(moved, std::abs(after.data()[i] - before.data()[i]));
  CHECK(moved > 0.5 * lr);                   // eps outside sqrt: steps of ~lr/2 .. lr
  CHECK(lr * weight_decay * 0.1 > bound<float>(4.0));  // decay of a |p| >= 0.1 weight over one step
}

TEST_CASE("AdamW: a step allocates nothing and its bits do not depend on the thread count") {
  const auto model_file = tim::io::SafetensorsFile::open(golden_dir + "/model.safetensors");
  const auto golden = tim::io::SafetensorsFile::open(golden_dir + "/steps.safetensors");
  const int threads = tim::num_threads();
  auto run_with = [&](int n) {
    tim::set_num_threads(n);
    Run<float> run(model_file);
    run.set_gradients(golden, 0);
    run.step();  // first step outside the count (thread pools start)
    run.set_gradients(golden, 2);
    tim_test::start_counting_allocations();
    run.step();
    const long allocations = tim_test::stop_counting_allocations();
    CHECK(allocations == 0);
    return run;
  };
  auto one = run_with(1);
  auto two = run_with(2);
  tim::set_num_threads(threads);
  CHECK(one.norms == two.norms);
  tim::nn::for_each_parameter(
      [&](const std::string& name, const tim::Tensor<float>& a, const tim::Tensor<float>& b) {
        INFO(name);
        CHECK(std::memcmp(a.data(), b.data(), sizeof(float) * a.numel()) == 0);
      },
      one.model, two.model);
}

TEST_CASE("AdamW: wrong gradients and bad options are errors") {
  const auto model_file = tim::io::SafetensorsFile::open(golden_dir + "/model.safetensors");
  Run<double> run(model_file);
  auto wrong = run.grads;
  wrong.label_table = tim::Tensor<double>::zeros({2, 2});
  CHECK_THROWS_WITH_AS(run.adamw.step(run.model, wrong, lr), doctest::Contains("y_embedder.embedding_table.weight"),
                       tim::Error);
  CHECK(run.adamw.steps_taken() == 0);
  CHECK_THROWS_AS(tim::train::AdamW<double>(run.model, {.beta2 = 1.0}), tim::Error);
  CHECK_THROWS_AS(run.clipper.clip(run.grads, 0.0), tim::Error);
  CHECK_THROWS_AS(tim::train::Ema<double>(run.model, 1.5), tim::Error);
  CHECK_THROWS_WITH_AS(tim::train::parse_lr_decay("step"), doctest::Contains("constant, linear or cosine"), tim::Error);
  CHECK_THROWS_AS((tim::train::LrSchedule{.lr = 1, .warmup_steps = 10, .decay = tim::train::LrDecay::cosine,
                                          .total_steps = 10}
                       .validate()),
                  tim::Error);
}

TEST_CASE("gradient clipping: no change below the limit, exact scaling above, NaN propagates as in torch") {
  const auto model_file = tim::io::SafetensorsFile::open(golden_dir + "/model.safetensors");
  Run<double> run(model_file);
  // Every gradient 1: the norm is sqrt(count) exactly (count a perfect square is not needed: compare to sqrt).
  double count = 0;
  tim::nn::for_each_parameter(
      [&](const std::string&, tim::Tensor<double>& g) {
        std::fill(g.data(), g.data() + g.numel(), 1.0);
        count += static_cast<double>(g.numel());
      },
      run.grads);
  const double norm = std::sqrt(count);
  CHECK(run.clipper.clip(run.grads, 2 * norm) == norm);
  CHECK(run.grads.label_table.data()[0] == 1.0);  // coefficient clamped to 1
  CHECK(run.clipper.clip(run.grads, norm / 4) == norm);
  CHECK(run.grads.label_table.data()[0] == doctest::Approx((norm / 4) / (norm + 1e-6)).epsilon(1e-15));
  const double coefficient = (norm / 4) / (norm + 1e-6);
  // A sum of ~3,750 squares in double: relative error <= n u ~ 4e-13.
  CHECK(run.clipper.norm(run.grads) == doctest::Approx(norm * coefficient).epsilon(1e-12));
  run.grads.label_table.data()[3] = std::numeric_limits<double>::quiet_NaN();
  CHECK(std::isnan(run.clipper.clip(run.grads, 1.0)));
  CHECK(std::isnan(run.grads.label_table.data()[0]));
}

TEST_CASE("learning-rate schedule: warm-up as train.py, then constant, linear or cosine") {
  using tim::train::LrDecay;
  const tim::train::LrSchedule warm{.lr = 1e-3, .warmup_steps = 4};
  CHECK(warm.at(0) == 1e-3 * 1 / 4);
  CHECK(warm.at(3) == 1e-3);
  CHECK(warm.at(1000) == 1e-3);
  CHECK(tim::train::LrSchedule{.lr = 2.0}.at(0) == 2.0);
  const tim::train::LrSchedule cosine{.lr = 1.0, .warmup_steps = 10, .decay = LrDecay::cosine, .total_steps = 110};
  CHECK(cosine.at(9) == 1.0);
  CHECK(cosine.at(10) == 1.0);
  CHECK(cosine.at(60) == doctest::Approx(0.5).epsilon(1e-15));
  CHECK(cosine.at(35) == doctest::Approx(0.5 * (1 + std::cos(M_PI * 0.25))).epsilon(1e-15));
  CHECK(cosine.at(110) == doctest::Approx(0.0).epsilon(1e-15));
  CHECK(cosine.at(500) == doctest::Approx(0.0).epsilon(1e-15));
  const tim::train::LrSchedule linear{.lr = 1.0, .decay = LrDecay::linear, .total_steps = 4};
  CHECK(linear.at(0) == 1.0);
  CHECK(linear.at(1) == 0.75);
  CHECK(linear.at(4) == 0.0);
}

TEST_CASE("gradient clipping: the norm of a large gradient has the same bits on 1 and 2 threads") {
  // 256,000 label-table gradients (63 blocks): the parallel path of the norm is taken with 2 threads.
  const auto model_file = tim::io::SafetensorsFile::open(golden_dir + "/model.safetensors");
  auto grads = tim::nn::zero_gradients_like(tim::nn::load_c2i<float>(model_file));
  const auto values = tim_test::random_vector<float>(4000 * 64, 99);
  grads.label_table = tim::Tensor<float>::empty({4000, 64});
  std::copy(values.begin(), values.end(), grads.label_table.data());
  tim::train::GradientClipper<float> clipper(grads);
  const int threads = tim::num_threads();
  tim::set_num_threads(1);
  const double one = clipper.norm(grads);
  tim::set_num_threads(2);
  const double two = clipper.norm(grads);
  tim::set_num_threads(threads);
  CHECK(std::memcmp(&one, &two, sizeof one) == 0);
  double naive = 0;  // every other gradient is zero
  for (float v : values) naive += static_cast<double>(v) * v;
  CHECK(one == doctest::Approx(std::sqrt(naive)).epsilon(1e-10));  // 256k double additions: n u ~ 3e-11
}
