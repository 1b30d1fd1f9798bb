// The any-step transition sampler of SPEC section 6: from noise at t_0 through a schedule's grid
// to t_N, one network evaluation per step (two batch halves inside the guidance window),
// optional OT-FM stochasticity from the counter-based generator, `transition` or `diffusion`
// mode, a per-step callback (progress, trajectory, cancellation). State is kept in double.
// Models: a class-conditional network or callable (labels), or a text-to-image network
// (caption features); each model's runner builds the rows of its condition.
//
// Shape legend: B batch, S the per-sample shape (C, H, W for images), 2B the guided batch
// (conditional rows first, then the null condition's rows), M caption tokens, Dc caption width.
#pragma once

#include <cmath>
#include <concepts>
#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/core/random.hpp"
#include "tim/core/tensor.hpp"
#include "tim/cpu/backend.hpp"
#include "tim/nn/c2i.hpp"
#include "tim/nn/t2i.hpp"
#include "tim/sampler/mode.hpp"
#include "tim/sampler/schedule.hpp"
#include "tim/transport/transports.hpp"

namespace tim {

//! Whether a step starting at time t is guided: cfg_scale > 1 and
//! guidance_low * t_max < t < guidance_high * t_max, both strict (SPEC 6). With the window
//! [0, 1] the first step from t = t_max is therefore never guided.
TIM_HD inline bool guidance_applies(double cfg_scale, double guidance_low, double guidance_high, double t,
                                    double t_max) {
  return cfg_scale > 1.0 && guidance_low * t_max < t && t < guidance_high * t_max;
}

//! Whether the step t -> r is stochastic: s > 0, t < t_max and r > t_min (SPEC 6).
TIM_HD inline bool stochasticity_applies(double stochasticity, double t, double r, double t_max, double t_min) {
  return stochasticity > 0.0 && t < t_max && r > t_min;
}

//! What the per-step callback sees, after step `step` moved the state from t to r.
struct StepInfo {
  int step = 0;       // 0-based index i of the step t_i -> t_{i+1}
  int steps = 0;      // N, the number of steps of the grid
  double t = 0;       // t_i
  double r = 0;       // t_{i+1}
  bool guided = false;
  bool stochastic = false;
  const Tensor<double>& x;  // the state x_r after the step (B, S); valid during the call
};

//! Per-step callback: return false to stop sampling (cancellation).
using StepCallback = std::function<bool(const StepInfo&)>;

//! Sampling settings (SPEC 6). Defaults: no guidance, deterministic, transition mode.
struct SamplerOptions {
  double cfg_scale = 1.0;      // guidance scale; guidance only when > 1
  double guidance_low = 0.0;   // guidance window [low, high] in fractions of the transport's t_max,
  double guidance_high = 1.0;  // applied strictly inside: low * t_max < t < high * t_max
  double stochasticity = 0.0;  // s of the OT-FM stochastic transition (0: deterministic)
  SampleMode mode = SampleMode::transition;
  std::uint64_t seed = 0;                           // key of the generator for stochastic steps
  std::uint64_t first_sample_index = 0;             // row b draws stream first_sample_index + b ...
  std::vector<std::uint64_t> sample_indices = {};   // ... or sample_indices[b] when given (B entries)
  std::optional<std::int64_t> null_label = {};      // null class for guidance with labels; C2I models know theirs
  bool keep_trajectory = false;                     // fill SampleResult::trajectory
  StepCallback on_step = {};                        // called after every step; false cancels
};

//! What a sampling run returns.
struct SampleResult {
  Tensor<double> x;           // (B, S) the final state x_N (or the state when cancelled)
  Tensor<double> trajectory;  // (K + 1, B, S) = [z, x_1, ..., x_K], K = steps_done, if kept
  std::vector<double> times;  // the grid t_0 .. t_N that was used
  int steps_done = 0;         // K; N unless cancelled
  bool cancelled = false;     // the callback returned false after step K - 1, with K < N
};

//! The caption condition of a text-to-image network (tim::nn::T2IModel<T>), in the network's
//! precision T: one caption's text-encoder features per sample and, for guidance, the features
//! of the null (empty) caption, which every guided step pairs with each sample.
//! Example (features from a file written by tools/caption_features.py):
//!   auto file = tim::io::SafetensorsFile::open("caps.safetensors");
//!   tim::Captions<float> captions{file.load<float>("cap_feats"), file.load<float>("null_cap_feats")};
//!   auto result = sampler.sample(noise, captions, {.cfg_scale = 2.5});
template <class T>
struct Captions {
  Tensor<T> cap_feats = {};       // (B, M, Dc)
  Tensor<T> null_cap_feats = {};  // (1, M, Dc), the same M; may stay empty when no step is guided
};

//! A model given as a callable in transport time: it writes F for a batch x_t at the scalar
//! times (t, r) (r = t in diffusion mode) and the labels. Either form is accepted:
//!   void f(tim::Tensor<double>& F, const tim::Tensor<double>& x, double t, double r,
//!          const tim::Tensor<std::int64_t>& labels);   // F is pre-shaped like x: no allocation
//!   tim::Tensor<double> f(const tim::Tensor<double>& x, double t, double r,
//!                         const tim::Tensor<std::int64_t>& labels);
//! Rows are samples; inside the guidance window the batch is 2B rows, the conditional labels
//! first and the null label after. Times are raw transport times (apply c_noise yourself if
//! the callable wraps a network).
template <class F>
concept FlowFunction =
    std::invocable<F&, Tensor<double>&, const Tensor<double>&, double, double, const Tensor<std::int64_t>&> ||
    requires(F& f, const Tensor<double>& x, double t, const Tensor<std::int64_t>& y) {
      { f(x, t, t, y) } -> std::convertible_to<Tensor<double>>;
    };

namespace detail {
template <class M>
struct is_c2i_model : std::false_type {};
template <class T, class Backend>
struct is_c2i_model<nn::C2IModel<T, Backend>> : std::true_type {};
template <class M>
struct is_t2i_model : std::false_type {};
template <class T, class Backend>
struct is_t2i_model<nn::T2IModel<T, Backend>> : std::true_type {};
template <class M>
inline constexpr bool is_network_model = is_c2i_model<M>::value || is_t2i_model<M>::value;
}  // namespace detail

//! What the sampler accepts as a model: a tim::nn::C2IModel<T> or tim::nn::T2IModel<T> (the
//! network runs in T; the sampler converts the double state to T, applies the transport's
//! c_noise to t and r, and converts F back to double) or a FlowFunction.
template <class M>
concept SamplerModel = detail::is_network_model<std::remove_cvref_t<M>> || FlowFunction<std::remove_cvref_t<M>>;

namespace detail {

//! The times of one model evaluation: raw (t, r) and the network inputs c_noise(t), c_noise(r)
//! (r = t in diffusion mode).
struct ModelTimes {
  double t, r, t_in, r_in;
};

// A runner evaluates one kind of model. Its interface, used by TransitionSampler::sample:
//   using Condition = ...;   what sample() takes besides the noise (labels, Captions<T>)
//   void prepare(const Condition&, const SamplerOptions&, std::int64_t B,
//                const std::vector<std::int64_t>& sample_shape, bool guided);
//       checks the condition (tim::Error naming it), builds the condition rows of both kinds
//       of evaluation and every buffer, so that evaluations allocate nothing;
//   void operator()(int kind, Tensor<double>& F, const Tensor<double>& x, const ModelTimes&);
//       kind 0: a step on B rows; kind 1: a guided step on 2B rows, x = (x_t, x_t).

//! The guidance message shared by the conditions that need a null entry.
inline std::string guidance_needs(double cfg_scale, const char* what) {
  return detail::concat("sampler: guidance (cfg_scale ", cfg_scale, " > 1 inside the guidance window) needs ", what);
}

//! Label rows: (B) = y for a step, (2B) = (y, null label) for a guided step.
struct LabelRows {
  using Condition = Tensor<std::int64_t>;
  Tensor<std::int64_t> rows[2];

