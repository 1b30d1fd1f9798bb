// The TiM training objective exactly as released (SPEC 7; tim/schedulers/transition.py and
// transports.py of the released code), on the CPU: for a batch of data x, noise z, labels and
// time pairs (t, r), the interpolant x_t, the DDE derivative dF/dt by two no-grad forwards of the
// same network at t +- epsilon, the transport's target (optionally guidance-enhanced by an EMA
// network's conditional and unconditional outputs at r = t), the per-sample loss
// mean((F - F*)^2) (+ the directional loss 1 - cos(F, F*) over channels) with nan_to_num as
// released, the time and adaptive weights, the weighted loss, and dL/dF fed to c2i_backward so
// that the parameter gradients are added to a C2IGradients. Also the random parts of a step:
// time pairs from the transport's sample_time and label dropout to the null class.
//
// Shape legend: B batch, C channels, H x W latent, M = C H W values per sample.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/core/random.hpp"
#include "tim/cpu/backend.hpp"
#include "tim/cpu/train_ops.hpp"
#include "tim/math/objective.hpp"
#include "tim/nn/c2i.hpp"
#include "tim/nn/c2i_backward.hpp"
#include "tim/nn/c2i_training.hpp"
#include "tim/nn/parameters.hpp"
#include "tim/train/objective_config.hpp"

