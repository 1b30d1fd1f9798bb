// The any-step transition sampler of SPEC section 6: from noise at t_0 through a schedule's grid
// to t_N, one network evaluation per step (two batch halves inside the guidance window),
// optional OT-FM stochasticity from the counter-based generator, `transition` or `diffusion`
// mode, a per-step callback (progress, trajectory, cancellation). State is kept in double.
//
// One sampler for every backend: the model's type says where it runs. A network model (any type
// satisfying tim::SamplingNetwork: nn::C2IModel<T, B>, nn::T2IModel<T, B>, or a user's own) keeps
// the state, F, the guided input pair, the sample streams and the trajectory in its backend's
// memory; every step is backend operations (tim/core/backend.hpp), so nothing crosses to the host
// inside the step loop except what the callback copies. A FlowFunction (a user callable in
// transport time) runs on the host.
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

#include "tim/core/backend.hpp"
#include "tim/core/error.hpp"
#include "tim/core/random.hpp"
#include "tim/core/tensor.hpp"
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

//! Whether a step is stochastic: s > 0, t < t_max and r' > t_min, where r' is the network's
//! second time (`model_r`: r in transition mode, t in diffusion mode), as released (SPEC 6). So
//! in diffusion mode every step after the first is stochastic, the last included.
TIM_HD inline bool stochasticity_applies(double stochasticity, double t, double model_r, double t_max, double t_min) {
  return stochasticity > 0.0 && t < t_max && model_r > t_min;
}

//! What the per-step callback sees, after step `step` moved the state from t to r. `x` is in the
//! sampler's backend memory (copy it with tim::to_host to read it on the host).
template <class Backend = cpu>
struct StepInfo {
  int step = 0;       // 0-based index i of the step t_i -> t_{i+1}
  int steps = 0;      // N, the number of steps of the grid
  double t = 0;       // t_i
  double r = 0;       // t_{i+1}
  bool guided = false;
  bool stochastic = false;
  const Tensor<double, Backend>& x;  // the state x_r after the step (B, S); valid during the call
};

//! Per-step callback: return false to stop sampling (cancellation).
template <class Backend = cpu>
using StepCallback = std::function<bool(const StepInfo<Backend>&)>;

//! Sampling settings (SPEC 6). Defaults: no guidance, deterministic, transition mode.
//! `Backend` is the sampler's (the model's) backend; it types only the callback's state.
template <class Backend = cpu>
struct SamplerOptions {
  double cfg_scale = 1.0;      // guidance scale; guidance only when > 1
  double guidance_low = 0.0;   // guidance window [low, high] in fractions of the transport's t_max,
  double guidance_high = 1.0;  // applied strictly inside: low * t_max < t < high * t_max
  double stochasticity = 0.0;  // s of the OT-FM stochastic transition (0: deterministic)
  SampleMode mode = SampleMode::transition;
  std::uint64_t seed = 0;                           // key of the generator for stochastic steps
  std::uint64_t first_sample_index = 0;             // row b draws stream first_sample_index + b ...
  std::vector<std::uint64_t> sample_indices = {};   // ... or sample_indices[b] when given (B entries)
  std::optional<std::int64_t> null_label = {};      // null class of a FlowFunction; a network knows its own
  bool keep_trajectory = false;                     // fill SampleResult::trajectory
  StepCallback<Backend> on_step = {};               // called after every step; false cancels
};

//! What a sampling run returns, in the sampler's backend memory.
template <class Backend = cpu>
struct SampleResult {
  Tensor<double, Backend> x;           // (B, S) the final state x_N (or the state when cancelled)
  Tensor<double, Backend> trajectory;  // (K + 1, B, S) = [z, x_1, ..., x_K], K = steps_done, if kept
  std::vector<double> times;           // the grid t_0 .. t_N that was used
  int steps_done = 0;                  // K; N unless cancelled
  bool cancelled = false;              // the callback returned false after step K - 1, with K < N
};

