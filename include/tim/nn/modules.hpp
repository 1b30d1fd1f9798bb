// The building blocks of the TiM network, each a small struct of weights with a forward that
// calls the backend's static operations. Weights are views (memory-mapped where possible).
//
// A Linear's weight matrix keeps the dtype it has in the checkpoint (WeightStorage, decided per
// tensor at load): float32 as T, bfloat16 or float16 as 16-bit views multiplied directly by the
// backend (tim::cpu's linear_forward overloads, tim/cpu/gemm_bf16.hpp) where it can, widened to
// T where it cannot (tim::cuda) or when LoadOptions asks for it. q8_0 weights (io/q8_0.hpp: int8
// values and float16 scales per 32 inputs) stay as views of the mapping where the backend
// multiplies them (tim::cpu with T = float: cpu_gemm::linear_forward_q8, which also quantises the
// activations per block of 32); elsewhere, or when LoadOptions asks for widened weights, they are
// dequantised to T on load (exactly: int8 times a float16 scale is a float).
//
// Extension point for another storage kind (q8_0 was added this way): add an enumerator to
// WeightStorage (and its name to weight_storage_name), a member holding that kind in Linear, a
// branch in Linear::load_weight saying which checkpoint tensors become it, and a case in
// Linear::forward calling its Backend::linear_forward overload. The switches have no default,
// so -Wswitch points at every place a new kind is still missing.
//
// Shape legend: B batch, N tokens, D hidden, R rows (B or B*N), L adaLN hidden width.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "tim/core/dtype.hpp"
#include "tim/core/precision.hpp"
#include "tim/core/q8_0.hpp"
#include "tim/core/tensor.hpp"
#include "tim/io/q8_0.hpp"
#include "tim/math/embedding.hpp"

namespace tim::nn {

//! How a Linear's weight matrix W (out, in) is held: `value` in the network's type T; `bfloat16`
//! or `float16` as stored in the checkpoint (a view of the mapping when aligned); `q8_0` as the
//! checkpoint's int8 values and float16 block scales (io::Q8_0Tensor, views of the mapping).
enum class WeightStorage : std::uint8_t { value, bfloat16, float16, q8_0 };

//! "value" (the network's type), "bfloat16", "float16" or "q8_0".
inline const char* weight_storage_name(WeightStorage storage) {
  switch (storage) {
    case WeightStorage::value: return "value";
    case WeightStorage::bfloat16: return "bfloat16";
    case WeightStorage::float16: return "float16";
    case WeightStorage::q8_0: return "q8_0";
  }
  return "?";
}

//! What a loader does with the linear weights of a TiM checkpoint.
//! Example: `tim::load_c2i<float>(path, {}, {.weights = tim::nn::WeightLoading::widened});`
enum class WeightLoading : std::uint8_t {
  //! bfloat16/float16 and q8_0 linear weights stay as stored where the backend multiplies them
  //! directly (tim::cpu with T = float): half (q8_0: about 0.27x) the memory of float, read from
  //! the mapping.
  stored,
  //! Every weight converted to T on load, q8_0 weights dequantised (twice the memory for 16-bit
  //! files, about 3.8x for q8_0 ones; what training and backends without such products need).
  widened,
};

//! "stored" or "float" (the command line's --weights), as parse_weight_loading reads them.
inline const char* weight_loading_name(WeightLoading w) { return w == WeightLoading::stored ? "stored" : "float"; }
//! "stored" or "float" (also "widened"); throws tim::Error naming `what` otherwise.
inline WeightLoading parse_weight_loading(std::string_view name, std::string_view what = "weights") {
  if (name == "stored") return WeightLoading::stored;
  if (name == "float" || name == "widened") return WeightLoading::widened;
  fail(what, ": expected \"stored\" or \"float\", got \"", name, "\"");
}

//! Options of load_c2i / load_t2i beyond the configuration.
struct LoadOptions {
  WeightLoading weights = WeightLoading::stored;
  //! The precision of the products with bfloat16 weights (tim::Precision): float32 (weights
  //! widened exactly, float sums) or bfloat16 (activations rounded to bfloat16 too, where the
  //! CPU has bfloat16 dot products; float32 elsewhere). Float and float16 weights: always float32.
  //! q8_0 weights: does not apply (int8 products of weights and activations quantised per block).
  Precision precision = Precision::float32;
};

//! Records which checkpoint tensors a loader consumed, so the rest can be reported as ignored.
//! `Source` provides `contains(name)`, `info(name).shape` and `load<T>(name, shape)`
//! (tim::io::SafetensorsFile does, and its q8_0 layout: io::read_q8_0_layout).
template <class Source>
struct ParameterReader {
  const Source& source;
  std::set<std::string> used;
  //! Read by Linear::load. The decoders (vae/) keep this default: every weight in T.
  LoadOptions options{.weights = WeightLoading::widened};
  //! The source's q8_0 tensors, read (and checked) on first use; empty for a source without them.
  std::optional<io::Q8_0Layout> q8_0{};
  //! Whether Source can hold q8_0 tensors (io::read_q8_0_layout and io::load_q8_0 read it).
  static constexpr bool has_q8_0 = requires(const Source& s) { io::read_q8_0_layout(s); };

