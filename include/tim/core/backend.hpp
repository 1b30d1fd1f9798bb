// The backend contract: what every backend (tim::cpu, tim::cuda, a user's own) provides, written
// as the concept tim::Backend and checked by static_assert where each backend is defined. The
// modules of nn/ and vae/, the sampler and the decoders are templates over a type satisfying it;
// nothing above the backends names a backend's internals.
//
// A backend is a struct of static functions over raw pointers plus extents (llm.c style), in
// six groups (docs/architecture.md, "The backend contract"):
//   memory       allocate<T>(n) -> shared_ptr<T>, fill, and three copies whose direction is in
//                the name: copy (within the backend), copy_from_host, copy_to_host (complete on
//                return); synchronize() waits for everything enqueued.
//   executor     for_each(n, op): op(i) for i in [0, n), op a TIM_HD functor of math/ (on a GPU
//                it runs on the device, so it holds device pointers and values only).
//   GEMM         linear_forward: y (R, out) = x (R, in) W^T (+ bias) (+= with accumulate).
//   network ops  layernorm, swiglu, silu, timestep features, modulate, gated residual,
//                patchify/unpatchify, embedding (labels are host memory), add, difference,
//                qkv split with qk-norm and rotary, head split, attention (self and cross).
//   decoder ops  the latent decoders' (vae/) channels-last operations: layout changes, GroupNorm
//                and RMSNorm (double statistics), nearest upsampling, im2col convolution over the
//                GEMM, depthwise and grouped 1x1 convolutions, single-head pixel attention, the
//                ReLU linear attention, pixel shuffle, shortcuts, ReLU; plus their default block
//                sizes (im2col, attention scores, linear-attention slices) and head-dim limit.
//   sampling ops convert (T <-> double), normal_forward (the counter-based normals of
//                core/random.hpp), guidance_forward, transition_forward,
//                stochastic_transition_forward (state in double, SPEC 6).
//   training ops (BackendTrainingOps, optional: not part of tim::Backend) the backward of every
//                network operation and the training forwards that save statistics.
// Each group is its own concept, so a test (or a partial backend under construction) can name
// which group is missing.
//
// Shape legend: B batch, N tokens, D hidden, nh heads, hd head dim, R rows, S per-sample values.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "tim/core/config.hpp"
#include "tim/math/transport.hpp"

