// The parts of the TiM network that the class-conditional (C2I, SPEC 3) and the
// text-conditioned (T2I, SPEC 5) models share, written once: self-attention, cross-attention,
// the MLP branch, the final layer, time conditioning, rotary tables, the workspace, and the
// configuration read from shapes. c2i.hpp and t2i.hpp assemble their blocks from these.
//
// Shape legend: B batch, C channels, H x W latent, p patch, h = H/p token rows, w = W/p token
// columns, N = h*w tokens, M caption tokens, Dc caption feature width, D hidden, nh heads,
// hd = D/nh head dim, L adaLN hidden, Hm MLP hidden, K modulation chunks (6 C2I, 9 T2I).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "tim/core/shape.hpp"
#include "tim/nn/config.hpp"
#include "tim/nn/modules.hpp"

namespace tim::nn {

//! Scratch memory of one forward pass, grown on demand and then reused, so repeated
//! evaluations at the same batch, latent size (and caption length) allocate nothing.
//! The caption buffers stay empty for a C2I model.
template <class T, class Backend>
struct Workspace {
  Workspace() = default;
  // A copy starts empty: copies of a network never share scratch (each grows its own on its
  // first forward), so copies may run on different threads (tim::PerSampleNetwork).
  Workspace(const Workspace&) {}
  Workspace& operator=(const Workspace& other) {
    if (this != &other) *this = Workspace{};
    return *this;
  }
  Workspace(Workspace&&) noexcept = default;
  Workspace& operator=(Workspace&&) noexcept = default;
  ~Workspace() = default;

  std::int64_t batch = -1, height = -1, width = -1;
  Tensor<T, Backend> tokens;       // x (B*N, D), the residual stream
  Tensor<T, Backend> normed;       // (B*N, max(D, C p p)): patches, then normed/modulated input
  Tensor<T, Backend> wide;         // (B*N, max(3D, 2 Hm)): qkv, cross q, or the MLP's gate and value halves
  Tensor<T, Backend> q, k, v;      // (B, nh, N, hd)
  Tensor<T, Backend> attended;     // (B*N, D)
  Tensor<T, Backend> update;       // (B*N, max(D, p p C_out))
  Tensor<T, Backend> rotary_cos, rotary_sin;  // (N, hd/2)
  Tensor<T, Backend> condition;    // c (B, D)
  Tensor<T, Backend> interval;     // E_delta (B, D)
  Tensor<T, Backend> embed_scratch;  // (B, 256 + 2D) time embedder scratch
  Tensor<T, Backend> modulation;   // (B, K D)
  Tensor<T, Backend> modulation_hidden;  // (B, 2 max(L, D/2))
  Tensor<T, Backend> interval_qkv;  // (B, 3D)
  Tensor<T, Backend> times;        // (3B): t_in, r_in, t_in - r_in

  std::int64_t caption_rows = 0;      // B*M the caption buffers hold
  Tensor<T, Backend> caption;         // (B*M, D): y_embedder output, then norm2_t of it
  Tensor<T, Backend> caption_normed;  // (B*M, Dc): y_embedder.norm output
  Tensor<T, Backend> caption_hidden;  // (B*M, 2 x caption hidden): y_embedder.mlp gate and value
  Tensor<T, Backend> caption_kv;      // (B*M, 2D): cross_attn.kv output
  Tensor<T, Backend> caption_k, caption_v;  // (B, nh, M, hd)

  //! Makes `t` hold at least `n` elements (contents not kept when it grows).
  static void grow(Tensor<T, Backend>& t, std::int64_t n) {
    if (t.empty_tensor() || t.numel() < n) t = Tensor<T, Backend>::empty({std::max<std::int64_t>(n, 1)});
  }

