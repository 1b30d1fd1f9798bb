// The Gemma-3 text decoder stack (the released T2I model's text encoder, google/gemma-3-1b-it) as
// a module templated over the backend: Hugging Face's tensor names unchanged, the hyper-parameters
// of config.json (tim/text/gemma_config.hpp), weights stored as W (bfloat16 views of the
// memory-mapped file on the CPU) and computed in T. The mathematics is tim/math/text.hpp; the
// formulas and what was checked against what are in docs/t2i.md ("The text encoder").
//
// Shape legend: B prompts, N tokens, R = B*N rows, D hidden, nh query heads, nkv key/value heads,
// hd head dim, Hm MLP hidden, V vocabulary.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "tim/core/dtype.hpp"
#include "tim/core/error.hpp"
#include "tim/core/precision.hpp"
#include "tim/core/tensor.hpp"
#include "tim/io/safetensors.hpp"
#include "tim/math/text.hpp"
#include "tim/text/gemma_config.hpp"

namespace tim::text {

//! Which hidden state is the caption feature: the final norm's output (`last`, the released
//! `use_last_hidden_state: True`, Hugging Face's last_hidden_state) or the input of the last
//! layer (`penultimate`, Hugging Face's hidden_states[-2], Imagen's choice).
enum class HiddenState : std::uint8_t { last, penultimate };

//! "last" or "penultimate"; throws tim::Error naming `what` otherwise.
inline HiddenState parse_hidden_state(std::string_view name, std::string_view what = "hidden state") {
  if (name == "last") return HiddenState::last;
  if (name == "penultimate") return HiddenState::penultimate;
  fail(what, ": expected \"last\" or \"penultimate\", got \"", name, "\"");
}

//! Real tokens per prompt from an attention mask (B, N) of right padding: 1 on a prefix of at
//! least one token (BOS), 0 after. Throws tim::Error naming the row otherwise.
inline std::vector<std::int64_t> lengths_from_mask(const Tensor<std::int64_t>& mask) {
  check(mask.rank() == 2, "attention mask: expected shape [B, N], got ", mask.shape());
  const auto B = mask.dim(0), N = mask.dim(1);
  std::vector<std::int64_t> lengths(static_cast<std::size_t>(B));
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t* row = mask.data() + b * N;
    std::int64_t n = 0;
    while (n < N && row[n] == 1) ++n;
    for (std::int64_t j = n; j < N; ++j)
      check(row[j] == 0, "attention mask: row ", b, " is not right padding (ones, then zeros): position ", j,
            " is ", row[j]);
    check(n >= 1, "attention mask: row ", b, " has no real token (the first position, BOS, must be 1)");
    lengths[static_cast<std::size_t>(b)] = n;
  }
  return lengths;
}

//! Hugging Face's names, written once: `model.layers.{i}.` + these.
namespace gemma_keys {
inline constexpr const char* embed_tokens = "model.embed_tokens.weight";
inline constexpr const char* final_norm = "model.norm.weight";
inline constexpr const char* lm_head = "lm_head.weight";  // tied to embed_tokens; ignored when present
inline std::string layer(std::int64_t i, const char* name) { return "model.layers." + std::to_string(i) + "." + name; }
}  // namespace gemma_keys

//! The Gemma-3 decoder stack. Instantiate through `load_gemma`.
//!
//! Example:
//!   auto encoder = tim::text::load_gemma_folder<float, tim::cpu, tim::bfloat16>("gemma-3-1b-it");
//!   tim::Tensor<float> features;                       // (B, N, D)
//!   encoder.forward(features, ids, mask, tim::text::HiddenState::last);   // ids, mask (B, N) int64
template <class T, class Backend = cpu, class W = T>
class GemmaEncoder {
 public:
  using value_type = T;
  using backend = Backend;
  using weight_type = W;

