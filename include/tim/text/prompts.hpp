// From prompts to caption features: the tokenizer and the Gemma-3 encoder of a text encoder
// folder (on the CPU, or the encoder stage supplied from outside: with_encoder), with the released
// encode_prompt's framing (BOS, right padding to max_length, truncation, mask) and trimming (the
// batch to its longest prompt, the null caption, the empty prompt's features, to the same length).
// Needs tim::text (the tokenizer links SentencePiece).
//
// Shape legend: B prompts, M caption tokens (the longest prompt's), D the encoder's hidden width.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "tim/cpu/backend.hpp"
#include "tim/text/gemma.hpp"
#include "tim/text/tokenizer.hpp"

namespace tim::text {

//! The released T2I configuration's max_seq_length.
inline constexpr std::int64_t default_max_length = 256;

//! Caption features of a batch of prompts, in the layout `tim sample --captions` reads.
struct EncodedPrompts {
  Tensor<float> cap_feats;                // (B, M, D)
  Tensor<std::int64_t> cap_mask;          // (B, M): 1 on each prompt's real tokens (BOS included)
  Tensor<std::int64_t> input_ids;         // (B, M)
  Tensor<float> null_cap_feats;           // (1, M, D): the empty prompt's features
  std::vector<std::int64_t> lengths;      // (B) real tokens per prompt, sum of its mask row
  std::vector<bool> truncated;            // (B) the prompt had more than max_length - 1 tokens
};

//! The encoder stage of PromptEncoder::encode supplied from outside (the `tim` program's GPU
//! encoder, apps/cuda_backend.hpp): host features out (B, N, D) of ids (B, N) with lengths[b] real
//! tokens (right padding), the hidden state `which`, as GemmaEncoder::forward computes them.
using EncoderFunction = std::function<void(Tensor<float>& out, const Tensor<std::int64_t>& ids,
                                           const std::vector<std::int64_t>& lengths, HiddenState which)>;

//! A text-encoder folder loaded for encoding on the CPU: weights stay bfloat16 views of the mapped
//! file when stored so, multiplied in `precision` (tim::Precision: float32 by default, bfloat16 on
//! request, tim/cpu/gemm_bf16.hpp); other dtypes are converted to float and computed in float.
//!
//! Example:
//!   auto encoder = tim::text::PromptEncoder::open("gemma-3-1b-it", tim::Precision::bfloat16);
//!   auto caps = encoder.encode({"a red fox in the snow"});   // caps.cap_feats (1, M, 1152)
//! Or with the encoder elsewhere (with_encoder): the same tokenizing, framing and trimming.
class PromptEncoder {
 public:
  static PromptEncoder open(const std::string& dir, Precision precision = Precision::float32) {
    const auto folder = TextEncoderFolder::at(dir);
    PromptEncoder p{Tokenizer::open(folder.tokenizer)};
    const auto config = parse_gemma_config(read_text_file(folder.config, "text encoder config"), folder.config);
    const auto file = io::SafetensorsFile::open(folder.weights);
    check(file.contains(gemma_keys::embed_tokens), folder.weights, ": tensor '", gemma_keys::embed_tokens,
          "' is missing (is this a Gemma-3 text decoder?)");
    if (file.info(gemma_keys::embed_tokens).dtype == DType::BF16) {
      auto e = load_gemma<float, cpu, bfloat16>(file, config);
      e.precision = precision;
      p.encoder_ = std::move(e);
    } else
      p.encoder_ = load_gemma<float, cpu, float>(file, config);
    p.finish(dir, config);
    return p;
  }

  //! The tokenizer and config.json of the folder `dir`, with the encoder stage done by `encoder`
  //! (its weights loaded elsewhere from the same folder; `weight_dtype` says how it holds them,
  //! `description` how it computes). encode() frames, trims and fills the batch exactly as with
  //! the CPU encoder and calls `encoder` where that one runs.
  static PromptEncoder with_encoder(const std::string& dir, EncoderFunction encoder, std::string weight_dtype,
                                    std::string description) {
    check(static_cast<bool>(encoder), "PromptEncoder::with_encoder: no encoder function");
    const auto folder = TextEncoderFolder::at(dir);
    PromptEncoder p{Tokenizer::open(folder.tokenizer)};
    p.encoder_ = External{std::move(encoder), std::move(weight_dtype), std::move(description)};
    p.finish(dir, parse_gemma_config(read_text_file(folder.config, "text encoder config"), folder.config));
    return p;
  }

