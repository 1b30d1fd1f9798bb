// The hyper-parameters of the TiM networks (class-conditional and text-conditioned) and how
// they are found: tensor shapes first, then an explicit override (--config), then the
// checkpoint's __metadata__.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "tim/core/error.hpp"

namespace tim::nn {

//! Which embeddings form the interval term E_delta (SPEC 3, `new_condition`). The released
//! models use `t_minus_r`. E_delta is the sum of the listed terms, exactly as released: with
//! De the interval embedder (the time embedder when the model has none) and Et the time
//! embedder, `t` is Et(t), `t-r` is De(t - r), and `r` is De(r) when the value has no `t-r`
//! term (`r`, `t,r`), Et(r) otherwise (`r,t-r`, `t,r,t-r`).
enum class NewCondition { t_minus_r, r, t_r, t_t_minus_r, r_t_minus_r, t_r_t_minus_r };

inline constexpr std::string_view new_condition_name(NewCondition c) {
  switch (c) {
    case NewCondition::t_minus_r: return "t-r";
    case NewCondition::r: return "r";
    case NewCondition::t_r: return "t,r";
    case NewCondition::t_t_minus_r: return "t,t-r";
    case NewCondition::r_t_minus_r: return "r,t-r";
    case NewCondition::t_r_t_minus_r: return "t,r,t-r";
  }
  return "?";
}

//! Parses the released spelling ("t-r", "r", "t,r", "t,t-r", "r,t-r", "t,r,t-r"; spaces ignored).
inline NewCondition parse_new_condition(std::string_view text) {
  std::string compact;
  for (char ch : text)
    if (ch != ' ') compact += ch;
  for (auto c : {NewCondition::t_minus_r, NewCondition::r, NewCondition::t_r, NewCondition::t_t_minus_r,
                 NewCondition::r_t_minus_r, NewCondition::t_r_t_minus_r})
    if (new_condition_name(c) == compact) return c;
  fail("new_condition: unknown value '", text, "' (expected one of t-r, r, t,r, t,t-r, r,t-r, t,r,t-r)");
}

//! The terms of E_delta for a `new_condition`.
struct IntervalTerms {
  bool t = false, r = false, t_minus_r = false;

  //! Whether the `r` term goes through the interval embedder De (as released: when there is
  //! no `t-r` term) rather than the time embedder Et.
  constexpr bool r_through_delta() const { return r && !t_minus_r; }
};
inline constexpr IntervalTerms interval_terms(NewCondition c) {
  switch (c) {
    case NewCondition::t_minus_r: return {false, false, true};
    case NewCondition::r: return {false, true, false};
    case NewCondition::t_r: return {true, true, false};
    case NewCondition::t_t_minus_r: return {true, false, true};
    case NewCondition::r_t_minus_r: return {false, true, true};
    case NewCondition::t_r_t_minus_r: return {true, true, true};
  }
  return {};
}

//! What the class-conditional (C2I) and text-conditioned (T2I) networks share: the patch
//! embedding, the time and interval embedders, the self-attention and MLP of every block and
//! the final layer (SPEC 3 and 5).
struct BackboneConfig {
  std::int64_t in_channels = 0;   // C
  std::int64_t out_channels = 0;  // channels of the output (C for released models)
  std::int64_t hidden = 0;        // D
  std::int64_t depth = 0;
  std::int64_t num_heads = 0;     // nh
  std::int64_t patch = 0;         // p
  std::int64_t adaln_hidden = 0;  // L, hidden width of each block's adaLN SwiGLU
  std::int64_t mlp_hidden = 0;    // Hm = (int(D * mlp_ratio) * 2) // 3
  std::int64_t final_adaln_hidden = 0;  // D / 2 in released models
  bool qk_norm = false;
  bool interval_qkv = false;             // blocks have attn.qkv_d
  bool separate_delta_embedder = false;  // delta_embedder present (use_new_embed)
  NewCondition new_condition = NewCondition::t_minus_r;

  std::int64_t head_dim() const { return num_heads ? hidden / num_heads : 0; }

  //! Where each value that shapes cannot tell came from ("shapes", "metadata", "config", "default").
  std::map<std::string, std::string> provenance;
  //! Checkpoint tensors the network does not use (projector.* and anything unknown).
  std::vector<std::string> ignored;

 protected:
  // The shared part of describe(), after the model's own fields.
  void describe_backbone(std::ostringstream& o) const {
    o << " L=" << adaln_hidden << " Hm=" << mlp_hidden << " qk_norm=" << (qk_norm ? "yes" : "no")
      << " interval_qkv=" << (interval_qkv ? "yes" : "no")
      << " delta_embedder=" << (separate_delta_embedder ? "yes" : "no")
      << " new_condition=" << new_condition_name(new_condition);
  }
};

//! Everything that fixes the shapes and arithmetic of a C2I network (SPEC 3).
struct C2IConfig : BackboneConfig {
  std::int64_t num_classes = 0;  // labels 0..num_classes-1; num_classes is the null class

