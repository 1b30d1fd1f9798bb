// A fresh class-conditional TiM for training, with the released (DiT-style) initialisation that
// tools/reference/train.py's init_weights follows:
//   - every linear weight xavier-uniform, U(-a, a) with a = sqrt(6 / (fan_in + fan_out)), every
//     bias 0; the patch embedding like a linear over its (D, C p p) view;
//   - the label table and both linears of the time and interval embedders N(0, 0.02^2);
//   - the adaLN output linear (fc2) of every block and of the final layer, and the final linear,
//     all 0 (so the network starts at F = 0);
//   - q/k norms weight 1, bias 0.
// The numbers come from tim's counter-based generator (tim/core/random.hpp): parameter i (in
// nn::for_each_parameter order) draws from the stream (seed, sample = i, step = init_stream), so
// the weights depend only on the configuration and the seed (not on threads). PyTorch's generator
// gives other numbers from the same distributions.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/core/random.hpp"
#include "tim/io/safetensors.hpp"
#include "tim/math/embedding.hpp"
#include "tim/nn/c2i.hpp"
#include "tim/nn/config.hpp"
#include "tim/nn/parameters.hpp"

namespace tim::train {

//! The `step` word of the initialisation's streams ("INIT").
inline constexpr std::uint32_t init_stream = 0x494E4954u;

//! The configuration of a released-style C2I network: qk-norm, interval-aware qkv (`qkv_d`), a
//! separate delta embedder and `new_condition` t-r unless changed afterwards; Hm = (int(D
//! mlp_ratio) 2) // 3 and the final adaLN width D / 2, as released. Checks every value.
inline nn::C2IConfig c2i_training_config(std::int64_t in_channels, std::int64_t hidden, std::int64_t depth,
                                         std::int64_t num_heads, std::int64_t patch, std::int64_t adaln_hidden,
                                         double mlp_ratio, std::int64_t num_classes) {
  check(in_channels >= 1, "network: in_channels must be >= 1, got ", in_channels);
  check(hidden >= 2 && hidden % 2 == 0, "network: hidden_size must be an even number >= 2, got ", hidden);
  check(depth >= 1, "network: depth must be >= 1, got ", depth);
  check(num_heads >= 1 && hidden % num_heads == 0, "network: num_heads must divide hidden_size ", hidden, ", got ",
        num_heads);
  check((hidden / num_heads) % 4 == 0, "network: the head dimension hidden_size / num_heads = ", hidden / num_heads,
        " must be a multiple of 4 (the 2-D rotary embedding)");
  check(patch >= 1, "network: patch_size must be >= 1, got ", patch);
  check(adaln_hidden >= 1, "network: lora_hidden_size (the adaLN SwiGLU width) must be >= 1, got ", adaln_hidden);
  check(std::isfinite(mlp_ratio) && mlp_ratio > 0, "network: mlp_ratio must be a positive number, got ", mlp_ratio);
  check(num_classes >= 1, "network: num_classes must be >= 1, got ", num_classes);
  nn::C2IConfig c;
  c.in_channels = in_channels;
  c.out_channels = in_channels;
  c.hidden = hidden;
  c.depth = depth;
  c.num_heads = num_heads;
  c.patch = patch;
  c.adaln_hidden = adaln_hidden;
  c.mlp_hidden = (static_cast<std::int64_t>(static_cast<double>(hidden) * mlp_ratio) * 2) / 3;
  check(c.mlp_hidden >= 1, "network: mlp_ratio ", mlp_ratio, " gives an MLP width of 0");
  c.final_adaln_hidden = hidden / 2;
  c.qk_norm = true;
  c.interval_qkv = true;
  c.separate_delta_embedder = true;
  c.new_condition = nn::NewCondition::t_minus_r;
  c.num_classes = num_classes;
  return c;
}

namespace detail {

inline std::string keys_patch_weight() { return std::string(nn::keys::x_embedder) + ".proj.weight"; }

//! A float32 checkpoint of zeros holding every tensor of a C2I network of configuration `c`.
inline io::SafetensorsFile zero_c2i_checkpoint(const nn::C2IConfig& c) {
  io::SafetensorsWriter writer;
  writer.set_metadata("num_heads", std::to_string(c.num_heads));
  writer.set_metadata("new_condition", std::string(nn::new_condition_name(c.new_condition)));
  std::vector<float> zeros;
  const auto add = [&](const std::string& name, Shape shape) {
    zeros.assign(static_cast<std::size_t>(shape.numel()), 0.0f);
    writer.add(name, DType::F32, std::move(shape), zeros.data());
  };
  const auto linear = [&](const std::string& prefix, std::int64_t in, std::int64_t out, bool bias = true) {
    add(prefix + ".weight", {out, in});
    if (bias) add(prefix + ".bias", {out});
  };
  const auto swiglu = [&](const std::string& prefix, std::int64_t in, std::int64_t hidden, std::int64_t out) {
    linear(prefix + ".fc1_g", in, hidden);
    linear(prefix + ".fc1_x", in, hidden);
    linear(prefix + ".fc2", hidden, out);
  };
  const auto D = c.hidden, p = c.patch, C = c.in_channels, hd = c.head_dim();
  add(keys_patch_weight(), {D, C, p, p});
  add(std::string(nn::keys::x_embedder) + ".proj.bias", {D});
  std::vector<std::string> embedders{nn::keys::t_embedder};
  if (c.separate_delta_embedder) embedders.emplace_back(nn::keys::delta_embedder);
  for (const auto& e : embedders) {
    linear(e + ".mlp.0", math::timestep_features, D);
    linear(e + ".mlp.2", D, D);
  }
  add(nn::keys::label_table, {c.num_classes + 1, D});
  for (std::int64_t i = 0; i < c.depth; ++i) {
    const std::string b = nn::keys::block(i);
    swiglu(b + ".adaLN_modulation", D, c.adaln_hidden, 6 * D);
    linear(b + ".attn.qkv", D, 3 * D);
    if (c.interval_qkv) linear(b + ".attn.qkv_d", D, 3 * D, false);
    if (c.qk_norm)
      for (const char* norm : {".attn.q_norm", ".attn.k_norm"}) {
        add(b + norm + ".weight", {hd});
        add(b + norm + ".bias", {hd});
      }
    linear(b + ".attn.proj", D, D);
    swiglu(b + ".mlp", D, c.mlp_hidden, D);
  }
  swiglu(std::string(nn::keys::final_layer) + ".adaLN_modulation", D, c.final_adaln_hidden, 2 * D);
  linear(std::string(nn::keys::final_layer) + ".linear", D, p * p * C);
  return io::SafetensorsFile::from_bytes(writer.to_bytes(), "initial C2I network");
}

inline bool ends_with(const std::string& text, const std::string& tail) {
  return text.size() >= tail.size() && text.compare(text.size() - tail.size(), tail.size(), tail) == 0;
}

//! How train.py's init_weights sets the parameter `name` (released name).
enum class InitRule { zero, one, xavier, normal_002 };

inline InitRule init_rule(const std::string& name) {
  const std::string final_prefix = std::string(nn::keys::final_layer) + ".";
  if (ends_with(name, ".bias")) return InitRule::zero;
  if (name.find("_norm.") != std::string::npos) return InitRule::one;  // q_norm / k_norm weights
  if (ends_with(name, "adaLN_modulation.fc2.weight")) return InitRule::zero;
  if (name == final_prefix + "linear.weight") return InitRule::zero;
  if (name == nn::keys::label_table) return InitRule::normal_002;
  for (const char* e : {nn::keys::t_embedder, nn::keys::delta_embedder})
    if (name.rfind(std::string(e) + ".mlp.", 0) == 0) return InitRule::normal_002;
  return InitRule::xavier;
}

}  // namespace detail

//! A fresh C2I network of configuration `c` (e.g. from c2i_training_config) with the released
//! initialisation (top of this file), weights owned and writable, drawn from `seed`.
template <class T>
nn::C2IModel<T> init_c2i(const nn::C2IConfig& c, std::uint64_t seed) {
  const auto file = detail::zero_c2i_checkpoint(c);
  auto model = nn::clone_parameters(nn::load_c2i<T>(file));
  model.config.provenance.clear();
  std::uint64_t index = 0;
  nn::for_each_parameter(
      [&](const std::string& name, Tensor<T>& tensor) {
        const std::uint64_t sample = index++;
        T* data = tensor.data();
        const auto n = static_cast<std::uint64_t>(tensor.numel());
        switch (detail::init_rule(name)) {
          case detail::InitRule::zero:
            for (std::uint64_t i = 0; i < n; ++i) data[i] = T(0);
            break;
          case detail::InitRule::one:
            for (std::uint64_t i = 0; i < n; ++i) data[i] = T(1);
            break;
          case detail::InitRule::normal_002: {
            std::vector<double> values(n);
            random::fill_normal(values.data(), n, seed, sample, init_stream);
            for (std::uint64_t i = 0; i < n; ++i) data[i] = static_cast<T>(0.02 * values[i]);
            break;
          }
          case detail::InitRule::xavier: {
            // Rank 2 as held (the patch embedding too: (D, C p p)): fan_out rows, fan_in columns.
            check(tensor.rank() == 2, "init_c2i: '", name, "' is not a matrix");
            const double fan_out = static_cast<double>(tensor.dim(0)), fan_in = static_cast<double>(tensor.dim(1));
            const double bound = std::sqrt(6.0 / (fan_in + fan_out));
            for (std::uint64_t i = 0; i < n; i += 4) {
              const random::Words4 w = random::stream_block(seed, sample, init_stream, static_cast<std::uint32_t>(i / 4));
              for (std::uint64_t lane = 0; lane < 4 && i + lane < n; ++lane)
                data[i + lane] = static_cast<T>(bound * (2.0 * random::uniform_open(w.v[lane]) - 1.0));
            }
            break;
          }
        }
      },
      model);
  return model;
}

}  // namespace tim::train
