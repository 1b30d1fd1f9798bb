// The building blocks of the TiM network, each a small struct of weights with a forward that
// calls the backend's static operations. Weights are views (memory-mapped where possible).
//
// Shape legend: B batch, N tokens, D hidden, R rows (B or B*N), L adaLN hidden width.
#pragma once

#include <cstdint>
#include <set>
#include <string>

#include "tim/core/tensor.hpp"
#include "tim/math/embedding.hpp"

namespace tim::nn {

//! Records which checkpoint tensors a loader consumed, so the rest can be reported as ignored.
//! `Source` provides `contains(name)`, `info(name).shape` and `load<T>(name, shape)`
//! (tim::io::SafetensorsFile does).
template <class Source>
struct ParameterReader {
  const Source& source;
  std::set<std::string> used;

  bool has(const std::string& name) const { return source.contains(name); }
  //! Tensor `name` of shape `shape` in `Backend`'s memory (read on the host, then copied to
  //! the backend unless it is the CPU one).
  template <class T, class Backend = cpu>
  Tensor<T, Backend> take(const std::string& name, const Shape& shape) {
    check(source.contains(name), "checkpoint: missing tensor '", name, "' (expected shape ", shape, ")");
    used.insert(name);
    return to_backend<Backend>(source.template load<T>(name, shape));
  }
  Shape shape(const std::string& name) const {
    check(source.contains(name), "checkpoint: missing tensor '", name, "'");
    return source.info(name).shape;
  }
};

//! y (R, out) = x (R, in) W^T + b, with W (out, in) and b (out) as PyTorch's nn.Linear.
template <class T, class Backend>
struct Linear {
  Tensor<T, Backend> weight;  // (out, in)
  Tensor<T, Backend> bias;    // (out), or empty when the layer has no bias
  std::int64_t in_features = 0, out_features = 0;

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t in, std::int64_t out, bool with_bias = true) {
    in_features = in;
    out_features = out;
    weight = reader.template take<T, Backend>(prefix + ".weight", {out, in});
    if (with_bias) bias = reader.template take<T, Backend>(prefix + ".bias", {out});
  }
  //! y (rows, out) = x (rows, in) W^T + b; with `accumulate` the result is added to y.
  void forward(T* y, const T* x, std::int64_t rows, bool accumulate = false) const {
    Backend::linear_forward(y, x, weight.data(), bias.empty_tensor() ? nullptr : bias.data(), rows,
                            in_features, out_features, accumulate);
  }
  std::int64_t parameter_count() const { return weight.numel() + bias.numel(); }
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
