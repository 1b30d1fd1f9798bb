// The text-conditioned TiM network (SPEC section 5) on any backend: the C2I backbone with a
// caption embedder in place of the label table, c = E_t + E_delta, and in every block a
// cross-attention from the image tokens to the caption between self-attention and MLP.
// Interpretation choices: docs/t2i.md.
//
// Shape legend: B batch, C channels, H x W latent, p patch, h = H/p, w = W/p, N = h*w image
// tokens, M caption tokens, Dc caption feature width (cap_dim), D hidden, nh heads,
// hd = D/nh head dim, L adaLN hidden, Hm MLP hidden, Hc caption-embedder hidden (4D).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "tim/nn/backbone.hpp"
#include "tim/nn/config.hpp"
#include "tim/nn/modules.hpp"

namespace tim::nn {

//! The caption embedder `y_embedder`: LayerNorm over Dc (affine, eps 1e-5), then SwiGLU
//! Dc -> Hc -> D, applied to every caption token on its own.
template <class T, class Backend>
struct CaptionEmbedder {
  LayerNormWeights<T, Backend> norm;  // (Dc) each
  SwiGLU<T, Backend> mlp;             // (B*M, Dc) -> (B*M, Hc) -> (B*M, D)

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, const T2IConfig& config) {
    norm.load(reader, prefix + ".norm", config.caption_dim);
    mlp.load(reader, prefix + ".mlp", config.caption_dim, config.caption_hidden, config.hidden);
  }
  std::int64_t parameter_count() const { return norm.parameter_count() + mlp.parameter_count(); }

  //! ws.caption (B*M, D) = norm2_t(mlp(norm(cap_feats))), where norm2_t is the blocks'
  //! parameter-free LayerNorm (no affine, eps 1e-6) of the caption: the same for every block,
  //! so it is applied once here instead of once per block.
  void forward(Workspace<T, Backend>& ws, const T2IConfig& config, const T* cap_feats, std::int64_t rows) const {
    Backend::layernorm_forward(ws.caption_normed.data(), cap_feats, norm.weight.data(), norm.bias.data(), rows,
                               config.caption_dim, 1e-5);
    mlp.forward(ws.caption.data(), ws.caption_normed.data(), rows, ws.caption_hidden.data(),
                ws.caption_hidden.data() + rows * mlp.hidden());
    Backend::layernorm_forward(ws.caption.data(), ws.caption.data(), static_cast<const T*>(nullptr),
                               static_cast<const T*>(nullptr), rows, config.hidden, 1e-6);
  }
};

//! One T2I block: adaLN with nine chunks (msa, msc, mlp triples), self-attention,
//! cross-attention to the caption, SwiGLU MLP, each added back through its gate.
template <class T, class Backend>
struct T2IBlock {
  SwiGLU<T, Backend> adaln;               // c (B, D) -> (B, 9D)
  SelfAttention<T, Backend> attn;         // checkpoint prefix attn
  CrossAttention<T, Backend> cross_attn;  // checkpoint prefix cross_attn
  SwiGLU<T, Backend> mlp;                 // (B*N, D) -> (B*N, Hm) -> (B*N, D)

  static constexpr std::int64_t modulation_chunks = 9;

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, const T2IConfig& config) {
    load_block_common(*this, reader, prefix, config);
    cross_attn.load(reader, prefix + ".cross_attn", config, config.cross_qk_norm);
  }
  std::int64_t parameter_count() const {
    return adaln.parameter_count() + attn.parameter_count() + cross_attn.parameter_count() + mlp.parameter_count();
  }

  //! ws.tokens (B*N, D) through the block, with c in ws.condition and the normalised caption
  //! embedding (B*M, D) in ws.caption:
  //!   x += gate_msa * attn(modulate(norm1(x)))
  //!   x += gate_msc * cross_attn(modulate(norm2_i(x)), norm2_t(y))
  //!   x += gate_mlp * mlp(modulate(norm3(x)))
  void forward(Workspace<T, Backend>& ws, const T2IConfig& config, std::int64_t B, std::int64_t N,
               std::int64_t M) const {
    const auto D = config.hidden;
    T* mod = ws.modulation.data();  // (B, 9D)
    adaln.forward(mod, ws.condition.data(), B, ws.modulation_hidden.data(),
                  ws.modulation_hidden.data() + B * adaln.hidden());
    attn.residual_forward(ws, config, ModulationChunks<T>::at(mod, 0, modulation_chunks, D), B, N);
    cross_attn.residual_forward(ws, config, ModulationChunks<T>::at(mod, 3, modulation_chunks, D), B, N, M);
    mlp_residual_forward(ws, config, mlp, ModulationChunks<T>::at(mod, 6, modulation_chunks, D), B, N);
  }
};

