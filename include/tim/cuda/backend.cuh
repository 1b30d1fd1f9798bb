// The CUDA backend: device memory plus the same fixed set of static operations as tim::cpu
// (include/tim/cpu/backend.hpp), so nn::C2IModel<T, tim::cuda> and nn::T2IModel<T, tim::cuda>
// are the CPU templates run on a GPU. Element types: float (float32 everywhere, cuBLAS without
// TF32) and tim::bfloat16 (bfloat16 storage, float32 arithmetic and GEMM accumulation).
// Every operation is enqueued on tim::cuda::stream() and returns without waiting; copies that
// touch host memory (copy_from_host, copy_to_host) wait for their own completion.
// Internal: include <tim/cuda/tim.cuh>.
//
// Shape legend: B batch, N tokens, D hidden, nh heads, hd head dim, R rows of a matrix.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>

#include "tim/core/backend.hpp"
#include "tim/core/tensor.hpp"
#include "tim/cuda/attention.cuh"
#include "tim/cuda/decoder_ops.cuh"
#include "tim/cuda/elementwise.cuh"
#include "tim/cuda/gemm.cuh"
#include "tim/cuda/reduction.cuh"
#include "tim/cuda/runtime.cuh"
#include "tim/math/sampling.hpp"

namespace tim {

//! The CUDA backend type. Pointers passed to its operations are device pointers (the one
//! exception, as on the CPU: embedding_forward's labels are host memory).
//! Decoder operations (the latent decoders', float) come from cuda_detail::DecoderOps
//! (tim/cuda/decoder_ops.cuh).
struct cuda : cuda_detail::DecoderOps<cuda> {
  // ------------------------------------------------------------------------------------------
  // Devices and streams

  //! Number of CUDA devices visible; 0 when there is none or no usable driver (never throws).
  static int device_count() {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
      (void)cudaGetLastError();
      return 0;
    }
    return count;
  }
  //! Whether at least one CUDA device is usable.
  static bool available() { return device_count() > 0; }
  //! "NAME (compute capability X.Y, N SMs, G GiB)" of the current device, or why there is none.
  static std::string device_description() {
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      return std::string("no CUDA device: ") + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")";
    }
    if (count == 0) return "no CUDA device";
    int device = 0;
    cuda_detail::check_cuda(cudaGetDevice(&device), "cudaGetDevice");
    cudaDeviceProp p{};
    cuda_detail::check_cuda(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
    return detail::concat(p.name, " (compute capability ", p.major, ".", p.minor, ", ", p.multiProcessorCount,
                          " SMs, ", static_cast<double>(p.totalGlobalMem) / (1 << 30), " GiB)");
  }
  //! Makes `device` current for this host thread.
  static void set_device(int device) { cuda_detail::check_cuda(cudaSetDevice(device), "cudaSetDevice"); }
  //! The stream this host thread's operations are enqueued on (default cudaStreamPerThread).
  static cudaStream_t stream() { return cuda_detail::current_stream(); }
  //! Enqueues this host thread's later operations on `stream` (which the caller owns).
  static void set_stream(cudaStream_t stream) { cuda_detail::current_stream() = stream; }
  //! Waits for everything enqueued on stream() and reports any error of it.
  static void synchronize() { cuda_detail::check_cuda(cudaStreamSynchronize(stream()), "cudaStreamSynchronize"); }

  // ------------------------------------------------------------------------------------------
  // Memory

