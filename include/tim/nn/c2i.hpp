// The class-conditional TiM network (SPEC sections 3 and 4) on any backend: loading from a
// released checkpoint by parameter name, shape-driven configuration, and the forward pass.
//
// Shape legend: B batch, C channels, H x W latent, p patch, h = H/p token rows, w = W/p token
// columns, N = h*w tokens, D hidden, nh heads, hd = D/nh head dim, L adaLN hidden, Hm MLP hidden.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "tim/nn/config.hpp"
#include "tim/nn/modules.hpp"

namespace tim::nn {

//! One transformer block: adaLN-modulated self-attention (qk-norm, 2-D rotary, interval-aware
//! qkv) and SwiGLU MLP, each added back through a gate.
template <class T, class Backend>
struct TiMBlock {
  SwiGLU<T, Backend> adaln;  // c (B, D) -> (B, 6D): shift/scale/gate for msa, then for mlp
  Linear<T, Backend> qkv;    // (B*N, D) -> (B*N, 3D)
  Linear<T, Backend> qkv_d;  // E_delta (B, D) -> (B, 3D), no bias; empty unless interval_qkv
  LayerNormWeights<T, Backend> q_norm, k_norm;  // over hd; empty unless qk_norm
  Linear<T, Backend> proj;  // (B*N, D) -> (B*N, D)
  SwiGLU<T, Backend> mlp;   // (B*N, D) -> (B*N, Hm) -> (B*N, D)

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, const C2IConfig& config) {
    const auto D = config.hidden;
    adaln.load(reader, prefix + ".adaLN_modulation", D, config.adaln_hidden, 6 * D);
    qkv.load(reader, prefix + ".attn.qkv", D, 3 * D);
    if (config.interval_qkv) qkv_d.load(reader, prefix + ".attn.qkv_d", D, 3 * D, false);
    if (config.qk_norm) {
      q_norm.load(reader, prefix + ".attn.q_norm", config.head_dim());
      k_norm.load(reader, prefix + ".attn.k_norm", config.head_dim());
    }
    proj.load(reader, prefix + ".attn.proj", D, D);
    mlp.load(reader, prefix + ".mlp", D, config.mlp_hidden, D);
  }
  std::int64_t parameter_count() const {
    return adaln.parameter_count() + qkv.parameter_count() + qkv_d.parameter_count() + q_norm.weight.numel() +
           q_norm.bias.numel() + k_norm.weight.numel() + k_norm.bias.numel() + proj.parameter_count() +
           mlp.parameter_count();
  }
};

//! adaLN (shift, scale) from c, LayerNorm, modulate, Linear(D -> p*p*C_out).
template <class T, class Backend>
struct FinalLayer {
  SwiGLU<T, Backend> adaln;  // c (B, D) -> (B, 2D)
  Linear<T, Backend> linear;

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, const C2IConfig& config) {
    const auto D = config.hidden;
    adaln.load(reader, prefix + ".adaLN_modulation", D, config.final_adaln_hidden, 2 * D);
    linear.load(reader, prefix + ".linear", D, config.patch * config.patch * config.out_channels);
  }
  std::int64_t parameter_count() const { return adaln.parameter_count() + linear.parameter_count(); }
};

//! Scratch memory of one forward pass, grown on demand and then reused, so repeated
//! evaluations at the same batch and latent size allocate nothing.
template <class T, class Backend>
struct Workspace {
  std::int64_t batch = -1, height = -1, width = -1;
  Tensor<T, Backend> tokens;       // x (B*N, D), the residual stream
  Tensor<T, Backend> normed;       // (B*N, max(D, C p p)): patches, then normed/modulated input
  Tensor<T, Backend> wide;         // (B*N, max(3D, 2 Hm)): qkv, or the MLP's gate and value halves
  Tensor<T, Backend> q, k, v;      // (B, nh, N, hd)
  Tensor<T, Backend> attended;     // (B*N, D)
  Tensor<T, Backend> update;       // (B*N, max(D, p p C_out))
  Tensor<T, Backend> rotary_cos, rotary_sin;  // (N, hd/2)
  Tensor<T, Backend> condition;    // c (B, D)
  Tensor<T, Backend> interval;     // E_delta (B, D)
  Tensor<T, Backend> embed_scratch;  // (B, 256 + 2D) time embedder scratch
  Tensor<T, Backend> modulation;   // (B, 6D)
  Tensor<T, Backend> modulation_hidden;  // (B, 2 max(L, D/2))
  Tensor<T, Backend> interval_qkv;  // (B, 3D)
  Tensor<T, Backend> times;        // (3B): t_in, r_in, t_in - r_in
};