  const GemmaConfig& config() const { return config_; }
  const Tokenizer& tokenizer() const { return tokenizer_; }
  //! "bfloat16" or "float32": how the weights are held.
  std::string weight_dtype() const {
    if (const auto* e = std::get_if<External>(&encoder_)) return e->weight_dtype;
    return encoder_.index() == 0 ? "bfloat16" : "float32";
  }
  //! The precision the products run in here (bfloat16 only for bfloat16 weights where the CPU
  //! has bfloat16 dot products and tim was built with oneDNN).
  Precision precision() const {
    if (encoder_.index() != 0) return Precision::float32;
    return cpu_gemm::effective_precision(std::get<0>(encoder_).precision);
  }
  //! Whether bfloat16 was asked for and the float path runs instead.
  bool precision_fell_back() const {
    return encoder_.index() == 0 && std::get<0>(encoder_).precision == Precision::bfloat16 &&
           precision() != Precision::bfloat16;
  }
  //! How the products run, e.g. "bfloat16 products, float sums (oneDNN 2.6 matmul (brg:avx512_core_bf16))"
  //! or "float (bfloat16 requested: <why not>)".
  std::string precision_description() const {
    if (const auto* e = std::get_if<External>(&encoder_)) return e->description;
    if (encoder_.index() != 0) return "float (float weights)";
    if (precision() == Precision::bfloat16)
      return "bfloat16 products, float sums (" + cpu_gemm::bf16_kernel().name + ")";
    if (precision_fell_back()) return "float (bfloat16 requested: " + cpu_gemm::bf16_kernel().reason + ")";
    return "float (bfloat16 weights widened per panel)";
  }

  //! Encodes `prompts` (B >= 1) as the released encode_prompt does and trims to the longest one;
  //! the encoder runs on M tokens only (causal attention: the first M positions do not depend on
  //! the padding after them, so the values equal those of a run padded to max_length).
  EncodedPrompts encode(const std::vector<std::string>& prompts, std::int64_t max_length = default_max_length,
                        HiddenState which = HiddenState::last) const {
    check(!prompts.empty(), "prompts: at least one prompt is needed");
    EncodedPrompts out;
    std::vector<TokenizedPrompt> framed;
    for (const auto& p : prompts) {
      framed.push_back(tokenizer_.frame(p, max_length));
      out.lengths.push_back(framed.back().length);
      out.truncated.push_back(framed.back().truncated);
    }
    const auto B = static_cast<std::int64_t>(prompts.size());
    const auto M = *std::max_element(out.lengths.begin(), out.lengths.end());
    out.input_ids = Tensor<std::int64_t>::empty({B, M});
    out.cap_mask = Tensor<std::int64_t>::empty({B, M});
    for (std::int64_t b = 0; b < B; ++b) {
      const auto& f = framed[static_cast<std::size_t>(b)];
      std::copy(f.ids.begin(), f.ids.begin() + M, out.input_ids.data() + b * M);
      std::copy(f.mask.begin(), f.mask.begin() + M, out.cap_mask.data() + b * M);
    }
    const auto null_framed = tokenizer_.frame("", M);
    auto null_ids = Tensor<std::int64_t>::empty({1, M});
    std::copy(null_framed.ids.begin(), null_framed.ids.end(), null_ids.data());
    run_encoder(out.cap_feats, out.input_ids, out.lengths, which);
    run_encoder(out.null_cap_feats, null_ids, std::vector<std::int64_t>{1}, which);
    return out;
  }

 private:
  struct External {
    EncoderFunction run;
    std::string weight_dtype, description;
  };

  explicit PromptEncoder(Tokenizer tokenizer) : tokenizer_(std::move(tokenizer)) {}

  void finish(const std::string& dir, const GemmaConfig& config) {
    check(tokenizer_.vocab_size() <= config.vocab_size, dir, ": the tokenizer has ", tokenizer_.vocab_size(),
          " pieces, more than the encoder's vocabulary of ", config.vocab_size);
    config_ = config;
    dir_ = dir;
  }

  void run_encoder(Tensor<float>& out, const Tensor<std::int64_t>& ids, const std::vector<std::int64_t>& lengths,
                   HiddenState which) const {
    std::visit(
        [&](const auto& e) {
          if constexpr (std::is_same_v<std::decay_t<decltype(e)>, External>) {
            e.run(out, ids, lengths, which);
            check(out.rank() == 3 && out.dim(0) == ids.dim(0) && out.dim(1) == ids.dim(1) &&
                      out.dim(2) == config_.hidden,
                  "text encoder: features of shape ", out.shape().str(), ", expected (", ids.dim(0), ", ", ids.dim(1),
                  ", ", config_.hidden, ")");
          } else {
            e.forward(out, ids, lengths, which);
          }
        },
        encoder_);
  }

  Tokenizer tokenizer_;
  std::variant<GemmaEncoder<float, cpu, bfloat16>, GemmaEncoder<float, cpu, float>, External> encoder_;
  GemmaConfig config_;
  std::string dir_;
};

}  // namespace tim::text
