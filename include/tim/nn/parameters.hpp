// The parameters of a class-conditional TiM by released name, for training: a visitor over one
// or several networks of the same configuration at once (a model and its gradients; later the
// optimizer's moments and the EMA copy, which have the same structure), and the copies built on
// it: gradients of zeros shaped like the model, and a deep copy of a model's weights (a loaded
// model views its checkpoint, which may be a read-only mapping).
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "tim/core/error.hpp"
#include "tim/nn/c2i.hpp"
#include "tim/nn/config.hpp"

namespace tim::nn {

//! The gradients of a C2I network: a network of the same configuration whose tensors hold
//! dL/dtheta, so every gradient has its parameter's member and released name.
template <class T, class Backend = cpu>
using C2IGradients = C2IModel<T, Backend>;

namespace detail {

//! Throws unless a linear weight is held in the network's type (training cannot use stored 16-bit ones).
inline void check_trainable(const std::string& prefix, WeightStorage storage) {
  check(storage == WeightStorage::value, prefix, ".weight: training needs every weight in the network's type, this "
        "one is held as stored (", weight_storage_name(storage), "): load with {.weights = tim::nn::WeightLoading::widened}");
}

template <class F, class... Linears>
void visit_linear(F& f, const std::string& prefix, Linears&... linears) {
  (check_trainable(prefix, linears.storage), ...);
  f(prefix + ".weight", linears.weight...);
  if (!(linears.bias.empty_tensor() || ...)) f(prefix + ".bias", linears.bias...);
}
template <class F, class... SwiGLUs>
void visit_swiglu(F& f, const std::string& prefix, SwiGLUs&... modules) {
  visit_linear(f, prefix + ".fc1_g", modules.fc1_g...);
  visit_linear(f, prefix + ".fc1_x", modules.fc1_x...);
  visit_linear(f, prefix + ".fc2", modules.fc2...);
}
template <class F, class... Embedders>
void visit_embedder(F& f, const std::string& prefix, Embedders&... embedders) {
  visit_linear(f, prefix + ".mlp.0", embedders.linear_1...);
  visit_linear(f, prefix + ".mlp.2", embedders.linear_2...);
}
template <class F, class... Norms>
void visit_norm(F& f, const std::string& prefix, Norms&... norms) {
  if ((norms.present() && ...)) {
    f(prefix + ".weight", norms.weight...);
    f(prefix + ".bias", norms.bias...);
  }
}

}  // namespace detail

//! Calls f(name, tensor_of_first, tensor_of_second, ...) for every parameter of the C2I networks
//! `first, rest...` (same configuration), in checkpoint order, under its released name.
//! `x_embedder.proj.weight` is passed as held, (D, C p p): the released (D, C, p, p) in the same
//! row-major order. Example: the global squared gradient norm,
//!   for_each_parameter([&](const std::string&, auto& g) { ... }, grads);
template <class F, class First, class... Rest>
void for_each_parameter(F&& f, First& first, Rest&... rest) {
  const auto& c = first.config;
  f(std::string(keys::x_embedder) + ".proj.weight", first.x_embedder.proj.weight, rest.x_embedder.proj.weight...);
  f(std::string(keys::x_embedder) + ".proj.bias", first.x_embedder.proj.bias, rest.x_embedder.proj.bias...);
  detail::visit_embedder(f, keys::t_embedder, first.t_embedder, rest.t_embedder...);
  if (c.separate_delta_embedder) detail::visit_embedder(f, keys::delta_embedder, first.delta_embedder, rest.delta_embedder...);
  f(std::string(keys::label_table), first.label_table, rest.label_table...);
  for (std::size_t i = 0; i < first.blocks.size(); ++i) {
    const std::string b = keys::block(static_cast<std::int64_t>(i));
    detail::visit_swiglu(f, b + ".adaLN_modulation", first.blocks[i].adaln, rest.blocks[i].adaln...);
    detail::visit_linear(f, b + ".attn.qkv", first.blocks[i].attn.qkv, rest.blocks[i].attn.qkv...);
    if (c.interval_qkv) detail::visit_linear(f, b + ".attn.qkv_d", first.blocks[i].attn.qkv_d, rest.blocks[i].attn.qkv_d...);
    detail::visit_norm(f, b + ".attn.q_norm", first.blocks[i].attn.q_norm, rest.blocks[i].attn.q_norm...);
    detail::visit_norm(f, b + ".attn.k_norm", first.blocks[i].attn.k_norm, rest.blocks[i].attn.k_norm...);
    detail::visit_linear(f, b + ".attn.proj", first.blocks[i].attn.proj, rest.blocks[i].attn.proj...);
    detail::visit_swiglu(f, b + ".mlp", first.blocks[i].mlp, rest.blocks[i].mlp...);
  }
  detail::visit_swiglu(f, std::string(keys::final_layer) + ".adaLN_modulation", first.final_layer.adaln,
                       rest.final_layer.adaln...);
  detail::visit_linear(f, std::string(keys::final_layer) + ".linear", first.final_layer.linear, rest.final_layer.linear...);
}

//! Checks that `grads` is shaped like `model` (every parameter present in both with the same
//! shape, the same depth): a tim::Error "`where`: '`argument`' must be shaped like the model"
//! naming the first parameter that differs.
template <class T, class Backend>
void check_shaped_like(const C2IModel<T, Backend>& model, const C2IGradients<T, Backend>& grads, const char* where,
                       const char* argument) {
  check(grads.blocks.size() == model.blocks.size(), where, ": '", argument, "' must be shaped like the model (zero_gradients_like): ",
        grads.blocks.size(), " blocks, the model has ", model.blocks.size());
  std::size_t in_model = 0, in_both = 0;
  for_each_parameter([&](const std::string&, const Tensor<T, Backend>&) { ++in_model; }, model);
  for_each_parameter(
      [&](const std::string& name, const Tensor<T, Backend>& p, const Tensor<T, Backend>& g) {
        ++in_both;
        check(p.shape() == g.shape(), where, ": '", argument, "' must be shaped like the model (zero_gradients_like): ", name,
              " is ", g.shape(), ", the parameter is ", p.shape());
      },
      model, grads);
  check(in_model == in_both, where, ": '", argument,
        "' must be shaped like the model (zero_gradients_like): it lacks a bias the model has");
}

//! Gradients for `model`: the same configuration and shapes, every tensor zero.
template <class T, class Backend>
C2IGradients<T, Backend> zero_gradients_like(const C2IModel<T, Backend>& model) {
  C2IGradients<T, Backend> grads = model;  // shallow: the tensors are replaced below
  for_each_parameter([](const std::string&, Tensor<T, Backend>& g) { g = Tensor<T, Backend>::zeros(g.shape()); },
                     grads);
  return grads;
}

//! Sets every gradient to zero (before the backward of a step: gradients accumulate).
template <class T, class Backend>
void zero_gradients(C2IGradients<T, Backend>& grads) {
  for_each_parameter(
      [](const std::string&, Tensor<T, Backend>& g) {
        Backend::fill(g.data(), static_cast<std::size_t>(g.numel()), T(0));
      },
      grads);
}

//! A network with its own copy of every weight (owned, writable memory), e.g. for training a
//! model loaded from a memory-mapped checkpoint.
template <class T, class Backend>
C2IModel<T, Backend> clone_parameters(const C2IModel<T, Backend>& model) {
  C2IModel<T, Backend> copy = model;
  for_each_parameter([](const std::string&, Tensor<T, Backend>& p) { p = p.clone(); }, copy);
  return copy;
}

}  // namespace tim::nn
