// The TiM training objective (tim/train/objective.hpp) against our PyTorch reference's autograd
// (tools/reference/make_objective_golden.py, seed 1701: train.py's Objective.loss_parts, which
// follows the released transition.py / transports.py), the time pairs and label dropout against
// their distributions, the scalar formulas against closed forms, and the bad-input errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "compare.hpp"
#include "golden_source.hpp"
#include "gradient_check.hpp"
#include "objective_golden.hpp"
#include "tim/io/yaml_objective.hpp"
#include "tim/tim.hpp"
#include "tim/train/objective.hpp"

namespace {

using tim_test::objective_path;

const char* const objective_cases[] = {"plain", "enhanced", "trigflow", "edm", "ve"};


template <class T>
tim::nn::C2IModel<T> objective_model() {
  auto file = tim::io::SafetensorsFile::open(objective_path("model.safetensors"));
  return tim::nn::clone_parameters(tim::nn::load_c2i<T>(file));
}

template <class T>
tim::train::ObjectiveBatch<T> golden_batch(const tim::io::SafetensorsFile& file) {
  tim::train::ObjectiveBatch<T> batch;
  batch.x = file.load<T>("x");
  batch.z = file.load<T>("z");
  batch.t = file.load<T>("t");
  batch.r = file.load<T>("r");
  batch.labels = file.load<std::int64_t>("y");
  batch.cond_labels = file.load<std::int64_t>("y_cond");
  batch.n_diffusion = tim::train::leading_diffusion_rows(batch.t, batch.r);
  return batch;
}

struct CaseErrors {
  double loss = 0, per_sample = 0, weight = 0, worst_gradient = 0;
  std::size_t gradients = 0, golden_gradients = 0;
};

//! Runs golden case `name` in T against the file; returns the relative errors.
template <class T>
CaseErrors run_case(const std::string& name) {
  auto file = tim::io::SafetensorsFile::open(objective_path(name + ".safetensors"));
  const auto config = tim::io::read_objective_config(objective_path(name + ".yaml"));
  const auto model = objective_model<T>();
  auto grads = tim::nn::zero_gradients_like(model);
  tim::train::ObjectiveWorkspace<T> ws;
  const auto batch = golden_batch<T>(file);
  const auto losses = tim::train::compute_loss_and_gradients(model, model, batch, config, ws, grads);
  CaseErrors e;
  const double loss = file.load<double>("loss").data()[0];
  const double denoising = file.load<double>("denoising_loss").data()[0];
  e.loss = std::max(std::abs(losses.loss - loss) / std::abs(loss),
                    std::abs(losses.denoising_loss - denoising) / std::abs(denoising));
  const auto per_sample = file.load<double>("per_sample"), weight = file.load<double>("weight");
  REQUIRE(per_sample.numel() == static_cast<std::int64_t>(losses.per_sample.size()));
  e.per_sample = tim_test::relative_error(losses.per_sample.data(), per_sample.data(), losses.per_sample.size());
  e.weight = tim_test::relative_error(losses.weight.data(), weight.data(), losses.weight.size());
  tim::nn::for_each_parameter(
      [&](const std::string& parameter, tim::Tensor<T>& g) {
        const auto expected = file.load<double>("grad." + parameter);
        REQUIRE(expected.numel() == g.numel());
        const double error = tim_test::gradient_error(g.data(), expected.data(), static_cast<std::size_t>(g.numel()));
        e.worst_gradient = std::max(e.worst_gradient, error);
        ++e.gradients;
      },
      grads);
  for (const auto& info : file.tensors()) e.golden_gradients += info.name.rfind("grad.", 0) == 0;
  return e;
}

}  // namespace

TEST_CASE("objective against PyTorch autograd through the reference (golden, double within 1e-9)") {
  // Both sides compute in double from the same float32-representable inputs and weights. The
  // DDE's difference quotient divides two forwards' difference by 2e = 0.01, so each forward's
  // rounding (a chain of sums of at most 256 products: within 256 u = 3e-14 of its sum of
  // |terms|, the terms O(1)) reaches dF/dt amplified 100x: ~3e-12 relative; the target, the
  // losses and the backward add a few 1e-14. 1e-9 (issue 17's bound) holds with margin, while an
  // O(1) formula error (a wrong weight, sign, window or label) cannot hide.
  for (const char* name : objective_cases) {
    INFO("case ", std::string(name));
    const auto e = run_case<double>(name);
    CHECK(e.loss <= 1e-9);
    CHECK(e.per_sample <= 1e-9);
    CHECK(e.weight <= 1e-9);
    CHECK(e.worst_gradient <= 1e-9);
    CHECK(e.gradients == e.golden_gradients);
    CHECK(e.gradients == 40);
    MESSAGE(std::string(name), " (double): loss ", e.loss, ", per-sample ", e.per_sample, ", gradients ", e.worst_gradient);
  }
}