namespace tim {

namespace detail {
//! A functor the executor must accept (does nothing).
struct ProbeOp {
  TIM_HD void operator()(std::int64_t) const {}
};
//! A transport with a stochastic transition, for checking stochastic_transition_forward.
struct ProbeTransport {
  static constexpr bool has_stochastic_transition = true;
  TIM_HD double stochastic_transition(double x, double, double, double, double, double) const { return x; }
};
}  // namespace detail

//! Memory: allocation, fill, copies with the direction named, synchronisation.
template <class B>
concept BackendMemory = requires(float* out, const float* in, std::size_t n) {
  { B::template allocate<float>(n) } -> std::same_as<std::shared_ptr<float>>;
  B::fill(out, n, 0.0f);
  B::copy(out, in, n);            // within the backend's memory
  B::copy_from_host(out, in, n);  // in: host memory
  B::copy_to_host(out, in, n);    // out: host memory, complete on return
  B::synchronize();
};

//! The element-wise executor.
template <class B>
concept BackendExecutor = requires(std::int64_t n) { B::for_each(n, detail::ProbeOp{}); };

//! GEMM and the operations of the TiM networks (nn/), as documented on tim::cpu.
template <class B>
concept BackendNetworkOps = requires(float* out, float* q, float* k, float* v, const float* in, const float* w,
                                     const float* bias, const std::int64_t* labels, std::int64_t n, double eps) {
  B::linear_forward(out, in, w, bias, n, n, n, false);
  B::layernorm_forward(out, in, w, bias, n, n, eps);
  B::swiglu_forward(out, in, in, n, n, n, n);
  B::silu_forward(out, in, n);
  B::timestep_features_forward(out, in, n);
  B::modulate_forward(out, in, in, n, n, n, n);
  B::gated_residual_forward(out, in, in, n, n, n, n);
  B::patchify_forward(out, in, n, n, n, n, n);
  B::unpatchify_forward(out, in, n, n, n, n, n);
  B::embedding_forward(out, in, labels, n, n);
  B::add_forward(out, in, n);
  B::difference_forward(out, in, in, n);
  B::qkv_split_forward(q, k, v, in, bias, w, bias, w, bias, eps, in, in, n, n, n, n, 1.0f);
  B::split_heads_forward(out, in, n, w, bias, eps, in, in, n, n, n, n, 1.0f);
  B::attention_forward(out, q, k, v, n, n, n, n, 1.0);     // self-attention
  B::attention_forward(out, q, k, v, n, n, n, n, n, 1.0);  // Nq queries, Nk keys
};

//! The latent decoders' operations (vae/), as documented on tim::cpu (tim/cpu/decoder_ops.hpp).
template <class B>
concept BackendDecoderOps = requires(float* out, const float* in, const float* w, std::int64_t n, double eps) {
  { B::im2col_block_elements } -> std::convertible_to<std::int64_t>;
  { B::score_block_elements } -> std::convertible_to<std::int64_t>;
  { B::linear_attention_slice_pixels } -> std::convertible_to<std::int64_t>;
  { B::linear_attention_max_head_dim } -> std::convertible_to<std::int64_t>;
  B::to_channels_last_forward(out, in, n, n, n, 1.0f);
  B::to_channels_first_forward(out, in, n, n, n);
  B::group_norm_forward(out, in, w, w, n, n, n, n, eps, true);
  B::upsample_nearest2x_forward(out, in, n, n, n, n);
  B::conv2d_forward(out, in, w, w, n, n, n, n, n, n, false, out, n);
  { B::pixel_attention_scratch_elements(n, n) } -> std::convertible_to<std::int64_t>;
  B::pixel_attention_forward(out, in, in, in, n, n, n, 1.0, out, n);
  B::rms_norm_channels_forward(out, in, w, w, n, n, eps, in);
  B::depthwise_conv2d_forward(out, in, w, w, n, n, n, n, n);
  B::grouped_pointwise_forward(out, in, w, n, n, n);
  B::relu_linear_attention_forward(out, n, in, n, n, n, n, eps, n);
  B::pixel_shuffle2x_forward(out, in, n, n, n, n);
  B::upsample_shortcut_forward(out, in, n, n, n, n, n);
  B::repeat_channels_add_forward(out, in, n, n, n);
  B::relu_forward(out, in, n);
};

//! The sampler's operations on a double state (and the conversions to and from T).
template <class B>
concept BackendSamplingOps = requires(double* x, const double* F, float* y, const float* cy, const std::uint64_t* streams,
                                      std::int64_t n, std::uint64_t seed, std::uint32_t step,
                                      math::TransitionCoefficients<double> c) {
  B::convert(y, F, static_cast<std::size_t>(n));   // double -> float
  B::convert(x, cy, static_cast<std::size_t>(n));  // float -> double
  B::normal_forward(x, n, n, seed, seed, step);
  B::guidance_forward(x, n, 2.0);
  B::transition_forward(x, F, n, c);
  B::stochastic_transition_forward(x, F, streams, n, n, detail::ProbeTransport{}, 0.5, 0.25, 0.1, seed, step);
};

//! The training operations (docs/training.md, "Backward passes"): the `*_backward` of every network
//! operation of the C2I network and the `*_training_forward` variants that save what a backward
//! reads, as documented on tim::cpu (tim/cpu/train_ops.hpp). Not part of tim::Backend: a backend
//! that only samples (tim::cuda today) need not have them; nn/c2i_backward.hpp needs them.
template <class B>
concept BackendTrainingOps = requires(float* out, float* g, const float* in, const float* w,
                                      const std::int64_t* labels, std::int64_t n, double eps) {
  B::linear_backward(out, g, g, in, in, w, n, n, n, false);
  B::layernorm_training_forward(out, g, g, in, w, w, n, n, eps);
  B::layernorm_backward(out, g, g, in, in, in, in, w, n, n, false);
  B::modulate_backward(out, g, g, in, in, in, n, n, n, n);
  B::gated_residual_backward(out, g, in, in, in, n, n, n, n);
  B::swiglu_backward(out, g, in, in, in, n, n, n, n);
  B::silu_backward(out, in, in, n);
  B::embedding_backward(out, in, labels, n, n);
  B::patchify_backward(out, in, n, n, n, n, n);
  B::unpatchify_backward(out, in, n, n, n, n, n);
  B::qkv_split_training_forward(out, out, out, g, g, g, g, in, in, w, w, w, w, eps, in, in, n, n, n, n, 1.0f);
  B::qkv_split_backward(out, g, g, g, g, g, in, in, in, in, in, w, w, in, in, in, in, in, in, n, n, n, n, 1.0f);
  B::attention_training_forward(out, g, in, in, in, n, n, n, n, n, 1.0);
  B::attention_backward(out, g, g, in, in, in, in, in, in, n, n, n, n, n, 1.0);
  { B::attention_backward_scratch_elements(n, n) } -> std::convertible_to<std::int64_t>;
};

//! Everything a backend provides: what nn/ modules, the decoders and the sampler are written against.
template <class B>
concept Backend = BackendMemory<B> && BackendExecutor<B> && BackendNetworkOps<B> && BackendDecoderOps<B> &&
                  BackendSamplingOps<B>;

}  // namespace tim