  //! One decoder layer. The norms hold 1 + weight in T (Gemma's RMSNorm scale), computed at load.
  struct Layer {
    Tensor<W, Backend> q_proj, k_proj, v_proj, o_proj;  // (nh*hd, D), (nkv*hd, D) x2, (D, nh*hd)
    Tensor<W, Backend> gate_proj, up_proj, down_proj;   // (Hm, D) x2, (D, Hm)
    Tensor<T, Backend> q_norm, k_norm;                  // (hd)
    Tensor<T, Backend> input_layernorm, post_attention_layernorm, pre_feedforward_layernorm,
        post_feedforward_layernorm;  // (D)
  };

  //! Whether the backend multiplies float activations by W weights directly (tim::cpu's 16-bit
  //! linear_forward, tim/cpu/gemm_bf16.hpp). Otherwise (tim::cuda) each weight matrix is widened
  //! to T into the workspace before its product.
  static constexpr bool backend_reads_weights =
      !std::is_same_v<W, T> &&
      requires(T* out, const T* in, const W* w, std::int64_t n, Precision p) {
        Backend::linear_forward(out, in, w, static_cast<const T*>(nullptr), n, n, n, false, p);
      };

  GemmaConfig config;
  //! The precision of the products with bfloat16 weights on a backend that reads them directly
  //! (backend_reads_weights): float32 (the default: the weights widened exactly, within 1e-4 of
  //! float64, tests/test_text_encoder.cpp) or bfloat16 (the activations rounded to bfloat16 as
  //! well, float sums: about twice the float rate where the CPU has AVX512-BF16 or AMX; the
  //! float32 path where it has not, tim::cpu_gemm::bf16_kernel()). Ignored for float weights.
  Precision precision = Precision::float32;
  Tensor<W, Backend> embed_tokens;  // (V, D)
  std::vector<Layer> layers;
  Tensor<T, Backend> norm;  // (D): 1 + model.norm.weight
  T normalizer = T(1);      // sqrt(D) rounded to the stored embedding dtype, then as T

  //! Parameters in the stack (embedding table included).
  std::int64_t parameter_count() const {
    std::int64_t n = embed_tokens.numel() + norm.numel();
    for (const auto& l : layers)
      n += l.q_proj.numel() + l.k_proj.numel() + l.v_proj.numel() + l.o_proj.numel() + l.gate_proj.numel() +
           l.up_proj.numel() + l.down_proj.numel() + l.q_norm.numel() + l.k_norm.numel() + 4 * config.hidden;
    return n;
  }