  static void check_shape(const Condition& labels, std::int64_t B) {
    check(labels.shape() == Shape{B}, "sampler: labels must have shape [", B, "] (one per sample), got ",
          labels.shape());
  }
  void prepare(const Condition& labels, bool guided, std::int64_t null_label) {
    rows[0] = labels;
    if (!guided) return;
    const std::int64_t B = labels.dim(0);
    rows[1] = Tensor<std::int64_t>::empty({2 * B});
    for (std::int64_t b = 0; b < B; ++b) {
      rows[1].data()[b] = labels.data()[b];
      rows[1].data()[B + b] = null_label;
    }
  }
};

//! Caption rows: (B, M, Dc) = cap_feats for a step, (2B, M, Dc) = (cap_feats, null_cap_feats
//! repeated B times) for a guided step.
template <class T>
struct CaptionRows {
  using Condition = Captions<T>;
  Tensor<T> rows[2];

  //! Checks both tensors against the batch and the network's caption width Dc; the null caption
  //! is required when a step is guided and checked whenever it is given.
  static void check_shapes(const Condition& captions, std::int64_t B, std::int64_t caption_dim, bool guided,
                           double cfg_scale) {
    const Tensor<T>& features = captions.cap_feats;
    check(!features.empty_tensor() && features.rank() == 3 && features.dim(0) == B &&
              features.dim(2) == caption_dim && features.dim(1) >= 1,
          "sampler: cap_feats must have shape [B, M, cap_dim] = [", B, ", M, ", caption_dim,
          "] (one caption per sample, M >= 1 tokens), got ", features.shape());
    const Tensor<T>& null = captions.null_cap_feats;
    if (null.empty_tensor()) {
      check(!guided, guidance_needs(cfg_scale, "the null caption: set Captions::null_cap_feats, shape [1, "),
            features.dim(1), ", ", caption_dim, "]");
      return;
    }
    check(null.shape() == Shape{1, features.dim(1), caption_dim},
          "sampler: null_cap_feats must have shape [1, M, cap_dim] = [1, ", features.dim(1), ", ", caption_dim,
          "] (one null caption with the M of cap_feats), got ", null.shape());
  }
  void prepare(const Condition& captions, bool guided) {
    rows[0] = captions.cap_feats;
    if (!guided) return;
    const Tensor<T>& features = captions.cap_feats;
    const std::int64_t B = features.dim(0), per_caption = features.numel() / B;
    rows[1] = Tensor<T>::empty({2 * B, features.dim(1), features.dim(2)});
    cpu::copy(rows[1].data(), features.data(), static_cast<std::size_t>(features.numel()));
    for (std::int64_t b = 0; b < B; ++b)
      cpu::copy(rows[1].data() + (B + b) * per_caption, captions.null_cap_feats.data(),
                static_cast<std::size_t>(per_caption));
  }
};

//! Evaluates a FlowFunction on label rows.
template <class F>
struct FunctionRunner {
  using Condition = LabelRows::Condition;
  F& function;
  LabelRows labels;

