// The hyper-parameters of a Gemma-3 text decoder, read from a Hugging Face `config.json`
// (model_type gemma3_text, or gemma3 with a text_config), with transformers' defaults for the
// optional fields and a tim::Error naming the field for anything missing, malformed or not
// supported (logit soft-capping, scaled rotary, bidirectional attention, other activations).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tim/core/error.hpp"

namespace tim::text {

//! What a Gemma-3 layer attends to: a sliding window of keys, or every earlier key.
enum class LayerAttention : std::uint8_t { sliding, full };

//! The decoder's shape and constants. Shape legend: D hidden, nh query heads, nkv key/value
//! heads, hd head dim, Hm MLP hidden, V vocabulary.
struct GemmaConfig {
  std::int64_t vocab_size = 0;         // V
  std::int64_t hidden = 0;             // D, hidden_size
  std::int64_t intermediate = 0;       // Hm, intermediate_size
  std::int64_t layers = 0;             // num_hidden_layers
  std::int64_t heads = 0;              // nh, num_attention_heads
  std::int64_t kv_heads = 0;           // nkv, num_key_value_heads (grouped-query attention)
  std::int64_t head_dim = 256;         // hd
  double query_pre_attn_scalar = 256;  // scores are q k^T / sqrt(query_pre_attn_scalar)
  double rms_norm_eps = 1e-6;
  double rope_theta = 1'000'000;       // rotary base of full-attention layers
  double rope_local_base = 10'000;     // rotary base of sliding layers (rope_local_base_freq)
  std::int64_t sliding_window = 4096;  // a sliding layer's query i sees keys j with i - j < window
  std::vector<LayerAttention> layer_types;