  //! Sizes the backbone buffers for batch B and latent H x W. Buffers only grow, so
  //! alternating batch sizes (B and 2B rows under guidance) allocate nothing once the larger
  //! has been seen; the rotary tables are rebuilt only when H or W changes.
  //! `widest_adaln` is the largest adaLN hidden width of the model; `chunks` is K.
  void reserve(const BackboneConfig& config, std::int64_t widest_adaln, std::int64_t chunks, std::int64_t B,
               std::int64_t H, std::int64_t W) {
    if (batch == B && height == H && width == W) return;
    const auto D = config.hidden, p = config.patch, hd = config.head_dim();
    const auto h = H / p, w = W / p, N = h * w, rows = B * N;
    grow(tokens, rows * D);
    grow(normed, rows * std::max(D, config.in_channels * p * p));
    grow(wide, rows * std::max(3 * D, 2 * config.mlp_hidden));
    grow(q, rows * D);
    grow(k, rows * D);
    grow(v, rows * D);
    grow(attended, rows * D);
    grow(update, rows * std::max(D, p * p * config.out_channels));
    grow(condition, B * D);
    grow(interval, B * D);
    grow(embed_scratch, B * (math::timestep_features + 2 * D));
    grow(modulation, B * chunks * D);
    grow(modulation_hidden, 2 * B * std::max(widest_adaln, config.final_adaln_hidden));
    grow(interval_qkv, B * 3 * D);
    grow(times, 3 * B);
    if (height != H || width != W) {
      // Rotary tables (N, hd/2) for this grid: angles in double, stored in T.
      rotary_cos = Tensor<T, Backend>::empty({N, hd / 2});
      rotary_sin = Tensor<T, Backend>::empty({N, hd / 2});
      std::vector<T> cos_host(static_cast<std::size_t>(N * hd / 2)), sin_host(cos_host.size());
      for (std::int64_t n = 0; n < N; ++n)
        for (std::int64_t pair = 0; pair < hd / 2; ++pair) {
          const double angle = math::rotary_angle<double>(n, h, static_cast<int>(hd), static_cast<int>(pair));
          cos_host[n * (hd / 2) + pair] = static_cast<T>(std::cos(angle));
          sin_host[n * (hd / 2) + pair] = static_cast<T>(std::sin(angle));
        }
      Backend::copy_from_host(rotary_cos.data(), cos_host.data(), cos_host.size());
      Backend::copy_from_host(rotary_sin.data(), sin_host.data(), sin_host.size());
    }
    batch = B;
    height = H;
    width = W;
  }

  //! Sizes the caption buffers for `rows` = B*M caption tokens (grow only).
  void reserve_captions(const BackboneConfig& config, std::int64_t caption_dim, std::int64_t caption_hidden_width,
                        std::int64_t rows) {
    if (rows <= caption_rows) return;
    const auto D = config.hidden;
    grow(caption, rows * D);
    grow(caption_normed, rows * caption_dim);
    grow(caption_hidden, 2 * rows * caption_hidden_width);
    grow(caption_kv, rows * 2 * D);
    grow(caption_k, rows * D);
    grow(caption_v, rows * D);
    caption_rows = rows;
  }
};

//! The query scale 1 / sqrt(hd), computed in T's arithmetic type (double for double, float
//! otherwise, so bfloat16 models get the float value rounded once) and stored as T.
template <class T>
T attention_query_scale(std::int64_t head_dim) {
  using Arithmetic = std::conditional_t<std::is_same_v<T, double>, double, float>;
  return static_cast<T>(Arithmetic(1) / std::sqrt(Arithmetic(head_dim)));
}

//! The three modulation chunks (shift, scale, gate), each (B, D), of one branch: pointers
//! into the adaLN output (B, K D), whose rows are `stride` = K D apart.
template <class T>
struct ModulationChunks {
  const T* shift;
  const T* scale;
  const T* gate;
  std::int64_t stride;