//! The class-conditional TiM network. Instantiate through `load_c2i`.
//!
//! Example:
//!   auto file = tim::io::SafetensorsFile::open("c2i_model_256.safetensors");
//!   auto model = tim::nn::load_c2i<float>(file);
//!   model.forward(out, x, t_in, r_in, labels);  // out, x: (B, C, H, W)
template <class T, class Backend = cpu>
class C2IModel {
 public:
  C2IConfig config;
  Linear<T, Backend> x_embedder;  // conv weight (D, C, p, p) seen as (D, C*p*p)
  TimestepEmbedder<T, Backend> t_embedder;
  TimestepEmbedder<T, Backend> delta_embedder;  // empty unless separate_delta_embedder
  Tensor<T, Backend> label_table;               // (num_classes + 1, D)
  std::vector<TiMBlock<T, Backend>> blocks;
  FinalLayer<T, Backend> final_layer;

  //! Total parameters the network uses (ignored checkpoint tensors not counted).
  std::int64_t parameter_count() const {
    std::int64_t n = x_embedder.parameter_count() + t_embedder.parameter_count() +
                     delta_embedder.parameter_count() + label_table.numel() + final_layer.parameter_count();
    for (const auto& block : blocks) n += block.parameter_count();
    return n;
  }

  //! Checks the inputs of `forward`; throws tim::Error naming the argument.
  void validate_inputs(const Tensor<T, Backend>& x, const Tensor<T, Backend>& t_in, const Tensor<T, Backend>& r_in,
                       const Tensor<std::int64_t, cpu>& labels) const {
    check(x.rank() == 4, "input 'x': expected shape [B, C, H, W], got ", x.shape());
    const auto B = x.dim(0);
    check(x.dim(1) == config.in_channels, "input 'x': expected ", config.in_channels, " channels, got ", x.dim(1),
          " (shape ", x.shape(), ")");
    check(x.dim(2) > 0 && x.dim(3) > 0 && x.dim(2) % config.patch == 0 && x.dim(3) % config.patch == 0,
          "input 'x': height and width must be positive multiples of the patch size ", config.patch, ", got ",
          x.dim(2), "x", x.dim(3));
    // Extents are compared one by one: no Shape is built, so a sampling loop allocates nothing.
    const auto is_vector_of_b = [B](const auto& v) { return v.rank() == 1 && v.dim(0) == B; };
    check(is_vector_of_b(t_in), "input 't': expected shape [", B, "], got ", t_in.shape());
    check(is_vector_of_b(r_in), "input 'r': expected shape [", B, "], got ", r_in.shape());
    check(is_vector_of_b(labels), "input 'y': expected shape [", B, "], got ", labels.shape());
    for (std::int64_t b = 0; b < B; ++b)
      check(labels.data()[b] >= 0 && labels.data()[b] <= config.num_classes, "input 'y': label ", labels.data()[b],
            " at index ", b, " is outside [0, ", config.num_classes, "] (", config.num_classes,
            " is the null class)");
  }