  bool has(const std::string& name) const { return source.contains(name); }
  //! The q8_0 layout of the source (io::read_q8_0_layout, once); an empty one for a source type
  //! that has none.
  const io::Q8_0Layout& q8_0_layout() {
    if (!q8_0) {
      if constexpr (has_q8_0)
        q8_0 = io::read_q8_0_layout(source);
      else
        q8_0.emplace();
    }
    return *q8_0;
  }
  //! Whether tensor `name` is a q8_0 matrix (with a NAME.q8_0_scale companion).
  bool is_q8_0(const std::string& name) { return q8_0_layout().contains(name); }
  //! q8_0 matrix `name` of shape `shape` (out, in) as stored (views of the mapping, checked by
  //! io::load_q8_0); `name` and its scales are marked used.
  io::Q8_0Tensor take_q8_0(const std::string& name, const Shape& shape) {
    static_assert(has_q8_0, "take_q8_0: this source type holds no q8_0 tensors");
    io::Q8_0Tensor t = io::load_q8_0(source, q8_0_layout(), name, shape);
    used.insert(name);
    used.insert(io::q8_0_scale_name(name));
    return t;
  }
  //! Tensor `name` of shape `shape` in `Backend`'s memory (read on the host, then copied to
  //! the backend unless it is the CPU one). A q8_0 matrix is dequantised to T (a floating type or
  //! bfloat16/float16, e.g. a CUDA network's storage).
  template <class T, class Backend = cpu>
  Tensor<T, Backend> take(const std::string& name, const Shape& shape) {
    check(source.contains(name), "checkpoint: missing tensor '", name, "' (expected shape ", shape, ")");
    if constexpr (has_q8_0 && !std::is_integral_v<T>) {
      if (is_q8_0(name)) return to_backend<Backend>(dequantised<T>(take_q8_0(name, shape)));
    }
    used.insert(name);
    return to_backend<Backend>(source.template load<T>(name, shape));
  }
  //! The stored dtype of tensor `name`.
  DType dtype(const std::string& name) const {
    check(source.contains(name), "checkpoint: missing tensor '", name, "'");
    return source.info(name).dtype;
  }
  Shape shape(const std::string& name) const {
    check(source.contains(name), "checkpoint: missing tensor '", name, "'");
    return source.info(name).shape;
  }