  //! Chunks `first`, `first + 1`, `first + 2` of an adaLN output with `count` chunks of D.
  static ModulationChunks at(const T* modulation, std::int64_t first, std::int64_t count, std::int64_t D) {
    return {modulation + first * D, modulation + (first + 1) * D, modulation + (first + 2) * D, count * D};
  }
};

//! ws.normed (B*N, D) = modulate(LayerNorm(ws.tokens), shift, scale): LayerNorm over D, no
//! affine, eps 1e-6 (norm1, norm2 / norm2_i, norm3 and the final norm are all this).
template <class T, class Backend>
void normalize_and_modulate(Workspace<T, Backend>& ws, const T* shift, const T* scale, std::int64_t stride,
                            std::int64_t B, std::int64_t N, std::int64_t D) {
  Backend::layernorm_forward(ws.normed.data(), ws.tokens.data(), static_cast<const T*>(nullptr),
                             static_cast<const T*>(nullptr), B * N, D, 1e-6);
  Backend::modulate_forward(ws.normed.data(), shift, scale, B, N, D, stride);
}

//! Self-attention with optional qk-norm, the released 2-D rotary on q and k, and the
//! interval-aware qkv (SPEC 3). Checkpoint prefix `blocks.{i}.attn`.
template <class T, class Backend>
struct SelfAttention {
  Linear<T, Backend> qkv;    // (B*N, D) -> (B*N, 3D)
  Linear<T, Backend> qkv_d;  // E_delta (B, D) -> (B, 3D), no bias; empty unless interval_qkv
  LayerNormWeights<T, Backend> q_norm, k_norm;  // over hd; empty unless qk_norm
  Linear<T, Backend> proj;   // (B*N, D) -> (B*N, D)

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, const BackboneConfig& config) {
    const auto D = config.hidden;
    qkv.load(reader, prefix + ".qkv", D, 3 * D);
    if (config.interval_qkv) qkv_d.load(reader, prefix + ".qkv_d", D, 3 * D, false);
    if (config.qk_norm) {
      q_norm.load(reader, prefix + ".q_norm", config.head_dim());
      k_norm.load(reader, prefix + ".k_norm", config.head_dim());
    }
    proj.load(reader, prefix + ".proj", D, D);
  }
  std::int64_t parameter_count() const {
    return qkv.parameter_count() + qkv_d.parameter_count() + q_norm.parameter_count() + k_norm.parameter_count() +
           proj.parameter_count();
  }

  //! ws.tokens += gate * attn(modulate(norm1(ws.tokens), shift, scale)), with E_delta in
  //! ws.interval and the rotary tables of the current grid in the workspace.
  void residual_forward(Workspace<T, Backend>& ws, const BackboneConfig& config, const ModulationChunks<T>& mod,
                        std::int64_t B, std::int64_t N) const {
    const auto D = config.hidden, nh = config.num_heads, hd = config.head_dim(), rows = B * N;
    normalize_and_modulate(ws, mod.shift, mod.scale, mod.stride, B, N, D);
    qkv.forward(ws.wide.data(), ws.normed.data(), rows);
    const T* sample_bias = nullptr;
    if (config.interval_qkv) {
      qkv_d.forward(ws.interval_qkv.data(), ws.interval.data(), B);
      sample_bias = ws.interval_qkv.data();
    }
    Backend::qkv_split_forward(ws.q.data(), ws.k.data(), ws.v.data(), ws.wide.data(), sample_bias, q_norm.weight_or_null(),
                               q_norm.bias_or_null(), k_norm.weight_or_null(), k_norm.bias_or_null(), 1e-5,
                               ws.rotary_cos.data(), ws.rotary_sin.data(), B, N, nh, hd, attention_query_scale<T>(hd));
    Backend::attention_forward(ws.attended.data(), ws.q.data(), ws.k.data(), ws.v.data(), B, nh, N, hd, 1.0);
    proj.forward(ws.update.data(), ws.attended.data(), rows);
    Backend::gated_residual_forward(ws.tokens.data(), mod.gate, ws.update.data(), B, N, D, mod.stride);
  }
};