  //! out (B, N, D) = the chosen hidden state of token ids (B, N) (host memory) whose first
  //! lengths[b] tokens are real (right padding after them, masked as keys). Padding positions get
  //! values too (the released T2I scripts feed them to the network). Not re-entrant.
  void forward(Tensor<T, Backend>& out, const Tensor<std::int64_t>& ids, const std::vector<std::int64_t>& lengths,
               HiddenState which = HiddenState::last) const {
    check(ids.rank() == 2 && ids.dim(1) >= 1, "encoder: input ids must have shape [B, N], N >= 1, got ", ids.shape());
    const auto B = ids.dim(0), N = ids.dim(1), D = config.hidden;
    check(static_cast<std::int64_t>(lengths.size()) == B, "encoder: ", lengths.size(), " lengths for ", B, " prompts");
    for (std::int64_t b = 0; b < B; ++b)
      check(lengths[static_cast<std::size_t>(b)] >= 1 && lengths[static_cast<std::size_t>(b)] <= N, "encoder: prompt ",
            b, " has length ", lengths[static_cast<std::size_t>(b)], ", expected 1 to N = ", N);
    for (std::int64_t i = 0; i < ids.numel(); ++i)
      check(ids.data()[i] >= 0 && ids.data()[i] < config.vocab_size, "encoder: token id ", ids.data()[i],
            " at position ", i, " is outside the vocabulary [0, ", config.vocab_size, ")");
    reserve(B, N);
    auto& ws = workspace_;
    const std::int64_t R = B * N, nh = config.heads, nkv = config.kv_heads, hd = config.head_dim;
    Backend::copy_from_host(ws.ids.data(), ids.data(), static_cast<std::size_t>(R));
    Backend::copy_from_host(ws.lengths.data(), lengths.data(), static_cast<std::size_t>(B));
    if (out.shape() != Shape{B, N, D}) out = Tensor<T, Backend>::empty({B, N, D});

    T* x = ws.x.data();  // (R, D) the residual stream
    Backend::for_each(R * D, math::ScaledEmbeddingOp<T, W>{x, embed_tokens.data(), ws.ids.data(), D, normalizer});
    const T q_factor = static_cast<T>(1.0 / std::sqrt(config.query_pre_attn_scalar));
    for (std::int64_t i = 0; i < config.layers; ++i) {
      const auto& l = layers[static_cast<std::size_t>(i)];
      if (i == config.layers - 1 && which == HiddenState::penultimate)
        Backend::copy(out.data(), x, static_cast<std::size_t>(R * D));
      const bool sliding = config.layer_types[static_cast<std::size_t>(i)] == LayerAttention::sliding;
      const T* cos = sliding ? ws.local_cos.data() : ws.global_cos.data();
      const T* sin = sliding ? ws.local_sin.data() : ws.global_sin.data();

      rms_norm(ws.h.data(), x, l.input_layernorm, R, D);
      linear(ws.q.data(), ws.h.data(), l.q_proj, R, D, nh * hd);
      linear(ws.k.data(), ws.h.data(), l.k_proj, R, D, nkv * hd);
      linear(ws.v.data(), ws.h.data(), l.v_proj, R, D, nkv * hd);
      Backend::for_each(R * nh, math::GemmaHeadOp<T>{ws.q.data(), l.q_norm.data(), cos, sin, N, nh, hd,
                                                     config.rms_norm_eps, q_factor});
      Backend::for_each(R * nkv, math::GemmaHeadOp<T>{ws.k.data(), l.k_norm.data(), cos, sin, N, nkv, hd,
                                                      config.rms_norm_eps, T(1)});
      const std::int64_t window = sliding ? config.sliding_window : 0;
      if constexpr (requires { Backend::gemma_attention_forward(ws.attention.data(), ws.q.data(), ws.k.data(),
                                                                ws.v.data(), lengths.data(), B, N, nh, nkv, hd,
                                                                window); })
        // A backend's own (the CPU's: Eigen products over query tiles), lengths in host memory.
        Backend::gemma_attention_forward(ws.attention.data(), ws.q.data(), ws.k.data(), ws.v.data(), lengths.data(),
                                         B, N, nh, nkv, hd, window);
      else
        Backend::for_each(R * nh, math::GemmaAttentionOp<T>{ws.attention.data(), ws.q.data(), ws.k.data(),
                                                            ws.v.data(), ws.lengths.data(), N, nh, nkv, hd, window});
      linear(ws.h.data(), ws.attention.data(), l.o_proj, R, nh * hd, D);
      rms_norm(ws.h.data(), ws.h.data(), l.post_attention_layernorm, R, D);
      Backend::add_forward(x, ws.h.data(), R * D);

      rms_norm(ws.h.data(), x, l.pre_feedforward_layernorm, R, D);
      linear(ws.gate.data(), ws.h.data(), l.gate_proj, R, D, config.intermediate);
      linear(ws.up.data(), ws.h.data(), l.up_proj, R, D, config.intermediate);
      if constexpr (requires { Backend::gelu_gate_forward(ws.gate.data(), ws.up.data(), R); })
        Backend::gelu_gate_forward(ws.gate.data(), ws.up.data(), R * config.intermediate);  // the CPU's, vectorised
      else
        Backend::for_each(R * config.intermediate, math::GeluGateOp<T>{ws.gate.data(), ws.up.data()});
      linear(ws.h.data(), ws.gate.data(), l.down_proj, R, config.intermediate, D);
      rms_norm(ws.h.data(), ws.h.data(), l.post_feedforward_layernorm, R, D);
      Backend::add_forward(x, ws.h.data(), R * D);
    }
    if (which == HiddenState::last) rms_norm(out.data(), x, norm, R, D);
    if (which == HiddenState::penultimate && config.layers == 0) Backend::copy(out.data(), x, static_cast<std::size_t>(R * D));
  }