TEST_CASE("objective in float against the golden (within the DDE's amplified rounding)") {
  // The bound, derived in objective_golden.hpp: delta (1 + c / e) + 1e-5 with delta = 4e-6 the
  // float forward's rounding, e = 0.005 and c the case's largest coefficient of dF/dt in F*
  // (0.8 for plain, 0.65 enhanced, 1.03 trigflow, 5.97 edm, 19.98 ve): 5.3e-4 to 1.6e-2. The
  // measured errors are printed.
  for (const char* name : objective_cases) {
    INFO("case ", std::string(name));
    const auto e = run_case<float>(name);
    const double bound = tim_test::float_objective_bound(name);
    CHECK(e.loss <= bound);
    CHECK(e.per_sample <= bound);
    CHECK(e.weight <= bound);
    CHECK(e.worst_gradient <= bound);
    CHECK(e.gradients == e.golden_gradients);
    MESSAGE(std::string(name), " (float): loss ", e.loss, ", per-sample ", e.per_sample, ", gradients ", e.worst_gradient,
            " (bound ", bound, ")");
  }
}

TEST_CASE("objective: a changed ingredient moves the result (the golden can see each option)") {
  // Each option of the golden case, flipped, changes the per-sample losses or the gradients far
  // beyond the 1e-9 of the comparison above, which would therefore catch an implementation that
  // ignored it. (The weighted loss itself hardly moves: with the adaptive weight each row
  // contributes about its time weight, l / (l + 1e-5) ~ 1, whatever l is.)
  auto file = tim::io::SafetensorsFile::open(objective_path("enhanced.safetensors"));
  const auto base_config = tim::io::read_objective_config(objective_path("enhanced.yaml"));
  const auto model = objective_model<double>();
  const auto batch = golden_batch<double>(file);
  const auto golden_per_sample = file.load<double>("per_sample");
  const auto golden_gradient = file.load<double>("grad.final_layer.linear.weight");
  // max(relative change of the per-sample losses, of final_layer.linear.weight's gradient)
  const auto change = [&](const tim::train::ObjectiveConfig& c, const tim::train::ObjectiveBatch<double>& b) {
    auto grads = tim::nn::zero_gradients_like(model);
    tim::train::ObjectiveWorkspace<double> ws;
    const auto losses = tim::train::compute_loss_and_gradients(model, model, b, c, ws, grads);
    const auto& g = grads.final_layer.linear.weight;
    return std::max(tim_test::relative_error(losses.per_sample.data(), golden_per_sample.data(), losses.per_sample.size()),
                    tim_test::gradient_error(g.data(), golden_gradient.data(), static_cast<std::size_t>(g.numel())));
  };
  CHECK(change(base_config, batch) <= 1e-9);
  auto c = base_config;
  c.directional_loss = false;
  CHECK(change(c, batch) > 1e-3);
  c = base_config;
  c.enhance.enabled = false;
  CHECK(change(c, batch) > 1e-3);
  c = base_config;
  c.enhance.w_end = 1.0;  // the first non-diffusion row (t = 0.95) enters the window
  CHECK(change(c, batch) > 1e-3);
  c = base_config;
  c.weight_time = tim::train::TimeWeighting::sqrt;
  CHECK(change(c, batch) > 1e-3);
  c = base_config;
  c.adaptive_weight = false;
  CHECK(change(c, batch) > 1e-3);
  c = base_config;
  c.differential_epsilon = 0.05;
  CHECK(change(c, batch) > 1e-6);
  auto other = batch;
  other.cond_labels = tim::Tensor<std::int64_t>();  // the EMA's conditional labels = the dropped ones
  CHECK(change(base_config, other) > 1e-6);
}