  explicit FunctionRunner(F& f) : function(f) {}
  void prepare(const Condition& y, const SamplerOptions& options, std::int64_t batch,
               const std::vector<std::int64_t>&, bool guided) {
    LabelRows::check_shape(y, batch);
    if (guided && !options.null_label)
      fail(guidance_needs(options.cfg_scale, "the null label: set SamplerOptions::null_label"));
    labels.prepare(y, guided, guided ? *options.null_label : 0);
  }
  void operator()(int kind, Tensor<double>& out, const Tensor<double>& x, const ModelTimes& times) {
    const Tensor<std::int64_t>& rows = labels.rows[kind];
    if constexpr (std::invocable<F&, Tensor<double>&, const Tensor<double>&, double, double,
                                 const Tensor<std::int64_t>&>) {
      function(out, x, times.t, times.r, rows);
    } else {
      Tensor<double> result = function(x, times.t, times.r, rows);
      check(result.shape() == out.shape(), "sampler: the model returned F of shape ", result.shape(),
            ", expected ", out.shape(), " (the shape of x_t)");
      cpu::copy(out.data(), result.data(), static_cast<std::size_t>(out.numel()));
    }
  }
};

//! What every network runner does around the forward pass, in the network's precision T:
//! converts x to T, fills the time inputs c_noise(t), c_noise(r), and converts F back to double.
//! Its buffers (and their views for B and 2B rows) are made in prepare(), so evaluations
//! allocate nothing here.
template <class T>
struct NetworkEvaluation {
  Tensor<T> x_in[2], out[2];   // (B, S) / (2B, S) in T; unused when T is double
  Tensor<T> t_in[2], r_in[2];  // (B) / (2B)

