// The training forward of the class-conditional TiM: the same arithmetic as C2IModel::forward
// (the same backend operations in the same order, so the same output bits), keeping in a
// training workspace, sized once per (B, H, W), every activation the backward pass
// (nn/c2i_backward.hpp) needs. With `checkpoint_blocks`, only each block's input is kept and the
// backward recomputes the block's activations before differentiating it (one block's worth of
// activations instead of depth's).
//
// Shape legend: B batch, C channels, H x W latent, p patch, N = (H/p)(W/p) tokens, D hidden,
// nh heads, hd = D/nh head dim, L adaLN hidden, Lf final adaLN hidden, Hm MLP hidden.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/nn/backbone.hpp"
#include "tim/nn/c2i.hpp"

namespace tim::nn {

//! What the backward of one TiM block reads, saved by its training forward.
template <class T, class Backend>
struct BlockActivations {
  Tensor<T, Backend> modulation;    // (B, 6D) adaLN output: shift, scale, gate (msa), then (mlp)
  Tensor<T, Backend> adaln_hidden;  // (B, 2L): fc1_g(c), then fc1_x(c), before the SwiGLU
  Tensor<T, Backend> norm1_mean, norm1_rstd;  // (B*N) statistics of norm1 over the block input
  Tensor<T, Backend> qkv;           // (B*N, 3D) attn.qkv(modulated norm1), before the qkv_d term
  Tensor<T, Backend> interval_qkv;  // (B, 3D) attn.qkv_d(E_delta); unused without qkv_d
  Tensor<T, Backend> q, k, v;       // (B, nh, N, hd) attention inputs (normed, rotated, q scaled)
  Tensor<T, Backend> q_mean, q_rstd, k_mean, k_rstd;  // (B, nh, N) qk-norm statistics
  Tensor<T, Backend> attended;      // (B*N, D) attention output, heads concatenated
  Tensor<T, Backend> lse;           // (B, nh, N) logsumexp of every score row
  Tensor<T, Backend> attn_update;   // (B*N, D) attn.proj output
  Tensor<T, Backend> x_mid;         // (B*N, D) residual after the attention branch (norm2's input)
  Tensor<T, Backend> norm2_mean, norm2_rstd;  // (B*N)
  Tensor<T, Backend> mlp_hidden;    // (2, B*N, Hm): fc1_g, then fc1_x of the modulated norm2
  Tensor<T, Backend> mlp_update;    // (B*N, D) mlp.fc2 output
};

//! What the backward of one timestep embedder evaluation reads.
template <class T, class Backend>
struct EmbedderActivations {
  Tensor<T, Backend> features;  // (B, 256) sinusoidal features
  Tensor<T, Backend> hidden;    // (B, D) mlp.0 output, before the SiLU
};

//! The training workspace of a C2I network: saved activations and the backward's scratch, sized
//! by reserve (buffers only grow). Not shared between threads.
template <class T, class Backend>
struct C2ITrainingWorkspace {
  std::int64_t batch = -1, height = -1, width = -1;
  bool checkpoint_blocks = false;
  //! The widths of the model the buffers were sized for: a model of other widths regrows them.
  struct ModelWidths {
    std::int64_t depth = -1, hidden = -1, heads = -1, mlp_hidden = -1, adaln_hidden = -1, final_adaln_hidden = -1;
    std::int64_t patch = -1, in_channels = -1, out_channels = -1;
    bool operator==(const ModelWidths&) const = default;
  };
  ModelWidths widths;