 private:
  //! W[n][k] = q[n][k] * scale (tim::dequantize_row_q8_0, exact in float), as T.
  template <class T>
  static Tensor<T, cpu> dequantised(const io::Q8_0Tensor& t) {
    const std::int64_t N = t.q.shape()[0], K = t.q.shape()[1], blocks = q8_0_blocks(K);
    Tensor<T, cpu> w = Tensor<T, cpu>::empty(t.q.shape());
    std::vector<float> row(static_cast<std::size_t>(K));
    for (std::int64_t n = 0; n < N; ++n) {
      dequantize_row_q8_0(row.data(), t.q.data() + n * K, t.scales.data() + n * blocks, K);
      for (std::int64_t k = 0; k < K; ++k) w.data()[n * K + k] = static_cast<T>(row[static_cast<std::size_t>(k)]);
    }
    return w;
  }
};

//! Whether Backend multiplies T activations by weights stored as W directly (tim::cpu's 16-bit
//! linear_forward overloads for T = float).
template <class T, class Backend, class W>
inline constexpr bool backend_reads_weights =
    !std::is_same_v<W, T> && requires(T* out, const T* in, const W* w, std::int64_t n, Precision p) {
      Backend::linear_forward(out, in, w, static_cast<const T*>(nullptr), n, n, n, false, p);
    };

//! Whether Backend multiplies T activations by q8_0 weights directly (tim::cpu for T = float).
template <class T, class Backend>
inline constexpr bool backend_reads_q8_0 = requires(T* out, const T* in, const Q8Weight& w, std::int64_t n) {
  Backend::linear_forward(out, in, w, static_cast<const T*>(nullptr), n, n, n, false);
};

//! y (R, out) = x (R, in) W^T + b, with W (out, in) and b (out) as PyTorch's nn.Linear. W is
//! held in one of the WeightStorage kinds (`storage` says which member holds it); b is in T.
template <class T, class Backend>
struct Linear {
  WeightStorage storage = WeightStorage::value;
  Tensor<T, Backend> weight;                // (out, in) when storage == value
  Tensor<bfloat16, Backend> weight_bf16;    // (out, in) when storage == bfloat16
  Tensor<float16, Backend> weight_f16;      // (out, in) when storage == float16
  io::Q8_0Tensor weight_q8;                 // (out, in) when storage == q8_0 (host memory: tim::cpu only)
  Tensor<T, Backend> bias;                  // (out), or empty when the layer has no bias
  std::int64_t in_features = 0, out_features = 0;
  //! The precision of the products with bfloat16 weights (LoadOptions::precision; q8_0 weights
  //! ignore it).
  Precision precision = Precision::float32;

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t in, std::int64_t out, bool with_bias = true) {
    in_features = in;
    out_features = out;
    load_weight(reader, prefix + ".weight", {out, in});
    if (with_bias) bias = reader.template take<T, Backend>(prefix + ".bias", {out});
  }
  //! W from tensor `name`: kept in its stored 16-bit dtype or as q8_0 when the reader's options
  //! and the backend allow (backend_reads_weights, backend_reads_q8_0), converted to T otherwise
  //! (q8_0: dequantised, ParameterReader::take).
  template <class Reader>
  void load_weight(Reader& reader, const std::string& name, const Shape& shape) {
    precision = reader.options.precision;
    const bool keep = reader.options.weights == WeightLoading::stored;
    // A missing tensor falls through to take(), whose message names the expected shape.
    const DType stored = reader.has(name) ? reader.dtype(name) : dtype_of<T>();
    if constexpr (backend_reads_q8_0<T, Backend> && Reader::has_q8_0) {
      if (keep && stored == DType::I8 && reader.is_q8_0(name)) {
        weight_q8 = reader.take_q8_0(name, shape);
        storage = WeightStorage::q8_0;
        return;
      }
    }
    if constexpr (backend_reads_weights<T, Backend, bfloat16>) {
      if (keep && stored == DType::BF16) {
        weight_bf16 = reader.template take<bfloat16, Backend>(name, shape);
        storage = WeightStorage::bfloat16;
        return;
      }
    }
    if constexpr (backend_reads_weights<T, Backend, float16>) {
      if (keep && stored == DType::F16) {
        weight_f16 = reader.template take<float16, Backend>(name, shape);
        storage = WeightStorage::float16;
        return;
      }
    }
    weight = reader.template take<T, Backend>(name, shape);
    storage = WeightStorage::value;
  }
  //! y (rows, out) = x (rows, in) W^T + b; with `accumulate` the result is added to y.
  void forward(T* y, const T* x, std::int64_t rows, bool accumulate = false) const {
    const T* b = bias.empty_tensor() ? nullptr : bias.data();
    switch (storage) {
      case WeightStorage::value:
        Backend::linear_forward(y, x, weight.data(), b, rows, in_features, out_features, accumulate);
        return;
      case WeightStorage::bfloat16: return forward_stored(weight_bf16, y, x, b, rows, accumulate);
      case WeightStorage::float16: return forward_stored(weight_f16, y, x, b, rows, accumulate);
      case WeightStorage::q8_0:
        // Precision does not apply: the kernel quantises x per block of 32 and sums int8 products.
        if constexpr (backend_reads_q8_0<T, Backend>)
          return Backend::linear_forward(y, x, weight_q8.view(), b, rows, in_features, out_features, accumulate);
        else
          fail("linear: weights stored as q8_0 on a backend that cannot multiply them");
    }
  }
  //! The weight matrix's elements (whichever member holds it).
  std::int64_t weight_count() const {
    return weight.numel() + weight_bf16.numel() + weight_f16.numel() + weight_q8.q.numel();
  }
  std::int64_t parameter_count() const { return weight_count() + bias.numel(); }