  //! forward() with the lengths read from an attention mask (B, N) of right padding.
  void forward(Tensor<T, Backend>& out, const Tensor<std::int64_t>& ids, const Tensor<std::int64_t>& mask,
               HiddenState which = HiddenState::last) const {
    check(mask.shape() == ids.shape(), "encoder: the attention mask has shape ", mask.shape(), ", the ids ",
          ids.shape());
    forward(out, ids, lengths_from_mask(mask), which);
  }

  //! Sizes the workspace for B prompts of N tokens (forward does it on demand; buffers only grow,
  //! the rotary tables are rebuilt when N changes).
  void reserve(std::int64_t B, std::int64_t N) const {
    auto& ws = workspace_;
    const std::int64_t R = B * N, D = config.hidden, hd = config.head_dim;
    grow(ws.x, R * D);
    grow(ws.h, R * D);
    grow(ws.q, R * config.heads * hd);
    grow(ws.attention, R * config.heads * hd);
    grow(ws.k, R * config.kv_heads * hd);
    grow(ws.v, R * config.kv_heads * hd);
    grow(ws.gate, R * config.intermediate);
    grow(ws.up, R * config.intermediate);
    grow(ws.ids, R);
    grow(ws.lengths, B);
    if constexpr (!std::is_same_v<W, T> && !backend_reads_weights) {
      const std::int64_t largest = std::max({config.heads * hd * D, config.intermediate * D});
      grow(ws.weight, largest);
    }
    if (ws.rotary_tokens != N) {
      rotary_table(ws.local_cos, ws.local_sin, N, config.rope_local_base);
      rotary_table(ws.global_cos, ws.global_sin, N, config.rope_theta);
      ws.rotary_tokens = N;
    }
  }

 private:
  struct Workspace {
    Tensor<T, Backend> x, h, q, k, v, attention, gate, up;  // (R, D) x2, (R, nh*hd), ... (see reserve)
    Tensor<T, Backend> weight;  // the largest weight matrix as T, only where the backend cannot read W
    Tensor<std::int64_t, Backend> ids, lengths;                     // (R), (B)
    Tensor<T, Backend> local_cos, local_sin, global_cos, global_sin;  // (N, hd/2) each
    std::int64_t rotary_tokens = -1;
  };

  template <class U>
  static void grow(Tensor<U, Backend>& t, std::int64_t n) {
    if (t.numel() < n) t = Tensor<U, Backend>::empty({n});
  }

  //! cos/sin (N, hd/2) of pos / base^(2j/hd), computed in double.
  void rotary_table(Tensor<T, Backend>& cos, Tensor<T, Backend>& sin, std::int64_t N, double base) const {
    const std::int64_t half = config.head_dim / 2;
    std::vector<T> c(static_cast<std::size_t>(N * half)), s(c.size());
    for (std::int64_t j = 0; j < half; ++j) {
      const double inv_freq = 1.0 / std::pow(base, 2.0 * static_cast<double>(j) / static_cast<double>(config.head_dim));
      for (std::int64_t n = 0; n < N; ++n) {
        const double angle = static_cast<double>(n) * inv_freq;
        c[static_cast<std::size_t>(n * half + j)] = static_cast<T>(std::cos(angle));
        s[static_cast<std::size_t>(n * half + j)] = static_cast<T>(std::sin(angle));
      }
    }
    cos = Tensor<T, Backend>::empty({N, half});
    sin = Tensor<T, Backend>::empty({N, half});
    Backend::copy_from_host(cos.data(), c.data(), c.size());
    Backend::copy_from_host(sin.data(), s.data(), s.size());
  }

