// The five transports (SPEC section 2) as small value types behind one concept, tim::Transport:
// OT-FM (the released models), TrigFlow, EDM, VP-SDE and VE-SDE. Each carries its constants
// (SPEC defaults, overridable: `tim::Edm{.t_max = 40}`) and forwards to the formulas of
// tim/math/transport.hpp, so a CUDA kernel can take one by value and call the same members.
// parse_transport turns the command-line spellings into a std::variant of them.
#pragma once

#include <concepts>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

#include "tim/core/config.hpp"
#include "tim/core/error.hpp"
#include "tim/math/transport.hpp"

namespace tim {

//! A time parameterisation x_t = alpha_t x + sigma_t z with its transition and training target.
//!
//! Requirements (Real = double; the provided types accept any floating type):
//!   T::name (string_view), T::has_stochastic_transition (bool);
//!   members t_max, t_min (the default time range) and sigma_d;
//!   alpha(t), sigma(t), d_alpha(t), d_sigma(t), c_noise(t) (the network time input);
//!   coefficients(t, r) -> math::TransitionCoefficients<double> with x_r = a x_t + b F;
//!   transition(x_t, F, t, r); target(x, z, dF_dt, t, r) (SPEC 2, for training and tests), split
//!   as target_from_base(target_base(x, z, t), x, z, dF_dt, t, r) for the guidance-enhanced
//!   target, which replaces the base (math::enhanced_base, with T::guidance_sign);
//!   sample_time(normal, uniform) (SPEC 2 time sampling; each transport uses the draw it needs);
//!   and, when has_stochastic_transition, stochastic_transition(x_t, F, t, r, s, eps).
template <class T>
concept Transport = std::copy_constructible<T> && requires(const T& tr, double t, double r, double v) {
  { T::name } -> std::convertible_to<std::string_view>;
  { T::has_stochastic_transition } -> std::convertible_to<bool>;
  { tr.t_max } -> std::convertible_to<double>;
  { tr.t_min } -> std::convertible_to<double>;
  { tr.sigma_d } -> std::convertible_to<double>;
  { tr.alpha(t) } -> std::convertible_to<double>;
  { tr.sigma(t) } -> std::convertible_to<double>;
  { tr.d_alpha(t) } -> std::convertible_to<double>;
  { tr.d_sigma(t) } -> std::convertible_to<double>;
  { tr.c_noise(t) } -> std::convertible_to<double>;
  { tr.coefficients(t, r) } -> std::same_as<math::TransitionCoefficients<double>>;
  { tr.transition(v, v, t, r) } -> std::convertible_to<double>;
  { tr.target(v, v, v, t, r) } -> std::convertible_to<double>;
  { tr.target_base(v, v, t) } -> std::convertible_to<double>;
  { tr.target_from_base(v, v, v, v, t, r) } -> std::convertible_to<double>;
  { T::guidance_sign } -> std::convertible_to<double>;
  { tr.sample_time(v, v) } -> std::convertible_to<double>;
} && (!T::has_stochastic_transition || requires(const T& tr, double v) {
  { tr.stochastic_transition(v, v, v, v, v, v) } -> std::convertible_to<double>;
});

//! OT-FM (linear flow matching): x_t = (1 - t) x + t z, x_r = x_t - (t - r) F. The released
//! models use it. The only transport with a stochastic transition.
struct OtFm {
  static constexpr std::string_view name = "ot-fm";
  static constexpr bool has_stochastic_transition = true;
  static constexpr double guidance_sign = 1.0;  // sign of the EMA outputs in the enhanced base
  double t_max = 1.0;
  double t_min = 0.0;
  double sigma_d = 1.0;
  double p_mean = -0.4;  // time sampling: released C2I value
  double p_std = 1.0;