TEST_CASE("time_weight, nan_to_num and the cosine derivative against closed forms") {
  using tim::math::TimeWeighting;
  const double t = 0.8, r = 0.3;
  const double tt = std::tan(t), tr = std::tan(r);
  CHECK(tim::math::time_weight(t, r, TimeWeighting::sqrt, true, false, true, 1.0) ==
        doctest::Approx(1 / std::sqrt(tt - tr + 1)).epsilon(1e-15));
  CHECK(tim::math::time_weight(t, r, TimeWeighting::sqrt, true, true, true, 1.0) ==
        doctest::Approx(1 / std::sqrt(tt - tr + 1)).epsilon(1e-15));  // tangent wins over sigmoid
  const double st = t / (1 - t), sr = r / (1 - r);
  CHECK(tim::math::time_weight(t, r, TimeWeighting::reciprocal, false, true, true, 0.5) ==
        doctest::Approx(1 / (st - sr + 0.5)).epsilon(1e-15));
  CHECK(tim::math::time_weight(t, r, TimeWeighting::square, false, false, false, 1.0) ==
        doctest::Approx(1 / ((t + 1) * (t + 1))).epsilon(1e-15));
  CHECK(tim::math::time_weight(t, r, TimeWeighting::soft_min_snr, false, false, true, 0.5) ==
        doctest::Approx(1 / (0.25 + 0.25)).epsilon(1e-15));
  CHECK(tim::math::time_weight(t, r, TimeWeighting::constant, true, false, true, 1.0) == 1.0);

  CHECK(tim::math::loss_nan_to_num(std::nan("")) == 0.0);
  CHECK(tim::math::loss_nan_to_num(INFINITY) == 1e5);
  CHECK(tim::math::loss_nan_to_num(-INFINITY) == -1e5);
  CHECK(tim::math::loss_nan_to_num(2.5) == 2.5);

  // d cos(a, b) / da against central differences at a generic point.
  const double a[3] = {0.3, -0.1, 0.5}, b[3] = {1.0, 2.0, 2.0};
  const auto cosine = [&](const double* u) {
    double dot = 0, uu = 0, bb = 0;
    for (int c = 0; c < 3; ++c) {
      dot += u[c] * b[c];
      uu += u[c] * u[c];
      bb += b[c] * b[c];
    }
    return tim::math::cosine_from_norms(dot, std::sqrt(uu), std::sqrt(bb));
  };
  const double cos_ab = cosine(a);
  CHECK(cos_ab == doctest::Approx((0.3 - 0.2 + 1.0) / (std::sqrt(0.35) * 3)).epsilon(1e-15));
  for (int c = 0; c < 3; ++c) {
    double plus[3] = {a[0], a[1], a[2]}, minus[3] = {a[0], a[1], a[2]};
    plus[c] += 1e-6;
    minus[c] -= 1e-6;
    const double numeric = (cosine(plus) - cosine(minus)) / 2e-6;
    CHECK(tim::math::cosine_derivative(a[c], b[c], cos_ab, std::sqrt(0.35), 3.0) ==
          doctest::Approx(numeric).epsilon(1e-8));
  }
  // At a = 0 (the released initialisation gives F = 0) PyTorch's autograd gives b / (|b| eps):
  // the clamp is invisible to it and the norm's derivative is 0 there.
  for (int c = 0; c < 3; ++c)
    CHECK(tim::math::cosine_derivative(0.0, b[c], 0.0, 0.0, 3.0) == doctest::Approx(b[c] / 3.0 / 1e-8).epsilon(1e-15));
}

