// The optimizer of a C2I training run: AdamW exactly as torch.optim.AdamW (decoupled weight
// decay, bias correction, eps outside the square root), gradient clipping by global norm as
// torch.nn.utils.clip_grad_norm_, the learning-rate schedule (linear warm-up, then constant,
// linear decay or cosine), and the EMA of the weights as tools/reference/train.py keeps it.
// State (moments, EMA, the norm's partial sums) is allocated once at construction; a step
// allocates nothing, and its bits depend on neither the thread count nor timing
// (docs/training.md, "Optimizer").
#pragma once

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/core/tensor.hpp"
#include "tim/cpu/threads.hpp"
#include "tim/math/optimizer.hpp"
#include "tim/nn/parameters.hpp"

namespace tim::train {

namespace detail {

//! The parameter tensors of one network in nn::for_each_parameter order, looked up once: the
//! visitor builds every released name as a string (heap memory), which a step must not do. The
//! list is rebuilt when it is asked for another network object (address, block storage or
//! depth differ), so the first step with a new gradients object allocates, later ones do not.
template <class T, class Backend>
class ParameterList {
 public:
  //! The list of `network`; `*rebuilt` (when given) says whether it was looked up anew.
  const std::vector<Tensor<T, Backend>*>& of(nn::C2IModel<T, Backend>& network, bool* rebuilt = nullptr) {
    const bool stale = &network != owner_ || network.blocks.data() != blocks_ || network.blocks.size() != depth_;
    if (rebuilt) *rebuilt = stale;
    if (stale) {
      tensors_.clear();
      nn::for_each_parameter([&](const std::string&, Tensor<T, Backend>& t) { tensors_.push_back(&t); }, network);
      owner_ = &network;
      blocks_ = network.blocks.data();
      depth_ = network.blocks.size();
    }
    return tensors_;
  }

 private:
  const void* owner_ = nullptr;
  const void* blocks_ = nullptr;
  std::size_t depth_ = 0;
  std::vector<Tensor<T, Backend>*> tensors_;
};

//! Whether two lists have the same length and element counts (the cheap check of a step; the
//! caller then runs nn::check_shaped_like for the message when they do not).
template <class T, class Backend>
bool same_counts(const std::vector<Tensor<T, Backend>*>& a, const std::vector<Tensor<T, Backend>*>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i]->numel() != b[i]->numel()) return false;
  return true;
}

//! Runs an element-wise functor over n elements: Backend::for_each, except on the CPU for small
//! tensors or one thread, where a plain loop runs it (libgomp allocates a team for every
//! one-thread or serialised parallel region, and a step must not allocate). Element-wise, so
//! the bits are the same either way.
template <class Backend, class Op>
void elementwise(std::int64_t n, const Op& op) {
  if constexpr (std::is_same_v<Backend, cpu>) {
    if (n < 32768 || num_threads() == 1) {
      for (std::int64_t i = 0; i < n; ++i) op(i);
      return;
    }
  }
  Backend::for_each(n, op);
}

}  // namespace detail

//! AdamW's hyper-parameters except the learning rate, which comes from the schedule at every
//! step. Defaults: tools/reference/train.py's and the released configs' (betas 0.9 / 0.95,
//! eps 1e-6, weight decay 0.01); torch's own defaults are betas 0.9 / 0.999, eps 1e-8.
struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-6;
  double weight_decay = 0.01;
};

//! AdamW over every parameter of a C2I network (nn::for_each_parameter order), one step at a
//! time. The moments m and v are networks of the model's shapes (so each has its parameter's
//! released name), zero at step 0 as in torch.
//! Example:
//!   tim::train::AdamW<float> adamw(model, {.weight_decay = 0.01});
//!   adamw.step(model, grads, schedule.at(adamw.steps_taken()));
template <class T, class Backend = cpu>
class AdamW {
 public:
  using Network = nn::C2IModel<T, Backend>;