  void rms_norm(T* out, const T* in, const Tensor<T, Backend>& scale, std::int64_t rows, std::int64_t cols) const {
    Backend::for_each(rows, math::GemmaRmsNormOp<T>{out, in, scale.data(), cols, config.rms_norm_eps});
  }

  //! out (R, out_f) = in (R, in_f) weight^T: the backend reads W weights itself in `precision`
  //! (backend_reads_weights), or the weight is widened to T first (one matrix at a time into the
  //! workspace).
  void linear(T* out, const T* in, const Tensor<W, Backend>& weight, std::int64_t rows, std::int64_t in_features,
              std::int64_t out_features) const {
    if constexpr (std::is_same_v<W, T>) {
      Backend::linear_forward(out, in, weight.data(), static_cast<const T*>(nullptr), rows, in_features, out_features);
    } else if constexpr (backend_reads_weights) {
      Backend::linear_forward(out, in, weight.data(), static_cast<const T*>(nullptr), rows, in_features, out_features,
                              false, precision);
    } else {
      T* widened = workspace_.weight.data();
      Backend::convert(widened, weight.data(), static_cast<std::size_t>(in_features * out_features));
      Backend::linear_forward(out, in, static_cast<const T*>(widened), static_cast<const T*>(nullptr), rows,
                              in_features, out_features);
    }
  }

  mutable Workspace workspace_;
};

//! sqrt(D) rounded to `dtype` (the stored embedding's), as transformers applies it: its scale is
//! a buffer converted with the model, so a bfloat16 model multiplies by bfloat16(sqrt(D)) = 34
//! for D = 1152.
inline double embedding_normalizer(std::int64_t hidden, DType dtype) {
  const double exact = std::sqrt(static_cast<double>(hidden));
  switch (dtype) {
    case DType::BF16: return static_cast<float>(bfloat16(static_cast<float>(exact)));
    case DType::F16: return static_cast<float>(float16(static_cast<float>(exact)));
    case DType::F32: return static_cast<float>(exact);
    default: return exact;
  }
}

//! Loads the decoder stack from a safetensors file with Hugging Face's names (a Gemma3ForCausalLM
//! checkpoint: `model.*`, and `lm_head.weight` ignored when present). Weights of dtype W are
//! zero-copy views of the mapped file on the CPU; others are converted. Every expected tensor
//! must be there with its shape; any other tensor is an error (a multimodal Gemma-3 checkpoint,
//! `language_model.model.*`, is not this one).
template <class T, class Backend = cpu, class W = T>
GemmaEncoder<T, Backend, W> load_gemma(const io::SafetensorsFile& file, const GemmaConfig& config) {
  GemmaEncoder<T, Backend, W> e;
  e.config = config;
  const auto D = config.hidden, hd = config.head_dim;
  std::set<std::string> used;
  auto weight = [&](const std::string& name, Shape shape) {
    check(file.contains(name), file.path(), ": tensor '", name, "' is missing (", config.describe(), ")");
    used.insert(name);
    return to_backend<Backend>(file.load<W>(name, shape));
  };
  auto norm = [&](const std::string& name, std::int64_t n) {
    check(file.contains(name), file.path(), ": tensor '", name, "' is missing (", config.describe(), ")");
    used.insert(name);
    auto w = file.load<double>(name, {n});
    auto scale = Tensor<T>::empty({n});
    for (std::int64_t j = 0; j < n; ++j) scale.data()[j] = static_cast<T>(T(1) + static_cast<T>(w.data()[j]));
    return to_backend<Backend>(scale);
  };
  e.embed_tokens = weight(gemma_keys::embed_tokens, {config.vocab_size, D});
  e.normalizer = static_cast<T>(embedding_normalizer(D, file.info(gemma_keys::embed_tokens).dtype));
  e.norm = norm(gemma_keys::final_norm, D);
  for (std::int64_t i = 0; i < config.layers; ++i) {
    typename GemmaEncoder<T, Backend, W>::Layer l;
    using gemma_keys::layer;
    l.q_proj = weight(layer(i, "self_attn.q_proj.weight"), {config.heads * hd, D});
    l.k_proj = weight(layer(i, "self_attn.k_proj.weight"), {config.kv_heads * hd, D});
    l.v_proj = weight(layer(i, "self_attn.v_proj.weight"), {config.kv_heads * hd, D});
    l.o_proj = weight(layer(i, "self_attn.o_proj.weight"), {D, config.heads * hd});
    l.gate_proj = weight(layer(i, "mlp.gate_proj.weight"), {config.intermediate, D});
    l.up_proj = weight(layer(i, "mlp.up_proj.weight"), {config.intermediate, D});
    l.down_proj = weight(layer(i, "mlp.down_proj.weight"), {D, config.intermediate});
    l.q_norm = norm(layer(i, "self_attn.q_norm.weight"), hd);
    l.k_norm = norm(layer(i, "self_attn.k_norm.weight"), hd);
    l.input_layernorm = norm(layer(i, "input_layernorm.weight"), D);
    l.post_attention_layernorm = norm(layer(i, "post_attention_layernorm.weight"), D);
    l.pre_feedforward_layernorm = norm(layer(i, "pre_feedforward_layernorm.weight"), D);
    l.post_feedforward_layernorm = norm(layer(i, "post_feedforward_layernorm.weight"), D);
    e.layers.push_back(std::move(l));
  }
  for (const auto& t : file.tensors())
    check(used.count(t.name) || t.name == gemma_keys::lm_head, file.path(), ": unexpected tensor '", t.name,
          "' for a ", config.describe(), " (expected Hugging Face Gemma3ForCausalLM names: model.embed_tokens, "
          "model.layers.{i}.*, model.norm)");
  return e;
}