  Workspace<T, Backend> shared;  // rotary tables, times, embedder scratch, the modulated input
  Tensor<T, Backend> patches;    // (B*N, C p p) patchified input
  EmbedderActivations<T, Backend> t_embedding, r_embedding, interval_embedding;  // Et(t), the r term, the t-r term
  Tensor<std::int64_t, cpu> labels;  // (B) host copy of the labels
  Tensor<T, Backend> condition;  // c (B, D)
  Tensor<T, Backend> interval;   // E_delta (B, D)
  std::vector<Tensor<T, Backend>> block_inputs;     // depth x (B*N, D): residual stream entering each block
  std::vector<BlockActivations<T, Backend>> blocks;  // depth, or 1 with checkpoint_blocks
  Tensor<T, Backend> final_input;                    // (B*N, D) residual stream after the last block
  Tensor<T, Backend> final_mean, final_rstd;         // (B*N)
  Tensor<T, Backend> final_modulation;               // (B, 2D) shift, scale
  Tensor<T, Backend> final_adaln_hidden;             // (B, 2 Lf)

  // Scratch of the forward and the backward.
  Tensor<T, Backend> small;         // (B, max(L, Lf, D)): adaLN SwiGLU output, SiLU of an embedder
  Tensor<T, Backend> mlp_product;   // (B*N, Hm): silu(g) v of the MLP
  Tensor<T, Backend> normalized;    // (B*N, D): LayerNorm output recomputed in the backward
  Tensor<T, Backend> block_output;  // (B*N, D): output of a recomputed block (checkpointing)
  Tensor<T, Backend> d_tokens;      // (B*N, D) gradient of the residual stream
  Tensor<T, Backend> d_normed;      // (B*N, D)
  Tensor<T, Backend> d_wide;        // (B*N, max(3D, 2 Hm)): dqkv, or the MLP's dgate and dvalue
  Tensor<T, Backend> d_q, d_k, d_v;  // (B, nh, N, hd)
  Tensor<T, Backend> d_attended;    // (B*N, D)
  Tensor<T, Backend> d_update;      // (B*N, max(D, p p C_out))
  Tensor<T, Backend> d_patches;     // (B*N, C p p)
  Tensor<T, Backend> d_condition, d_interval, d_embedding;  // (B, D)
  Tensor<T, Backend> d_modulation;  // (B, 6D)
  Tensor<T, Backend> d_adaln_hidden;  // (B, 2 max(L, Lf))
  Tensor<T, Backend> d_sample_bias;   // (B, 3D)