//! A model given as a callable in transport time, on the host: it writes F for a batch x_t at
//! the scalar times (t, r) (r = t in diffusion mode) and the labels. Either form is accepted:
//!   void f(tim::Tensor<double>& F, const tim::Tensor<double>& x, double t, double r,
//!          const tim::Tensor<std::int64_t>& labels);   // F is pre-shaped like x: no allocation
//!   tim::Tensor<double> f(const tim::Tensor<double>& x, double t, double r,
//!                         const tim::Tensor<std::int64_t>& labels);
//! Rows are samples; inside the guidance window the batch is 2B rows, the conditional labels
//! first and SamplerOptions::null_label after. Times are raw transport times (apply c_noise
//! yourself if the callable wraps a network).
template <class F>
concept FlowFunction =
    std::invocable<F&, Tensor<double>&, const Tensor<double>&, double, double, const Tensor<std::int64_t>&> ||
    requires(F& f, const Tensor<double>& x, double t, const Tensor<std::int64_t>& y) {
      { f(x, t, t, y) } -> std::convertible_to<Tensor<double>>;
    };

//! A network the sampler drives on its own backend (nn::C2IModel, nn::T2IModel, or a user's type
//! with the same members):
//!   value_type, backend        the precision T the network runs in and its tim::Backend;
//!   Condition                  what sample() conditions on (labels (B) in host memory for C2I,
//!                              caption features (B, M, Dc) in backend memory for T2I);
//!   config.in_channels, config.out_channels;
//!   check_condition(c, B)      throws tim::Error naming what is wrong with a batch's condition;
//!   guided_condition(c)        the (2B) rows of a guided step: c, then the model's own null
//!                              condition (the null class, the null caption) for every sample;
//!   reserve_for(c, rows, H, W) sizes the workspace for `rows` samples of H x W under c;
//!   forward(out, x, t_in, r_in, c) with tensors of T in the backend's memory.
template <class M>
concept SamplingNetwork = requires(const M& m, const typename M::Condition& c, std::int64_t n,
                                   Tensor<typename M::value_type, typename M::backend>& out,
                                   const Tensor<typename M::value_type, typename M::backend>& x) {
  requires Backend<typename M::backend>;
  { m.config.in_channels } -> std::convertible_to<std::int64_t>;
  { m.config.out_channels } -> std::convertible_to<std::int64_t>;
  m.check_condition(c, n);
  { m.guided_condition(c) } -> std::convertible_to<typename M::Condition>;
  m.reserve_for(c, n, n, n);
  m.forward(out, x, x, x, c);
};

//! What the sampler accepts as a model: a SamplingNetwork (the network runs in its T on its
//! backend; the sampler converts the double state to T, applies the transport's c_noise to t and
//! r, and converts F back to double) or a FlowFunction (on the host).
template <class M>
concept SamplerModel = SamplingNetwork<std::remove_cvref_t<M>> || FlowFunction<std::remove_cvref_t<M>>;

namespace detail {

//! The backend a model's sampler runs on: the network's, or the host for a FlowFunction.
template <class M, bool = SamplingNetwork<M>>
struct sampler_backend {
  using type = cpu;
};
template <class M>
struct sampler_backend<M, true> {
  using type = typename M::backend;
};

//! The times of one model evaluation: raw (t, r) and the network inputs c_noise(t), c_noise(r)
//! (r = t in diffusion mode).
struct ModelTimes {
  double t, r, t_in, r_in;
};

// A runner evaluates one kind of model. Its interface, used by TransitionSampler::sample:
//   using Condition = ...;   what sample() takes besides the noise
//   void prepare(const Condition&, const SamplerOptions<B>&, std::int64_t B,
//                const std::vector<std::int64_t>& sample_shape, bool guided);
//       checks the condition (tim::Error naming it), builds the condition rows of both kinds
//       of evaluation and every buffer, so that evaluations allocate nothing;
//   void operator()(int kind, Tensor<double, B>& F, const Tensor<double, B>& x, const ModelTimes&);
//       kind 0: a step on B rows; kind 1: a guided step on 2B rows, x = (x_t, x_t).

//! The guidance message shared by the conditions that need a null entry.
inline std::string guidance_needs(double cfg_scale, const char* what) {
  return detail::concat("sampler: guidance (cfg_scale ", cfg_scale, " > 1 inside the guidance window) needs ", what);
}

//! Evaluates a FlowFunction on label rows (B) or (2B) = (y, null label), on the host.
template <class F>
struct FunctionRunner {
  using Condition = Tensor<std::int64_t>;
  F& function;
  Tensor<std::int64_t> rows[2];