  //! out (B, C_out, H, W) = F_theta(x (B, C, H, W), t_in (B), r_in (B), labels (B)), where
  //! t_in and r_in are the network time inputs (after c_noise). Not re-entrant: one workspace.
  void forward(Tensor<T, Backend>& out, const Tensor<T, Backend>& x, const Tensor<T, Backend>& t_in,
               const Tensor<T, Backend>& r_in, const Tensor<std::int64_t, cpu>& labels) const {
    validate_inputs(x, t_in, r_in, labels);
    const auto B = x.dim(0), H = x.dim(2), W = x.dim(3);
    if (out.empty_tensor() || out.rank() != 4 || out.dim(0) != B || out.dim(1) != config.out_channels ||
        out.dim(2) != H || out.dim(3) != W)
      out = Tensor<T, Backend>::empty({B, config.out_channels, H, W});
    reserve(B, H, W);
    auto& ws = workspace_;
    const auto D = config.hidden, p = config.patch, nh = config.num_heads, hd = config.head_dim();
    const auto h = H / p, w = W / p, N = h * w, rows = B * N;

    // Patch embedding: tokens (B*N, D).
    Backend::patchify_forward(ws.normed.data(), x.data(), B, config.in_channels, H, W, p);
    x_embedder.forward(ws.tokens.data(), ws.normed.data(), rows);

    // Conditioning c (B, D) and interval embedding E_delta (B, D).
    embed_condition(t_in, r_in, labels, B);

    const T q_scale = T(1) / std::sqrt(T(hd));
    for (const auto& block : blocks) {
      T* mod = ws.modulation.data();  // (B, 6D)
      block.adaln.forward(mod, ws.condition.data(), B, ws.modulation_hidden.data(),
                          ws.modulation_hidden.data() + B * block.adaln.hidden());
      // Attention branch.
      Backend::layernorm_forward(ws.normed.data(), ws.tokens.data(), static_cast<const T*>(nullptr),
                                 static_cast<const T*>(nullptr), rows, D, 1e-6);
      Backend::modulate_forward(ws.normed.data(), mod + 0 * D, mod + 1 * D, B, N, D, 6 * D);
      block.qkv.forward(ws.wide.data(), ws.normed.data(), rows);
      const T* sample_bias = nullptr;
      if (config.interval_qkv) {
        block.qkv_d.forward(ws.interval_qkv.data(), ws.interval.data(), B);
        sample_bias = ws.interval_qkv.data();
      }
      Backend::qkv_split_forward(ws.q.data(), ws.k.data(), ws.v.data(), ws.wide.data(), sample_bias,
                                 block.q_norm.present() ? block.q_norm.weight.data() : nullptr,
                                 block.q_norm.present() ? block.q_norm.bias.data() : nullptr,
                                 block.k_norm.present() ? block.k_norm.weight.data() : nullptr,
                                 block.k_norm.present() ? block.k_norm.bias.data() : nullptr, 1e-5,
                                 ws.rotary_cos.data(), ws.rotary_sin.data(), B, N, nh, hd, q_scale);
      Backend::attention_forward(ws.attended.data(), ws.q.data(), ws.k.data(), ws.v.data(), B, nh, N, hd, 1.0);
      block.proj.forward(ws.update.data(), ws.attended.data(), rows);
      Backend::gated_residual_forward(ws.tokens.data(), mod + 2 * D, ws.update.data(), B, N, D, 6 * D);
      // MLP branch.
      Backend::layernorm_forward(ws.normed.data(), ws.tokens.data(), static_cast<const T*>(nullptr),
                                 static_cast<const T*>(nullptr), rows, D, 1e-6);
      Backend::modulate_forward(ws.normed.data(), mod + 3 * D, mod + 4 * D, B, N, D, 6 * D);
      block.mlp.forward(ws.update.data(), ws.normed.data(), rows, ws.wide.data(),
                        ws.wide.data() + rows * config.mlp_hidden);
      Backend::gated_residual_forward(ws.tokens.data(), mod + 5 * D, ws.update.data(), B, N, D, 6 * D);
    }

    // Final layer and unpatchify.
    T* mod = ws.modulation.data();  // (B, 2D): shift, scale
    final_layer.adaln.forward(mod, ws.condition.data(), B, ws.modulation_hidden.data(),
                              ws.modulation_hidden.data() + B * final_layer.adaln.hidden());
    Backend::layernorm_forward(ws.normed.data(), ws.tokens.data(), static_cast<const T*>(nullptr),
                               static_cast<const T*>(nullptr), rows, D, 1e-6);
    Backend::modulate_forward(ws.normed.data(), mod, mod + D, B, N, D, 2 * D);
    final_layer.linear.forward(ws.update.data(), ws.normed.data(), rows);
    Backend::unpatchify_forward(out.data(), ws.update.data(), B, config.out_channels, H, W, p);
  }