  void prepare(std::int64_t batch, const std::vector<std::int64_t>& sample_shape, bool guided) {
    const std::int64_t capacity = guided ? 2 * batch : batch;
    std::int64_t per_sample = 1;
    for (auto e : sample_shape) per_sample *= e;
    auto times_all = Tensor<T>::empty({2 * capacity});
    Tensor<T> x_all, out_all;
    if constexpr (!std::is_same_v<T, double>) {
      x_all = Tensor<T>::empty({capacity * per_sample});
      out_all = Tensor<T>::empty({capacity * per_sample});
    }
    for (int kind = 0; kind < (guided ? 2 : 1); ++kind) {
      const std::int64_t rows = kind == 0 ? batch : 2 * batch;
      std::vector<std::int64_t> extents{rows};
      extents.insert(extents.end(), sample_shape.begin(), sample_shape.end());
      if constexpr (!std::is_same_v<T, double>) {
        x_in[kind] = x_all.slice(0, rows * per_sample).reshape(Shape(extents));
        out[kind] = out_all.slice(0, rows * per_sample).reshape(Shape(extents));
      }
      t_in[kind] = times_all.slice(0, rows);
      r_in[kind] = times_all.slice(capacity, rows);
    }
  }

  //! F (rows, S) = forward(out, x_in, t_in, r_in) for the evaluation `kind`.
  template <class Forward>
  void operator()(int kind, Tensor<double>& F, const Tensor<double>& x, const ModelTimes& times,
                  Forward&& forward) {
    for (std::int64_t b = 0; b < x.dim(0); ++b) {
      t_in[kind].data()[b] = static_cast<T>(times.t_in);
      r_in[kind].data()[b] = static_cast<T>(times.r_in);
    }
    if constexpr (std::is_same_v<T, double>) {
      forward(F, x, t_in[kind], r_in[kind]);
    } else {
      const double* source = x.data();
      T* converted = x_in[kind].data();
      cpu::parallel_for(x.numel(), [&](std::int64_t i) { converted[i] = static_cast<T>(source[i]); });
      forward(out[kind], x_in[kind], t_in[kind], r_in[kind]);
      const T* result = out[kind].data();
      double* target = F.data();
      cpu::parallel_for(F.numel(), [&](std::int64_t i) { target[i] = static_cast<double>(result[i]); });
    }
  }
};

template <class Network>
struct NetworkRunner;

//! A C2I network on label rows; the null label is the network's num_classes unless
//! SamplerOptions::null_label says otherwise.
template <class T, class Backend>
struct NetworkRunner<nn::C2IModel<T, Backend>> {
  static_assert(std::is_same_v<Backend, cpu>, "TransitionSampler: only the CPU backend is supported here");
  using Condition = LabelRows::Condition;
  const nn::C2IModel<T, Backend>& network;
  NetworkEvaluation<T> evaluation;
  LabelRows labels;