//! The text-conditioned TiM network. Instantiate through `load_t2i`.
//!
//! Example:
//!   auto file = tim::io::SafetensorsFile::open("t2i_model.safetensors");
//!   auto model = tim::nn::load_t2i<float>(file);
//!   model.forward(out, x, t_in, r_in, cap_feats);  // out, x: (B, C, H, W); cap_feats (B, M, Dc)
template <class T, class Backend = cpu>
class T2IModel {
 public:
  using value_type = T;
  using backend = Backend;
  //! What the sampler conditions a T2I network on: caption features (B, M, Dc) in its memory.
  using Condition = Tensor<T, Backend>;

  T2IConfig config;
  PatchEmbedding<T, Backend> x_embedder;
  TimestepEmbedder<T, Backend> t_embedder;
  TimestepEmbedder<T, Backend> delta_embedder;  // empty unless separate_delta_embedder
  CaptionEmbedder<T, Backend> y_embedder;
  std::vector<T2IBlock<T, Backend>> blocks;
  FinalLayer<T, Backend> final_layer;

  //! Total parameters the network uses (ignored checkpoint tensors not counted).
  std::int64_t parameter_count() const {
    std::int64_t n = x_embedder.parameter_count() + t_embedder.parameter_count() + delta_embedder.parameter_count() +
                     y_embedder.parameter_count() + final_layer.parameter_count();
    for (const auto& block : blocks) n += block.parameter_count();
    return n;
  }

  //! Checks the inputs of `forward`; throws tim::Error naming the argument.
  void validate_inputs(const Tensor<T, Backend>& x, const Tensor<T, Backend>& t_in, const Tensor<T, Backend>& r_in,
                       const Tensor<T, Backend>& cap_feats) const {
    validate_backbone_inputs(config, x, t_in, r_in);
    const auto B = x.dim(0);
    check(cap_feats.rank() == 3, "input 'cap_feats': expected shape [B, M, cap_dim] = [", B, ", M, ",
          config.caption_dim, "], got ", cap_feats.shape());
    check(cap_feats.dim(0) == B, "input 'cap_feats': expected ", B, " captions (one per sample of x), got ",
          cap_feats.dim(0), " (shape ", cap_feats.shape(), ")");
    check(cap_feats.dim(2) == config.caption_dim, "input 'cap_feats': expected caption features of width cap_dim = ",
          config.caption_dim, ", got ", cap_feats.dim(2), " (shape ", cap_feats.shape(), ")");
    check(cap_feats.dim(1) >= 1, "input 'cap_feats': needs at least one caption token (M >= 1), got shape ",
          cap_feats.shape());
  }

  //! out (B, C_out, H, W) = F_theta(x (B, C, H, W), t_in (B), r_in (B), cap_feats (B, M, Dc)),
  //! where t_in and r_in are the network time inputs (after c_noise) and cap_feats the text
  //! encoder's features, every one of the M tokens attended to (no mask). Any H x W that is a
  //! multiple of p works; memory grows linearly with the token count. Not re-entrant.
  void forward(Tensor<T, Backend>& out, const Tensor<T, Backend>& x, const Tensor<T, Backend>& t_in,
               const Tensor<T, Backend>& r_in, const Tensor<T, Backend>& cap_feats) const {
    validate_inputs(x, t_in, r_in, cap_feats);
    const auto B = x.dim(0), H = x.dim(2), W = x.dim(3), M = cap_feats.dim(1);
    ensure_output(out, config, B, H, W);
    reserve(B, H, W, M);
    auto& ws = workspace_;
    const auto p = config.patch, N = (H / p) * (W / p);

    x_embedder.forward(ws, config, x.data(), B, H, W);  // tokens (B*N, D)
    embed_time(ws, config, t_embedder, delta_embedder, t_in.data(), r_in.data(), B);  // c = E_t + E_delta
    y_embedder.forward(ws, config, cap_feats.data(), B * M);                          // caption (B*M, D)
    for (const auto& block : blocks) block.forward(ws, config, B, N, M);
    final_layer.forward(out.data(), ws, config, B, H, W);
  }

  //! Sizes the workspace for batch B, latent H x W and M caption tokens now (forward does it
  //! on demand). Buffers only grow: once the largest B, H x W and B*M have been seen, forward
  //! allocates nothing (the rotary tables are rebuilt only when H or W changes).
  void reserve(std::int64_t B, std::int64_t H, std::int64_t W, std::int64_t M) const {
    reserve_backbone(workspace_, config, blocks, B, H, W);
    workspace_.reserve_captions(config, config.caption_dim, config.caption_hidden, B * M);
  }

  // The sampler's interface (tim::SamplingNetwork).