  AdamW(const Network& model, AdamWOptions options) : options_(options) {
    check(options.beta1 >= 0 && options.beta1 < 1, "AdamW: beta1 must be in [0, 1), got ", options.beta1);
    check(options.beta2 >= 0 && options.beta2 < 1, "AdamW: beta2 must be in [0, 1), got ", options.beta2);
    check(options.eps >= 0, "AdamW: eps must be >= 0, got ", options.eps);
    check(options.weight_decay >= 0, "AdamW: weight_decay must be >= 0, got ", options.weight_decay);
    exp_avg_ = nn::zero_gradients_like(model);
    exp_avg_sq_ = nn::zero_gradients_like(model);
  }

  //! One step at learning rate `lr`: step k = steps_taken() + 1 of torch.optim.AdamW with these
  //! options. `grads` must be shaped like `model` (a tim::Error naming the first tensor that
  //! differs, before anything is changed).
  void step(Network& model, const nn::C2IGradients<T, Backend>& grads, double lr) {
    auto& nonconst_grads = const_cast<nn::C2IGradients<T, Backend>&>(grads);
    bool new_model = false, new_grads = false;
    const auto& p = model_list_.of(model, &new_model);
    const auto& g = grads_list_.of(nonconst_grads, &new_grads);
    const auto& m = m_list_.of(exp_avg_);
    const auto& v = v_list_.of(exp_avg_sq_);
    // Full checks (names, shapes; they allocate) when a network is new, counts on every step.
    if (new_grads || new_model || !detail::same_counts(p, g)) nn::check_shaped_like(model, grads, "AdamW::step", "grads");
    if (new_model || !detail::same_counts(p, m))
      nn::check_shaped_like(model, exp_avg_, "AdamW::step", "model (the optimizer was built for another network)");
    check(detail::same_counts(p, g) && detail::same_counts(p, m), "AdamW::step: 'grads' must be shaped like the model");
    check(std::isfinite(lr) && lr >= 0, "AdamW::step: learning rate must be finite and >= 0, got ", lr);
    ++steps_;
    const double k = static_cast<double>(steps_);
    const double bias_correction1 = 1.0 - std::pow(options_.beta1, k);
    const double bias_correction2 = 1.0 - std::pow(options_.beta2, k);
    const math::AdamWOp<T> coefficients{nullptr,
                                        nullptr,
                                        nullptr,
                                        nullptr,
                                        static_cast<T>(1.0 - lr * options_.weight_decay),
                                        static_cast<T>(1.0 - options_.beta1),
                                        static_cast<T>(options_.beta2),
                                        static_cast<T>(1.0 - options_.beta2),
                                        static_cast<T>(lr / bias_correction1),
                                        static_cast<T>(std::sqrt(bias_correction2)),
                                        static_cast<T>(options_.eps)};
    for (std::size_t i = 0; i < p.size(); ++i) {
      math::AdamWOp<T> op = coefficients;
      op.param = p[i]->data();
      op.grad = g[i]->data();
      op.exp_avg = m[i]->data();
      op.exp_avg_sq = v[i]->data();
      detail::elementwise<Backend>(p[i]->numel(), op);
    }
  }

  //! Steps taken so far (torch's `state['step']`).
  std::int64_t steps_taken() const { return steps_; }
  const AdamWOptions& options() const { return options_; }
  //! The first and second moments (torch's `exp_avg`, `exp_avg_sq`), for checkpoints.
  nn::C2IGradients<T, Backend>& exp_avg() { return exp_avg_; }
  nn::C2IGradients<T, Backend>& exp_avg_sq() { return exp_avg_sq_; }
  const nn::C2IGradients<T, Backend>& exp_avg() const { return exp_avg_; }
  const nn::C2IGradients<T, Backend>& exp_avg_sq() const { return exp_avg_sq_; }
  //! Sets the step count (restoring a checkpoint together with the moments).
  void set_steps_taken(std::int64_t steps) {
    check(steps >= 0, "AdamW: step count must be >= 0, got ", steps);
    steps_ = steps;
  }

 private:
  AdamWOptions options_;
  nn::C2IGradients<T, Backend> exp_avg_, exp_avg_sq_;
  std::int64_t steps_ = 0;
  detail::ParameterList<T, Backend> model_list_, grads_list_, m_list_, v_list_;
};