  explicit NetworkRunner(const nn::C2IModel<T, Backend>& n) : network(n) {}

  void prepare(const Condition& y, const SamplerOptions& options, std::int64_t batch,
               const std::vector<std::int64_t>& sample_shape, bool guided) {
    LabelRows::check_shape(y, batch);
    const std::int64_t classes = network.config.num_classes;
    for (std::int64_t b = 0; b < batch; ++b)
      check(y.data()[b] >= 0 && y.data()[b] <= classes, "sampler: label ", y.data()[b], " at index ", b,
            " is outside [0, ", classes, "] (", classes, " is the null class)");
    labels.prepare(y, guided, guided ? options.null_label.value_or(classes) : 0);
    evaluation.prepare(batch, sample_shape, guided);
    // Grow the network's workspace to the largest batch now rather than at the first guided step.
    if (sample_shape.size() == 3) network.reserve(guided ? 2 * batch : batch, sample_shape[1], sample_shape[2]);
  }

  void operator()(int kind, Tensor<double>& F, const Tensor<double>& x, const ModelTimes& times) {
    evaluation(kind, F, x, times, [&](auto& out, const auto& x_in, const auto& t_in, const auto& r_in) {
      network.forward(out, x_in, t_in, r_in, labels.rows[kind]);
    });
  }
};

//! A T2I network on caption rows: guided steps pair every sample with the null caption.
template <class T, class Backend>
struct NetworkRunner<nn::T2IModel<T, Backend>> {
  static_assert(std::is_same_v<Backend, cpu>, "TransitionSampler: only the CPU backend is supported here");
  using Condition = typename CaptionRows<T>::Condition;
  const nn::T2IModel<T, Backend>& network;
  NetworkEvaluation<T> evaluation;
  CaptionRows<T> captions;

  explicit NetworkRunner(const nn::T2IModel<T, Backend>& n) : network(n) {}

  void prepare(const Condition& condition, const SamplerOptions& options, std::int64_t batch,
               const std::vector<std::int64_t>& sample_shape, bool guided) {
    check(!options.null_label, "sampler: SamplerOptions::null_label is for label-conditioned models; a text-to-image "
          "network's null condition is Captions::null_cap_feats");
    CaptionRows<T>::check_shapes(condition, batch, network.config.caption_dim, guided, options.cfg_scale);
    captions.prepare(condition, guided);
    evaluation.prepare(batch, sample_shape, guided);
    // Grow the network's workspace to the largest batch (and B*M caption rows) now.
    if (sample_shape.size() == 3)
      network.reserve(guided ? 2 * batch : batch, sample_shape[1], sample_shape[2], condition.cap_feats.dim(1));
  }