  template <class R> TIM_HD R alpha(R t) const { return math::ot_fm::alpha(t); }
  template <class R> TIM_HD R sigma(R t) const { return math::ot_fm::sigma(t); }
  template <class R> TIM_HD R d_alpha(R t) const { return math::ot_fm::d_alpha(t); }
  template <class R> TIM_HD R d_sigma(R t) const { return math::ot_fm::d_sigma(t); }
  template <class R> TIM_HD R c_noise(R t) const { return math::ot_fm::c_noise(t); }
  template <class R> TIM_HD math::TransitionCoefficients<R> coefficients(R t, R r) const {
    return math::ot_fm::transition_coefficients(t, r);
  }
  template <class R> TIM_HD R transition(R x_t, R F, R t, R r) const {
    return math::apply_transition(coefficients(t, r), x_t, F);
  }
  template <class R> TIM_HD R stochastic_transition(R x_t, R F, R t, R r, R s, R eps) const {
    return math::ot_fm::stochastic_transition(x_t, F, t, r, s, eps);
  }
  template <class R> TIM_HD R target_base(R x, R z, R t) const { return math::ot_fm::target_base(x, z, t); }
  template <class R> TIM_HD R target_from_base(R base, R x, R z, R dF_dt, R t, R r) const {
    return math::ot_fm::target_from_base(base, x, z, dF_dt, t, r);
  }
  template <class R> TIM_HD R target(R x, R z, R dF_dt, R t, R r) const {
    return math::ot_fm::target(x, z, dF_dt, t, r);
  }
  template <class R> TIM_HD R sample_time(R normal, R /*uniform*/) const {
    return math::ot_fm::sample_time(normal, R(p_mean), R(p_std));
  }
};

//! TrigFlow: x_t = cos t x + sin t z, x_r = cos(t - r) x_t - sin(t - r) F.
struct TrigFlow {
  static constexpr std::string_view name = "trigflow";
  static constexpr bool has_stochastic_transition = false;
  static constexpr double guidance_sign = 1.0;  // sign of the EMA outputs in the enhanced base
  double t_max = 1.57;
  double t_min = 0.0;
  double sigma_d = 0.5;
  double p_mean = -1.0;
  double p_std = 1.6;

  template <class R> TIM_HD R alpha(R t) const { return math::trigflow::alpha(t); }
  template <class R> TIM_HD R sigma(R t) const { return math::trigflow::sigma(t); }
  template <class R> TIM_HD R d_alpha(R t) const { return math::trigflow::d_alpha(t); }
  template <class R> TIM_HD R d_sigma(R t) const { return math::trigflow::d_sigma(t); }
  template <class R> TIM_HD R c_noise(R t) const { return math::trigflow::c_noise(t); }
  template <class R> TIM_HD math::TransitionCoefficients<R> coefficients(R t, R r) const {
    return math::trigflow::transition_coefficients(t, r);
  }
  template <class R> TIM_HD R transition(R x_t, R F, R t, R r) const {
    return math::apply_transition(coefficients(t, r), x_t, F);
  }
  template <class R> TIM_HD R target_base(R x, R z, R t) const { return math::trigflow::target_base(x, z, t); }
  template <class R> TIM_HD R target_from_base(R base, R x, R z, R dF_dt, R t, R r) const {
    return math::trigflow::target_from_base(base, x, z, dF_dt, t, r);
  }
  template <class R> TIM_HD R target(R x, R z, R dF_dt, R t, R r) const {
    return math::trigflow::target(x, z, dF_dt, t, r);
  }
  template <class R> TIM_HD R sample_time(R normal, R /*uniform*/) const {
    return math::trigflow::sample_time(normal, R(p_mean), R(p_std));
  }
};

//! EDM with the consistent interpolant alpha = sd / sqrt(t^2 + sd^2), sigma = t / sqrt(t^2 + sd^2)
//! (the released code's alpha = 1 / sqrt(...) breaks its own target; SPEC 2, docs/sampling.md).
struct Edm {
  static constexpr std::string_view name = "edm";
  static constexpr bool has_stochastic_transition = false;
  static constexpr double guidance_sign = 1.0;  // sign of the EMA outputs in the enhanced base
  double t_max = 80.0;
  double t_min = 0.01;
  double sigma_d = 0.5;
  double p_mean = -1.2;
  double p_std = 1.2;