  //! Sizes the workspace for batch B and latent H x W now (forward does it on demand). Buffers
  //! only grow, so alternating batch sizes (B and 2B rows under guidance) allocate nothing
  //! once the larger has been seen; the rotary tables are rebuilt only when H or W changes.
  void reserve(std::int64_t B, std::int64_t H, std::int64_t W) const {
    auto& ws = workspace_;
    if (ws.batch == B && ws.height == H && ws.width == W) return;
    const auto D = config.hidden, p = config.patch, hd = config.head_dim();
    const auto h = H / p, w = W / p, N = h * w, rows = B * N;
    const auto grow = [](Tensor<T, Backend>& t, std::int64_t n) {
      if (t.empty_tensor() || t.numel() < n) t = Tensor<T, Backend>::empty({std::max<std::int64_t>(n, 1)});
    };
    grow(ws.tokens, rows * D);
    grow(ws.normed, rows * std::max(D, config.in_channels * p * p));
    grow(ws.wide, rows * std::max(3 * D, 2 * config.mlp_hidden));
    grow(ws.q, rows * D);
    grow(ws.k, rows * D);
    grow(ws.v, rows * D);
    grow(ws.attended, rows * D);
    grow(ws.update, rows * std::max(D, p * p * config.out_channels));
    grow(ws.condition, B * D);
    grow(ws.interval, B * D);
    grow(ws.embed_scratch, B * (math::timestep_features + 2 * D));
    grow(ws.modulation, B * 6 * D);
    std::int64_t widest_adaln = config.final_adaln_hidden;
    for (const auto& block : blocks) widest_adaln = std::max(widest_adaln, block.adaln.hidden());
    grow(ws.modulation_hidden, 2 * B * widest_adaln);
    grow(ws.interval_qkv, B * 3 * D);
    grow(ws.times, 3 * B);
    if (ws.height != H || ws.width != W) {
      // Rotary tables (N, hd/2) for this grid: angles in double, stored in T.
      ws.rotary_cos = Tensor<T, Backend>::empty({N, hd / 2});
      ws.rotary_sin = Tensor<T, Backend>::empty({N, hd / 2});
      std::vector<T> cos_host(static_cast<std::size_t>(N * hd / 2)), sin_host(cos_host.size());
      for (std::int64_t n = 0; n < N; ++n)
        for (std::int64_t pair = 0; pair < hd / 2; ++pair) {
          const double angle = math::rotary_angle<double>(n, h, static_cast<int>(hd), static_cast<int>(pair));
          cos_host[n * (hd / 2) + pair] = static_cast<T>(std::cos(angle));
          sin_host[n * (hd / 2) + pair] = static_cast<T>(std::sin(angle));
        }
      Backend::copy(ws.rotary_cos.data(), cos_host.data(), cos_host.size());
      Backend::copy(ws.rotary_sin.data(), sin_host.data(), sin_host.size());
    }
    ws.batch = B;
    ws.height = H;
    ws.width = W;
  }