//! Gradient clipping by the global L2 norm, as torch.nn.utils.clip_grad_norm_(params, max_norm):
//! total = sqrt(sum of every gradient element squared), coefficient = min(1, max_norm /
//! (total + 1e-6)), every gradient multiplied by it (also when it is 1, as torch does). The sum
//! is accumulated in double over fixed blocks of `block` elements, block sums added in order
//! (torch sums in the gradients' dtype; the difference is far below float's rounding of the
//! result), so the norm's bits depend on the shapes only, never on the thread count. A
//! non-finite norm propagates into the gradients as in torch (error_if_nonfinite=False); the
//! caller sees it in the returned norm.
//! Example:
//!   tim::train::GradientClipper<float> clip(grads);
//!   double norm = clip.clip(grads, 1.0);   // the norm before clipping, for the log
template <class T, class Backend = cpu>
class GradientClipper {
 public:
  static constexpr std::int64_t block = 4096;

  explicit GradientClipper(const nn::C2IGradients<T, Backend>& like) {
    std::size_t blocks = 0;
    nn::for_each_parameter(
        [&](const std::string&, const Tensor<T, Backend>& g) {
          blocks += static_cast<std::size_t>((g.numel() + block - 1) / block);
        },
        const_cast<nn::C2IGradients<T, Backend>&>(like));
    partial_.assign(blocks, 0.0);
  }

  //! The global L2 norm of `grads` (double), without changing them.
  double norm(const nn::C2IGradients<T, Backend>& grads) {
    static_assert(std::is_same_v<Backend, cpu>, "GradientClipper: the norm is computed on host memory (CPU backend)");
    std::size_t first = 0;
    for (const Tensor<T, Backend>* g : list_.of(const_cast<nn::C2IGradients<T, Backend>&>(grads))) {
      const std::int64_t n = g->numel(), blocks = (n + block - 1) / block;
      check(first + static_cast<std::size_t>(blocks) <= partial_.size(),
            "GradientClipper: the gradients are larger than the network the clipper was built for");
      const T* data = g->data();
      double* out = partial_.data() + first;
      const auto block_sum = [&](std::int64_t b) {
        double sum = 0;
        const std::int64_t end = std::min(n, (b + 1) * block);
        for (std::int64_t i = b * block; i < end; ++i) {
          const double x = static_cast<double>(data[i]);
          sum += x * x;
        }
        out[b] = sum;
      };
      if (blocks < 8 || num_threads() == 1) {  // see detail::elementwise: no one-thread parallel regions
        for (std::int64_t b = 0; b < blocks; ++b) block_sum(b);
      } else {
        Backend::parallel_for(blocks, block_sum);
      }
      first += static_cast<std::size_t>(blocks);
    }
    double total = 0;
    for (std::size_t i = 0; i < first; ++i) total += partial_[i];
    return std::sqrt(total);
  }

  //! Clips `grads` in place to global norm `max_norm` (> 0) and returns the norm before clipping.
  double clip(nn::C2IGradients<T, Backend>& grads, double max_norm) {
    check(max_norm > 0, "gradient clipping: max_norm must be > 0, got ", max_norm);
    const double total = norm(grads);
    // torch: clip_coef = max_norm / (total + 1e-6) in the gradients' dtype, clamped to 1.
    const T coefficient_raw = static_cast<T>(max_norm) / (static_cast<T>(total) + static_cast<T>(1e-6));
    const T coefficient = coefficient_raw < T(1) ? coefficient_raw : (coefficient_raw >= T(1) ? T(1) : coefficient_raw);
    for (Tensor<T, Backend>* g : list_.of(grads)) detail::elementwise<Backend>(g->numel(), math::ScaleOp<T>{g->data(), coefficient});
    return total;
  }

 private:
  std::vector<double> partial_;  // one sum of squares per block, in parameter order
  detail::ParameterList<T, Backend> list_;
};