  template <class R> TIM_HD R alpha(R t) const { return math::edm::alpha(t, R(sigma_d)); }
  template <class R> TIM_HD R sigma(R t) const { return math::edm::sigma(t, R(sigma_d)); }
  template <class R> TIM_HD R d_alpha(R t) const { return math::edm::d_alpha(t, R(sigma_d)); }
  template <class R> TIM_HD R d_sigma(R t) const { return math::edm::d_sigma(t, R(sigma_d)); }
  template <class R> TIM_HD R c_noise(R t) const { return math::edm::c_noise(t); }
  template <class R> TIM_HD math::TransitionCoefficients<R> coefficients(R t, R r) const {
    return math::edm::transition_coefficients(t, r, R(sigma_d));
  }
  template <class R> TIM_HD R transition(R x_t, R F, R t, R r) const {
    return math::apply_transition(coefficients(t, r), x_t, F);
  }
  template <class R> TIM_HD R target_base(R x, R z, R t) const { return math::edm::target_base(x, z, t, R(sigma_d)); }
  template <class R> TIM_HD R target_from_base(R base, R x, R z, R dF_dt, R t, R r) const {
    return math::edm::target_from_base(base, x, z, dF_dt, t, r, R(sigma_d));
  }
  template <class R> TIM_HD R target(R x, R z, R dF_dt, R t, R r) const {
    return math::edm::target(x, z, dF_dt, t, r, R(sigma_d));
  }
  template <class R> TIM_HD R sample_time(R normal, R /*uniform*/) const {
    return math::edm::sample_time(normal, R(p_mean), R(p_std));
  }
};

//! VP-SDE with the linear beta schedule: b(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1).
struct VpSde {
  static constexpr std::string_view name = "vp";
  static constexpr bool has_stochastic_transition = false;
  static constexpr double guidance_sign = 1.0;  // sign of the EMA outputs in the enhanced base
  double beta_min = 0.1;
  double beta_d = 19.9;
  double eps_t = 1e-5;            // smallest time; also the default t_min
  double discrete_steps = 1000;   // T of c_noise(t) = (T - 1) t
  double t_max = 1.0;
  double t_min = 1e-5;
  double sigma_d = 1.0;           // not given by SPEC; only training weights read it

  template <class R> TIM_HD R alpha(R t) const { return math::vp::alpha(t, R(beta_min), R(beta_d)); }
  template <class R> TIM_HD R sigma(R t) const { return math::vp::sigma(t, R(beta_min), R(beta_d)); }
  template <class R> TIM_HD R d_alpha(R t) const { return math::vp::d_alpha(t, R(beta_min), R(beta_d)); }
  template <class R> TIM_HD R d_sigma(R t) const { return math::vp::d_sigma(t, R(beta_min), R(beta_d)); }
  template <class R> TIM_HD R c_noise(R t) const { return math::vp::c_noise(t, R(discrete_steps)); }
  template <class R> TIM_HD math::TransitionCoefficients<R> coefficients(R t, R r) const {
    return math::vp::transition_coefficients(t, r, R(beta_min), R(beta_d));
  }
  template <class R> TIM_HD R transition(R x_t, R F, R t, R r) const {
    return math::apply_transition(coefficients(t, r), x_t, F);
  }
  template <class R> TIM_HD R target_base(R x, R z, R t) const { return math::vp::target_base(x, z, t); }
  template <class R> TIM_HD R target_from_base(R base, R x, R z, R dF_dt, R t, R r) const {
    return math::vp::target_from_base(base, x, z, dF_dt, t, r, R(beta_min), R(beta_d));
  }
  template <class R> TIM_HD R target(R x, R z, R dF_dt, R t, R r) const {
    return math::vp::target(x, z, dF_dt, t, r, R(beta_min), R(beta_d));
  }
  template <class R> TIM_HD R sample_time(R /*normal*/, R uniform) const {
    return math::vp::sample_time(uniform, R(eps_t));
  }
};

//! VE-SDE: x_t = x + t z, x_r = x_t + (t - r) F. Its noise has standard deviation t_max: pass
//! t_max * z as the sampler's initial state.
struct VeSde {
  static constexpr std::string_view name = "ve";
  static constexpr bool has_stochastic_transition = false;
  static constexpr double guidance_sign = -1.0;  // sign of the EMA outputs in the enhanced base
  double sigma_min = 0.02;
  double sigma_max = 100.0;
  double t_max = 100.0;
  double t_min = 0.02;
  double sigma_d = 1.0;  // not given by SPEC; only training weights read it