 private:
  // c = E_t(t_in) + E_delta + E_y(y); E_delta per config.new_condition (SPEC 3).
  void embed_condition(const Tensor<T, Backend>& t_in, const Tensor<T, Backend>& r_in,
                       const Tensor<std::int64_t, cpu>& labels, std::int64_t B) const {
    auto& ws = workspace_;
    const auto D = config.hidden;
    T* t_values = ws.times.data();
    T* r_values = t_values + B;
    T* interval_values = r_values + B;
    Backend::copy(t_values, t_in.data(), static_cast<std::size_t>(B));
    Backend::copy(r_values, r_in.data(), static_cast<std::size_t>(B));
    for (std::int64_t b = 0; b < B; ++b) interval_values[b] = t_values[b] - r_values[b];
    T* features = ws.embed_scratch.data();
    T* hidden = features + B * math::timestep_features;
    T* term = hidden + B * D;

    t_embedder.forward(ws.condition.data(), t_values, B, features, hidden);  // c = E_t(t)
    Backend::fill(ws.interval.data(), static_cast<std::size_t>(B * D), T(0));
    const auto terms = interval_terms(config.new_condition);
    const auto& delta = config.separate_delta_embedder ? delta_embedder : t_embedder;
    if (terms.t) Backend::add_forward(ws.interval.data(), ws.condition.data(), B * D);
    if (terms.r) {
      t_embedder.forward(term, r_values, B, features, hidden);
      Backend::add_forward(ws.interval.data(), term, B * D);
    }
    if (terms.t_minus_r) {
      delta.forward(term, interval_values, B, features, hidden);
      Backend::add_forward(ws.interval.data(), term, B * D);
    }
    Backend::add_forward(ws.condition.data(), ws.interval.data(), B * D);
    Backend::embedding_forward(term, label_table.data(), labels.data(), B, D);
    Backend::add_forward(ws.condition.data(), term, B * D);
  }

  mutable Workspace<T, Backend> workspace_;
};

//! Reads the network's configuration from a checkpoint: shapes first; then `overrides`, then
//! the checkpoint's `__metadata__` for what shapes cannot tell (heads without qk-norm,
//! new_condition). `Source` is tim::io::SafetensorsFile or anything with the same reads.
template <class Source>
C2IConfig infer_c2i_config(const Source& source, const ConfigOverrides& overrides = {}) {
  C2IConfig c;
  auto shape_of = [&](const std::string& name, int rank) {
    check(source.contains(name), "checkpoint: missing tensor '", name,
          "' (is this a class-conditional TiM checkpoint?)");
    Shape s = source.info(name).shape;
    check(s.rank() == rank, "checkpoint: tensor '", name, "' has shape ", s, ", expected rank ", rank);
    return s;
  };
  const Shape patch_weight = shape_of("x_embedder.proj.weight", 4);
  check(patch_weight[2] == patch_weight[3], "checkpoint: 'x_embedder.proj.weight' ", patch_weight,
        " must have a square p x p kernel");
  c.hidden = patch_weight[0];
  c.in_channels = patch_weight[1];
  c.patch = patch_weight[2];
  while (source.contains("blocks." + std::to_string(c.depth) + ".adaLN_modulation.fc2.weight")) ++c.depth;
  check(c.depth > 0, "checkpoint: no 'blocks.0.adaLN_modulation.fc2.weight'; not a TiM checkpoint");
  c.adaln_hidden = shape_of("blocks.0.adaLN_modulation.fc1_g.weight", 2)[0];
  c.mlp_hidden = shape_of("blocks.0.mlp.fc1_g.weight", 2)[0];
  c.num_classes = shape_of("y_embedder.embedding_table.weight", 2)[0] - 1;
  check(c.num_classes >= 1, "checkpoint: 'y_embedder.embedding_table.weight' needs at least 2 rows");
  c.final_adaln_hidden = shape_of("final_layer.adaLN_modulation.fc1_g.weight", 2)[0];
  const auto final_rows = shape_of("final_layer.linear.weight", 2)[0];
  check(final_rows % (c.patch * c.patch) == 0, "checkpoint: 'final_layer.linear.weight' has ", final_rows,
        " rows, not a multiple of p*p = ", c.patch * c.patch);
  c.out_channels = final_rows / (c.patch * c.patch);
  c.qk_norm = source.contains("blocks.0.attn.q_norm.weight");
  c.interval_qkv = source.contains("blocks.0.attn.qkv_d.weight");
  c.separate_delta_embedder = source.contains("delta_embedder.mlp.0.weight");
  c.provenance["architecture"] = "shapes";

  const auto& metadata = source.metadata();
  auto from_metadata = [&](const char* key) -> std::optional<std::string> {
    auto it = metadata.find(key);
    if (it == metadata.end()) return std::nullopt;
    return it->second;
  };

  // Heads: q_norm's width is hd when present; otherwise an override or the metadata must say.
  std::optional<std::int64_t> heads;
  std::string heads_source;
  if (overrides.num_heads) {
    heads = overrides.num_heads;
    heads_source = "config";
  } else if (auto text = from_metadata("num_heads")) {
    try {
      heads = std::stoll(*text);
    } catch (const std::exception&) {
      fail("checkpoint metadata: num_heads '", *text, "' is not an integer");
    }
    heads_source = "metadata";
  }
  if (c.qk_norm) {
    const auto hd = shape_of("blocks.0.attn.q_norm.weight", 1)[0];
    check(hd > 0 && c.hidden % hd == 0, "checkpoint: q_norm width ", hd, " does not divide D = ", c.hidden);
    check(!heads || *heads == c.hidden / hd, "num_heads ", heads.value_or(0), " from ", heads_source,
          " contradicts the checkpoint: q_norm width ", hd, " gives ", c.hidden / hd, " heads");
    c.num_heads = c.hidden / hd;
    c.provenance["num_heads"] = "shapes";
  } else {
    check(heads.has_value(), "cannot tell the number of attention heads: the checkpoint has no q_norm; pass a "
                             "config (--config) or set __metadata__ num_heads");
    c.num_heads = *heads;
    c.provenance["num_heads"] = heads_source;
  }
  check(c.num_heads > 0 && c.hidden % c.num_heads == 0, "num_heads ", c.num_heads, " does not divide D = ", c.hidden);
  check(c.head_dim() % 4 == 0, "head dim ", c.head_dim(),
        " must be divisible by 4 (2-D rotary: two halves of adjacent pairs)");

  if (overrides.new_condition) {
    c.new_condition = parse_new_condition(*overrides.new_condition);
    c.provenance["new_condition"] = "config";
  } else if (auto text = from_metadata("new_condition")) {
    c.new_condition = parse_new_condition(*text);
    c.provenance["new_condition"] = "metadata";
  } else {
    c.new_condition = NewCondition::t_minus_r;
    c.provenance["new_condition"] = "default (all released models use t-r)";
  }
  return c;
}