  void operator()(int kind, Tensor<double>& F, const Tensor<double>& x, const ModelTimes& times) {
    evaluation(kind, F, x, times, [&](auto& out, const auto& x_in, const auto& t_in, const auto& r_in) {
      network.forward(out, x_in, t_in, r_in, captions.rows[kind]);
    });
  }
};

//! The runner of a sampler's model type (a reference for lvalue models).
template <class M>
using ModelRunnerFor = std::conditional_t<is_network_model<std::remove_cvref_t<M>>,
                                          NetworkRunner<std::remove_cvref_t<M>>, FunctionRunner<std::remove_reference_t<M>>>;

}  // namespace detail

//! The transition sampler: `Model` (a tim::nn::C2IModel<T>, a tim::nn::T2IModel<T> or a
//! FlowFunction), a Transport and a Schedule. A model passed as an lvalue is kept by reference
//! (it must outlive the sampler); a temporary is moved in.
//!
//! Example:
//!   auto model = tim::load_c2i<float>("c2i_model_256.safetensors");
//!   tim::TransitionSampler sampler{model, tim::OtFm{}, tim::linspace_schedule(4)};
//!   auto noise = tim::initial_noise({8, 4, 32, 32}, /*seed=*/0);
//!   auto result = sampler.sample(noise, labels, {.cfg_scale = 2.5, .guidance_high = 0.6});
//!   // result.x: (8, 4, 32, 32) latents in double
//! A text-to-image network takes tim::Captions<T> instead of labels:
//!   auto t2i = tim::load_t2i<float>("t2i_model.safetensors");
//!   tim::TransitionSampler text_sampler{t2i, tim::OtFm{}, tim::linspace_schedule(16)};
//!   auto images = text_sampler.sample(noise, {cap_feats, null_cap_feats}, {.cfg_scale = 2.5});
template <class Model, Transport Tr, Schedule Sched>
  requires SamplerModel<Model>
class TransitionSampler {
 public:
  TransitionSampler(std::type_identity_t<Model> model, Tr transport, Sched schedule)
      : model_(std::forward<Model>(model)), transport_(std::move(transport)), schedule_(std::move(schedule)) {}

  const Tr& transport() const { return transport_; }
  const Sched& schedule() const { return schedule_; }

  //! The validated time grid t_0 .. t_N of the schedule for the transport's range.
  std::vector<double> time_grid() const { return make_time_grid(schedule_, transport_.t_max, transport_.t_min); }

  //! What sample() conditions on: class labels `Tensor<std::int64_t>` (B) for a C2I network or
  //! a FlowFunction, `Captions<T>` for a T2I network.
  using Condition = typename detail::ModelRunnerFor<Model>::Condition;

