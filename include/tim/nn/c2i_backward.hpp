// The backward pass of the class-conditional TiM: from dL/d(output) and the activations its
// training forward saved (nn/c2i_training.hpp), the gradient of every parameter (into a
// C2IGradients, the network's structure and released names: nn/parameters.hpp) and, when asked,
// of the input latent. The time inputs t and r are data (the objective differentiates them by
// finite differences, SPEC 7), so they get no gradient. Every step is a backend operation
// (`*_backward`), so the pass runs on any backend that has them.
//
// Shape legend: B batch, C channels, H x W latent, p patch, N = (H/p)(W/p) tokens, D hidden,
// nh heads, hd = D/nh head dim, L adaLN hidden, Hm MLP hidden.
#pragma once

#include <cstdint>

#include "tim/core/error.hpp"
#include "tim/nn/c2i_training.hpp"
#include "tim/nn/parameters.hpp"

namespace tim::nn {

namespace backward_detail {

//! The backward of layer.forward (y (rows, out) = x W^T + b): the parameter gradients are added
//! to `grad`; dx (rows, in) is written (added to with `accumulate_dx`) unless null.
template <class T, class Backend>
void linear_backward(const Linear<T, Backend>& layer, Linear<T, Backend>& grad, T* dx, const T* dy, const T* x,
                     std::int64_t rows, bool accumulate_dx = false) {
  check(layer.storage == WeightStorage::value, "backward: a weight is held as stored (",
        weight_storage_name(layer.storage), "); training needs {.weights = tim::nn::WeightLoading::widened}");
  Backend::linear_backward(dx, grad.weight.data(), grad.bias.empty_tensor() ? nullptr : grad.bias.data(), dy, x,
                           layer.weight.data(), rows, layer.in_features, layer.out_features, accumulate_dx);
}

//! The backward of a SwiGLU module fc2(silu(fc1_g(u)) fc1_x(u)) from dy (rows, out), its input u
//! (rows, in) and the saved fc1 outputs `hidden` (2, rows, hid): parameter gradients into
//! `grad`, du (rows, in) written (or added to with `accumulate_du`). Scratch: `product`
//! (rows, hid), `dhidden` (2, rows, hid).
template <class T, class Backend>
void swiglu_backward(const SwiGLU<T, Backend>& m, SwiGLU<T, Backend>& grad, T* du, const T* dy, const T* u,
                     const T* hidden, std::int64_t rows, T* product, T* dhidden, bool accumulate_du) {
  const auto hid = m.hidden();
  const T* gate = hidden;
  const T* value = hidden + rows * hid;
  Backend::swiglu_forward(product, gate, value, rows, hid, hid, hid);    // recomputed: fc2's input
  linear_backward(m.fc2, grad.fc2, product, dy, product, rows);          // d(product), in place
  Backend::swiglu_backward(dhidden, dhidden + rows * hid, product, gate, value, rows, hid, hid, hid);
  linear_backward(m.fc1_g, grad.fc1_g, du, dhidden, u, rows, accumulate_du);
  linear_backward(m.fc1_x, grad.fc1_x, du, dhidden + rows * hid, u, rows, true);
}

//! The backward of a timestep embedder evaluation (features -> mlp.0 -> SiLU -> mlp.2) from
//! de (B, D): parameter gradients into `grad` (the features, of data, need none).
template <class T, class Backend>
void embedder_backward(const TimestepEmbedder<T, Backend>& e, TimestepEmbedder<T, Backend>& grad,
                       const EmbedderActivations<T, Backend>& a, const T* de, std::int64_t B, T* scratch) {
  const auto D = e.linear_1.out_features;
  Backend::silu_forward(scratch, a.hidden.data(), B * D);
  linear_backward(e.linear_2, grad.linear_2, scratch, de, scratch, B);
  Backend::silu_backward(scratch, scratch, a.hidden.data(), B * D);
  linear_backward(e.linear_1, grad.linear_1, static_cast<T*>(nullptr), scratch, a.features.data(), B);
}

//! `xhat` (B*N, D) = LayerNorm(x) without affine and `u` = modulate(xhat, shift, scale): the
//! modulated input a branch's first linear saw, recomputed (the same operations as the forward).
template <class T, class Backend>
void recompute_modulated(T* xhat, T* u, const T* x, const T* shift, const T* scale, std::int64_t stride, std::int64_t B,
                         std::int64_t N, std::int64_t D) {
  const T* none = nullptr;
  Backend::layernorm_forward(xhat, x, none, none, B * N, D, 1e-6);
  Backend::copy(u, xhat, static_cast<std::size_t>(B * N * D));
  Backend::modulate_forward(u, shift, scale, B, N, D, stride);
}

}  // namespace backward_detail

//! The backward of block_training_forward. On entry ws.d_tokens holds dL/d(block output); on
//! return dL/d(block input). Adds the block's parameter gradients to `grad`, dL/dc to
//! ws.d_condition and the qkv_d term's dL/dE_delta to ws.d_interval.
template <class T, class Backend>
void block_backward(const TiMBlock<T, Backend>& block, TiMBlock<T, Backend>& grad, const BlockActivations<T, Backend>& a,
                    const T* x_in, C2ITrainingWorkspace<T, Backend>& ws, const C2IConfig& config, std::int64_t B,
                    std::int64_t N) {
  using namespace backward_detail;
  const auto D = config.hidden, nh = config.num_heads, hd = config.head_dim(), rows = B * N;
  const std::int64_t stride = TiMBlock<T, Backend>::modulation_chunks * D;
  const auto msa = ModulationChunks<T>::at(a.modulation.data(), 0, 6, D);
  const auto mlp = ModulationChunks<T>::at(a.modulation.data(), 3, 6, D);
  T* dmod = ws.d_modulation.data();  // (B, 6D), chunks as the modulation's
  Backend::fill(dmod, static_cast<std::size_t>(B * stride), T(0));
  T* dx = ws.d_tokens.data();
  T* xhat = ws.normalized.data();
  T* u = ws.shared.normed.data();
  T* du = ws.d_normed.data();
  T* dupdate = ws.d_update.data();
  const T* none = nullptr;

  // MLP branch: x_out = x_mid + gate_mlp * mlp(modulate(norm2(x_mid))).
  Backend::gated_residual_backward(dupdate, dmod + 5 * D, dx, mlp.gate, a.mlp_update.data(), B, N, D, stride);
  recompute_modulated<T, Backend>(xhat, u, a.x_mid.data(), mlp.shift, mlp.scale, stride, B, N, D);
  swiglu_backward(block.mlp, grad.mlp, du, dupdate, u, a.mlp_hidden.data(), rows, ws.mlp_product.data(),
                  ws.d_wide.data(), false);
  Backend::modulate_backward(du, dmod + 3 * D, dmod + 4 * D, du, xhat, mlp.scale, B, N, D, stride);
  Backend::layernorm_backward(dx, static_cast<T*>(nullptr), static_cast<T*>(nullptr), du, a.x_mid.data(),
                              a.norm2_mean.data(), a.norm2_rstd.data(), none, rows, D, true);

  // Attention branch: x_mid = x_in + gate_msa * proj(attention(split(qkv(u) + qkv_d(E_delta)))).
  const auto& attn = block.attn;
  auto& gattn = grad.attn;
  Backend::gated_residual_backward(dupdate, dmod + 2 * D, dx, msa.gate, a.attn_update.data(), B, N, D, stride);
  linear_backward(attn.proj, gattn.proj, ws.d_attended.data(), dupdate, a.attended.data(), rows);
  Backend::attention_backward(ws.d_q.data(), ws.d_k.data(), ws.d_v.data(), ws.d_attended.data(), a.q.data(),
                              a.k.data(), a.v.data(), a.attended.data(), a.lse.data(), B, nh, N, N, hd, 1.0);
  T* dqkv = ws.d_wide.data();  // (B*N, 3D)
  T* dbias = config.interval_qkv ? ws.d_sample_bias.data() : nullptr;
  if (dbias) Backend::fill(dbias, static_cast<std::size_t>(B * 3 * D), T(0));
  const bool norms = attn.q_norm.present();
  Backend::qkv_split_backward(dqkv, dbias, norms ? gattn.q_norm.weight.data() : nullptr,
                              norms ? gattn.q_norm.bias.data() : nullptr,
                              attn.k_norm.present() ? gattn.k_norm.weight.data() : nullptr,
                              attn.k_norm.present() ? gattn.k_norm.bias.data() : nullptr, ws.d_q.data(), ws.d_k.data(),
                              ws.d_v.data(), a.qkv.data(), config.interval_qkv ? a.interval_qkv.data() : nullptr,
                              attn.q_norm.weight_or_null(), attn.k_norm.weight_or_null(), a.q_mean.data(),
                              a.q_rstd.data(), a.k_mean.data(), a.k_rstd.data(), ws.shared.rotary_cos.data(),
                              ws.shared.rotary_sin.data(), B, N, nh, hd, attention_query_scale<T>(hd));
  if (dbias) linear_backward(attn.qkv_d, gattn.qkv_d, ws.d_interval.data(), dbias, ws.interval.data(), B, true);
  recompute_modulated<T, Backend>(xhat, u, x_in, msa.shift, msa.scale, stride, B, N, D);
  linear_backward(attn.qkv, gattn.qkv, du, dqkv, u, rows);
  Backend::modulate_backward(du, dmod, dmod + D, du, xhat, msa.scale, B, N, D, stride);
  Backend::layernorm_backward(dx, static_cast<T*>(nullptr), static_cast<T*>(nullptr), du, x_in, a.norm1_mean.data(),
                              a.norm1_rstd.data(), none, rows, D, true);

  // adaLN: modulation = SwiGLU(c).
  swiglu_backward(block.adaln, grad.adaln, ws.d_condition.data(), dmod, ws.condition.data(), a.adaln_hidden.data(), B,
                  ws.small.data(), ws.d_adaln_hidden.data(), true);
}

//! The backward pass of a C2I network after c2i_training_forward(model, ws, ...): from dout
//! (B, C_out, H, W) = dL/d(output), adds dL/dtheta of every parameter to `grads` (shaped like
//! the model: zero_gradients_like, then zero_gradients before each step) and writes
//! dL/dx (B, C, H, W) to `dx` when it is given (resized when its shape differs).
template <class T, class Backend>
void c2i_backward(const C2IModel<T, Backend>& model, C2ITrainingWorkspace<T, Backend>& ws,
                  const Tensor<T, Backend>& dout, C2IGradients<T, Backend>& grads, Tensor<T, Backend>* dx = nullptr) {
  using namespace backward_detail;
  const auto& c = model.config;
  const auto B = ws.batch, H = ws.height, W = ws.width;
  check(B > 0, "c2i_backward: run c2i_training_forward with this workspace first");
  check(dout.rank() == 4 && dout.dim(0) == B && dout.dim(1) == c.out_channels && dout.dim(2) == H && dout.dim(3) == W,
        "c2i_backward: 'dout' must have the output's shape [", B, ", ", c.out_channels, ", ", H, ", ", W, "], got ",
        dout.shape());
  check_shaped_like(model, grads, "c2i_backward", "grads");
  const auto D = c.hidden, p = c.patch, N = (H / p) * (W / p), rows = B * N;
  const T* none = nullptr;

  // Final layer: out = unpatchify(linear(modulate(LayerNorm(x_final), shift, scale))).
  const auto& fl = model.final_layer;
  auto& gfl = grads.final_layer;
  T* xhat = ws.normalized.data();
  T* u = ws.shared.normed.data();
  T* du = ws.d_normed.data();
  T* dmod = ws.d_modulation.data();  // (B, 2D) here
  Backend::unpatchify_backward(ws.d_update.data(), dout.data(), B, c.out_channels, H, W, p);
  const T* shift = ws.final_modulation.data();
  const T* scale = shift + D;
  recompute_modulated<T, Backend>(xhat, u, ws.final_input.data(), shift, scale, 2 * D, B, N, D);
  linear_backward(fl.linear, gfl.linear, du, ws.d_update.data(), u, rows);
  Backend::fill(dmod, static_cast<std::size_t>(B * 2 * D), T(0));
  Backend::modulate_backward(du, dmod, dmod + D, du, xhat, scale, B, N, D, 2 * D);
  Backend::layernorm_backward(ws.d_tokens.data(), static_cast<T*>(nullptr), static_cast<T*>(nullptr), du,
                              ws.final_input.data(), ws.final_mean.data(), ws.final_rstd.data(), none, rows, D, false);
  swiglu_backward(fl.adaln, gfl.adaln, ws.d_condition.data(), dmod, ws.condition.data(), ws.final_adaln_hidden.data(),
                  B, ws.small.data(), ws.d_adaln_hidden.data(), false);
  Backend::fill(ws.d_interval.data(), static_cast<std::size_t>(B * D), T(0));

  // Blocks, last first; with checkpointing each block's activations are recomputed first.
  for (std::size_t i = model.blocks.size(); i-- > 0;) {
    if (ws.checkpoint_blocks)
      block_training_forward(model.blocks[i], ws.activations(i), ws.block_inputs[i].data(), ws.block_output.data(), ws, c,
                             B, N);
    block_backward(model.blocks[i], grads.blocks[i], ws.activations(i), ws.block_inputs[i].data(), ws, c, B, N);
  }

  // Patch embedding: tokens = patchify(x) W^T + b.
  T* dpatches = dx ? ws.d_patches.data() : nullptr;
  linear_backward(model.x_embedder.proj, grads.x_embedder.proj, dpatches, ws.d_tokens.data(), ws.patches.data(), rows);
  if (dx) {
    if (dx->empty_tensor() || dx->shape() != Shape{B, c.in_channels, H, W})
      *dx = Tensor<T, Backend>::empty({B, c.in_channels, H, W});
    Backend::patchify_backward(dx->data(), dpatches, B, c.in_channels, H, W, p);
  }

  // Conditioning: c = Et(t) + E_delta + E_y(y), E_delta = [Et(t)] + [r term] + [t-r term].
  T* dc = ws.d_condition.data();
  T* dinterval = ws.d_interval.data();
  Backend::add_forward(dinterval, dc, B * D);  // c contains E_delta
  Backend::embedding_backward(grads.label_table.data(), dc, ws.labels.data(), B, D);
  const auto terms = interval_terms(c.new_condition);
  auto& gdelta = c.separate_delta_embedder ? grads.delta_embedder : grads.t_embedder;
  const auto& delta = c.separate_delta_embedder ? model.delta_embedder : model.t_embedder;
  if (terms.t_minus_r) embedder_backward(delta, gdelta, ws.interval_embedding, dinterval, B, ws.small.data());
  if (terms.r) {
    const bool through_delta = terms.r_through_delta();
    embedder_backward(through_delta ? delta : model.t_embedder, through_delta ? gdelta : grads.t_embedder,
                      ws.r_embedding, dinterval, B, ws.small.data());
  }
  if (terms.t) Backend::add_forward(dc, dinterval, B * D);  // Et(t) is in c and in E_delta
  embedder_backward(model.t_embedder, grads.t_embedder, ws.t_embedding, dc, B, ws.small.data());
}

}  // namespace tim::nn