//! The text of a file, or a tim::Error naming it.
inline std::string read_text_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  check(in.good(), what, " '", path, "': cannot be read");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

//! The files of a text-encoder folder as Hugging Face ships google/gemma-3-1b-it.
struct TextEncoderFolder {
  std::string config;     // config.json
  std::string weights;    // model.safetensors
  std::string tokenizer;  // tokenizer.model (SentencePiece)

  //! Checks that the folder has config.json, model.safetensors and (with `with_tokenizer`)
  //! tokenizer.model; a sharded checkpoint (model.safetensors.index.json) is refused with a
  //! message saying so.
  static TextEncoderFolder at(const std::string& dir, bool with_tokenizer = true) {
    namespace fs = std::filesystem;
    check(fs::is_directory(dir), "--text-encoder '", dir, "': not a folder (expected the Gemma-3 folder with ",
          "config.json, model.safetensors and tokenizer.model)");
    TextEncoderFolder f{(fs::path(dir) / "config.json").string(), (fs::path(dir) / "model.safetensors").string(),
                        (fs::path(dir) / "tokenizer.model").string()};
    check(!fs::exists(fs::path(dir) / "model.safetensors.index.json") || fs::exists(f.weights), "text encoder '", dir,
          "': the weights are sharded (model.safetensors.index.json); tim reads one model.safetensors");
    for (const auto* p : {&f.config, &f.weights, &f.tokenizer})
      check(fs::exists(*p) || (p == &f.tokenizer && !with_tokenizer), "text encoder '", dir, "': missing ", fs::path(*p).filename().string());
    return f;
  }
};

//! Loads the decoder stack of a Gemma-3 folder (config.json + model.safetensors).
template <class T, class Backend = cpu, class W = T>
GemmaEncoder<T, Backend, W> load_gemma_folder(const std::string& dir) {
  const auto folder = TextEncoderFolder::at(dir, /*with_tokenizer=*/false);
  const auto config = parse_gemma_config(read_text_file(folder.config, "text encoder config"), folder.config);
  return load_gemma<T, Backend, W>(io::SafetensorsFile::open(folder.weights), config);
}

}  // namespace tim::text