  explicit FunctionRunner(F& f) : function(f) {}
  void prepare(const Condition& y, const SamplerOptions<cpu>& options, std::int64_t batch,
               const std::vector<std::int64_t>&, bool guided) {
    check(y.shape() == Shape{batch}, "sampler: labels must have shape [", batch, "] (one per sample), got ", y.shape());
    rows[0] = y;
    if (!guided) return;
    if (!options.null_label) fail(guidance_needs(options.cfg_scale, "the null label: set SamplerOptions::null_label"));
    rows[1] = Tensor<std::int64_t>::empty({2 * batch});
    for (std::int64_t b = 0; b < batch; ++b) {
      rows[1].data()[b] = y.data()[b];
      rows[1].data()[batch + b] = *options.null_label;
    }
  }
  void operator()(int kind, Tensor<double>& out, const Tensor<double>& x, const ModelTimes& times) {
    if constexpr (std::invocable<F&, Tensor<double>&, const Tensor<double>&, double, double,
                                 const Tensor<std::int64_t>&>) {
      function(out, x, times.t, times.r, rows[kind]);
    } else {
      Tensor<double> result = function(x, times.t, times.r, rows[kind]);
      check(result.shape() == out.shape(), "sampler: the model returned F of shape ", result.shape(),
            ", expected ", out.shape(), " (the shape of x_t)");
      HostMemory::copy(out.data(), result.data(), static_cast<std::size_t>(out.numel()));
    }
  }
};

//! Evaluates a SamplingNetwork on its backend, in its precision T: converts x to T, fills the
//! time inputs c_noise(t), c_noise(r), runs forward on the condition rows of the evaluation and
//! converts F back to double. Every buffer (and its views for B and 2B rows) is made in
//! prepare(), and the network's workspace is sized there for the largest evaluation, so
//! evaluations allocate nothing.
template <class Network>
struct NetworkRunner {
  using T = typename Network::value_type;
  using B = typename Network::backend;
  using Condition = typename Network::Condition;
  const Network& network;
  Condition rows[2];            // the condition of a step (B) and of a guided step (2B)
  Tensor<T, B> x_in[2], out[2];  // (B, S) / (2B, S) in T; unused when T is double
  Tensor<T, B> t_in[2], r_in[2];  // (B) / (2B)

  explicit NetworkRunner(const Network& n) : network(n) {}

  void prepare(const Condition& condition, const SamplerOptions<B>& options, std::int64_t batch,
               const std::vector<std::int64_t>& sample_shape, bool guided) {
    check(!options.null_label, "sampler: SamplerOptions::null_label is for FlowFunction models; a network's null "
          "condition comes from the network (the null class num_classes, a T2I model's null caption)");
    network.check_condition(condition, batch);
    rows[0] = condition;
    if (guided) rows[1] = network.guided_condition(condition);
    const std::int64_t capacity = guided ? 2 * batch : batch;
    std::int64_t per_sample = 1;
    for (auto e : sample_shape) per_sample *= e;
    auto times_all = Tensor<T, B>::empty({2 * capacity});
    Tensor<T, B> x_all, out_all;
    if constexpr (!std::is_same_v<T, double>) {
      x_all = Tensor<T, B>::empty({capacity * per_sample});
      out_all = Tensor<T, B>::empty({capacity * per_sample});
    }
    for (int kind = 0; kind < (guided ? 2 : 1); ++kind) {
      const std::int64_t n = kind == 0 ? batch : 2 * batch;
      std::vector<std::int64_t> extents{n};
      extents.insert(extents.end(), sample_shape.begin(), sample_shape.end());
      if constexpr (!std::is_same_v<T, double>) {
        x_in[kind] = x_all.slice(0, n * per_sample).reshape(Shape(extents));
        out[kind] = out_all.slice(0, n * per_sample).reshape(Shape(extents));
      }
      t_in[kind] = times_all.slice(0, n);
      r_in[kind] = times_all.slice(capacity, n);
    }
    // Grow the network's workspace to the largest evaluation now rather than at the first
    // guided step.
    if (sample_shape.size() == 3) network.reserve_for(rows[guided ? 1 : 0], capacity, sample_shape[1], sample_shape[2]);
  }