  //! Samples from `noise` (B, S), the state at t_0, under `condition`: class labels (B) (values
  //! in [0, num_classes]; num_classes is the null class), or caption features (B, M, Dc) with
  //! the null caption (1, M, Dc) for guided steps. Throws tim::Error on invalid inputs or
  //! options. Cancellation through options.on_step is not an error: the result says so.
  SampleResult sample(const Tensor<double>& noise, const Condition& condition, const SamplerOptions& options = {}) {
    SampleResult result;
    result.times = time_grid();
    const auto& times = result.times;
    const int steps = static_cast<int>(times.size()) - 1;
    validate(noise, options);
    const std::int64_t B = noise.dim(0);
    const std::int64_t per_sample = noise.numel() / B;
    const std::vector<std::int64_t> sample_shape(noise.shape().extents().begin() + 1, noise.shape().extents().end());
    auto with_rows = [&](std::int64_t rows) {
      std::vector<std::int64_t> extents{rows};
      extents.insert(extents.end(), sample_shape.begin(), sample_shape.end());
      return Shape(std::move(extents));
    };

    bool any_guided = false;
    for (int i = 0; i < steps; ++i)
      any_guided = any_guided || guided(options, times[static_cast<std::size_t>(i)]);
    // The runner checks the condition and builds its rows: (B) for a step, (2B) = (conditional,
    // null) for a guided step; it also makes the network's buffers.
    detail::ModelRunnerFor<Model> runner(model_);
    runner.prepare(condition, options, B, sample_shape, any_guided);

    // Every buffer of the loop, made once: state (B, S); F (B or 2B, S); the guided input
    // pair (2B, S); the sample indices; the trajectory (N + 1, B, S).
    result.x = noise.clone();
    Tensor<double>& x = result.x;
    auto F_all = Tensor<double>::empty(with_rows(any_guided ? 2 * B : B));
    Tensor<double> F_rows[2] = {F_all.slice(0, B), any_guided ? F_all : Tensor<double>{}};
    Tensor<double> x_rows[2] = {x, any_guided ? Tensor<double>::empty(with_rows(2 * B)) : Tensor<double>{}};
    std::vector<std::uint64_t> streams(static_cast<std::size_t>(B));
    for (std::int64_t b = 0; b < B; ++b)
      streams[static_cast<std::size_t>(b)] = options.sample_indices.empty()
                                                 ? options.first_sample_index + static_cast<std::uint64_t>(b)
                                                 : options.sample_indices[static_cast<std::size_t>(b)];
    Tensor<double> trajectory;
    if (options.keep_trajectory) {
      std::vector<std::int64_t> extents{steps + 1, B};
      extents.insert(extents.end(), sample_shape.begin(), sample_shape.end());
      trajectory = Tensor<double>::empty(Shape(std::move(extents)));
      cpu::copy(trajectory.data(), x.data(), static_cast<std::size_t>(x.numel()));
    }
    for (int i = 0; i < steps; ++i) {
      const double t = times[static_cast<std::size_t>(i)], r = times[static_cast<std::size_t>(i) + 1];
      const bool is_guided = guided(options, t);
      const bool is_stochastic =
          stochasticity_applies(options.stochasticity, t, r, transport_.t_max, transport_.t_min);
      const double model_r = options.mode == SampleMode::diffusion ? t : r;
      const detail::ModelTimes model_times{t, model_r, static_cast<double>(transport_.c_noise(t)),
                                           static_cast<double>(transport_.c_noise(model_r))};

      // F (B, S): one evaluation; inside the window on (2B, S) = (x, x) with the condition rows
      // (conditional, null).
      const int kind = is_guided ? 1 : 0;
      if (is_guided) {
        cpu::copy(x_rows[1].data(), x.data(), static_cast<std::size_t>(x.numel()));
        cpu::copy(x_rows[1].data() + x.numel(), x.data(), static_cast<std::size_t>(x.numel()));
      }
      runner(kind, F_rows[kind], x_rows[kind], model_times);
      double* F = F_all.data();
      if (is_guided) {
        const double scale = options.cfg_scale;
        const std::int64_t half = x.numel();
        cpu::parallel_for(half, [&](std::int64_t j) { F[j] = F[half + j] + scale * (F[j] - F[half + j]); });
      }

      // x_r = transition(x_t, F), with the OT-FM stochastic update where it applies.
      update(x.data(), F, B, per_sample, t, r, is_stochastic, options, streams.data(), static_cast<std::uint32_t>(i));

      result.steps_done = i + 1;
      if (options.keep_trajectory)
        cpu::copy(trajectory.data() + (i + 1) * x.numel(), x.data(), static_cast<std::size_t>(x.numel()));
      if (options.on_step) {
        const StepInfo info{i, steps, t, r, is_guided, is_stochastic, x};
        if (!options.on_step(info)) {
          result.cancelled = i + 1 < steps;  // stopping after the last step cancels nothing
          break;
        }
      }
    }
    if (options.keep_trajectory) result.trajectory = trajectory.slice(0, result.steps_done + 1);
    return result;
  }

 private:
  bool guided(const SamplerOptions& options, double t) const {
    return guidance_applies(options.cfg_scale, options.guidance_low, options.guidance_high, t, transport_.t_max);
  }