//! The shape of the learning rate over steps.
enum class LrDecay {
  constant,  //!< lr after the warm-up (tools/reference/train.py, the released configs)
  linear,    //!< from lr at the end of the warm-up to 0 at total_steps
  cosine,    //!< lr (1 + cos(pi progress)) / 2, progress from 0 at the warm-up's end to 1 at total_steps
};

//! The learning rate at each step. Warm-up as tools/reference/train.py's lr_at: at step s
//! (counted from 0, the step about to be taken) below warmup_steps, lr (s + 1) / warmup_steps,
//! so the first step already moves (diffusers' `constant_with_warmup` uses s / warmup_steps and
//! starts at 0). The released configs use `constant` without warm-up.
struct LrSchedule {
  double lr = 1e-4;
  std::int64_t warmup_steps = 0;
  LrDecay decay = LrDecay::constant;
  std::int64_t total_steps = 0;  //!< needed by linear and cosine (> warmup_steps)

  //! Checks the fields: a tim::Error naming the first bad one.
  void validate() const {
    check(std::isfinite(lr) && lr >= 0, "learning-rate schedule: lr must be finite and >= 0, got ", lr);
    check(warmup_steps >= 0, "learning-rate schedule: warmup_steps must be >= 0, got ", warmup_steps);
    if (decay != LrDecay::constant)
      check(total_steps > warmup_steps, "learning-rate schedule: ", decay == LrDecay::linear ? "linear" : "cosine",
            " decay needs total_steps > warmup_steps, got total_steps ", total_steps, " and warmup_steps ",
            warmup_steps);
  }

  //! The learning rate of step `step` (0 for the first step).
  double at(std::int64_t step) const {
    if (warmup_steps > 0 && step < warmup_steps)
      return lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
    if (decay == LrDecay::constant) return lr;
    const double span = static_cast<double>(total_steps - warmup_steps);
    const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / span);
    if (decay == LrDecay::linear) return lr * (1.0 - progress);
    constexpr double pi = 3.141592653589793238462643383279502884;
    return lr * 0.5 * (1.0 + std::cos(pi * progress));
  }
};

//! Parses "constant", "linear" or "cosine" (a tim::Error listing them otherwise).
inline LrDecay parse_lr_decay(std::string_view text) {
  if (text == "constant") return LrDecay::constant;
  if (text == "linear") return LrDecay::linear;
  if (text == "cosine") return LrDecay::cosine;
  fail("learning-rate decay '", text, "': expected constant, linear or cosine");
}

//! The exponential moving average of a network's weights, as tools/reference/train.py keeps it
//! after every optimizer step: ema <- lerp(ema, param, 1 - decay) (torch._foreach_lerp_), which
//! equals the released update ema <- decay ema + (1 - decay) param up to rounding. No EMA
//! warm-up (neither train.py nor the released trainer has one). The average starts as a copy of
//! the initial weights.
template <class T, class Backend = cpu>
class Ema {
 public:
  using Network = nn::C2IModel<T, Backend>;

  Ema(const Network& model, double decay) : decay_(decay), average_(nn::clone_parameters(model)) {
    check(decay >= 0 && decay <= 1, "EMA: decay must be in [0, 1], got ", decay);
  }

  //! One update towards `model`'s current weights.
  void update(const Network& model) {
    const auto& e = average_list_.of(average_);
    const auto& p = model_list_.of(const_cast<Network&>(model));
    if (!detail::same_counts(e, p)) nn::check_shaped_like(average_, model, "Ema::update", "model");
    check(detail::same_counts(e, p), "Ema::update: 'model' must be shaped like the average");
    const T weight = static_cast<T>(1.0 - decay_);
    for (std::size_t i = 0; i < e.size(); ++i)
      detail::elementwise<Backend>(e[i]->numel(), math::EmaOp<T>{e[i]->data(), p[i]->data(), weight});
  }

  double decay() const { return decay_; }
  //! The averaged network (sample from it, export it, checkpoint it).
  Network& network() { return average_; }
  const Network& network() const { return average_; }

 private:
  double decay_;
  Network average_;
  detail::ParameterList<T, Backend> average_list_, model_list_;
};

}  // namespace tim::train