  //! Uninitialised device memory for `n` elements (cudaMalloc: 256-byte aligned). Freed with
  //! cudaFree when the last tensor sharing it goes away. tim::Error on a device below compute
  //! capability 8.0.
  template <class T>
  static std::shared_ptr<T> allocate(std::size_t n) {
    cuda_detail::require_supported_device();
    void* p = nullptr;
    const std::size_t bytes = std::max<std::size_t>(n, 1) * sizeof(T);
    const cudaError_t status = cudaMalloc(&p, bytes);
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      fail("tim::cuda: cannot allocate ", bytes, " bytes of device memory: ", cudaGetErrorString(status));
    }
    ++cuda_detail::allocation_counter();
    return std::shared_ptr<T>(static_cast<T*>(p), [](T* q) { (void)cudaFree(q); });
  }
  //! How many device allocations allocate() has made in this program (for tests and tools).
  static std::int64_t allocation_count() { return cuda_detail::allocation_counter().load(); }
  //! How many stream-ordered scratch allocations the decoder operations have made (their
  //! per-operation temporaries, from the device's memory pool; freed on the stream).
  static std::int64_t scratch_allocation_count() { return cuda_detail::scratch_allocation_counter().load(); }
  //! data[0 .. n) = value (device memory).
  template <class T>
  static void fill(T* data, std::size_t n, T value) {
    cuda_detail::for_each(static_cast<std::int64_t>(n), cuda_detail::FillOp<T>{data, value});
  }
  //! n elements within device memory, enqueued on stream() (returns without waiting).
  template <class T>
  static void copy(T* out, const T* in, std::size_t n) {
    if (n == 0) return;
    cuda_detail::check_cuda(cudaMemcpyAsync(out, in, n * sizeof(T), cudaMemcpyDeviceToDevice, stream()),
                            "cudaMemcpyAsync (device to device)");
  }
  //! n elements from host memory `host` to the device; complete on return (the host may reuse
  //! `host` at once).
  template <class T>
  static void copy_from_host(T* out, const T* host, std::size_t n) {
    if (n == 0) return;
    cuda_detail::check_cuda(cudaMemcpyAsync(out, host, n * sizeof(T), cudaMemcpyHostToDevice, stream()),
                            "cudaMemcpyAsync (host to device)");
    synchronize();
  }
  //! n elements from the device to host memory `host`, after everything enqueued before;
  //! complete on return.
  template <class T>
  static void copy_to_host(T* host, const T* in, std::size_t n) {
    if (n == 0) return;
    cuda_detail::check_cuda(cudaMemcpyAsync(host, in, n * sizeof(T), cudaMemcpyDeviceToHost, stream()),
                            "cudaMemcpyAsync (device to host)");
    synchronize();
  }
  //! The contract's executor: op(i) for i in [0, n) on the device, op a TIM_HD functor of
  //! device pointers and values (math/, cuda/elementwise.cuh).
  template <class Op>
  static void for_each(std::int64_t n, const Op& op) {
    cuda_detail::for_each(n, op);
  }
  //! out[i] = To(in[i]) on the device (e.g. the sampler's double state to the network's T).
  template <class To, class From>
  static void convert(To* out, const From* in, std::size_t n) {
    cuda_detail::for_each(static_cast<std::int64_t>(n), math::ConvertOp<To, From>{out, in});
  }

  // ------------------------------------------------------------------------------------------
  // The operations of the network (same signatures and meaning as tim::cpu's)

  //! out (R, out_features) = in (R, in_features) * weight (out_features, in_features)^T + bias.
  //! `bias` may be null. With `accumulate`, the product is added to `out` instead.
  template <class T>
  static void linear_forward(T* out, const T* in, const T* weight, const T* bias, std::int64_t rows,
                             std::int64_t in_features, std::int64_t out_features, bool accumulate = false) {
    cuda_detail::gemm(out, in, weight, rows, in_features, out_features, accumulate);
    if (bias) cuda_detail::add_bias(out, bias, rows, out_features);
  }

  //! LayerNorm over the last axis of in (R, cols); weight/bias may be null (no affine).
  template <class T>
  static void layernorm_forward(T* out, const T* in, const T* weight, const T* bias, std::int64_t rows,
                                std::int64_t cols, double eps) {
    cuda_detail::layernorm(out, in, weight, bias, rows, cols, eps);
  }

  //! out[i] = silu(gate[i]) * value[i] over rows of `cols`, gate/value with row strides.
  template <class T>
  static void swiglu_forward(T* out, const T* gate, const T* value, std::int64_t rows, std::int64_t cols,
                             std::int64_t gate_stride, std::int64_t value_stride) {
    cuda_detail::for_each(rows * cols, cuda_detail::SwigluOp<T>{out, gate, value, cols, gate_stride, value_stride});
  }

  //! out = silu(in) element-wise over n values.
  template <class T>
  static void silu_forward(T* out, const T* in, std::int64_t n) {
    cuda_detail::for_each(n, cuda_detail::SiluOp<T>{out, in});
  }

  //! features (B, 256) = sinusoidal features of scalars s (B).
  template <class T>
  static void timestep_features_forward(T* features, const T* s, std::int64_t batch) {
    cuda_detail::for_each(batch * math::timestep_features, cuda_detail::TimestepFeaturesOp<T>{features, s});
  }

  //! x (B, N, D) = modulate(x, shift, scale), shift/scale (B, D) rows `mod_stride` apart.
  template <class T>
  static void modulate_forward(T* x, const T* shift, const T* scale, std::int64_t batch, std::int64_t tokens,
                               std::int64_t dim, std::int64_t mod_stride) {
    cuda_detail::for_each(batch * tokens * dim, cuda_detail::ModulateOp<T>{x, shift, scale, tokens, dim, mod_stride});
  }

  //! residual (B, N, D) += gate (B, D; row stride mod_stride) * update (B, N, D).
  template <class T>
  static void gated_residual_forward(T* residual, const T* gate, const T* update, std::int64_t batch,
                                     std::int64_t tokens, std::int64_t dim, std::int64_t mod_stride) {
    cuda_detail::for_each(batch * tokens * dim,
                          cuda_detail::GatedResidualOp<T>{residual, gate, update, tokens, dim, mod_stride});
  }

  //! patches (B*N, C*p*p) from x (B, C, H, W), values ordered (c, pi, pj).
  template <class T>
  static void patchify_forward(T* patches, const T* x, std::int64_t batch, std::int64_t channels,
                               std::int64_t height, std::int64_t width, std::int64_t patch) {
    cuda_detail::for_each(batch * channels * height * width,
                          cuda_detail::PatchifyOp<T>{patches, x, channels, height, width, patch});
  }

  //! out (B, C, H, W) from tokens (B*N, p*p*C) ordered (pi, pj, c).
  template <class T>
  static void unpatchify_forward(T* out, const T* tokens, std::int64_t batch, std::int64_t channels,
                                 std::int64_t height, std::int64_t width, std::int64_t patch) {
    cuda_detail::for_each(batch * channels * height * width,
                          cuda_detail::UnpatchifyOp<T>{out, tokens, channels, height, width, patch});
  }

  //! out (B, D) = table[index[b]]; `index` is HOST memory (the labels tensor stays on the host),
  //! passed to the kernel as an argument in chunks of 256.
  template <class T>
  static void embedding_forward(T* out, const T* table, const std::int64_t* index, std::int64_t batch,
                                std::int64_t dim) {
    constexpr std::int64_t chunk = cuda_detail::embedding_indices_per_launch;
    for (std::int64_t first = 0; first < batch; first += chunk) {
      const std::int64_t count = std::min(chunk, batch - first);
      cuda_detail::EmbeddingOp<T> op{out + first * dim, table, dim, {}};
      for (std::int64_t b = 0; b < count; ++b) op.index[b] = index[first + b];
      cuda_detail::for_each(count * dim, op);
    }
  }

  //! out[i] += in[i].
  template <class T>
  static void add_forward(T* out, const T* in, std::int64_t n) {
    cuda_detail::for_each(n, cuda_detail::AddOp<T>{out, in});
  }

  //! out[i] = a[i] - b[i].
  template <class T>
  static void difference_forward(T* out, const T* a, const T* b, std::int64_t n) {
    cuda_detail::for_each(n, cuda_detail::DifferenceOp<T>{out, a, b});
  }

  //! qkv (B, N, 3, nh, hd) -> q, k, v (B, nh, N, hd) with the per-sample bias `sample_bias`
  //! (B, 3D; may be null), qk-norm when weights are given, rotary cos/sin (N, hd/2) on q and k,
  //! and q multiplied by `q_scale`. hd <= 128.
  template <class T>
  static void qkv_split_forward(T* q, T* k, T* v, const T* qkv, const T* sample_bias, const T* q_norm_weight,
                                const T* q_norm_bias, const T* k_norm_weight, const T* k_norm_bias, double norm_eps,
                                const T* rotary_cos, const T* rotary_sin, std::int64_t batch, std::int64_t tokens,
                                std::int64_t heads, std::int64_t head_dim, T q_scale) {
    check_head_dim(head_dim);
    const std::int64_t items = batch * tokens * 3 * heads;
    if (items == 0) return;
    cuda_detail::qkv_split_kernel<T>
        <<<cuda_detail::head_blocks(items), 32 * cuda_detail::head_warps_per_block, 0, cuda_detail::current_stream()>>>(
            cuda_detail::QkvSplitArguments<T>{q, k, v, qkv, sample_bias, q_norm_weight, q_norm_bias, k_norm_weight,
                                              k_norm_bias, norm_eps, rotary_cos, rotary_sin, tokens, heads, head_dim,
                                              q_scale},
            items);
    cuda_detail::check_launch("tim::cuda qkv split kernel");
  }

  //! out (B, nh, tokens, hd) from rows `in_row_stride` apart, each head through prepare_head
  //! (norm when `norm_weight`, rotary when `rotary_cos`, times `scale`). hd <= 128.
  template <class T>
  static void split_heads_forward(T* out, const T* in, std::int64_t in_row_stride, const T* norm_weight,
                                  const T* norm_bias, double norm_eps, const T* rotary_cos, const T* rotary_sin,
                                  std::int64_t batch, std::int64_t tokens, std::int64_t heads, std::int64_t head_dim,
                                  T scale) {
    check_head_dim(head_dim);
    const std::int64_t items = batch * tokens * heads;
    if (items == 0) return;
    cuda_detail::split_heads_kernel<T>
        <<<cuda_detail::head_blocks(items), 32 * cuda_detail::head_warps_per_block, 0, cuda_detail::current_stream()>>>(
            out, in, in_row_stride, norm_weight, norm_bias, norm_eps, rotary_cos, rotary_sin, tokens, heads, head_dim,
            scale, items);
    cuda_detail::check_launch("tim::cuda head split kernel");
  }

  //! Self-attention: as many keys as queries.
  template <class T>
  static void attention_forward(T* out, const T* q, const T* k, const T* v, std::int64_t batch, std::int64_t heads,
                                std::int64_t tokens, std::int64_t head_dim, double scale) {
    attention_forward(out, q, k, v, batch, heads, tokens, tokens, head_dim, scale);
  }

  //! out (B, Nq, nh, hd) = softmax(scale q k^T) v with q (B, nh, Nq, hd), k and v
  //! (B, nh, Nk, hd); tiled with an online softmax, never an Nq x Nk buffer. hd <= 128.
  template <class T>
  static void attention_forward(T* out, const T* q, const T* k, const T* v, std::int64_t batch, std::int64_t heads,
                                std::int64_t query_tokens, std::int64_t key_tokens, std::int64_t head_dim,
                                double scale) {
    if (batch == 0 || query_tokens == 0) return;
    cuda_detail::attention(out, q, k, v, batch, heads, query_tokens, key_tokens, head_dim, scale);
  }

  // ------------------------------------------------------------------------------------------
  // Sampling operations (state in double, SPEC 6; the generator of tim/core/random.hpp)

  //! out (B, S) = standard normals: row b is the stream (seed, first_sample + b, step), element
  //! e its e-th number, the numbers random::fill_normal gives on the host (the Philox words are
  //! identical; Box-Muller's log/cos/sin may differ in the last bits from the host's libm).
  //! step = random::initial_noise_step gives tim::initial_noise.
  static void normal_forward(double* out, std::int64_t batch, std::int64_t per_sample, std::uint64_t seed,
                             std::uint64_t first_sample, std::uint32_t step) {
    const std::int64_t blocks = (per_sample + 3) / 4;
    cuda_detail::for_each(batch * blocks, math::NormalOp{out, per_sample, blocks, seed, first_sample, step});
  }
  //! F (2B, S) = (F_c, F_u): F_c <- F_u + scale (F_c - F_u) over the first `half` = B S values.
  static void guidance_forward(double* F, std::int64_t half, double scale) {
    cuda_detail::for_each(half, math::GuidanceOp<double>{F, half, scale});
  }
  //! x (n) = a x + b F: the deterministic transition with the transport's coefficients (t, r).
  static void transition_forward(double* x, const double* F, std::int64_t n, math::TransitionCoefficients<double> c) {
    cuda_detail::for_each(n, math::TransitionOp<double>{x, F, c});
  }
  //! x (B, S) = transport.stochastic_transition(x, F, t, r, s, eps) with eps of row b the stream
  //! (seed, streams[b], step); `streams` (B) is device memory. The stochastic step of tim::cpu.
  template <class Tr>
  static void stochastic_transition_forward(double* x, const double* F, const std::uint64_t* streams,
                                            std::int64_t batch, std::int64_t per_sample, const Tr& transport, double t,
                                            double r, double stochasticity, std::uint64_t seed, std::uint32_t step) {
    static_assert(Tr::has_stochastic_transition, "stochastic_transition_forward: the transport has no stochastic step");
    const std::int64_t blocks = (per_sample + 3) / 4;
    cuda_detail::for_each(batch * blocks, math::StochasticTransitionOp<Tr>{x, F, streams, per_sample, blocks, transport,
                                                                           t, r, stochasticity, seed, step});
  }

 private:
  static void check_head_dim(std::int64_t head_dim) {
    check(head_dim > 0 && head_dim <= cuda_detail::max_head_dim && head_dim % 2 == 0, "tim::cuda: head dim ",
          head_dim, " must be even and at most ", cuda_detail::max_head_dim);
  }
};

static_assert(Backend<cuda>, "tim::cuda must satisfy the backend contract (tim/core/backend.hpp)");

}  // namespace tim