//! Cross-attention from the image tokens to the caption tokens (SPEC 5): q = Linear(D -> D)
//! of the image tokens, (k, v) = Linear(D -> 2D) of the caption, q_norm / k_norm over hd
//! (LayerNorm with affine, eps 1e-5), the image grid's rotary on q only, no mask,
//! proj Linear(D -> D). Checkpoint prefix `blocks.{i}.cross_attn`.
template <class T, class Backend>
struct CrossAttention {
  Linear<T, Backend> q;     // (B*N, D) -> (B*N, D)
  Linear<T, Backend> kv;    // (B*M, D) -> (B*M, 2D), split [2, nh, hd]
  LayerNormWeights<T, Backend> q_norm, k_norm;  // over hd; empty unless cross_qk_norm
  Linear<T, Backend> proj;  // (B*N, D) -> (B*N, D)

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, const BackboneConfig& config, bool with_qk_norm) {
    const auto D = config.hidden;
    q.load(reader, prefix + ".q", D, D);
    kv.load(reader, prefix + ".kv", D, 2 * D);
    if (with_qk_norm) {
      q_norm.load(reader, prefix + ".q_norm", config.head_dim());
      k_norm.load(reader, prefix + ".k_norm", config.head_dim());
    }
    proj.load(reader, prefix + ".proj", D, D);
  }
  std::int64_t parameter_count() const {
    return q.parameter_count() + kv.parameter_count() + q_norm.parameter_count() + k_norm.parameter_count() +
           proj.parameter_count();
  }

  //! ws.tokens += gate * cross_attn(modulate(norm2_i(ws.tokens), shift, scale), caption),
  //! where ws.caption (B*M, D) already holds norm2_t(y_embedder(cap_feats)).
  void residual_forward(Workspace<T, Backend>& ws, const BackboneConfig& config, const ModulationChunks<T>& mod,
                        std::int64_t B, std::int64_t N, std::int64_t M) const {
    const auto D = config.hidden, nh = config.num_heads, hd = config.head_dim(), rows = B * N;
    normalize_and_modulate(ws, mod.shift, mod.scale, mod.stride, B, N, D);
    q.forward(ws.wide.data(), ws.normed.data(), rows);
    Backend::split_heads_forward(ws.q.data(), ws.wide.data(), D, q_norm.weight_or_null(), q_norm.bias_or_null(), 1e-5,
                                 ws.rotary_cos.data(), ws.rotary_sin.data(), B, N, nh, hd, attention_query_scale<T>(hd));
    kv.forward(ws.caption_kv.data(), ws.caption.data(), B * M);
    Backend::split_heads_forward(ws.caption_k.data(), ws.caption_kv.data(), 2 * D, k_norm.weight_or_null(),
                                 k_norm.bias_or_null(), 1e-5, static_cast<const T*>(nullptr),
                                 static_cast<const T*>(nullptr), B, M, nh, hd, T(1));
    Backend::split_heads_forward(ws.caption_v.data(), ws.caption_kv.data() + D, 2 * D, static_cast<const T*>(nullptr),
                                 static_cast<const T*>(nullptr), 1e-5, static_cast<const T*>(nullptr),
                                 static_cast<const T*>(nullptr), B, M, nh, hd, T(1));
    Backend::attention_forward(ws.attended.data(), ws.q.data(), ws.caption_k.data(), ws.caption_v.data(), B, nh, N, M,
                               hd, 1.0);
    proj.forward(ws.update.data(), ws.attended.data(), rows);
    Backend::gated_residual_forward(ws.tokens.data(), mod.gate, ws.update.data(), B, N, D, mod.stride);
  }
};

//! ws.tokens += gate * mlp(modulate(LayerNorm(ws.tokens), shift, scale)): the MLP branch of
//! every block (norm2 in C2I, norm3 in T2I).
template <class T, class Backend>
void mlp_residual_forward(Workspace<T, Backend>& ws, const BackboneConfig& config, const SwiGLU<T, Backend>& mlp,
                          const ModulationChunks<T>& mod, std::int64_t B, std::int64_t N) {
  const auto D = config.hidden, rows = B * N;
  normalize_and_modulate(ws, mod.shift, mod.scale, mod.stride, B, N, D);
  mlp.forward(ws.update.data(), ws.normed.data(), rows, ws.wide.data(), ws.wide.data() + rows * config.mlp_hidden);
  Backend::gated_residual_forward(ws.tokens.data(), mod.gate, ws.update.data(), B, N, D, mod.stride);
}

//! Loads what every block has: `adaLN_modulation` (D -> L -> K D, K = Block::modulation_chunks),
//! `attn` and `mlp` (D -> Hm -> D), under `prefix` = "blocks.{i}". A T2I block adds its
//! cross-attention.
template <class Block, class Reader>
void load_block_common(Block& block, Reader& reader, const std::string& prefix, const BackboneConfig& config) {
  const auto D = config.hidden;
  block.adaln.load(reader, prefix + ".adaLN_modulation", D, config.adaln_hidden, Block::modulation_chunks * D);
  block.attn.load(reader, prefix + ".attn", config);
  block.mlp.load(reader, prefix + ".mlp", D, config.mlp_hidden, D);
}