  // The checks that do not depend on the condition (the runner checks that).
  void validate(const Tensor<double>& noise, const SamplerOptions& options) const {
    check(noise.rank() >= 1 && noise.dim(0) >= 1 && !noise.empty_tensor(), "sampler: noise must have shape (B, ...) with B >= 1, got ",
          noise.shape());
    const std::int64_t B = noise.dim(0);
    check(static_cast<std::uint64_t>(noise.numel() / B) <= random::max_elements_per_sample, "sampler: ",
          noise.numel() / B, " elements per sample exceed the generator's 2^34");
    check(options.sample_indices.empty() || options.sample_indices.size() == static_cast<std::size_t>(B),
          "sampler: sample_indices has ", options.sample_indices.size(), " entries for a batch of ", B);
    check(std::isfinite(options.cfg_scale), "sampler: cfg_scale must be finite, got ", options.cfg_scale);
    check(std::isfinite(options.guidance_low) && std::isfinite(options.guidance_high),
          "sampler: the guidance window must be finite, got [", options.guidance_low, ", ", options.guidance_high, "]");
    check(std::isfinite(options.stochasticity) && options.stochasticity >= 0,
          "sampler: stochasticity must be a finite number >= 0, got ", options.stochasticity);
    if constexpr (!Tr::has_stochastic_transition)
      check(options.stochasticity == 0, "sampler: stochasticity ", options.stochasticity,
            " needs a transport with a stochastic transition (only ot-fm has one), got '", Tr::name, "'");
    if constexpr (detail::is_network_model<std::remove_cvref_t<Model>>) {
      const auto& config = model_.config;
      check(config.out_channels == config.in_channels, "sampler: the network outputs ", config.out_channels,
            " channels for ", config.in_channels, " input channels; a transition needs them equal");
    }
  }

  // x (B, per_sample) <- transition(x, F) for the step t -> r; sample b's noise for step `step`
  // is the stream (seed, streams[b], step), element e of the sample.
  void update(double* x, const double* F, std::int64_t B, std::int64_t per_sample, double t, double r,
              bool stochastic, const SamplerOptions& options, const std::uint64_t* streams, std::uint32_t step) const {
    const auto coefficients = transport_.coefficients(t, r);
    if (!stochastic) {
      cpu::parallel_for(B * per_sample,
                        [&](std::int64_t j) { x[j] = math::apply_transition(coefficients, x[j], F[j]); });
      return;
    }
    if constexpr (Tr::has_stochastic_transition) {
      const std::int64_t blocks = (per_sample + 3) / 4;
      const double s = options.stochasticity;
      const std::uint64_t seed = options.seed;
      cpu::parallel_for(B * blocks, [&](std::int64_t job) {
        const std::int64_t b = job / blocks, block = job % blocks;
        double eps[4];
        random::normal_block(eps, seed, streams[b], step, static_cast<std::uint32_t>(block));
        for (std::int64_t lane = 0; lane < 4 && 4 * block + lane < per_sample; ++lane) {
          const std::int64_t j = b * per_sample + 4 * block + lane;
          x[j] = transport_.stochastic_transition(x[j], F[j], t, r, s, eps[lane]);
        }
      });
    }
  }

  Model model_;
  Tr transport_;
  Sched schedule_;
};

//! Deduction: an lvalue model is held by reference (Model = M&), a temporary by value.
template <class M, class Tr, class Sched>
  requires SamplerModel<M>
TransitionSampler(M&&, Tr, Sched) -> TransitionSampler<M, Tr, Sched>;

//! Standard normal noise (B, S) from the counter-based generator: sample b is the stream
//! (seed, first_sample_index + b, random::initial_noise_step), element by element, so a sample's
//! noise does not depend on the batch it is drawn in.
inline Tensor<double> initial_noise(const Shape& shape, std::uint64_t seed, std::uint64_t first_sample_index = 0) {
  check(shape.rank() >= 1 && shape[0] >= 1, "initial_noise: shape must be (B, ...) with B >= 1, got ", shape);
  auto noise = Tensor<double>::empty(shape);
  const std::int64_t B = shape[0], per_sample = shape.numel() / B;
  check(static_cast<std::uint64_t>(per_sample) <= random::max_elements_per_sample, "initial_noise: ", per_sample,
        " elements per sample exceed the generator's 2^34");
  cpu::parallel_for(B, [&](std::int64_t b) {
    random::fill_normal(noise.data() + b * per_sample, static_cast<std::uint64_t>(per_sample), seed,
                        first_sample_index + static_cast<std::uint64_t>(b), random::initial_noise_step);
  });
  return noise;
}

}  // namespace tim