TEST_CASE("sample_time_pairs: the released layout and the transport's distribution") {
  auto config = tim::train::ObjectiveConfig::released_c2i();  // OT-FM, P_mean -0.4, P_std 1
  tim::Tensor<double> t, r;
  const std::int64_t B = 20000;
  const auto nd = tim::train::sample_time_pairs(config, t, r, B, 7, 3);
  CHECK(nd == 10000);
  std::int64_t below = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    if (b < nd) CHECK(r.data()[b] == t.data()[b]);
    if (b >= B - 2000) CHECK(r.data()[b] == 0.0);
    if (b >= nd && b < B - 2000) CHECK(r.data()[b] <= t.data()[b]);
    CHECK((t.data()[b] > 0 && t.data()[b] < 1));
    // t = max of two draws: P(t <= 0.5) = Phi((logit 0.5 + 0.4) / 1)^2 = Phi(0.4)^2.
    below += t.data()[b] <= 0.5;
  }
  const double phi = 0.5 * std::erfc(-0.4 / std::sqrt(2.0));
  const double p = phi * phi, sd = std::sqrt(p * (1 - p) / B);
  CHECK(std::abs(static_cast<double>(below) / B - p) <= 5 * sd);
  // Python's round (half to even): round(0.5 * 5) = 2, round(0.1 * 5) = 0.
  tim::Tensor<double> t5, r5;
  CHECK(tim::train::sample_time_pairs(config, t5, r5, 5, 7, 3) == 2);
  CHECK(r5.data()[4] != 0.0);
  // The same (seed, step) gives the same pairs; another step others.
  tim::Tensor<double> t_again, r_again, t_next, r_next;
  tim::train::sample_time_pairs(config, t_again, r_again, B, 7, 3);
  tim::train::sample_time_pairs(config, t_next, r_next, B, 7, 4);
  CHECK(std::equal(t.data(), t.data() + B, t_again.data()));
  CHECK(!std::equal(t.data(), t.data() + B, t_next.data()));
}

TEST_CASE("drop_labels: each label becomes the null class with the given probability") {
  const std::int64_t B = 40000;
  auto labels = tim::Tensor<std::int64_t>::empty({B});
  for (std::int64_t b = 0; b < B; ++b) labels.data()[b] = b % 7;
  const auto dropped = tim::train::drop_labels(labels, 0.1, 7, 11, 0);
  std::int64_t nulls = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    nulls += dropped.data()[b] == 7;
    CHECK((dropped.data()[b] == 7 || dropped.data()[b] == labels.data()[b]));
  }
  const double sd = std::sqrt(0.1 * 0.9 / B);
  CHECK(std::abs(static_cast<double>(nulls) / B - 0.1) <= 5 * sd);
  const auto none = tim::train::drop_labels(labels, 0.0, 7, 11, 0);
  CHECK(std::equal(none.data(), none.data() + B, labels.data()));
}

TEST_CASE("objective: bad batches are tim::Errors naming what is wrong") {
  auto file = tim::io::SafetensorsFile::open(objective_path("plain.safetensors"));
  const auto config = tim::io::read_objective_config(objective_path("plain.yaml"));
  const auto model = objective_model<double>();
  const auto good = golden_batch<double>(file);
  const auto error_for = [&](tim::train::ObjectiveBatch<double> batch) {
    auto grads = tim::nn::zero_gradients_like(model);
    tim::train::ObjectiveWorkspace<double> ws;
    return tim_test::error_of([&] { tim::train::compute_loss_and_gradients(model, model, batch, config, ws, grads); });
  };
  auto b = good;
  b.r = good.r.clone();
  b.r.data()[3] = good.t.data()[3] + 0.1;
  CHECK(error_for(b).find("row 3 has r = ") != std::string::npos);
  b = good;
  b.n_diffusion = 3;  // row 2 has r < t
  CHECK(error_for(b).find("row 2 is a diffusion row") != std::string::npos);
  b = good;
  b.z = tim::Tensor<double>::zeros({5, 2, 4, 4});
  CHECK(error_for(b).find("'z' must have the shape of 'x'") != std::string::npos);
  b = good;
  b.t = tim::Tensor<double>::zeros({4});
  CHECK(error_for(b).find("'t' must have shape [5]") != std::string::npos);
  b = good;
  b.labels = good.labels.clone();
  b.labels.data()[0] = 9;
  CHECK(error_for(b).find("label 9") != std::string::npos);
  // Gradients of another network are refused by name, before anything is computed.
  auto wrong = tim::nn::zero_gradients_like(model);
  wrong.label_table = tim::Tensor<double>::zeros({3, 16});
  tim::train::ObjectiveWorkspace<double> ws;
  CHECK(tim_test::error_of([&] { tim::train::compute_loss_and_gradients(model, model, good, config, ws, wrong); })
            .find("y_embedder.embedding_table") != std::string::npos);
}