  //! Sizes every buffer for `model` at batch B and latent H x W (checkpoint_blocks: keep only
  //! each block's input). Nothing is allocated when the sizes and the model's widths are those
  //! of the last call; a model of other widths (same depth or not) regrows every buffer.
  void reserve(const C2IModel<T, Backend>& model, std::int64_t B, std::int64_t H, std::int64_t W,
               bool checkpoint = false) {
    const auto& c = model.config;
    std::int64_t L = 0;
    for (const auto& block : model.blocks) L = std::max(L, block.adaln.hidden());
    const auto Lf = model.final_layer.adaln.hidden();
    const ModelWidths now{static_cast<std::int64_t>(model.blocks.size()), c.hidden, c.num_heads, c.mlp_hidden, L, Lf,
                          c.patch, c.in_channels, c.out_channels};
    if (batch == B && height == H && width == W && checkpoint_blocks == checkpoint && widths == now) return;
    // The backbone workspace checks only (B, H, W): for other widths (the rotary tables depend on
    // the head dim) it starts again.
    if (!(widths == now)) shared = Workspace<T, Backend>{};
    const auto D = c.hidden, p = c.patch, N = (H / p) * (W / p), rows = B * N, nh = c.num_heads;
    const auto patch_values = c.in_channels * p * p, Hm = c.mlp_hidden;
    reserve_backbone(shared, c, model.blocks, B, H, W);
    const auto grow = [](Tensor<T, Backend>& t, std::int64_t n) { Workspace<T, Backend>::grow(t, n); };
    grow(patches, rows * patch_values);
    for (auto* e : {&t_embedding, &r_embedding, &interval_embedding}) {
      grow(e->features, B * math::timestep_features);
      grow(e->hidden, B * D);
    }
    if (labels.empty_tensor() || labels.numel() < B) labels = Tensor<std::int64_t, cpu>::empty({B});
    grow(condition, B * D);
    grow(interval, B * D);
    block_inputs.resize(model.blocks.size());
    for (auto& t : block_inputs) grow(t, rows * D);
    blocks.resize(checkpoint ? 1 : model.blocks.size());
    for (auto& a : blocks) {
      grow(a.modulation, B * 6 * D);
      grow(a.adaln_hidden, 2 * B * L);
      for (auto* t : {&a.norm1_mean, &a.norm1_rstd, &a.norm2_mean, &a.norm2_rstd}) grow(*t, rows);
      grow(a.qkv, rows * 3 * D);
      grow(a.interval_qkv, B * 3 * D);
      for (auto* t : {&a.q, &a.k, &a.v, &a.attended, &a.attn_update, &a.x_mid, &a.mlp_update}) grow(*t, rows * D);
      for (auto* t : {&a.q_mean, &a.q_rstd, &a.k_mean, &a.k_rstd, &a.lse}) grow(*t, B * nh * N);
      grow(a.mlp_hidden, 2 * rows * Hm);
    }
    grow(final_input, rows * D);
    grow(final_mean, rows);
    grow(final_rstd, rows);
    grow(final_modulation, B * 2 * D);
    grow(final_adaln_hidden, 2 * B * Lf);
    grow(small, B * std::max({L, Lf, D}));
    grow(mlp_product, rows * Hm);
    for (auto* t : {&normalized, &block_output, &d_tokens, &d_normed, &d_q, &d_k, &d_v, &d_attended}) grow(*t, rows * D);
    grow(d_wide, rows * std::max(3 * D, 2 * Hm));
    grow(d_update, rows * std::max(D, p * p * c.out_channels));
    grow(d_patches, rows * patch_values);
    for (auto* t : {&d_condition, &d_interval, &d_embedding}) grow(*t, B * D);
    grow(d_modulation, B * 6 * D);
    grow(d_adaln_hidden, 2 * B * std::max(L, Lf));
    grow(d_sample_bias, B * 3 * D);
    batch = B;
    height = H;
    width = W;
    checkpoint_blocks = checkpoint;
    widths = now;
  }

