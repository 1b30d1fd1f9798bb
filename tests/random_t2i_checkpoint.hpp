// An in-memory T2I checkpoint with random weights under the released parameter names (SPEC 5),
// for tests and benchmarks that need a text-conditioned network of a given shape without a
// real checkpoint (the native-resolution test, bench/bench_native_resolution.cpp).
// Values: weights N(0, 1/fan_in), biases N(0, 0.1^2), LayerNorm gains 1 + N(0, 0.1^2), biases
// N(0, 0.1^2), seeded; the adaLN fc2 weights are scaled by 0.5 so gates stay moderate.
// Doctest-free so that bench/ can include it.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "tim/io/safetensors.hpp"
#include "tim/math/embedding.hpp"
#include "tim/nn/config.hpp"

namespace tim_test {

//! A released-style T2I configuration (qk-norm everywhere, interval-aware qkv, delta embedder,
//! Hm = (int(4D) * 2) // 3, caption hidden 4D, final adaLN hidden D/2).
inline tim::nn::T2IConfig t2i_config(std::int64_t hidden, std::int64_t depth, std::int64_t heads, std::int64_t patch,
                                     std::int64_t channels, std::int64_t caption_dim, std::int64_t adaln_hidden) {
  tim::nn::T2IConfig c;
  c.in_channels = channels;
  c.out_channels = channels;
  c.hidden = hidden;
  c.depth = depth;
  c.num_heads = heads;
  c.patch = patch;
  c.adaln_hidden = adaln_hidden;
  c.mlp_hidden = (static_cast<std::int64_t>(static_cast<double>(hidden) * 4.0) * 2) / 3;
  c.final_adaln_hidden = hidden / 2;
  c.qk_norm = true;
  c.interval_qkv = true;
  c.separate_delta_embedder = true;
  c.caption_dim = caption_dim;
  c.caption_hidden = 4 * hidden;
  c.cross_qk_norm = true;
  return c;
}

//! A safetensors image (float32) holding every tensor a T2I network of configuration `c` has.
inline tim::io::SafetensorsFile random_t2i_checkpoint(const tim::nn::T2IConfig& c, std::uint32_t seed = 7) {
  std::mt19937 generator(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  tim::io::SafetensorsWriter writer;
  writer.set_metadata("num_heads", std::to_string(c.num_heads));
  writer.set_metadata("new_condition", "t-r");
  const auto add = [&](const std::string& name, tim::Shape shape, double mean, double stddev) {
    std::vector<float> values(static_cast<std::size_t>(shape.numel()));
    for (auto& v : values) v = static_cast<float>(mean + stddev * normal(generator));
    writer.add(name, tim::DType::F32, std::move(shape), values.data());  // copied by the writer
  };
  const auto linear = [&](const std::string& prefix, std::int64_t in, std::int64_t out, bool bias = true,
                          double gain = 1.0) {
    add(prefix + ".weight", {out, in}, 0.0, gain / std::sqrt(static_cast<double>(in)));
    if (bias) add(prefix + ".bias", {out}, 0.0, 0.1);
  };
  const auto norm = [&](const std::string& prefix, std::int64_t cols) {
    add(prefix + ".weight", {cols}, 1.0, 0.1);
    add(prefix + ".bias", {cols}, 0.0, 0.1);
  };
  const auto swiglu = [&](const std::string& prefix, std::int64_t in, std::int64_t hidden, std::int64_t out,
                          double gain = 1.0) {
    linear(prefix + ".fc1_g", in, hidden);
    linear(prefix + ".fc1_x", in, hidden);
    linear(prefix + ".fc2", hidden, out, true, gain);
  };
  const auto D = c.hidden, p = c.patch, hd = c.head_dim();
  add("x_embedder.proj.weight", {D, c.in_channels, p, p}, 0.0, 1.0 / std::sqrt(static_cast<double>(c.in_channels * p * p)));
  add("x_embedder.proj.bias", {D}, 0.0, 0.1);
  for (const char* embedder : {"t_embedder", "delta_embedder"}) {
    linear(std::string(embedder) + ".mlp.0", tim::math::timestep_features, D);
    linear(std::string(embedder) + ".mlp.2", D, D);
  }
  norm("y_embedder.norm", c.caption_dim);
  swiglu("y_embedder.mlp", c.caption_dim, c.caption_hidden, D);
  for (std::int64_t i = 0; i < c.depth; ++i) {
    const std::string b = "blocks." + std::to_string(i);
    swiglu(b + ".adaLN_modulation", D, c.adaln_hidden, 9 * D, 0.5);
    linear(b + ".attn.qkv", D, 3 * D);
    linear(b + ".attn.qkv_d", D, 3 * D, false, 0.5);
    norm(b + ".attn.q_norm", hd);
    norm(b + ".attn.k_norm", hd);
    linear(b + ".attn.proj", D, D);
    linear(b + ".cross_attn.q", D, D);
    linear(b + ".cross_attn.kv", D, 2 * D);
    norm(b + ".cross_attn.q_norm", hd);
    norm(b + ".cross_attn.k_norm", hd);
    linear(b + ".cross_attn.proj", D, D);
    swiglu(b + ".mlp", D, c.mlp_hidden, D);
  }
  swiglu("final_layer.adaLN_modulation", D, c.final_adaln_hidden, 2 * D, 0.5);
  linear("final_layer.linear", D, p * p * c.out_channels);
  return tim::io::SafetensorsFile::from_bytes(writer.to_bytes(), "random T2I checkpoint");
}

}  // namespace tim_test