namespace tim::train {

//! One batch of the objective, in host memory. The first n_diffusion rows are the diffusion rows
//! (r = t, no DDE, time weight 1), as the released code orders them.
template <class T>
struct ObjectiveBatch {
  Tensor<T, cpu> x;  // (B, C, H, W) data
  Tensor<T, cpu> z;  // (B, C, H, W) standard normal noise
  Tensor<T, cpu> t;  // (B) current times (transport times, before c_noise)
  Tensor<T, cpu> r;  // (B) target times, r <= t
  Tensor<std::int64_t, cpu> labels;       // (B) the network's labels, after label dropout
  Tensor<std::int64_t, cpu> cond_labels;  // (B) the EMA's conditional labels (before dropout); empty: labels
  std::int64_t n_diffusion = 0;
};

//! What one evaluation of the objective gives besides the gradients.
struct ObjectiveLosses {
  double loss = 0;            // mean_b weight_b l_b: the weighted loss that is differentiated
  double denoising_loss = 0;  // mean_b l_b (the released loss_dict's denoising_loss)
  std::vector<double> per_sample;   // l_b: nan_to_num(mse_b) (+ nan_to_num(directional_b))
  std::vector<double> time_weight;  // 1 for the diffusion rows
  std::vector<double> weight;       // time weight x adaptive weight 1 / (l_b + eps)
};

//! Buffers of the objective, sized on first use (grow-only); not shared between threads.
template <class T>
struct ObjectiveWorkspace {
  nn::C2ITrainingWorkspace<T, cpu> training;
  Tensor<T, cpu> x_t, base, prediction, target, dF_dt, dout;  // (B, C, H, W)
  Tensor<T, cpu> t_in, r_in;                                   // (B) c_noise(t), c_noise(r)
  Tensor<T, cpu> shifted_x, plus, minus, cond, uncond;          // DDE and EMA outputs
  Tensor<T, cpu> shifted_t_in, shifted_r_in;
  Tensor<std::int64_t, cpu> shifted_labels, null_labels;
};

namespace objective_detail {

template <class T>
void ensure(Tensor<T, cpu>& tensor, const Shape& shape) {
  if (tensor.empty_tensor() || tensor.shape() != shape) tensor = Tensor<T, cpu>::empty(shape);
}

//! Samples [first, first + rows) of `source` (B, ...) as a view.
template <class T>
Tensor<T, cpu> leading_rows(const Tensor<T, cpu>& source, std::int64_t first, std::int64_t rows) {
  return source.slice(first, rows);
}

}  // namespace objective_detail

//! Checks a batch against the model: shapes, labels, r <= t, the diffusion rows first.
template <class T>
void check_objective_batch(const nn::C2IModel<T, cpu>& model, const ObjectiveBatch<T>& batch) {
  const auto& c = model.config;
  check(batch.x.rank() == 4, "objective batch: 'x' must have shape [B, ", c.in_channels, ", H, W], got ",
        batch.x.shape());
  const auto B = batch.x.dim(0);
  check(B > 0, "objective batch: 'x' has no samples");
  check(batch.z.shape() == batch.x.shape(), "objective batch: 'z' must have the shape of 'x' ", batch.x.shape(),
        ", got ", batch.z.shape());
  check(batch.t.shape() == Shape{B}, "objective batch: 't' must have shape [", B, "], got ", batch.t.shape());
  check(batch.r.shape() == Shape{B}, "objective batch: 'r' must have shape [", B, "], got ", batch.r.shape());
  check(c.out_channels == c.in_channels, "objective: the model's output channels (", c.out_channels,
        ") must equal its input channels (", c.in_channels, ")");
  check(batch.n_diffusion >= 0 && batch.n_diffusion <= B, "objective batch: n_diffusion ", batch.n_diffusion,
        " is outside [0, ", B, "]");
  for (std::int64_t b = 0; b < B; ++b) {
    const double t = batch.t.data()[b], r = batch.r.data()[b];
    check(std::isfinite(t) && std::isfinite(r), "objective batch: t and r must be finite, row ", b, " has t = ", t,
          ", r = ", r);
    check(r <= t, "objective batch: row ", b, " has r = ", r, " > t = ", t, " (the target time must not exceed t)");
    if (b < batch.n_diffusion)
      check(r == t, "objective batch: row ", b, " is a diffusion row (n_diffusion = ", batch.n_diffusion,
            ") but has r = ", r, " != t = ", t);
  }
  if (!batch.cond_labels.empty_tensor())
    check(batch.cond_labels.shape() == Shape{B}, "objective batch: 'cond_labels' must have shape [", B, "], got ",
          batch.cond_labels.shape());
  model.validate_inputs(batch.x, batch.t, batch.r, batch.labels);
  if (!batch.cond_labels.empty_tensor()) model.validate_inputs(batch.x, batch.t, batch.r, batch.cond_labels);
}

//! The number of leading rows with r == t: the n_diffusion of an explicit batch laid out as the
//! released code lays it out (diffusion rows first).
template <class T>
std::int64_t leading_diffusion_rows(const Tensor<T, cpu>& t, const Tensor<T, cpu>& r) {
  std::int64_t n = 0;
  while (n < t.numel() && t.data()[n] == r.data()[n]) ++n;
  return n;
}

//! Evaluates the objective for `batch` and adds dL/dtheta of the weighted loss to `grads`
//! (zero them first: gradients accumulate, as PyTorch's .grad). `ema` gives the enhanced
//! target's F_c and F_u (only read when config.enhance.enabled; it may be `model` itself).
//! The DDE passes use model.forward (the inference forward, no gradient) on the rows
//! [n_diffusion, B); the prediction F uses the training forward, whose saved activations the
//! backward reads. Everything the released code computes in the batch's dtype is computed in T
//! (x_t, c_noise, the DDE, the target); the per-sample reductions and the weights in double.
template <class T>
ObjectiveLosses compute_loss_and_gradients(const nn::C2IModel<T, cpu>& model, const nn::C2IModel<T, cpu>& ema,
                                           const ObjectiveBatch<T>& batch, const ObjectiveConfig& config,
                                           ObjectiveWorkspace<T>& ws, nn::C2IGradients<T, cpu>& grads,
                                           bool checkpoint_blocks = false) {
  using objective_detail::ensure;
  config.validate();
  check_objective_batch(model, batch);
  nn::check_shaped_like(model, grads, "compute_loss_and_gradients", "grads");
  const auto& shape = batch.x.shape();
  const std::int64_t B = shape[0], C = shape[1], H = shape[2], W = shape[3];
  const std::int64_t HW = H * W, M = C * HW;
  const std::int64_t nd = batch.n_diffusion;
  for (auto* buffer : {&ws.x_t, &ws.base, &ws.target, &ws.dF_dt, &ws.dout}) ensure(*buffer, shape);
  ensure(ws.t_in, Shape{B});
  ensure(ws.r_in, Shape{B});
  const T* x = batch.x.data();
  const T* z = batch.z.data();
  const T* t = batch.t.data();
  const T* r = batch.r.data();

  std::visit(
      [&](const auto& tr) {
        // Inputs of the prediction: x_t = alpha_t x + sigma_t z, c_noise(t), c_noise(r); the
        // target's base (v_t for OT-FM and TrigFlow).
        for (std::int64_t b = 0; b < B; ++b) {
          const T a = tr.alpha(t[b]), s = tr.sigma(t[b]);
          ws.t_in.data()[b] = tr.c_noise(t[b]);
          ws.r_in.data()[b] = tr.c_noise(r[b]);
          for (std::int64_t i = b * M; i < (b + 1) * M; ++i) {
            ws.x_t.data()[i] = a * x[i] + s * z[i];
            ws.base.data()[i] = tr.target_base(x[i], z[i], t[b]);
          }
        }
        nn::c2i_training_forward(model, ws.training, ws.prediction, ws.x_t, ws.t_in, ws.r_in, batch.labels,
                                 checkpoint_blocks);

        // DDE: dF/dt = F(x_{t+e}, t+e, r) / (2e) - F(x_{t-e}, t-e, r) / (2e) on rows [nd, B)
        // (released order of operations), zero on the diffusion rows.
        std::fill(ws.dF_dt.data(), ws.dF_dt.data() + ws.dF_dt.numel(), T(0));
        const std::int64_t rows = B - nd;
        if (rows > 0) {
          const Shape sub{rows, C, H, W};
          ensure(ws.shifted_x, sub);
          ensure(ws.shifted_t_in, Shape{rows});
          ensure(ws.shifted_r_in, Shape{rows});
          const auto labels = objective_detail::leading_rows(batch.labels, nd, rows);
          const T e = static_cast<T>(config.differential_epsilon);
          const T half_inverse = static_cast<T>(1 / (2 * config.differential_epsilon));
          for (int side = 0; side < 2; ++side) {
            for (std::int64_t j = 0; j < rows; ++j) {
              const std::int64_t b = nd + j;
              const T ts = side == 0 ? static_cast<T>(t[b] + e) : static_cast<T>(t[b] - e);
              const T a = tr.alpha(ts), s = tr.sigma(ts);
              ws.shifted_t_in.data()[j] = tr.c_noise(ts);
              ws.shifted_r_in.data()[j] = tr.c_noise(r[b]);
              for (std::int64_t i = 0; i < M; ++i) ws.shifted_x.data()[j * M + i] = a * x[b * M + i] + s * z[b * M + i];
            }
            model.forward(side == 0 ? ws.plus : ws.minus, ws.shifted_x, ws.shifted_t_in, ws.shifted_r_in, labels);
          }
          for (std::int64_t i = 0; i < rows * M; ++i)
            ws.dF_dt.data()[nd * M + i] = ws.plus.data()[i] * half_inverse - ws.minus.data()[i] * half_inverse;
        }

        // The guidance-enhanced base: the EMA network at (x_t, c_noise(t), c_noise(t)) with the
        // conditional labels (only when w_cond > 0, as released) and with the null class.
        if (config.enhance.enabled) {
          const auto& cond_labels = batch.cond_labels.empty_tensor() ? batch.labels : batch.cond_labels;
          const bool use_cond = config.enhance.w_cond > 0;
          if (use_cond) ema.forward(ws.cond, ws.x_t, ws.t_in, ws.t_in, cond_labels);
          if (ws.null_labels.empty_tensor() || ws.null_labels.numel() != B)
            ws.null_labels = Tensor<std::int64_t, cpu>::empty({B});
          std::fill(ws.null_labels.data(), ws.null_labels.data() + B, ema.null_label());
          ema.forward(ws.uncond, ws.x_t, ws.t_in, ws.t_in, ws.null_labels);
          const T sign = static_cast<T>(std::decay_t<decltype(tr)>::guidance_sign);
          for (std::int64_t b = 0; b < B; ++b) {
            const bool inside = t[b] >= config.enhance.w_start && t[b] <= config.enhance.w_end;
            const T w_gt = inside ? static_cast<T>(config.enhance.w_gt) : T(1);
            const T w_cond = inside ? static_cast<T>(config.enhance.w_cond) : T(0);
            for (std::int64_t i = b * M; i < (b + 1) * M; ++i) {
              const T F_c = use_cond ? ws.cond.data()[i] : T(0);
              ws.base.data()[i] = math::enhanced_base(ws.base.data()[i], w_gt, w_cond, F_c, ws.uncond.data()[i], sign);
            }
          }
        }
        for (std::int64_t b = 0; b < B; ++b)
          for (std::int64_t i = b * M; i < (b + 1) * M; ++i)
            ws.target.data()[i] = tr.target_from_base(ws.base.data()[i], x[i], z[i], ws.dF_dt.data()[i], t[b], r[b]);
      },
      config.transport);

  // Per-sample losses, weights, and dL/dF.
  ObjectiveLosses out;
  out.per_sample.resize(static_cast<std::size_t>(B));
  out.time_weight.resize(static_cast<std::size_t>(B));
  out.weight.resize(static_cast<std::size_t>(B));
  const T* F = ws.prediction.data();
  const T* G = ws.target.data();
  std::vector<double> mse(static_cast<std::size_t>(B)), directional(static_cast<std::size_t>(B), 0.0);
  std::vector<double> cosines(config.directional_loss ? static_cast<std::size_t>(B * HW) : 0);
  std::vector<double> norms_F(cosines.size()), norms_G(cosines.size());
  for (std::int64_t b = 0; b < B; ++b) {
    double sum = 0;
    for (std::int64_t i = b * M; i < (b + 1) * M; ++i) {
      const double d = static_cast<double>(F[i]) - static_cast<double>(G[i]);
      sum += d * d;
    }
    mse[b] = sum / static_cast<double>(M);
    double l = math::loss_nan_to_num(mse[b]);
    if (config.directional_loss) {
      // cos over channels at each pixel, then the mean of 1 - cos over the pixels.
      double dir = 0;
      for (std::int64_t p = 0; p < HW; ++p) {
        double dot = 0, ff = 0, gg = 0;
        for (std::int64_t ch = 0; ch < C; ++ch) {
          const std::int64_t i = b * M + ch * HW + p;
          const double f = F[i], g = G[i];
          dot += f * g;
          ff += f * f;
          gg += g * g;
        }
        const std::size_t k = static_cast<std::size_t>(b * HW + p);
        norms_F[k] = std::sqrt(ff);
        norms_G[k] = std::sqrt(gg);
        cosines[k] = math::cosine_from_norms(dot, norms_F[k], norms_G[k]);
        dir += 1 - cosines[k];
      }
      directional[b] = dir / static_cast<double>(HW);
      l += math::loss_nan_to_num(directional[b]);
    }
    out.per_sample[b] = l;
    double tw = 1;
    if (b >= batch.n_diffusion)
      tw = math::time_weight<double>(t[b], r[b], config.weight_time, config.weight_time_tangent,
                                     config.weight_time_sigmoid, config.weight_t_and_r, config.sigma_d());
    out.time_weight[b] = tw;
    out.weight[b] = config.adaptive_weight ? tw * (1 / (l + config.adaptive_eps)) : tw;
    out.loss += out.weight[b] * l;
    out.denoising_loss += l;
  }
  out.loss /= static_cast<double>(B);
  out.denoising_loss /= static_cast<double>(B);

  // dL/dF = w_b / B [isfinite(mse_b) 2 (F - F*) / M - isfinite(dir_b) (1 / HW) dcos/dF]: the
  // derivative of nan_to_num is 0 at a non-finite value, and 0 times a NaN difference stays NaN,
  // as in PyTorch's autograd.
  T* dout = ws.dout.data();
  for (std::int64_t b = 0; b < B; ++b) {
    const double upstream = out.weight[b] / static_cast<double>(B);
    const double g_mse = std::isfinite(mse[b]) ? upstream : 0.0;
    for (std::int64_t i = b * M; i < (b + 1) * M; ++i)
      dout[i] = static_cast<T>(g_mse * 2 * (static_cast<double>(F[i]) - static_cast<double>(G[i])) /
                               static_cast<double>(M));
    if (config.directional_loss) {
      const double g_dir = std::isfinite(directional[b]) ? upstream : 0.0;
      for (std::int64_t p = 0; p < HW; ++p) {
        const std::size_t k = static_cast<std::size_t>(b * HW + p);
        for (std::int64_t ch = 0; ch < C; ++ch) {
          const std::int64_t i = b * M + ch * HW + p;
          const double d_cos = math::cosine_derivative<double>(F[i], G[i], cosines[k], norms_F[k], norms_G[k]);
          dout[i] = static_cast<T>(static_cast<double>(dout[i]) - g_dir * d_cos / static_cast<double>(HW));
        }
      }
    }
  }
  nn::c2i_backward(model, ws.training, ws.dout, grads);
  return out;
}

//! Time pairs as released (TransitionSchedule.sample_t_and_r): t = max, r = min of two draws of
//! the transport's sample_time; the first round(diffusion_ratio B) rows get r = t, then the last
//! round(consistency_ratio B) get r = T_min (these win where both apply). The draws come from
//! tim's counter-based generator: row b of step `step` uses the stream (seed, b, step): normals
//! 0 and 1 (block 0) and the uniforms of words 0 and 1 of block 1 (tim::random) for the two
//! draws. round() is Python's (half to even). Returns n_diffusion.
template <class T>
std::int64_t sample_time_pairs(const ObjectiveConfig& config, Tensor<T, cpu>& t, Tensor<T, cpu>& r, std::int64_t B,
                               std::uint64_t seed, std::uint32_t step) {
  check(B > 0, "sample_time_pairs: batch size must be positive, got ", B);
  objective_detail::ensure(t, Shape{B});
  objective_detail::ensure(r, Shape{B});
  std::visit(
      [&](const auto& tr) {
        for (std::int64_t b = 0; b < B; ++b) {
          double normals[4];
          random::normal_block(normals, seed, static_cast<std::uint64_t>(b), step, 0);
          const auto words = random::stream_block(seed, static_cast<std::uint64_t>(b), step, 1);
          const T t1 = static_cast<T>(tr.sample_time(normals[0], random::uniform_open(words.v[0])));
          const T t2 = static_cast<T>(tr.sample_time(normals[1], random::uniform_open(words.v[1])));
          t.data()[b] = std::max(t1, t2);
          r.data()[b] = std::min(t1, t2);
        }
      },
      config.transport);
  const auto python_round = [](double v) { return static_cast<std::int64_t>(std::nearbyint(v)); };
  const std::int64_t nd = python_round(config.diffusion_ratio * static_cast<double>(B));
  for (std::int64_t b = 0; b < nd; ++b) r.data()[b] = t.data()[b];
  const std::int64_t nc = python_round(config.consistency_ratio * static_cast<double>(B));
  for (std::int64_t b = B - nc; b < B; ++b) r.data()[b] = static_cast<T>(config.t_min());
  return nd;
}

//! Label dropout as the released trainer does it: each label becomes `null_label` with
//! probability `p` (uniform < p), the uniform being word 2 of block 1 of the stream
//! (seed, b, step), independent of sample_time_pairs' draws. Returns the dropped labels.
inline Tensor<std::int64_t, cpu> drop_labels(const Tensor<std::int64_t, cpu>& labels, double p,
                                             std::int64_t null_label, std::uint64_t seed, std::uint32_t step) {
  check(std::isfinite(p) && p >= 0 && p <= 1, "drop_labels: probability must be in [0, 1], got ", p);
  auto out = Tensor<std::int64_t, cpu>::empty(labels.shape());
  for (std::int64_t b = 0; b < labels.numel(); ++b) {
    const auto words = random::stream_block(seed, static_cast<std::uint64_t>(b), step, 1);
    out.data()[b] = random::uniform_open(words.v[2]) < p ? null_label : labels.data()[b];
  }
  return out;
}

}  // namespace tim::train