  template <class R> TIM_HD R alpha(R t) const { return math::ve::alpha(t); }
  template <class R> TIM_HD R sigma(R t) const { return math::ve::sigma(t); }
  template <class R> TIM_HD R d_alpha(R t) const { return math::ve::d_alpha(t); }
  template <class R> TIM_HD R d_sigma(R t) const { return math::ve::d_sigma(t); }
  template <class R> TIM_HD R c_noise(R t) const { return math::ve::c_noise(t); }
  template <class R> TIM_HD math::TransitionCoefficients<R> coefficients(R t, R r) const {
    return math::ve::transition_coefficients(t, r);
  }
  template <class R> TIM_HD R transition(R x_t, R F, R t, R r) const {
    return math::apply_transition(coefficients(t, r), x_t, F);
  }
  template <class R> TIM_HD R target_base(R x, R z, R t) const { return math::ve::target_base(x, z, t); }
  template <class R> TIM_HD R target_from_base(R base, R x, R z, R dF_dt, R t, R r) const {
    return math::ve::target_from_base(base, x, z, dF_dt, t, r);
  }
  template <class R> TIM_HD R target(R x, R z, R dF_dt, R t, R r) const {
    return math::ve::target(x, z, dF_dt, t, r);
  }
  template <class R> TIM_HD R sample_time(R /*normal*/, R uniform) const {
    return math::ve::sample_time(uniform, R(sigma_min), R(sigma_max));
  }
};

static_assert(Transport<OtFm> && Transport<TrigFlow> && Transport<Edm> && Transport<VpSde> && Transport<VeSde>);

//! Any of the five transports, chosen at run time (command line, config files). Instantiate
//! the sampler inside std::visit: `std::visit([&](auto tr) { ... TransitionSampler{m, tr, s} ... }, any)`.
using AnyTransport = std::variant<OtFm, TrigFlow, Edm, VpSde, VeSde>;

//! The accepted spellings, in the order of AnyTransport.
inline constexpr std::string_view transport_names[] = {OtFm::name, TrigFlow::name, Edm::name, VpSde::name,
                                                        VeSde::name};

//! Parses "ot-fm", "trigflow", "edm", "vp" or "ve" into the transport with its SPEC defaults.
//! Throws tim::Error naming the unknown spelling and listing the valid ones.
inline AnyTransport parse_transport(std::string_view text) {
  if (text == OtFm::name) return OtFm{};
  if (text == TrigFlow::name) return TrigFlow{};
  if (text == Edm::name) return Edm{};
  if (text == VpSde::name) return VpSde{};
  if (text == VeSde::name) return VeSde{};
  fail("unknown transport '", text, "' (expected one of ot-fm, trigflow, edm, vp, ve)");
}

//! The spelling of the transport held by `transport` ("ot-fm", ...).
inline std::string_view transport_name(const AnyTransport& transport) {
  return std::visit([](const auto& tr) { return std::string_view(std::decay_t<decltype(tr)>::name); }, transport);
}

//! Replaces the time range [t_min, t_max] of the transport held by `transport` (--t-max, --t-min).
inline void set_time_range(AnyTransport& transport, double t_max, double t_min) {
  std::visit(
      [&](auto& tr) {
        tr.t_max = t_max;
        tr.t_min = t_min;
      },
      transport);
}

}  // namespace tim