//! adaLN (shift, scale) from c, LayerNorm, modulate, Linear(D -> p*p*C_out), unpatchify.
template <class T, class Backend>
struct FinalLayer {
  SwiGLU<T, Backend> adaln;  // c (B, D) -> (B, 2D)
  Linear<T, Backend> linear;  // (B*N, D) -> (B*N, p p C_out), values ordered (pi, pj, c)

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, const BackboneConfig& config) {
    const auto D = config.hidden;
    adaln.load(reader, prefix + ".adaLN_modulation", D, config.final_adaln_hidden, 2 * D);
    linear.load(reader, prefix + ".linear", D, config.patch * config.patch * config.out_channels);
  }
  std::int64_t parameter_count() const { return adaln.parameter_count() + linear.parameter_count(); }

  //! out (B, C_out, H, W) from the residual stream ws.tokens and the condition ws.condition.
  void forward(T* out, Workspace<T, Backend>& ws, const BackboneConfig& config, std::int64_t B, std::int64_t H,
               std::int64_t W) const {
    const auto D = config.hidden, p = config.patch, N = (H / p) * (W / p);
    T* mod = ws.modulation.data();  // (B, 2D): shift, scale
    adaln.forward(mod, ws.condition.data(), B, ws.modulation_hidden.data(),
                  ws.modulation_hidden.data() + B * adaln.hidden());
    normalize_and_modulate(ws, static_cast<const T*>(mod), static_cast<const T*>(mod + D), 2 * D, B, N, D);
    linear.forward(ws.update.data(), ws.normed.data(), B * N);
    Backend::unpatchify_forward(out, ws.update.data(), B, config.out_channels, H, W, p);
  }
};

//! The patch embedding `x_embedder.proj` (a p x p, stride p convolution) held as a Linear
//! over flattened patches: weight (D, C, p, p) seen as (D, C p p).
template <class T, class Backend>
struct PatchEmbedding {
  Linear<T, Backend> proj;

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, const BackboneConfig& config) {
    const auto D = config.hidden, C = config.in_channels, p = config.patch;
    proj.weight = reader.template take<T, Backend>(prefix + ".proj.weight", {D, C, p, p}).reshape({D, C * p * p});
    proj.bias = reader.template take<T, Backend>(prefix + ".proj.bias", {D});
    proj.in_features = C * p * p;
    proj.out_features = D;
  }
  std::int64_t parameter_count() const { return proj.parameter_count(); }

  //! ws.tokens (B*N, D) from x (B, C, H, W); token n = row * w + col.
  void forward(Workspace<T, Backend>& ws, const BackboneConfig& config, const T* x, std::int64_t B, std::int64_t H,
               std::int64_t W) const {
    const auto p = config.patch;
    Backend::patchify_forward(ws.normed.data(), x, B, config.in_channels, H, W, p);
    proj.forward(ws.tokens.data(), ws.normed.data(), B * (H / p) * (W / p));
  }
};

//! Whether `v` has shape [B]. Extents are compared one by one: no Shape is built, so a sampling
//! loop allocates nothing.
template <class Vector>
bool is_batch_vector(const Vector& v, std::int64_t B) {
  return v.rank() == 1 && v.dim(0) == B;
}

//! Checks the inputs both models share: x (B, C, H, W) with H and W positive multiples of p,
//! t_in and r_in (B); throws tim::Error naming the argument.
template <class T, class Backend>
void validate_backbone_inputs(const BackboneConfig& config, const Tensor<T, Backend>& x, const Tensor<T, Backend>& t_in,
                              const Tensor<T, Backend>& r_in) {
  check(x.rank() == 4, "input 'x': expected shape [B, C, H, W], got ", x.shape());
  const auto B = x.dim(0);
  check(x.dim(1) == config.in_channels, "input 'x': expected ", config.in_channels, " channels, got ", x.dim(1),
        " (shape ", x.shape(), ")");
  check(x.dim(2) > 0 && x.dim(3) > 0 && x.dim(2) % config.patch == 0 && x.dim(3) % config.patch == 0,
        "input 'x': height and width must be positive multiples of the patch size ", config.patch, ", got ",
        x.dim(2), "x", x.dim(3));
  check(is_batch_vector(t_in, B), "input 't': expected shape [", B, "], got ", t_in.shape());
  check(is_batch_vector(r_in, B), "input 'r': expected shape [", B, "], got ", r_in.shape());
}

//! Makes `out` a (B, C_out, H, W) tensor, reallocating only when its shape differs.
template <class T, class Backend>
void ensure_output(Tensor<T, Backend>& out, const BackboneConfig& config, std::int64_t B, std::int64_t H,
                   std::int64_t W) {
  if (out.empty_tensor() || out.rank() != 4 || out.dim(0) != B || out.dim(1) != config.out_channels ||
      out.dim(2) != H || out.dim(3) != W)
    out = Tensor<T, Backend>::empty({B, config.out_channels, H, W});
}

