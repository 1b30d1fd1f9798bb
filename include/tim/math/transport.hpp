// The five transports of SPEC section 2 as scalar formulas, written once for every backend:
// interpolant alpha/sigma and their t-derivatives, the network time input c_noise, the
// transition x_r = a(t, r) x_t + b(t, r) F, the OT-FM stochastic transition, the training target
// F* and the time sampling. Templates over the real type so tests can evaluate them in long
// double; the library calls them with double. The typed front ends are in tim/transport/.
//
// Notation: t current time, r target time (r <= t), x clean data, z noise, F network output,
// dF_dt the derivative of F along x_t = alpha_t x + sigma_t z (the DDE finite difference).
#pragma once

#include <cmath>

#include "tim/core/config.hpp"

namespace tim::math {

//! The transition of a transport is linear in x_t and F: x_r = a x_t + b F.
template <class Real>
struct TransitionCoefficients {
  Real a;  // multiplies x_t; a(t, t) = 1
  Real b;  // multiplies F;   b(t, t) = 0
};

//! x_r = a x_t + b F, the one place the deterministic update is applied.
template <class Real>
TIM_HD inline Real apply_transition(TransitionCoefficients<Real> c, Real x_t, Real F) {
  return c.a * x_t + c.b * F;
}

//! The guidance-enhanced base of the training target (released transports.py): inside the
//! window, base' = w_gt base + w_cond sign F_c + (1 - w_gt - w_cond) sign F_u, F_c and F_u the EMA
//! network at r = t with the label and with the null class; sign = -1 for VE (its target
//! subtracts the base), +1 otherwise. Outside the window w_gt = 1 and w_cond = 0.
template <class Real>
TIM_HD inline Real enhanced_base(Real base, Real w_gt, Real w_cond, Real F_cond, Real F_uncond, Real sign) {
  return w_gt * base + w_cond * (sign * F_cond) + (Real(1) - w_gt - w_cond) * (sign * F_uncond);
}

// ---------------------------------------------------------------------------------------------
//! OT-FM (linear flow matching): alpha = 1 - t, sigma = t; T in [0, 1].
namespace ot_fm {
template <class Real> TIM_HD inline Real alpha(Real t) { return Real(1) - t; }
template <class Real> TIM_HD inline Real sigma(Real t) { return t; }
template <class Real> TIM_HD inline Real d_alpha(Real) { return Real(-1); }
template <class Real> TIM_HD inline Real d_sigma(Real) { return Real(1); }
template <class Real> TIM_HD inline Real c_noise(Real t) { return t; }

//! x_r = x_t - (t - r) F.
template <class Real>
TIM_HD inline TransitionCoefficients<Real> transition_coefficients(Real t, Real r) {
  return {Real(1), -(t - r)};
}

//! Stochastic transition with ratio s > 0 and a standard normal eps:
//! zhat = x_t + (1 - t) F; x_r = x_t - (t - r) F - s zhat (t - r) + sqrt(2 s t (t - r)) eps.
template <class Real>
TIM_HD inline Real stochastic_transition(Real x_t, Real F, Real t, Real r, Real s, Real eps) {
  using std::sqrt;
  const Real interval = t - r;
  const Real z_hat = x_t + (Real(1) - t) * F;
  return x_t - interval * F - s * z_hat * interval + sqrt(Real(2) * s * t * interval) * eps;
}

//! The part of F* the guidance-enhanced target replaces: v_t = alpha' x + sigma' z = z - x.
template <class Real>
TIM_HD inline Real target_base(Real x, Real z, Real) {
  return z - x;
}

//! F* from its base: base - (t - r) dF/dt.
template <class Real>
TIM_HD inline Real target_from_base(Real base, Real, Real, Real dF_dt, Real t, Real r) {
  return base - (t - r) * dF_dt;
}

//! F* = v_t - (t - r) dF/dt, v_t = z - x.
template <class Real>
TIM_HD inline Real target(Real x, Real z, Real dF_dt, Real t, Real r) {
  return target_from_base(target_base(x, z, t), x, z, dF_dt, t, r);
}

//! sigma = exp(P_mean + P_std n), t = sigma / (1 + sigma), for a standard normal n.
template <class Real>
TIM_HD inline Real sample_time(Real normal, Real p_mean, Real p_std) {
  using std::exp;
  const Real level = exp(p_mean + p_std * normal);
  return level / (Real(1) + level);
}
}  // namespace ot_fm

// ---------------------------------------------------------------------------------------------
//! TrigFlow: alpha = cos t, sigma = sin t; T in [0, 1.57].
namespace trigflow {
template <class Real> TIM_HD inline Real alpha(Real t) { using std::cos; return cos(t); }
template <class Real> TIM_HD inline Real sigma(Real t) { using std::sin; return sin(t); }
template <class Real> TIM_HD inline Real d_alpha(Real t) { using std::sin; return -sin(t); }
template <class Real> TIM_HD inline Real d_sigma(Real t) { using std::cos; return cos(t); }
template <class Real> TIM_HD inline Real c_noise(Real t) { return t; }

//! x_r = cos(t - r) x_t - sin(t - r) F.
template <class Real>
TIM_HD inline TransitionCoefficients<Real> transition_coefficients(Real t, Real r) {
  using std::cos;
  using std::sin;
  return {cos(t - r), -sin(t - r)};
}

//! The part of F* the guidance-enhanced target replaces: v_t = -sin t x + cos t z.
template <class Real>
TIM_HD inline Real target_base(Real x, Real z, Real t) {
  return d_alpha(t) * x + d_sigma(t) * z;
}

//! F* from its base: base - tan(t - r) (x_t + dF/dt), x_t = cos t x + sin t z.
template <class Real>
TIM_HD inline Real target_from_base(Real base, Real x, Real z, Real dF_dt, Real t, Real r) {
  using std::tan;
  const Real x_t = alpha(t) * x + sigma(t) * z;
  return base - tan(t - r) * (x_t + dF_dt);
}

//! F* = v_t - tan(t - r) (x_t + dF/dt), x_t = cos t x + sin t z, v_t = -sin t x + cos t z.
template <class Real>
TIM_HD inline Real target(Real x, Real z, Real dF_dt, Real t, Real r) {
  return target_from_base(target_base(x, z, t), x, z, dF_dt, t, r);
}

//! t = atan(exp(P_mean + P_std n)).
template <class Real>
TIM_HD inline Real sample_time(Real normal, Real p_mean, Real p_std) {
  using std::atan;
  using std::exp;
  return atan(exp(p_mean + p_std * normal));
}
}  // namespace trigflow

// ---------------------------------------------------------------------------------------------
//! EDM with the consistent interpolant alpha = sd / sqrt(t^2 + sd^2) (SPEC 2: the released code's
//! 1 / sqrt(t^2 + sd^2) contradicts its own target; sampling never uses alpha). T in [0.01, 80].
namespace edm {
template <class Real> TIM_HD inline Real alpha(Real t, Real sd) { using std::sqrt; return sd / sqrt(t * t + sd * sd); }
template <class Real> TIM_HD inline Real sigma(Real t, Real sd) { using std::sqrt; return t / sqrt(t * t + sd * sd); }
template <class Real>
TIM_HD inline Real d_alpha(Real t, Real sd) {
  using std::pow;
  return -sd * t / pow(sd * sd + t * t, Real(1.5));
}
template <class Real>
TIM_HD inline Real d_sigma(Real t, Real sd) {
  using std::pow;
  return sd * sd / pow(sd * sd + t * t, Real(1.5));
}
//! c_noise(t) = ln(t) / 4.
template <class Real> TIM_HD inline Real c_noise(Real t) { using std::log; return log(t) / Real(4); }

//! q = sqrt(t^2 + sd^2) / sqrt(r^2 + sd^2) / (sd^3 + t^2);
//! x_r = (sd^3 + t r) q x_t + sd^2 (t - r) q F  (sd^3, as released).
template <class Real>
TIM_HD inline TransitionCoefficients<Real> transition_coefficients(Real t, Real r, Real sd) {
  using std::sqrt;
  const Real sd3 = sd * sd * sd;
  const Real q = sqrt(t * t + sd * sd) / sqrt(r * r + sd * sd) / (sd3 + t * t);
  return {(sd3 + t * r) * q, sd * sd * (t - r) * q};
}

//! The part of F* the guidance-enhanced target replaces: ah x + sh z with
//! ah = t / (sd sqrt(t^2 + sd^2)), sh = -sd / sqrt(t^2 + sd^2).
template <class Real>
TIM_HD inline Real target_base(Real x, Real z, Real t, Real sd) {
  using std::sqrt;
  const Real root = sqrt(t * t + sd * sd);
  return (t / (sd * root)) * x + (-sd / root) * z;
}

//! F* from its base: base + k (ah' x + sh' z - dF/dt) with ah', sh' and k of SPEC 2.
template <class Real>
TIM_HD inline Real target_from_base(Real base, Real x, Real z, Real dF_dt, Real t, Real r, Real sd) {
  using std::pow;
  using std::sqrt;
  const Real sd2 = sd * sd, sd3 = sd2 * sd, t2 = t * t;
  const Real root = sqrt(t2 + sd2);
  const Real root3 = pow(sd2 + t2, Real(1.5));
  const Real d_a_hat = -t2 / (sd * root3) + Real(1) / (sd * root);
  const Real d_s_hat = sd * t / root3;
  const Real k = (t - r) * (sd2 + t2) * (sd3 + t2) /
                 (Real(2) * t * (r - t) * (sd2 + t2) - t * (r - t) * (sd3 + t2) + (sd2 + t2) * (sd3 + t2));
  return base + k * (d_a_hat * x + d_s_hat * z - dF_dt);
}

//! F* = (ah x + sh z) + k (ah' x + sh' z - dF/dt) with ah, sh, their derivatives and k of SPEC 2.
template <class Real>
TIM_HD inline Real target(Real x, Real z, Real dF_dt, Real t, Real r, Real sd) {
  return target_from_base(target_base(x, z, t, sd), x, z, dF_dt, t, r, sd);
}

//! t = exp(P_mean + P_std n).
template <class Real>
TIM_HD inline Real sample_time(Real normal, Real p_mean, Real p_std) {
  using std::exp;
  return exp(p_mean + p_std * normal);
}
}  // namespace edm

// ---------------------------------------------------------------------------------------------
//! VP-SDE: b(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), alpha = 1 / sqrt(b^2 + 1),
//! sigma = b / sqrt(b^2 + 1); T in [eps_t, 1].
namespace vp {
template <class Real>
TIM_HD inline Real b(Real t, Real beta_min, Real beta_d) {
  using std::exp;
  using std::sqrt;
  return sqrt(exp(Real(0.5) * beta_d * t * t + beta_min * t) - Real(1));
}
//! b'(t) = (beta_d t + beta_min)(b^2 + 1) / (2 b).
template <class Real>
TIM_HD inline Real d_b(Real t, Real beta_min, Real beta_d) {
  const Real bt = b(t, beta_min, beta_d);
  return (beta_d * t + beta_min) * (bt * bt + Real(1)) / (Real(2) * bt);
}
template <class Real>
TIM_HD inline Real alpha(Real t, Real beta_min, Real beta_d) {
  using std::sqrt;
  const Real bt = b(t, beta_min, beta_d);
  return Real(1) / sqrt(bt * bt + Real(1));
}
template <class Real>
TIM_HD inline Real sigma(Real t, Real beta_min, Real beta_d) {
  using std::sqrt;
  const Real bt = b(t, beta_min, beta_d);
  return bt / sqrt(bt * bt + Real(1));
}
//! alpha' = -b b' / (b^2 + 1)^1.5 (= -beta(t) alpha / 2 with beta(t) = beta_d t + beta_min).
template <class Real>
TIM_HD inline Real d_alpha(Real t, Real beta_min, Real beta_d) {
  using std::pow;
  const Real bt = b(t, beta_min, beta_d);
  return -bt * d_b(t, beta_min, beta_d) / pow(bt * bt + Real(1), Real(1.5));
}
//! sigma' = b' / (b^2 + 1)^1.5.
template <class Real>
TIM_HD inline Real d_sigma(Real t, Real beta_min, Real beta_d) {
  using std::pow;
  const Real bt = b(t, beta_min, beta_d);
  return d_b(t, beta_min, beta_d) / pow(bt * bt + Real(1), Real(1.5));
}
//! c_noise(t) = (T - 1) t with T the number of discrete training steps (1000).
template <class Real> TIM_HD inline Real c_noise(Real t, Real discrete_steps) { return (discrete_steps - Real(1)) * t; }

//! x_r = sqrt(b_t^2 + 1) / sqrt(b_r^2 + 1) x_t + (b_r - b_t) / sqrt(b_r^2 + 1) F.
template <class Real>
TIM_HD inline TransitionCoefficients<Real> transition_coefficients(Real t, Real r, Real beta_min, Real beta_d) {
  using std::sqrt;
  const Real bt = b(t, beta_min, beta_d), br = b(r, beta_min, beta_d);
  const Real root_r = sqrt(br * br + Real(1));
  return {sqrt(bt * bt + Real(1)) / root_r, (br - bt) / root_r};
}

//! The part of F* the guidance-enhanced target replaces: z.
template <class Real>
TIM_HD inline Real target_base(Real, Real z, Real) {
  return z;
}

//! F* from its base: base - dF/dt (b_t - b_r) / b'_t.
template <class Real>
TIM_HD inline Real target_from_base(Real base, Real, Real, Real dF_dt, Real t, Real r, Real beta_min, Real beta_d) {
  return base - dF_dt * (b(t, beta_min, beta_d) - b(r, beta_min, beta_d)) / d_b(t, beta_min, beta_d);
}

//! F* = z - dF/dt (b_t - b_r) / b'_t.
template <class Real>
TIM_HD inline Real target(Real x, Real z, Real dF_dt, Real t, Real r, Real beta_min, Real beta_d) {
  return target_from_base(target_base(x, z, t), x, z, dF_dt, t, r, beta_min, beta_d);
}

//! t = 1 + u (eps_t - 1) for u uniform in [0, 1].
template <class Real>
TIM_HD inline Real sample_time(Real uniform, Real eps_t) {
  return Real(1) + uniform * (eps_t - Real(1));
}
}  // namespace vp

// ---------------------------------------------------------------------------------------------
//! VE-SDE: alpha = 1, sigma = t; T in [sigma_min, sigma_max] = [0.02, 100].
namespace ve {
template <class Real> TIM_HD inline Real alpha(Real) { return Real(1); }
template <class Real> TIM_HD inline Real sigma(Real t) { return t; }
template <class Real> TIM_HD inline Real d_alpha(Real) { return Real(0); }
template <class Real> TIM_HD inline Real d_sigma(Real) { return Real(1); }
//! c_noise(t) = ln(t / 2).
template <class Real> TIM_HD inline Real c_noise(Real t) { using std::log; return log(Real(0.5) * t); }

//! x_r = x_t + (t - r) F.
template <class Real>
TIM_HD inline TransitionCoefficients<Real> transition_coefficients(Real t, Real r) {
  return {Real(1), t - r};
}

//! The part of F* the guidance-enhanced target replaces: z (F* = ... - z, so the guided
//! network outputs enter it negated, as released).
template <class Real>
TIM_HD inline Real target_base(Real, Real z, Real) {
  return z;
}

//! F* from its base: (r - t) dF/dt - base.
template <class Real>
TIM_HD inline Real target_from_base(Real base, Real, Real, Real dF_dt, Real t, Real r) {
  return (r - t) * dF_dt - base;
}

//! F* = (r - t) dF/dt - z.
template <class Real>
TIM_HD inline Real target(Real x, Real z, Real dF_dt, Real t, Real r) {
  return target_from_base(target_base(x, z, t), x, z, dF_dt, t, r);
}

//! t = sigma_min (sigma_max / sigma_min)^u for u uniform in [0, 1].
template <class Real>
TIM_HD inline Real sample_time(Real uniform, Real sigma_min, Real sigma_max) {
  using std::pow;
  return sigma_min * pow(sigma_max / sigma_min, uniform);
}
}  // namespace ve

}  // namespace tim::math