//! Loads a class-conditional TiM from a checkpoint, unchanged released names. Tensors are
//! memory-mapped views when their dtype is T (and aligned), converted copies otherwise.
//! `projector.*` (training-only) is ignored and listed in config.ignored; any other unknown
//! tensor is an error, since it means the file is not the network we think it is.
template <class T, class Backend = cpu, class Source>
C2IModel<T, Backend> load_c2i(const Source& source, const ConfigOverrides& overrides = {}) {
  C2IModel<T, Backend> model;
  model.config = infer_c2i_config(source, overrides);
  const auto& c = model.config;
  ParameterReader<Source> reader{source, {}};
  const auto D = c.hidden, p = c.patch;
  model.x_embedder.weight = reader.template take<T>("x_embedder.proj.weight", {D, c.in_channels, p, p})
                                .reshape({D, c.in_channels * p * p});
  model.x_embedder.bias = reader.template take<T>("x_embedder.proj.bias", {D});
  model.x_embedder.in_features = c.in_channels * p * p;
  model.x_embedder.out_features = D;
  model.t_embedder.load(reader, "t_embedder", D);
  if (c.separate_delta_embedder) model.delta_embedder.load(reader, "delta_embedder", D);
  model.label_table = reader.template take<T>("y_embedder.embedding_table.weight", {c.num_classes + 1, D});
  model.blocks.resize(static_cast<std::size_t>(c.depth));
  for (std::int64_t i = 0; i < c.depth; ++i) model.blocks[i].load(reader, "blocks." + std::to_string(i), c);
  model.final_layer.load(reader, "final_layer", c);

  for (const auto& info : source.tensors()) {
    if (reader.used.count(info.name)) continue;
    check(info.name.rfind("projector.", 0) == 0, "checkpoint: unexpected tensor '", info.name,
          "' (not part of a class-conditional TiM with ", c.describe(), ")");
    model.config.ignored.push_back(info.name);
  }
  return model;
}

}  // namespace tim::nn
