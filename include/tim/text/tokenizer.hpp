// The prompt tokenizer of the Gemma-3 text encoder: SentencePiece's own C++ library reading the
// encoder folder's `tokenizer.model`, with the released T2I scripts' framing around it (BOS first,
// truncation to the maximum length, right padding with the pad id, the attention mask).
// Needs the CMake target tim::text (it links libsentencepiece); the encoder (tim/text/gemma.hpp)
// does not.
//
// Shape legend: B prompts, M = max_length tokens.
#pragma once

#include <sentencepiece_processor.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/core/tensor.hpp"
#include "tim/text/utf8.hpp"

namespace tim::text {

//! One prompt's tokens framed as the released `encode_prompt` frames them (Hugging Face's
//! tokenizer with padding='max_length', truncation=True): ids (M) and mask (M), mask 1 on the
//! `length` real tokens (BOS included) and 0 on the padding after them.
struct TokenizedPrompt {
  std::vector<std::int64_t> ids;   // (M)
  std::vector<std::int64_t> mask;  // (M)
  std::int64_t length = 0;         // tokens with mask 1, BOS included; 1 <= length <= M
  bool truncated = false;          // the prompt had more than M - 1 tokens
};

//! SentencePiece tokenizer of a Gemma-3 folder (`tokenizer.model`).
//!
//! Example:
//!   auto tokenizer = tim::text::Tokenizer::open("gemma-3-1b-it/tokenizer.model");
//!   auto prompt = tokenizer.frame("a red fox", 256);   // prompt.ids: BOS, pieces..., pad, pad, ...
class Tokenizer {
 public:
  //! Loads a SentencePiece model; throws tim::Error naming the path when it cannot, or when the
  //! model defines no BOS or no pad piece (Gemma's: <pad> = 0, <bos> = 2).
  static Tokenizer open(const std::string& path) {
    Tokenizer t;
    t.processor_ = std::make_shared<sentencepiece::SentencePieceProcessor>();
    const auto status = t.processor_->Load(path);
    check(status.ok(), "tokenizer '", path, "': cannot load the SentencePiece model: ", status.ToString());
    t.path_ = path;
    check(t.processor_->bos_id() >= 0, "tokenizer '", path, "': the model defines no BOS piece");
    check(t.processor_->pad_id() >= 0, "tokenizer '", path, "': the model defines no pad piece");
    return t;
  }

  std::int64_t bos_id() const { return processor_->bos_id(); }
  std::int64_t pad_id() const { return processor_->pad_id(); }
  std::int64_t eos_id() const { return processor_->eos_id(); }
  std::int64_t vocab_size() const { return processor_->GetPieceSize(); }
  const std::string& path() const { return path_; }

  //! The SentencePiece pieces' ids of `text` (no BOS, no EOS, no truncation). Throws tim::Error
  //! with the byte offset when the text is not valid UTF-8 (SentencePiece would silently replace
  //! the bytes with U+FFFD).
  std::vector<std::int64_t> encode(std::string_view text) const {
    const auto bad = first_invalid_utf8(text);
    check(bad == std::string_view::npos, "prompt: not valid UTF-8 (invalid byte sequence at byte ", bad, " of ",
          text.size(), ")");
    std::vector<int> pieces;
    const auto status = processor_->Encode(text, &pieces);
    check(status.ok(), "tokenizer '", path_, "': cannot encode a prompt: ", status.ToString());
    return {pieces.begin(), pieces.end()};
  }

  //! BOS + encode(text), cut to `max_length` tokens (BOS kept), then padded on the right with the
  //! pad id to exactly `max_length`; the mask marks the real tokens. max_length >= 1.
  TokenizedPrompt frame(std::string_view text, std::int64_t max_length) const {
    check(max_length >= 1, "tokenizer: max_length must be at least 1 (room for BOS), got ", max_length);
    const auto pieces = encode(text);
    TokenizedPrompt out;
    out.ids.assign(static_cast<std::size_t>(max_length), pad_id());
    out.mask.assign(static_cast<std::size_t>(max_length), 0);
    out.ids[0] = bos_id();
    const std::int64_t kept = std::min<std::int64_t>(static_cast<std::int64_t>(pieces.size()), max_length - 1);
    for (std::int64_t i = 0; i < kept; ++i) out.ids[static_cast<std::size_t>(i + 1)] = pieces[static_cast<std::size_t>(i)];
    out.length = kept + 1;
    for (std::int64_t i = 0; i < out.length; ++i) out.mask[static_cast<std::size_t>(i)] = 1;
    out.truncated = static_cast<std::int64_t>(pieces.size()) > max_length - 1;
    return out;
  }

  //! frame() for every prompt: ids and mask (B, M) int64 as host tensors.
  void frame_batch(const std::vector<std::string>& prompts, std::int64_t max_length, Tensor<std::int64_t>& ids,
                   Tensor<std::int64_t>& mask) const {
    const auto B = static_cast<std::int64_t>(prompts.size());
    ids = Tensor<std::int64_t>::empty({B, max_length});
    mask = Tensor<std::int64_t>::empty({B, max_length});
    for (std::int64_t b = 0; b < B; ++b) {
      const auto framed = frame(prompts[static_cast<std::size_t>(b)], max_length);
      std::copy(framed.ids.begin(), framed.ids.end(), ids.data() + b * max_length);
      std::copy(framed.mask.begin(), framed.mask.end(), mask.data() + b * max_length);
    }
  }

 private:
  Tokenizer() = default;
  std::shared_ptr<sentencepiece::SentencePieceProcessor> processor_;
  std::string path_;
};

}  // namespace tim::text