  //! The saved activations of block i (the one shared set when checkpointing).
  BlockActivations<T, Backend>& activations(std::size_t i) { return blocks[checkpoint_blocks ? 0 : i]; }
};

namespace training_detail {

//! e (B, D) = embedder(s (B)), saving its features and pre-SiLU hidden values in `a`.
template <class T, class Backend>
void embedder_training_forward(const TimestepEmbedder<T, Backend>& embedder, EmbedderActivations<T, Backend>& a, T* e,
                               const T* s, std::int64_t B, T* scratch) {
  Backend::timestep_features_forward(a.features.data(), s, B);
  embedder.linear_1.forward(a.hidden.data(), a.features.data(), B);
  Backend::silu_forward(scratch, a.hidden.data(), B * embedder.linear_1.out_features);
  embedder.linear_2.forward(e, scratch, B);
}

//! y (rows, out) = SwiGLU module(u), saving fc1_g(u), fc1_x(u) in `hidden` (2, rows, hid); the
//! product silu(g) v goes to `product` (rows, hid).
template <class T, class Backend>
void swiglu_training_forward(const SwiGLU<T, Backend>& m, T* y, const T* u, std::int64_t rows, T* hidden, T* product) {
  const auto hid = m.hidden();
  m.fc1_g.forward(hidden, u, rows);
  m.fc1_x.forward(hidden + rows * hid, u, rows);
  Backend::swiglu_forward(product, hidden, hidden + rows * hid, rows, hid, hid, hid);
  m.fc2.forward(y, product, rows);
}

}  // namespace training_detail

//! The training forward of block `block` from x_in (B*N, D) to x_out (B*N, D), saving into `a`;
//! ws.condition and ws.interval hold c and E_delta.
template <class T, class Backend>
void block_training_forward(const TiMBlock<T, Backend>& block, BlockActivations<T, Backend>& a, const T* x_in, T* x_out,
                            C2ITrainingWorkspace<T, Backend>& ws, const C2IConfig& config, std::int64_t B,
                            std::int64_t N) {
  const auto D = config.hidden, nh = config.num_heads, hd = config.head_dim(), rows = B * N;
  const std::int64_t stride = TiMBlock<T, Backend>::modulation_chunks * D;
  T* normed = ws.shared.normed.data();
  training_detail::swiglu_training_forward(block.adaln, a.modulation.data(), ws.condition.data(), B,
                                           a.adaln_hidden.data(), ws.small.data());
  const auto msa = ModulationChunks<T>::at(a.modulation.data(), 0, 6, D);
  const auto mlp = ModulationChunks<T>::at(a.modulation.data(), 3, 6, D);
  const T* none = nullptr;

  Backend::layernorm_training_forward(normed, a.norm1_mean.data(), a.norm1_rstd.data(), x_in, none, none, rows, D, 1e-6);
  Backend::modulate_forward(normed, msa.shift, msa.scale, B, N, D, stride);
  block.attn.qkv.forward(a.qkv.data(), normed, rows);
  const T* sample_bias = nullptr;
  if (config.interval_qkv) {
    block.attn.qkv_d.forward(a.interval_qkv.data(), ws.interval.data(), B);
    sample_bias = a.interval_qkv.data();
  }
  const auto& attn = block.attn;
  Backend::qkv_split_training_forward(a.q.data(), a.k.data(), a.v.data(), a.q_mean.data(), a.q_rstd.data(),
                                      a.k_mean.data(), a.k_rstd.data(), a.qkv.data(), sample_bias,
                                      attn.q_norm.weight_or_null(), attn.q_norm.bias_or_null(),
                                      attn.k_norm.weight_or_null(), attn.k_norm.bias_or_null(), 1e-5,
                                      ws.shared.rotary_cos.data(), ws.shared.rotary_sin.data(), B, N, nh, hd,
                                      attention_query_scale<T>(hd));
  Backend::attention_training_forward(a.attended.data(), a.lse.data(), a.q.data(), a.k.data(), a.v.data(), B, nh, N, N,
                                      hd, 1.0);
  attn.proj.forward(a.attn_update.data(), a.attended.data(), rows);
  Backend::copy(a.x_mid.data(), x_in, static_cast<std::size_t>(rows * D));
  Backend::gated_residual_forward(a.x_mid.data(), msa.gate, a.attn_update.data(), B, N, D, stride);

  Backend::layernorm_training_forward(normed, a.norm2_mean.data(), a.norm2_rstd.data(), a.x_mid.data(), none, none,
                                      rows, D, 1e-6);
  Backend::modulate_forward(normed, mlp.shift, mlp.scale, B, N, D, stride);
  training_detail::swiglu_training_forward(block.mlp, a.mlp_update.data(), normed, rows, a.mlp_hidden.data(),
                                           ws.mlp_product.data());
  Backend::copy(x_out, a.x_mid.data(), static_cast<std::size_t>(rows * D));
  Backend::gated_residual_forward(x_out, mlp.gate, a.mlp_update.data(), B, N, D, stride);
}

//! The training forward of a C2I network: out (B, C_out, H, W) = F_theta(x, t_in, r_in, labels)
//! exactly as model.forward computes it, with the activations of the backward saved in `ws`
//! (sized here when needed; `checkpoint_blocks` keeps only each block's input).
template <class T, class Backend>
void c2i_training_forward(const C2IModel<T, Backend>& model, C2ITrainingWorkspace<T, Backend>& ws,
                          Tensor<T, Backend>& out, const Tensor<T, Backend>& x, const Tensor<T, Backend>& t_in,
                          const Tensor<T, Backend>& r_in, const Tensor<std::int64_t, cpu>& labels,
                          bool checkpoint_blocks = false) {
  model.validate_inputs(x, t_in, r_in, labels);
  const auto& c = model.config;
  const auto B = x.dim(0), H = x.dim(2), W = x.dim(3);
  const auto D = c.hidden, p = c.patch, N = (H / p) * (W / p), rows = B * N;
  ensure_output(out, c, B, H, W);
  ws.reserve(model, B, H, W, checkpoint_blocks);
  std::copy(labels.data(), labels.data() + B, ws.labels.data());

  // Patch embedding into the first block's input.
  Backend::patchify_forward(ws.patches.data(), x.data(), B, c.in_channels, H, W, p);
  model.x_embedder.proj.forward(ws.block_inputs[0].data(), ws.patches.data(), rows);

  // Conditioning, as embed_time and C2IModel::forward: c = Et(t) + E_delta + E_y(y).
  T* t_values = ws.shared.times.data();
  T* r_values = t_values + B;
  T* interval_values = r_values + B;
  Backend::copy(t_values, t_in.data(), static_cast<std::size_t>(B));
  Backend::copy(r_values, r_in.data(), static_cast<std::size_t>(B));
  Backend::difference_forward(interval_values, t_values, r_values, B);
  T* term = ws.d_embedding.data();  // (B, D) scratch of the forward
  using training_detail::embedder_training_forward;
  embedder_training_forward(model.t_embedder, ws.t_embedding, ws.condition.data(), t_values, B, ws.small.data());
  Backend::fill(ws.interval.data(), static_cast<std::size_t>(B * D), T(0));
  const auto terms = interval_terms(c.new_condition);
  const auto& delta = c.separate_delta_embedder ? model.delta_embedder : model.t_embedder;
  if (terms.t) Backend::add_forward(ws.interval.data(), ws.condition.data(), B * D);
  if (terms.r) {
    const auto& r_embedder = terms.r_through_delta() ? delta : model.t_embedder;
    embedder_training_forward(r_embedder, ws.r_embedding, term, r_values, B, ws.small.data());
    Backend::add_forward(ws.interval.data(), term, B * D);
  }
  if (terms.t_minus_r) {
    embedder_training_forward(delta, ws.interval_embedding, term, interval_values, B, ws.small.data());
    Backend::add_forward(ws.interval.data(), term, B * D);
  }
  Backend::add_forward(ws.condition.data(), ws.interval.data(), B * D);
  Backend::embedding_forward(term, model.label_table.data(), labels.data(), B, D);
  Backend::add_forward(ws.condition.data(), term, B * D);

  for (std::size_t i = 0; i < model.blocks.size(); ++i) {
    T* x_out = i + 1 < model.blocks.size() ? ws.block_inputs[i + 1].data() : ws.final_input.data();
    block_training_forward(model.blocks[i], ws.activations(i), ws.block_inputs[i].data(), x_out, ws, c, B, N);
  }

  // Final layer: adaLN (shift, scale), LayerNorm, modulate, linear, unpatchify.
  const auto& fl = model.final_layer;
  T* normed = ws.shared.normed.data();
  training_detail::swiglu_training_forward(fl.adaln, ws.final_modulation.data(), ws.condition.data(), B,
                                           ws.final_adaln_hidden.data(), ws.small.data());
  const T* none = nullptr;
  Backend::layernorm_training_forward(normed, ws.final_mean.data(), ws.final_rstd.data(), ws.final_input.data(), none,
                                      none, rows, D, 1e-6);
  Backend::modulate_forward(normed, ws.final_modulation.data(), ws.final_modulation.data() + D, B, N, D, 2 * D);
  fl.linear.forward(ws.shared.update.data(), normed, rows);
  Backend::unpatchify_forward(out.data(), ws.shared.update.data(), B, c.out_channels, H, W, p);
}

}  // namespace tim::nn
