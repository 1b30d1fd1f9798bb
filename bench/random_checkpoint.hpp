// A parameter source with random weights, for benchmarks that need a TiM network of a real
// size without a real checkpoint. It answers the reads tim::nn::load_c2i makes of a Source
// (contains, info, tensors, metadata, load<T>) under exactly the released parameter names
// (SPEC 3), and generates each tensor's values only when load() asks for it, so nothing but the
// loaded model itself is held in memory (TiM-XL/2 in float32 is about 2.6 GB).
//
// Values: weights and biases ~ N(0, 0.02^2); LayerNorm weights (attn.q_norm/k_norm) 1 + N(0, 0.02^2),
// deterministic per (seed, tensor name) as bench/random_source.hpp generates them. With
// `linear_dtype` BF16 or F16 the linear layers' weight matrices are declared (and generated) in
// that dtype, as a converted checkpoint stores them; loaded as float they are the rounded values.
//
// Example:
//   tim_bench::RandomCheckpoint source(tim_bench::tim_xl2_config());
//   auto model = tim::nn::load_c2i<float>(source);
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "random_source.hpp"
#include "tim/core/cast.hpp"
#include "tim/core/error.hpp"
#include "tim/math/embedding.hpp"
#include "tim/nn/config.hpp"

namespace tim_bench {

//! Fills in the derived widths of a released-style C2I configuration: Hm = (int(D * 4) * 2) // 3,
//! final adaLN hidden D / 2, out channels C, qk_norm, interval qkv and the delta embedder.
inline tim::nn::C2IConfig released_style_config(std::int64_t hidden, std::int64_t depth, std::int64_t heads,
                                                std::int64_t patch, std::int64_t adaln_hidden,
                                                std::int64_t channels = 4, std::int64_t num_classes = 1000) {
  tim::nn::C2IConfig c;
  c.in_channels = channels;
  c.out_channels = channels;
  c.hidden = hidden;
  c.depth = depth;
  c.num_heads = heads;
  c.patch = patch;
  c.num_classes = num_classes;
  c.adaln_hidden = adaln_hidden;
  c.mlp_hidden = (static_cast<std::int64_t>(static_cast<double>(hidden) * 4.0) * 2) / 3;
  c.final_adaln_hidden = hidden / 2;
  c.qk_norm = true;
  c.interval_qkv = true;
  c.separate_delta_embedder = true;
  c.new_condition = tim::nn::NewCondition::t_minus_r;
  return c;
}

//! TiM-B/4: D 768, depth 12, 12 heads, p 4, L 256, C 4, 1000 classes.
inline tim::nn::C2IConfig tim_b4_config() { return released_style_config(768, 12, 12, 4, 256); }
//! TiM-XL/2 (256 px): D 1152, depth 28, 16 heads, p 2, L 384, C 4, 1000 classes.
inline tim::nn::C2IConfig tim_xl2_config() { return released_style_config(1152, 28, 16, 2, 384); }

class RandomCheckpoint : public RandomSource {
 public:
  explicit RandomCheckpoint(const tim::nn::C2IConfig& config, std::uint64_t seed = 0, float stddev = 0.02f,
                            tim::DType linear_dtype = tim::DType::F32)
      : RandomSource("random checkpoint", seed), stddev_(stddev) {
    const auto& c = config;
    tim::check(c.hidden > 0 && c.depth > 0 && c.num_heads > 0 && c.hidden % c.num_heads == 0 && c.patch > 0 &&
                   c.in_channels > 0 && c.out_channels > 0 && c.adaln_hidden > 0 && c.mlp_hidden > 0 &&
                   c.final_adaln_hidden > 0 && c.num_classes > 0,
               "RandomCheckpoint: incomplete configuration: ", c.describe());
    const auto D = c.hidden, p = c.patch;
    const auto linear = [&](const std::string& prefix, std::int64_t in, std::int64_t out, bool bias = true) {
      add(prefix + ".weight", {out, in}, linear_dtype);
      if (bias) add(prefix + ".bias", {out});
    };
    const auto swiglu = [&](const std::string& prefix, std::int64_t in, std::int64_t hidden, std::int64_t out) {
      linear(prefix + ".fc1_g", in, hidden);
      linear(prefix + ".fc1_x", in, hidden);
      linear(prefix + ".fc2", hidden, out);
    };
    const auto embedder = [&](const std::string& prefix) {
      linear(prefix + ".mlp.0", tim::math::timestep_features, D);
      linear(prefix + ".mlp.2", D, D);
    };
    add("x_embedder.proj.weight", {D, c.in_channels, p, p});
    add("x_embedder.proj.bias", {D});
    embedder("t_embedder");
    if (c.separate_delta_embedder) embedder("delta_embedder");
    add("y_embedder.embedding_table.weight", {c.num_classes + 1, D});
    for (std::int64_t i = 0; i < c.depth; ++i) {
      const std::string block = "blocks." + std::to_string(i);
      swiglu(block + ".adaLN_modulation", D, c.adaln_hidden, 6 * D);
      linear(block + ".attn.qkv", D, 3 * D);
      if (c.interval_qkv) linear(block + ".attn.qkv_d", D, 3 * D, false);
      if (c.qk_norm) {
        add(block + ".attn.q_norm.weight", {c.head_dim()});
        add(block + ".attn.q_norm.bias", {c.head_dim()});
        add(block + ".attn.k_norm.weight", {c.head_dim()});
        add(block + ".attn.k_norm.bias", {c.head_dim()});
      }
      linear(block + ".attn.proj", D, D);
      swiglu(block + ".mlp", D, c.mlp_hidden, D);
    }
    swiglu("final_layer.adaLN_modulation", D, c.final_adaln_hidden, 2 * D);
    linear("final_layer.linear", D, p * p * c.out_channels);
    // Shapes cannot tell the head count without q_norm; released files would carry it in a config.
    if (!c.qk_norm) metadata_["num_heads"] = std::to_string(c.num_heads);
    metadata_["new_condition"] = std::string(tim::nn::new_condition_name(c.new_condition));
  }

  //! A freshly generated owning tensor of `name`; throws when `expected` is not its shape.
  template <class T>
  tim::Tensor<T, tim::cpu> load(std::string_view name, const tim::Shape& expected) const {
    const bool norm_weight = ends_with(name, "_norm.weight");
    const std::normal_distribution<float> values(0.0f, stddev_);
    const float offset = norm_weight ? 1.0f : 0.0f;
    const tim::DType stored = info(name).dtype;
    if (stored == tim::DType::BF16 && !std::is_same_v<T, tim::bfloat16>)
      return tim::cast<T>(generate<tim::bfloat16>(name, expected, values, offset));
    if (stored == tim::DType::F16 && !std::is_same_v<T, tim::float16>)
      return tim::cast<T>(generate<tim::float16>(name, expected, values, offset));
    return generate<T>(name, expected, values, offset);
  }

 private:
  float stddev_;
};

}  // namespace tim_bench