  //! The null (empty) caption's features (1, M, Dc) that guided steps pair with every sample:
  //! the text encoder's output for "", padded like the captions (tools/caption_features.py
  //! writes it as null_cap_feats). Empty until set; only guided sampling needs it.
  const Tensor<T, Backend>& null_caption() const { return null_cap_feats_; }
  //! Sets the null caption, checked against the caption width: shape [1, M, cap_dim], M >= 1.
  void set_null_caption(Tensor<T, Backend> null_cap_feats) {
    check(null_cap_feats.rank() == 3 && null_cap_feats.dim(0) == 1 && null_cap_feats.dim(1) >= 1 &&
              null_cap_feats.dim(2) == config.caption_dim,
          "null caption: null_cap_feats must have shape [1, M, cap_dim] = [1, M, ", config.caption_dim,
          "] (M >= 1 tokens), got ", null_cap_feats.shape());
    null_cap_feats_ = std::move(null_cap_feats);
  }
  //! Forgets the null caption (guided sampling then fails until one is set again).
  void clear_null_caption() { null_cap_feats_ = {}; }
  //! Checks a batch's caption features: shape [B, M, cap_dim], M >= 1.
  void check_condition(const Condition& cap_feats, std::int64_t B) const {
    check(!cap_feats.empty_tensor() && cap_feats.rank() == 3 && cap_feats.dim(0) == B &&
              cap_feats.dim(2) == config.caption_dim && cap_feats.dim(1) >= 1,
          "sampler: cap_feats must have shape [B, M, cap_dim] = [", B, ", M, ", config.caption_dim,
          "] (one caption per sample, M >= 1 tokens), got ", cap_feats.shape());
  }
  //! The caption rows of a guided step (2B, M, Dc): `cap_feats`, then the null caption for every
  //! sample. Throws tim::Error when no null caption is set or its M differs.
  Condition guided_condition(const Condition& cap_feats) const {
    const std::int64_t B = cap_feats.dim(0), M = cap_feats.dim(1), Dc = cap_feats.dim(2), per_caption = M * Dc;
    check(!null_cap_feats_.empty_tensor(), "sampler: guidance needs the model's null caption: call "
          "T2IModel::set_null_caption with the null caption's features, shape [1, ", M, ", ", Dc, "]");
    check(null_cap_feats_.dim(1) == M, "sampler: the null caption has ", null_cap_feats_.dim(1),
          " tokens, the captions ", M, "; guidance pairs them row by row, so both need the same M (pad them alike)");
    auto rows = Condition::empty({2 * B, M, Dc});
    Backend::copy(rows.data(), cap_feats.data(), static_cast<std::size_t>(cap_feats.numel()));
    for (std::int64_t b = 0; b < B; ++b)
      Backend::copy(rows.data() + (B + b) * per_caption, null_cap_feats_.data(), static_cast<std::size_t>(per_caption));
    return rows;
  }
  //! Sizes the workspace for `rows` samples of H x W under captions of cap_feats' M tokens.
  void reserve_for(const Condition& cap_feats, std::int64_t rows, std::int64_t H, std::int64_t W) const {
    reserve(rows, H, W, cap_feats.dim(1));
  }

 private:
  Tensor<T, Backend> null_cap_feats_;
  mutable Workspace<T, Backend> workspace_;
};

//! Reads a T2I network's configuration from a checkpoint: the backbone as for C2I (shapes,
//! then `overrides`, then `__metadata__`), plus cap_dim from `y_embedder.norm.weight`, the
//! caption embedder's hidden width from `y_embedder.mlp.fc1_g.weight`, and whether the
//! cross-attention has q/k norms. Heads come from either attention's q_norm width when present.
template <class Source>
T2IConfig infer_t2i_config(const Source& source, const ConfigOverrides& overrides = {}) {
  check(detect_model_kind(source) != ModelKind::c2i,
        "checkpoint: this is a class-conditional (C2I) TiM (it has a label table '", keys::label_table,
        "'); load it with load_c2i");
  T2IConfig c;
  const std::string model = "text-to-image";
  infer_backbone_config(c, source, overrides, model, {keys::first_q_norm, keys::first_cross_q_norm});
  c.caption_dim = required_shape(source, keys::caption_norm, 1, model)[0];
  c.caption_hidden = required_shape(source, keys::caption_mlp_gate, 2, model)[0];
  check(c.caption_dim > 0 && c.caption_hidden > 0, "checkpoint: empty caption embedder (cap_dim ", c.caption_dim,
        ", hidden ", c.caption_hidden, ")");
  c.cross_qk_norm = source.contains(keys::first_cross_q_norm);
  return c;
}

//! Loads a text-to-image TiM from a checkpoint, unchanged released names (a `.safetensors`
//! file; convert the released `t2i_model.bin` with tools/convert_t2i_checkpoint.py).
//! Weights are memory-mapped views when their dtype is T (and aligned), converted copies
//! otherwise; bfloat16/float16 linear weights stay in their dtype as load_c2i describes
//! (`options`). `projector.*` (training-only) is ignored and listed in config.ignored; any
//! other unknown tensor is an error.
template <class T, class Backend = cpu, class Source>
T2IModel<T, Backend> load_t2i(const Source& source, const ConfigOverrides& overrides = {},
                              const LoadOptions& options = {}) {
  T2IModel<T, Backend> model;
  model.config = infer_t2i_config(source, overrides);
  const auto& c = model.config;
  ParameterReader<Source> reader{source, {}, options};
  load_shared_parameters(model, reader);
  model.y_embedder.load(reader, keys::y_embedder, c);
  collect_ignored(model.config.ignored, source, reader, "text-to-image TiM with " + c.describe());
  return model;
}

}  // namespace tim::nn