  void operator()(int kind, Tensor<double, B>& F, const Tensor<double, B>& x, const ModelTimes& times) {
    const auto n = static_cast<std::size_t>(x.dim(0));
    B::fill(t_in[kind].data(), n, static_cast<T>(times.t_in));
    B::fill(r_in[kind].data(), n, static_cast<T>(times.r_in));
    if constexpr (std::is_same_v<T, double>) {
      network.forward(F, x, t_in[kind], r_in[kind], rows[kind]);
    } else {
      B::convert(x_in[kind].data(), x.data(), static_cast<std::size_t>(x.numel()));
      network.forward(out[kind], x_in[kind], t_in[kind], r_in[kind], rows[kind]);
      B::convert(F.data(), out[kind].data(), static_cast<std::size_t>(F.numel()));
    }
  }
};

//! The runner of a sampler's model type (a reference for lvalue models).
template <class M>
using ModelRunnerFor = std::conditional_t<SamplingNetwork<std::remove_cvref_t<M>>, NetworkRunner<std::remove_cvref_t<M>>,
                                          FunctionRunner<std::remove_reference_t<M>>>;

}  // namespace detail

//! The transition sampler: `Model` (a SamplingNetwork such as tim::nn::C2IModel<T, Backend> or
//! tim::nn::T2IModel<T, Backend>, or a FlowFunction), a Transport and a Schedule. A model passed
//! as an lvalue is kept by reference (it must outlive the sampler); a temporary is moved in.
//! The sampler runs on the model's backend (`backend`); noise, result and callback state are
//! tensors of that backend.
//!
//! Example (the same line for every backend; only the model's type says where it runs):
//!   auto model = tim::load_c2i<float>("c2i_model_256.safetensors");   // or <tim::bfloat16, tim::cuda>
//!   tim::TransitionSampler sampler{model, tim::OtFm{}, tim::linspace_schedule(4)};
//!   auto noise = tim::initial_noise<decltype(sampler)::backend>({8, 4, 32, 32}, /*seed=*/0);
//!   auto result = sampler.sample(noise, labels, {.cfg_scale = 2.5, .guidance_high = 0.6});
//!   // result.x: (8, 4, 32, 32) latents in double, in the model's backend memory
//! A text-to-image network takes its caption features (B, M, Dc) instead of labels; its null
//! caption for guided steps is the model's (T2IModel::set_null_caption):
//!   auto t2i = tim::load_t2i<float>("t2i_model.safetensors");
//!   t2i.set_null_caption(null_cap_feats);
//!   tim::TransitionSampler text_sampler{t2i, tim::OtFm{}, tim::linspace_schedule(16)};
//!   auto images = text_sampler.sample(noise, cap_feats, {.cfg_scale = 2.5});
template <class Model, Transport Tr, Schedule Sched>
  requires SamplerModel<Model>
class TransitionSampler {
 public:
  //! Where the state lives and every step runs.
  using backend = typename detail::sampler_backend<std::remove_cvref_t<Model>>::type;
  using Options = SamplerOptions<backend>;
  using Result = SampleResult<backend>;
  using Info = StepInfo<backend>;

  TransitionSampler(std::type_identity_t<Model> model, Tr transport, Sched schedule)
      : model_(std::forward<Model>(model)), transport_(std::move(transport)), schedule_(std::move(schedule)) {}

  const Tr& transport() const { return transport_; }
  const Sched& schedule() const { return schedule_; }

