// tim sample --text-encoder DIR --prompt TEXT: the prompts' caption features for the T2I model
// (docs/cli.md, docs/t2i.md), and which caption batching applies.
#include <string>

#include "sample.hpp"

namespace tim_cli {

CaptionFeatures captions_from_prompts(const SampleOptions& options, std::int64_t caption_dim) {
  const auto prompts = read_prompts(options.prompts);
  auto encoded = encode_prompts(options.prompts, prompts, options.compute.verbose);
  tim::check(encoded.cap_feats.dim(2) == caption_dim, "--text-encoder '", options.prompts.text_encoder,
             "': its hidden size is ", encoded.cap_feats.dim(2), ", the model's caption features have cap_dim ",
             caption_dim);
  return {std::move(encoded.cap_feats), std::move(encoded.null_cap_feats), prompts, std::move(encoded.lengths)};
}

bool sample_per_prompt(const SampleOptions& options, const CaptionFeatures& captions) {
  return !captions.lengths.empty() &&
         tim::text::parse_caption_batching(options.prompts.caption_batching) == tim::text::CaptionBatching::per_prompt;
}

}  // namespace tim_cli