 private:
  template <class W>
  void forward_stored(const Tensor<W, Backend>& w, T* y, const T* x, const T* b, std::int64_t rows,
                      bool accumulate) const {
    if constexpr (backend_reads_weights<T, Backend, W>)
      Backend::linear_forward(y, x, w.data(), b, rows, in_features, out_features, accumulate, precision);
    else
      fail("linear: weights stored as ", dtype_name(dtype_of<W>()), " on a backend that cannot multiply them");
  }
};

//! SwiGLU MLP: fc2(silu(fc1_g(u)) * fc1_x(u)), used by adaLN modulation and the block MLP.
template <class T, class Backend>
struct SwiGLU {
  Linear<T, Backend> fc1_g, fc1_x, fc2;

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t in, std::int64_t hidden, std::int64_t out) {
    fc1_g.load(reader, prefix + ".fc1_g", in, hidden);
    fc1_x.load(reader, prefix + ".fc1_x", in, hidden);
    fc2.load(reader, prefix + ".fc2", hidden, out);
  }
  std::int64_t hidden() const { return fc1_g.out_features; }
  //! y (rows, out) from u (rows, in); `gate`, `value` are scratch of (rows, hidden) each.
  void forward(T* y, const T* u, std::int64_t rows, T* gate, T* value) const {
    fc1_g.forward(gate, u, rows);
    fc1_x.forward(value, u, rows);
    Backend::swiglu_forward(gate, gate, value, rows, hidden(), hidden(), hidden());
    fc2.forward(y, gate, rows);
  }
  std::int64_t parameter_count() const {
    return fc1_g.parameter_count() + fc1_x.parameter_count() + fc2.parameter_count();
  }
};

//! Sinusoidal features of a scalar, then Linear(256 -> D), SiLU, Linear(D -> D) (SPEC 3).
template <class T, class Backend>
struct TimestepEmbedder {
  Linear<T, Backend> linear_1, linear_2;  // checkpoint names mlp.0 and mlp.2

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t dim) {
    linear_1.load(reader, prefix + ".mlp.0", math::timestep_features, dim);
    linear_2.load(reader, prefix + ".mlp.2", dim, dim);
  }
  //! e (B, D) from scalars s (B); `features` (B, 256) and `hidden` (B, D) are scratch.
  void forward(T* e, const T* s, std::int64_t batch, T* features, T* hidden) const {
    Backend::timestep_features_forward(features, s, batch);
    linear_1.forward(hidden, features, batch);
    Backend::silu_forward(hidden, hidden, batch * linear_1.out_features);
    linear_2.forward(e, hidden, batch);
  }
  std::int64_t parameter_count() const { return linear_1.parameter_count() + linear_2.parameter_count(); }
};

//! LayerNorm affine parameters (the q/k norms); the no-affine norms need no struct.
template <class T, class Backend>
struct LayerNormWeights {
  Tensor<T, Backend> weight, bias;  // (cols) each
  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t cols) {
    weight = reader.template take<T, Backend>(prefix + ".weight", {cols});
    bias = reader.template take<T, Backend>(prefix + ".bias", {cols});
  }
  bool present() const { return !weight.empty_tensor(); }
  //! The pointers a backend operation takes: null when the norm is absent.
  const T* weight_or_null() const { return present() ? weight.data() : nullptr; }
  const T* bias_or_null() const { return present() ? bias.data() : nullptr; }
  std::int64_t parameter_count() const { return weight.numel() + bias.numel(); }
};

}  // namespace tim::nn
