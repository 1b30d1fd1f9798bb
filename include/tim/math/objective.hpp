// The scalar formulas of the TiM training objective (SPEC 7 as released in
// tim/schedulers/transition.py), written once for every backend: the time weighting, the
// adaptive weight, torch.nan_to_num as the released loss applies it, and the cosine similarity of
// the directional loss with its derivative (torch.nn.functional.cosine_similarity's, norms
// clamped to eps = 1e-8). Templates over the real type; the C++ objective
// (tim/train/objective.hpp) evaluates the weights in double.
#pragma once

#include <cmath>

#include "tim/core/config.hpp"

namespace tim::math {

//! The time weightings of the released `weight_time_type` (`constant`, `reciprocal`, `sqrt`,
//! `square`, `Soft-Min-SNR`).
enum class TimeWeighting { constant, reciprocal, sqrt, square, soft_min_snr };

//! The time weight of a pair (t, r) of a non-diffusion row, exactly as released
//! (TransitionSchedule.time_weighting): first `tangent` maps t, r to tan t, tan r (it wins when
//! both flags are set), else `sigmoid` maps them to t / (1 - t), r / (1 - r); then
//! d = t - r (`t_and_r`, the released weight_t_and_r) or d = t; then constant 1, reciprocal
//! 1 / (d + sd), sqrt 1 / sqrt(d + sd), square 1 / (d + sd)^2, Soft-Min-SNR 1 / (d^2 + sd^2).
//! The rows with r = t (the first n_diffusion) get 1 instead; the caller does that.
template <class Real>
TIM_HD inline Real time_weight(Real t, Real r, TimeWeighting kind, bool tangent, bool sigmoid, bool t_and_r,
                               Real sigma_d) {
  using std::sqrt;
  using std::tan;
  if (tangent) {
    t = tan(t);
    r = tan(r);
  } else if (sigmoid) {
    t = t / (Real(1) - t);
    r = r / (Real(1) - r);
  }
  const Real d = t_and_r ? t - r : t;
  switch (kind) {
    case TimeWeighting::constant: return Real(1);
    case TimeWeighting::reciprocal: return Real(1) / (d + sigma_d);
    case TimeWeighting::sqrt: return Real(1) / sqrt(d + sigma_d);
    case TimeWeighting::square: {
      const Real q = d + sigma_d;
      return Real(1) / (q * q);
    }
    case TimeWeighting::soft_min_snr: return Real(1) / (d * d + sigma_d * sigma_d);
  }
  return Real(1);
}

//! torch.nan_to_num(v, nan=0, posinf=1e5, neginf=-1e5), as the released loss applies it to each
//! sample's loss. Its derivative is 1 where v is finite and 0 elsewhere.
template <class Real>
TIM_HD inline Real loss_nan_to_num(Real v) {
  using std::isinf;
  using std::isnan;
  if (isnan(v)) return Real(0);
  if (isinf(v)) return v > 0 ? Real(1e5) : Real(-1e5);
  return v;
}

//! The norm clamp of torch.nn.functional.cosine_similarity (its default eps).
inline constexpr double cosine_eps = 1e-8;

//! cos(a, b) = sum_c a_c b_c / (max(|a|, eps) max(|b|, eps)) from the dot product and the two
//! norms, as torch.nn.functional.cosine_similarity computes it (each norm clamped to eps).
template <class Real>
TIM_HD inline Real cosine_from_norms(Real dot, Real norm_a, Real norm_b) {
  const Real ca = norm_a > Real(cosine_eps) ? norm_a : Real(cosine_eps);
  const Real cb = norm_b > Real(cosine_eps) ? norm_b : Real(cosine_eps);
  return dot / (ca * cb);
}

//! d cos / d a_c for one channel value a_c (b_c the other tensor's), as PyTorch's autograd
//! differentiates cosine_similarity: the clamp is invisible to it, so the norm's derivative
//! a_c / |a| still flows (0 at a = 0):
//!   d cos / d a_c = b_c / (ca cb) - cos / ca * (|a| > 0 ? a_c / |a| : 0), ca, cb the clamped norms.
template <class Real>
TIM_HD inline Real cosine_derivative(Real a_c, Real b_c, Real cosine, Real norm_a, Real norm_b) {
  const Real ca = norm_a > Real(cosine_eps) ? norm_a : Real(cosine_eps);
  const Real cb = norm_b > Real(cosine_eps) ? norm_b : Real(cosine_eps);
  const Real through_norm = norm_a > Real(0) ? a_c / norm_a : Real(0);
  return b_c / (ca * cb) - cosine / ca * through_norm;
}

}  // namespace tim::math