  //! The validated time grid t_0 .. t_N of the schedule for the transport's range.
  std::vector<double> time_grid() const { return make_time_grid(schedule_, transport_.t_max, transport_.t_min); }

  //! What sample() conditions on: class labels `Tensor<std::int64_t>` (B, host memory) for a C2I
  //! network or a FlowFunction, caption features `Tensor<T, Backend>` (B, M, Dc) for a T2I network.
  using Condition = typename detail::ModelRunnerFor<Model>::Condition;

  //! Samples from `noise` (B, S), the state at t_0 in the backend's memory, under `condition`:
  //! class labels (B) (values in [0, num_classes]; num_classes is the null class), or caption
  //! features (B, M, Dc). Throws tim::Error on invalid inputs or options. Cancellation through
  //! options.on_step is not an error: the result says so.
  Result sample(const Tensor<double, backend>& noise, const Condition& condition, const Options& options = {}) {
    using B = backend;
    Result result;
    result.times = time_grid();
    const auto& times = result.times;
    const int steps = static_cast<int>(times.size()) - 1;
    validate(noise, options);
    const std::int64_t batch = noise.dim(0);
    const std::int64_t per_sample = noise.numel() / batch;
    const std::vector<std::int64_t> sample_shape(noise.shape().extents().begin() + 1, noise.shape().extents().end());
    auto with_rows = [&](std::int64_t rows) {
      std::vector<std::int64_t> extents{rows};
      extents.insert(extents.end(), sample_shape.begin(), sample_shape.end());
      return Shape(std::move(extents));
    };

    bool any_guided = false;
    for (int i = 0; i < steps; ++i) any_guided = any_guided || guided(options, times[static_cast<std::size_t>(i)]);
    // The runner checks the condition and builds its rows: (B) for a step, (2B) = (conditional,
    // null) for a guided step; it also makes the network's buffers.
    detail::ModelRunnerFor<Model> runner(model_);
    runner.prepare(condition, options, batch, sample_shape, any_guided);

    // Every buffer of the loop, made once, in the backend's memory: state (B, S); F (B or 2B, S);
    // the guided input pair (2B, S); the sample streams (B); the trajectory (N + 1, B, S).
    result.x = noise.clone();
    Tensor<double, B>& x = result.x;
    const auto n = static_cast<std::size_t>(x.numel());
    auto F_all = Tensor<double, B>::empty(with_rows(any_guided ? 2 * batch : batch));
    Tensor<double, B> F_rows[2] = {F_all.slice(0, batch), any_guided ? F_all : Tensor<double, B>{}};
    Tensor<double, B> x_rows[2] = {x, any_guided ? Tensor<double, B>::empty(with_rows(2 * batch)) : Tensor<double, B>{}};
    Tensor<std::uint64_t, B> streams;
    if (options.stochasticity > 0) {
      std::vector<std::uint64_t> host(static_cast<std::size_t>(batch));
      for (std::int64_t b = 0; b < batch; ++b)
        host[static_cast<std::size_t>(b)] = options.sample_indices.empty()
                                                ? options.first_sample_index + static_cast<std::uint64_t>(b)
                                                : options.sample_indices[static_cast<std::size_t>(b)];
      streams = Tensor<std::uint64_t, B>::empty({batch});
      B::copy_from_host(streams.data(), host.data(), host.size());
    }
    Tensor<double, B> trajectory;
    if (options.keep_trajectory) {
      std::vector<std::int64_t> extents{steps + 1, batch};
      extents.insert(extents.end(), sample_shape.begin(), sample_shape.end());
      trajectory = Tensor<double, B>::empty(Shape(std::move(extents)));
      B::copy(trajectory.data(), x.data(), n);
    }
    for (int i = 0; i < steps; ++i) {
      const double t = times[static_cast<std::size_t>(i)], r = times[static_cast<std::size_t>(i) + 1];
      const bool is_guided = guided(options, t);
      const double model_r = options.mode == SampleMode::diffusion ? t : r;
      const bool is_stochastic =
          stochasticity_applies(options.stochasticity, t, model_r, transport_.t_max, transport_.t_min);
      const detail::ModelTimes model_times{t, model_r, static_cast<double>(transport_.c_noise(t)),
                                           static_cast<double>(transport_.c_noise(model_r))};

      // F (B, S): one evaluation; inside the window on (2B, S) = (x, x) with the condition rows
      // (conditional, null), then F = F_u + cfg_scale (F_c - F_u).
      const int kind = is_guided ? 1 : 0;
      if (is_guided) {
        B::copy(x_rows[1].data(), x.data(), n);
        B::copy(x_rows[1].data() + x.numel(), x.data(), n);
      }
      runner(kind, F_rows[kind], x_rows[kind], model_times);
      if (is_guided) B::guidance_forward(F_all.data(), x.numel(), options.cfg_scale);

      // x_r = transition(x_t, F), with the OT-FM stochastic update where it applies.
      update(x, F_all, batch, per_sample, t, r, is_stochastic, options, streams, static_cast<std::uint32_t>(i));

      result.steps_done = i + 1;
      if (options.keep_trajectory) B::copy(trajectory.data() + (i + 1) * x.numel(), x.data(), n);
      if (options.on_step) {
        const Info info{i, steps, t, r, is_guided, is_stochastic, x};
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
  bool guided(const Options& options, double t) const {
    return guidance_applies(options.cfg_scale, options.guidance_low, options.guidance_high, t, transport_.t_max);
  }

  // The checks that do not depend on the condition (the runner checks that).
  void validate(const Tensor<double, backend>& noise, const Options& options) const {
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
    if constexpr (SamplingNetwork<std::remove_cvref_t<Model>>) {
      const auto& config = model_.config;
      check(config.out_channels == config.in_channels, "sampler: the network outputs ", config.out_channels,
            " channels for ", config.in_channels, " input channels; a transition needs them equal");
    }
  }

  // x (B, S) <- transition(x, F) for the step t -> r; sample b's noise for step `step` is the
  // stream (seed, streams[b], step), element e of the sample.
  void update(Tensor<double, backend>& x, const Tensor<double, backend>& F, std::int64_t batch, std::int64_t per_sample,
              double t, double r, bool stochastic, const Options& options,
              const Tensor<std::uint64_t, backend>& streams, std::uint32_t step) const {
    if (!stochastic) {
      backend::transition_forward(x.data(), F.data(), batch * per_sample, transport_.coefficients(t, r));
      return;
    }
    if constexpr (Tr::has_stochastic_transition)
      backend::stochastic_transition_forward(x.data(), F.data(), streams.data(), batch, per_sample, transport_, t, r,
                                             options.stochasticity, options.seed, step);
  }

  Model model_;
  Tr transport_;
  Sched schedule_;
};

//! Deduction: an lvalue model is held by reference (Model = M&), a temporary by value.
template <class M, class Tr, class Sched>
  requires SamplerModel<M>
TransitionSampler(M&&, Tr, Sched) -> TransitionSampler<M, Tr, Sched>;

//! Standard normal noise (B, S) from the counter-based generator, in `Backend`'s memory: sample b
//! is the stream (seed, first_sample_index + b, random::initial_noise_step), element by element,
//! so a sample's noise does not depend on the batch it is drawn in, nor on the backend (the same
//! Philox words; Box-Muller's log/cos/sin may differ in the last bits between libms).
template <class Backend = cpu>
Tensor<double, Backend> initial_noise(const Shape& shape, std::uint64_t seed, std::uint64_t first_sample_index = 0) {
  check(shape.rank() >= 1 && shape[0] >= 1, "initial_noise: shape must be (B, ...) with B >= 1, got ", shape);
  const std::int64_t B = shape[0], per_sample = shape.numel() / B;
  check(static_cast<std::uint64_t>(per_sample) <= random::max_elements_per_sample, "initial_noise: ", per_sample,
        " elements per sample exceed the generator's 2^34");
  auto noise = Tensor<double, Backend>::empty(shape);
  Backend::normal_forward(noise.data(), B, per_sample, seed, first_sample_index, random::initial_noise_step);
  return noise;
}

}  // namespace tim