TEST_CASE("read_objective_config: released keys, defaults and errors") {
  const std::string released = R"(model:
  transport:
    target: tim.schedulers.transports.OT_FM
    params:
      P_mean: -0.4
      P_std: 1.0
      sigma_d: 1.0
  unified_dcm_loss:
    diffusion_ratio: 0.5
    consistency_ratio: 0.1
    derivative_type: dde
    differential_epsilon: 0.005
    weight_time_type: sqrt
    weight_time_tangent: True
  network:
    params:
      class_dropout_prob: 0.1
training:
  learning_rate: 1.0e-4
)";
  const auto c = tim::io::parse_objective_config(released, "released.yaml");
  REQUIRE(std::holds_alternative<tim::OtFm>(c.transport));
  CHECK(std::get<tim::OtFm>(c.transport).p_mean == -0.4);
  CHECK(c.diffusion_ratio == 0.5);
  CHECK(c.consistency_ratio == 0.1);
  CHECK(c.weight_time == tim::train::TimeWeighting::sqrt);
  CHECK(c.weight_time_tangent);
  CHECK(!c.weight_time_sigmoid);
  CHECK(c.weight_t_and_r);
  CHECK(!c.enhance.enabled);
  CHECK(c.directional_loss);  // the released C2I trainer passes use_dir_loss=True
  CHECK(c.adaptive_weight);
  CHECK(c.adaptive_eps == 1e-5);
  CHECK(c.label_dropout == 0.1);

  // Released constructor defaults for what the file leaves out: OT_FM P_mean 0, the schedule's
  // ratios 0 and constant weighting.
  const auto d = tim::io::parse_objective_config(
      "model:\n  transport:\n    target: tim.schedulers.transports.VE_SDE\n  transition_loss: {}\n", "d.yaml");
  REQUIRE(std::holds_alternative<tim::VeSde>(d.transport));
  CHECK(d.t_max() == 100.0);
  CHECK(d.t_min() == 0.02);
  CHECK(d.diffusion_ratio == 0.0);
  CHECK(d.weight_time == tim::train::TimeWeighting::constant);
  const auto o = tim::io::parse_objective_config(
      "model:\n  transport:\n    target: OT_FM\n  transition_loss:\n    weight_time_type: Soft-Min-SNR\n", "o.yaml");
  CHECK(std::get<tim::OtFm>(o.transport).p_mean == 0.0);
  CHECK(o.weight_time == tim::train::TimeWeighting::soft_min_snr);

  const auto error = [](const std::string& text) {
    return tim_test::error_of([&] { (void)tim::io::parse_objective_config(text, "bad.yaml"); });
  };
  const std::string head = "model:\n  transport:\n    target: tim.schedulers.transports.OT_FM\n";
  CHECK(error(head + "    params:\n      P_mena: 1\n  transition_loss: {}\n")
            .find("model.transport.params.P_mena: unknown key for OT_FM") != std::string::npos);
  CHECK(error(head + "  transition_loss:\n    derivative_type: jvp\n").find("'jvp'") != std::string::npos);
  CHECK(error(head + "  transition_loss:\n    weight_time_type: soft-min-snr\n")
            .find("unknown weight_time_type 'soft-min-snr'") != std::string::npos);
  CHECK(error(head + "  transition_loss:\n    diffusion_ratio: 1.5\n").find("diffusion_ratio must be in [0, 1]") !=
        std::string::npos);
  CHECK(error(head + "  transition_loss:\n    diffusion_ratio: 0.6\n    consistency_ratio: 0.5\n")
            .find("must not exceed 1") != std::string::npos);
  CHECK(error(head + "  transition_loss:\n    weight_time_tangent: maybe\n").find("must be a boolean") !=
        std::string::npos);
  CHECK(error(head + "  transition_loss: {}\n  unified_dcm_loss: {}\n").find("both") != std::string::npos);
  CHECK(error(head).find("model.transition_loss: missing") != std::string::npos);
  CHECK(error("model:\n  transport:\n    target: tim.schedulers.transports.OPT_1\n  transition_loss: {}\n")
            .find("OPT_1") != std::string::npos);
  CHECK(error("model:\n  transport:\n    target: Foo\n  transition_loss: {}\n").find("unknown transport 'Foo'") !=
        std::string::npos);
  CHECK(error("model: {}\n").find("model.transport: missing") != std::string::npos);
  CHECK(error("model: [\n").find("malformed YAML") != std::string::npos);
  CHECK(error("- 1\n").find("must be a mapping") != std::string::npos);
}
