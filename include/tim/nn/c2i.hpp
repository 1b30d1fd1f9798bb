// The class-conditional TiM network (SPEC sections 3 and 4) on any backend: loading from a
// released checkpoint by parameter name, shape-driven configuration, and the forward pass.
// The pieces it shares with the text-conditioned network live in nn/backbone.hpp.
//
// Shape legend: B batch, C channels, H x W latent, p patch, h = H/p token rows, w = W/p token
// columns, N = h*w tokens, D hidden, nh heads, hd = D/nh head dim, L adaLN hidden, Hm MLP hidden.
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

//! One transformer block: adaLN-modulated self-attention (qk-norm, 2-D rotary, interval-aware
//! qkv) and SwiGLU MLP, each added back through a gate.
template <class T, class Backend>
struct TiMBlock {
  SwiGLU<T, Backend> adaln;        // c (B, D) -> (B, 6D): shift/scale/gate for msa, then for mlp
  SelfAttention<T, Backend> attn;  // checkpoint prefix attn
  SwiGLU<T, Backend> mlp;          // (B*N, D) -> (B*N, Hm) -> (B*N, D)

  static constexpr std::int64_t modulation_chunks = 6;

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, const BackboneConfig& config) {
    load_block_common(*this, reader, prefix, config);
  }
  std::int64_t parameter_count() const {
    return adaln.parameter_count() + attn.parameter_count() + mlp.parameter_count();
  }

  //! ws.tokens (B*N, D) through the block, with c in ws.condition.
  void forward(Workspace<T, Backend>& ws, const BackboneConfig& config, std::int64_t B, std::int64_t N) const {
    const auto D = config.hidden;
    T* mod = ws.modulation.data();  // (B, 6D)
    adaln.forward(mod, ws.condition.data(), B, ws.modulation_hidden.data(),
                  ws.modulation_hidden.data() + B * adaln.hidden());
    attn.residual_forward(ws, config, ModulationChunks<T>::at(mod, 0, modulation_chunks, D), B, N);
    mlp_residual_forward(ws, config, mlp, ModulationChunks<T>::at(mod, 3, modulation_chunks, D), B, N);
  }
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
  using value_type = T;
  using backend = Backend;
  //! What the sampler conditions a C2I network on: labels (B) in host memory.
  using Condition = Tensor<std::int64_t, cpu>;

  C2IConfig config;
  PatchEmbedding<T, Backend> x_embedder;  // conv weight (D, C, p, p) seen as (D, C*p*p)
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
    validate_backbone_inputs(config, x, t_in, r_in);
    const auto B = x.dim(0);
    check(is_batch_vector(labels, B), "input 'y': expected shape [", B, "], got ", labels.shape());
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
    ensure_output(out, config, B, H, W);
    reserve(B, H, W);
    auto& ws = workspace_;
    const auto D = config.hidden, p = config.patch, N = (H / p) * (W / p);

    x_embedder.forward(ws, config, x.data(), B, H, W);  // tokens (B*N, D)
    // Conditioning c = E_t + E_delta + E_y(y) (B, D) and E_delta (B, D).
    embed_time(ws, config, t_embedder, delta_embedder, t_in.data(), r_in.data(), B);
    T* label_embedding = time_scratch_after(ws, B, D);
    Backend::embedding_forward(label_embedding, label_table.data(), labels.data(), B, D);
    Backend::add_forward(ws.condition.data(), label_embedding, B * D);

    for (const auto& block : blocks) block.forward(ws, config, B, N);
    final_layer.forward(out.data(), ws, config, B, H, W);
  }

  //! Sizes the workspace for batch B and latent H x W now (forward does it on demand). Buffers
  //! only grow, so alternating batch sizes (B and 2B rows under guidance) allocate nothing
  //! once the larger has been seen; the rotary tables are rebuilt only when H or W changes.
  void reserve(std::int64_t B, std::int64_t H, std::int64_t W) const {
    reserve_backbone(workspace_, config, blocks, B, H, W);
  }

  // The sampler's interface (tim::SamplingNetwork).

  //! The null class of classifier-free guidance: the last row of the label table.
  std::int64_t null_label() const { return config.num_classes; }
  //! Checks a batch's labels: shape [B], values in [0, num_classes].
  void check_condition(const Condition& labels, std::int64_t B) const {
    check(labels.rank() == 1 && labels.dim(0) == B, "sampler: labels must have shape [", B,
          "] (one per sample), got ", labels.shape());
    const std::int64_t classes = config.num_classes;
    for (std::int64_t b = 0; b < B; ++b)
      check(labels.data()[b] >= 0 && labels.data()[b] <= classes, "sampler: label ", labels.data()[b], " at index ", b,
            " is outside [0, ", classes, "] (", classes, " is the null class)");
  }
  //! The labels of a guided step (2B): `labels`, then the null class for every sample.
  Condition guided_condition(const Condition& labels) const {
    const std::int64_t B = labels.dim(0);
    auto rows = Condition::empty({2 * B});
    for (std::int64_t b = 0; b < B; ++b) {
      rows.data()[b] = labels.data()[b];
      rows.data()[B + b] = null_label();
    }
    return rows;
  }
  //! Sizes the workspace for `rows` samples of H x W (the labels do not change the sizes).
  void reserve_for(const Condition&, std::int64_t rows, std::int64_t H, std::int64_t W) const { reserve(rows, H, W); }

 private:
  mutable Workspace<T, Backend> workspace_;
};

//! Reads the network's configuration from a checkpoint: shapes first; then `overrides`, then
//! the checkpoint's `__metadata__` for what shapes cannot tell (heads without qk-norm,
//! new_condition). `Source` is tim::io::SafetensorsFile or anything with the same reads.
template <class Source>
C2IConfig infer_c2i_config(const Source& source, const ConfigOverrides& overrides = {}) {
  check(detect_model_kind(source) != ModelKind::t2i,
        "checkpoint: this is a text-to-image (T2I) TiM (it has a caption embedder and cross-attention, no label "
        "table); load it with load_t2i (docs/t2i.md)");
  C2IConfig c;
  const std::string model = "class-conditional";
  infer_backbone_config(c, source, overrides, model, {keys::first_q_norm});
  c.num_classes = required_shape(source, keys::label_table, 2, model)[0] - 1;
  check(c.num_classes >= 1, "checkpoint: '", keys::label_table, "' needs at least 2 rows");
  return c;
}

//! Loads a class-conditional TiM from a checkpoint, unchanged released names. Tensors are
//! memory-mapped views when their dtype is T (and aligned), converted copies otherwise; with
//! `options.weights` = stored (the default), bfloat16/float16 linear weights stay in their dtype
//! where the backend multiplies them directly (tim::cpu, T = float: views of the mapping), and
//! are widened to T elsewhere (tim::cuda) or with WeightLoading::widened.
//! `projector.*` (training-only) is ignored and listed in config.ignored; any other unknown
//! tensor is an error, since it means the file is not the network we think it is.
template <class T, class Backend = cpu, class Source>
C2IModel<T, Backend> load_c2i(const Source& source, const ConfigOverrides& overrides = {},
                              const LoadOptions& options = {}) {
  C2IModel<T, Backend> model;
  model.config = infer_c2i_config(source, overrides);
  const auto& c = model.config;
  ParameterReader<Source> reader{source, {}, options};
  load_shared_parameters(model, reader);
  model.label_table = reader.template take<T, Backend>(keys::label_table, {c.num_classes + 1, c.hidden});
  collect_ignored(model.config.ignored, source, reader, "class-conditional TiM with " + c.describe());
  return model;
}

}  // namespace tim::nn