//! Sizes the backbone buffers of `ws` for batch B and latent H x W (Workspace::reserve) for a
//! model with these blocks: the widest adaLN hidden width among them, Block::modulation_chunks.
template <class Block, class T, class Backend>
void reserve_backbone(Workspace<T, Backend>& ws, const BackboneConfig& config, const std::vector<Block>& blocks,
                      std::int64_t B, std::int64_t H, std::int64_t W) {
  std::int64_t widest_adaln = 0;
  for (const auto& block : blocks) widest_adaln = std::max(widest_adaln, block.adaln.hidden());
  ws.reserve(config, widest_adaln, Block::modulation_chunks, B, H, W);
}

//! The time conditioning both models share (SPEC 3): ws.condition (B, D) = E_t(t_in) + E_delta
//! and ws.interval (B, D) = E_delta, the sum of the embeddings `new_condition` lists, as
//! released: with De = `delta_embedder` (`t_embedder` when the model has none) and
//! Et = `t_embedder`, `t` is Et(t_in), `t-r` is De(t_in - r_in), and `r` is De(r_in) when there
//! is no `t-r` term, Et(r_in) otherwise (IntervalTerms::r_through_delta). t_in, r_in (B) are
//! the network time inputs. A C2I model then adds its label embedding to ws.condition, using
//! time_scratch_after(ws, B, D) as scratch.
template <class T, class Backend>
void embed_time(Workspace<T, Backend>& ws, const BackboneConfig& config, const TimestepEmbedder<T, Backend>& t_embedder,
                const TimestepEmbedder<T, Backend>& delta_embedder, const T* t_in, const T* r_in, std::int64_t B) {
  const auto D = config.hidden;
  T* t_values = ws.times.data();
  T* r_values = t_values + B;
  T* interval_values = r_values + B;
  Backend::copy(t_values, t_in, static_cast<std::size_t>(B));
  Backend::copy(r_values, r_in, static_cast<std::size_t>(B));
  Backend::difference_forward(interval_values, t_values, r_values, B);
  T* features = ws.embed_scratch.data();
  T* hidden = features + B * math::timestep_features;
  T* term = hidden + B * D;

  t_embedder.forward(ws.condition.data(), t_values, B, features, hidden);  // c = E_t(t)
  Backend::fill(ws.interval.data(), static_cast<std::size_t>(B * D), T(0));
  const auto terms = interval_terms(config.new_condition);
  const auto& delta = config.separate_delta_embedder ? delta_embedder : t_embedder;
  if (terms.t) Backend::add_forward(ws.interval.data(), ws.condition.data(), B * D);
  if (terms.r) {
    const auto& r_embedder = terms.r_through_delta() ? delta : t_embedder;
    r_embedder.forward(term, r_values, B, features, hidden);
    Backend::add_forward(ws.interval.data(), term, B * D);
  }
  if (terms.t_minus_r) {
    delta.forward(term, interval_values, B, features, hidden);
    Backend::add_forward(ws.interval.data(), term, B * D);
  }
  Backend::add_forward(ws.condition.data(), ws.interval.data(), B * D);
}

//! A (B, D) part of ws.embed_scratch that embed_time no longer needs once it has returned.
template <class T, class Backend>
T* time_scratch_after(Workspace<T, Backend>& ws, std::int64_t B, std::int64_t D) {
  return ws.embed_scratch.data() + B * math::timestep_features + B * D;
}

//! The shape of checkpoint tensor `name`, which must be present with rank `rank`; `model` names
//! the network in the message ("class-conditional" or "text-to-image").
template <class Source>
Shape required_shape(const Source& source, const std::string& name, int rank, const std::string& model) {
  check(source.contains(name), "checkpoint: missing tensor '", name, "' (is this a ", model, " TiM checkpoint?)");
  Shape s = source.info(name).shape;
  check(s.rank() == rank, "checkpoint: tensor '", name, "' has shape ", s, ", expected rank ", rank);
  return s;
}