  std::string describe() const {
    std::ostringstream o;
    o << "C2I TiM: C=" << in_channels << " out=" << out_channels << " D=" << hidden << " depth=" << depth
      << " heads=" << num_heads << " hd=" << head_dim() << " p=" << patch << " classes=" << num_classes;
    describe_backbone(o);
    return o.str();
  }
};

//! Everything that fixes the shapes and arithmetic of a T2I network (SPEC 5): the backbone
//! plus the caption embedder and each block's cross-attention.
struct T2IConfig : BackboneConfig {
  std::int64_t caption_dim = 0;     // Dc, width of the caption features (1152: Gemma-3-1B)
  std::int64_t caption_hidden = 0;  // hidden width of y_embedder.mlp (4 D as released)
  bool cross_qk_norm = false;       // blocks have cross_attn.q_norm / k_norm

  std::string describe() const {
    std::ostringstream o;
    o << "T2I TiM: C=" << in_channels << " out=" << out_channels << " D=" << hidden << " depth=" << depth
      << " heads=" << num_heads << " hd=" << head_dim() << " p=" << patch << " cap_dim=" << caption_dim
      << " caption_hidden=" << caption_hidden << " cross_qk_norm=" << (cross_qk_norm ? "yes" : "no");
    describe_backbone(o);
    return o.str();
  }
};

//! The checkpoint names (SPEC 3, 5, released spelling) the code refers to, written once: the
//! module prefixes the loaders start from, and the tensors whose presence or shape fixes the
//! configuration. Loaders build every other name from a prefix (`prefix + ".qkv"`, ...).
namespace keys {
// Module prefixes.
inline constexpr const char* x_embedder = "x_embedder";
inline constexpr const char* t_embedder = "t_embedder";
inline constexpr const char* delta_embedder = "delta_embedder";
inline constexpr const char* y_embedder = "y_embedder";
inline constexpr const char* final_layer = "final_layer";
inline constexpr const char* projector = "projector.";  // training-only tensors, ignored
//! The prefix of block i: "blocks.{i}".
inline std::string block(std::int64_t i) { return "blocks." + std::to_string(i); }
//! Block i's adaLN output weight; the blocks are counted by it.
inline std::string block_adaln_output(std::int64_t i) { return block(i) + ".adaLN_modulation.fc2.weight"; }

// Tensors read by full name while the configuration is inferred.
inline constexpr const char* patch_weight = "x_embedder.proj.weight";            // (D, C, p, p)
inline constexpr const char* delta_embedder_input = "delta_embedder.mlp.0.weight";  // present: use_new_embed
inline constexpr const char* label_table = "y_embedder.embedding_table.weight";  // (num_classes + 1, D), C2I
inline constexpr const char* caption_norm = "y_embedder.norm.weight";            // (Dc), T2I
inline constexpr const char* caption_mlp_gate = "y_embedder.mlp.fc1_g.weight";   // (Hc, Dc), T2I
inline constexpr const char* first_adaln_gate = "blocks.0.adaLN_modulation.fc1_g.weight";  // (L, D)
inline constexpr const char* first_mlp_gate = "blocks.0.mlp.fc1_g.weight";                 // (Hm, D)
inline constexpr const char* first_q_norm = "blocks.0.attn.q_norm.weight";                 // (hd): qk-norm
inline constexpr const char* first_qkv_d = "blocks.0.attn.qkv_d.weight";                   // interval-aware qkv
inline constexpr const char* first_cross_q = "blocks.0.cross_attn.q.weight";               // T2I
inline constexpr const char* first_cross_q_norm = "blocks.0.cross_attn.q_norm.weight";     // (hd), T2I
inline constexpr const char* final_adaln_gate = "final_layer.adaLN_modulation.fc1_g.weight";  // (D/2, D)
inline constexpr const char* final_linear = "final_layer.linear.weight";                      // (p p C_out, D)
}  // namespace keys

//! Which network a checkpoint holds, told by its tensor names (see nn::detect_model_kind).
enum class ModelKind { c2i, t2i, unknown };

inline constexpr std::string_view model_kind_name(ModelKind kind) {
  switch (kind) {
    case ModelKind::c2i: return "class-conditional (C2I)";
    case ModelKind::t2i: return "text-to-image (T2I)";
    case ModelKind::unknown: return "unknown";
  }
  return "?";
}

//! C2I when the checkpoint has a label table (keys::label_table), T2I when it has a caption
//! embedder (keys::caption_norm) or cross-attention (keys::first_cross_q) and no label table,
//! unknown otherwise. `Source` has `contains(name)`.
template <class Source>
ModelKind detect_model_kind(const Source& source) {
  const bool labels = source.contains(keys::label_table);
  const bool captions = source.contains(keys::caption_norm) || source.contains(keys::first_cross_q);
  if (labels && !captions) return ModelKind::c2i;
  if (captions && !labels) return ModelKind::t2i;
  return ModelKind::unknown;
}

//! Values a user gives explicitly (command line, YAML config) and that win over __metadata__.
struct ConfigOverrides {
  std::optional<std::int64_t> num_heads;
  std::optional<std::string> new_condition;
  std::optional<double> mlp_ratio;
};

}  // namespace tim::nn