  //! The rotary base of layer `i`.
  double rope_base(std::int64_t i) const {
    return layer_types[static_cast<std::size_t>(i)] == LayerAttention::sliding ? rope_local_base : rope_theta;
  }
  std::string describe() const {
    std::int64_t sliding = 0;
    for (auto t : layer_types) sliding += t == LayerAttention::sliding;
    return detail::concat("Gemma-3 text decoder: D ", hidden, ", ", layers, " layers (", sliding, " sliding, window ",
                          sliding_window, "), ", heads, " heads / ", kv_heads, " kv heads of ", head_dim, ", MLP ",
                          intermediate, ", vocabulary ", vocab_size);
  }
};

namespace detail {

inline const nlohmann::json* config_field(const nlohmann::json& j, const char* name) {
  const auto it = j.find(name);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

inline std::int64_t config_integer(const nlohmann::json& j, const char* name, const std::string& label,
                                   std::int64_t fallback, bool required, std::int64_t limit) {
  const auto* v = config_field(j, name);
  if (!v) {
    check(!required, label, ": field '", name, "' is missing (a positive integer is expected)");
    return fallback;
  }
  check(v->is_number_integer() || (v->is_number_float() && std::floor(v->get<double>()) == v->get<double>() &&
                                   std::abs(v->get<double>()) < 9e15),
        label, ": field '", name, "' must be an integer, got ", v->dump());
  const auto value = v->is_number_integer() ? (v->is_number_unsigned() && v->get<std::uint64_t>() > 0x7fffffffffffffffull
                                                   ? limit + 1
                                                   : v->get<std::int64_t>())
                                            : static_cast<std::int64_t>(v->get<double>());
  check(value >= 1 && value <= limit, label, ": field '", name, "' must be in [1, ", limit, "], got ", v->dump());
  return value;
}

inline double config_number(const nlohmann::json& j, const char* name, const std::string& label, double fallback) {
  const auto* v = config_field(j, name);
  if (!v) return fallback;
  check(v->is_number(), label, ": field '", name, "' must be a number, got ", v->dump());
  const double value = v->get<double>();
  check(std::isfinite(value) && value > 0, label, ": field '", name, "' must be a positive finite number, got ",
        v->dump());
  return value;
}

}  // namespace detail

//! Parses a config.json's text. `label` (the path) names the file in errors.
inline GemmaConfig parse_gemma_config(std::string_view text, const std::string& label = "config.json") {
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(text.begin(), text.end(), nullptr, true, false);
  } catch (const nlohmann::json::exception& e) {
    fail(label, ": not valid JSON (", e.what(), ")");
  }
  check(root.is_object(), label, ": expected a JSON object");
  const nlohmann::json* j = &root;
  if (const auto* nested = detail::config_field(root, "text_config")) {
    check(nested->is_object(), label, ": field 'text_config' must be an object");
    j = nested;
  }
  if (const auto* type = detail::config_field(*j, "model_type")) {
    check(type->is_string() && (type->get<std::string>() == "gemma3_text" || type->get<std::string>() == "gemma3"),
          label, ": model_type ", type->dump(), " is not a Gemma-3 text decoder (expected \"gemma3_text\")");
  }
  constexpr std::int64_t dim_limit = 1 << 20, layer_limit = 4096, vocab_limit = std::int64_t{1} << 26;
  GemmaConfig c;
  c.vocab_size = detail::config_integer(*j, "vocab_size", label, 0, true, vocab_limit);
  c.hidden = detail::config_integer(*j, "hidden_size", label, 0, true, dim_limit);
  c.intermediate = detail::config_integer(*j, "intermediate_size", label, 0, true, dim_limit);
  c.layers = detail::config_integer(*j, "num_hidden_layers", label, 0, true, layer_limit);
  c.heads = detail::config_integer(*j, "num_attention_heads", label, 0, true, dim_limit);
  c.kv_heads = detail::config_integer(*j, "num_key_value_heads", label, c.heads, false, dim_limit);
  c.head_dim = detail::config_integer(*j, "head_dim", label, 256, false, dim_limit);
  c.query_pre_attn_scalar = detail::config_number(*j, "query_pre_attn_scalar", label, 256);
  c.rms_norm_eps = detail::config_number(*j, "rms_norm_eps", label, 1e-6);
  c.sliding_window = detail::config_integer(*j, "sliding_window", label, 4096, false, std::int64_t{1} << 40);
  c.rope_theta = detail::config_number(*j, "rope_theta", label, 1'000'000);
  c.rope_local_base = detail::config_number(*j, "rope_local_base_freq", label, 10'000);
  check(c.heads % c.kv_heads == 0, label, ": num_attention_heads (", c.heads,
        ") must be a multiple of num_key_value_heads (", c.kv_heads, ")");
  check(c.head_dim % 2 == 0, label, ": head_dim must be even (rotary pairs), got ", c.head_dim);
  check(c.heads * c.head_dim <= dim_limit, label, ": num_attention_heads x head_dim is too large");

  // Newer transformers write the two rotary bases under rope_parameters, keyed by layer type.
  if (const auto* rope = detail::config_field(*j, "rope_parameters")) {
    check(rope->is_object(), label, ": field 'rope_parameters' must be an object");
    for (const char* kind : {"full_attention", "sliding_attention"}) {
      const auto* p = detail::config_field(*rope, kind);
      if (!p) continue;
      check(p->is_object(), label, ": field 'rope_parameters.", kind, "' must be an object");
      if (const auto* type = detail::config_field(*p, "rope_type"))
        check(type->is_string() && type->get<std::string>() == "default", label, ": rope_parameters.", kind,
              ".rope_type ", type->dump(), " is not supported (only \"default\" rotary)");
      (std::string_view(kind) == "full_attention" ? c.rope_theta : c.rope_local_base) =
          detail::config_number(*p, "rope_theta", label + " rope_parameters." + kind, kind[0] == 'f' ? c.rope_theta
                                                                                                      : c.rope_local_base);
    }
  }
  if (const auto* scaling = detail::config_field(*j, "rope_scaling")) {
    const auto* type = scaling->is_object() ? detail::config_field(*scaling, "rope_type") : nullptr;
    check(type && type->is_string() && type->get<std::string>() == "default", label, ": rope_scaling ",
          scaling->dump(), " is not supported (only unscaled rotary, as gemma-3-1b has)");
  }
  // (final_logit_softcapping concerns the language-model head only, which the encoder does not run.)
  check(!detail::config_field(*j, "attn_logit_softcapping"), label,
        ": field 'attn_logit_softcapping' is set; soft-capped attention logits are not supported (Gemma-3 has none)");
  if (const auto* bidirectional = detail::config_field(*j, "use_bidirectional_attention"))
    check(bidirectional->is_boolean() && !bidirectional->get<bool>(), label,
          ": use_bidirectional_attention must be false (the encoder is causal)");
  for (const char* name : {"hidden_activation", "hidden_act"})
    if (const auto* act = detail::config_field(*j, name))
      check(act->is_string() && act->get<std::string>() == "gelu_pytorch_tanh", label, ": field '", name, "' is ",
            act->dump(), "; only \"gelu_pytorch_tanh\" is supported");

  if (const auto* types = detail::config_field(*j, "layer_types")) {
    check(types->is_array() && static_cast<std::int64_t>(types->size()) == c.layers, label,
          ": field 'layer_types' must be a list of num_hidden_layers = ", c.layers, " entries");
    for (const auto& t : *types) {
      check(t.is_string() && (t == "sliding_attention" || t == "full_attention"), label,
            ": layer_types entries must be \"sliding_attention\" or \"full_attention\", got ", t.dump());
      c.layer_types.push_back(t == "sliding_attention" ? LayerAttention::sliding : LayerAttention::full);
    }
  } else {
    // The older form: every pattern-th layer is global (transformers' sliding_window_pattern, 6).
    const auto pattern = detail::config_integer(*j, "sliding_window_pattern", label, 6, false, layer_limit);
    for (std::int64_t i = 0; i < c.layers; ++i)
      c.layer_types.push_back((i + 1) % pattern ? LayerAttention::sliding : LayerAttention::full);
  }
  return c;
}

}  // namespace tim::text