//! Reads the backbone's configuration from a checkpoint (SPEC 3): shapes first; then
//! `overrides`, then the checkpoint's `__metadata__` for what shapes cannot tell (heads
//! without qk-norm, new_condition). `model` names the network in messages ("class-conditional"
//! or "text-to-image"); `head_norms` are the tensors whose width is hd when present (the
//! first one found fixes the heads, the others must agree).
template <class Source>
void infer_backbone_config(BackboneConfig& c, const Source& source, const ConfigOverrides& overrides,
                           const std::string& model, std::initializer_list<const char*> head_norms) {
  auto shape_of = [&](const std::string& name, int rank) { return required_shape(source, name, rank, model); };
  const Shape patch_weight = shape_of(keys::patch_weight, 4);
  check(patch_weight[2] == patch_weight[3], "checkpoint: '", keys::patch_weight, "' ", patch_weight,
        " must have a square p x p kernel");
  c.hidden = patch_weight[0];
  c.in_channels = patch_weight[1];
  c.patch = patch_weight[2];
  while (source.contains(keys::block_adaln_output(c.depth))) ++c.depth;
  check(c.depth > 0, "checkpoint: no '", keys::block_adaln_output(0), "'; not a TiM checkpoint");
  c.adaln_hidden = shape_of(keys::first_adaln_gate, 2)[0];
  c.mlp_hidden = shape_of(keys::first_mlp_gate, 2)[0];
  c.final_adaln_hidden = shape_of(keys::final_adaln_gate, 2)[0];
  const auto final_rows = shape_of(keys::final_linear, 2)[0];
  check(final_rows % (c.patch * c.patch) == 0, "checkpoint: '", keys::final_linear, "' has ", final_rows,
        " rows, not a multiple of p*p = ", c.patch * c.patch);
  c.out_channels = final_rows / (c.patch * c.patch);
  c.qk_norm = source.contains(keys::first_q_norm);
  c.interval_qkv = source.contains(keys::first_qkv_d);
  c.separate_delta_embedder = source.contains(keys::delta_embedder_input);
  c.provenance["architecture"] = "shapes";

  const auto& metadata = source.metadata();
  auto from_metadata = [&](const char* key) -> std::optional<std::string> {
    auto it = metadata.find(key);
    if (it == metadata.end()) return std::nullopt;
    return it->second;
  };

  // Heads: a q_norm's width is hd when present; otherwise an override or the metadata must say.
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
  std::optional<std::int64_t> heads_from_shapes;
  std::string head_norm_name;
  for (const char* name : head_norms) {
    if (!source.contains(name)) continue;
    const auto hd = shape_of(name, 1)[0];
    check(hd > 0 && c.hidden % hd == 0, "checkpoint: '", name, "' width ", hd, " does not divide D = ", c.hidden);
    if (heads_from_shapes) {
      check(*heads_from_shapes == c.hidden / hd, "checkpoint: '", name, "' width ", hd, " disagrees with '",
            head_norm_name, "' (", c.hidden / *heads_from_shapes, ")");
      continue;
    }
    heads_from_shapes = c.hidden / hd;
    head_norm_name = name;
  }
  if (heads_from_shapes) {
    check(!heads || *heads == *heads_from_shapes, "num_heads ", heads.value_or(0), " from ", heads_source,
          " contradicts the checkpoint: q_norm width ", c.hidden / *heads_from_shapes, " gives ", *heads_from_shapes,
          " heads");
    c.num_heads = *heads_from_shapes;
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
}

//! Loads what every TiM variant shares (patch embedding, time and interval embedders, blocks,
//! final layer) from `reader` into `model`, whose config is already set; the variant's own
//! condition embedder is left to its loader.
template <class Model, class Reader>
void load_shared_parameters(Model& model, Reader& reader) {
  const auto& c = model.config;
  model.x_embedder.load(reader, keys::x_embedder, c);
  model.t_embedder.load(reader, keys::t_embedder, c.hidden);
  if (c.separate_delta_embedder) model.delta_embedder.load(reader, keys::delta_embedder, c.hidden);
  model.blocks.resize(static_cast<std::size_t>(c.depth));
  for (std::int64_t i = 0; i < c.depth; ++i) model.blocks[i].load(reader, keys::block(i), c);
  model.final_layer.load(reader, keys::final_layer, c);
}

//! After a loader has taken every tensor it uses: `projector.*` (training-only) goes to
//! `ignored`; any other leftover is an error naming it, since it means the file is not the
//! network we think it is.
template <class Source, class Reader>
void collect_ignored(std::vector<std::string>& ignored, const Source& source, const Reader& reader,
                     const std::string& description) {
  for (const auto& info : source.tensors()) {
    if (reader.used.count(info.name)) continue;
    check(info.name.rfind(keys::projector, 0) == 0, "checkpoint: unexpected tensor '", info.name, "' (not part of a ",
          description, ")");
    ignored.push_back(info.name);
  }
}

}  // namespace tim::nn
