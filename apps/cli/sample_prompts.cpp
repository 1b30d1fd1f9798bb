// tim sample --text-encoder DIR --prompt TEXT: the prompts' caption features for the T2I model
// (docs/cli.md, docs/t2i.md), and which caption batching applies.
#include <string>
#include <vector>

#include "sample.hpp"
#include "tim/text/conditioning.hpp"

namespace tim_cli {

CaptionFeatures captions_from_prompts(const SampleOptions& options, std::int64_t caption_dim) {
  const auto prompts = read_prompts(options.prompts);
  auto encoded = encode_prompts(options.prompts, prompts, options.compute.verbose, options.compute.cuda());
  tim::check(encoded.cap_feats.dim(2) == caption_dim, "--text-encoder '", options.prompts.text_encoder,
             "': its hidden size is ", encoded.cap_feats.dim(2), ", the model's caption features have cap_dim ",
             caption_dim);
  return {std::move(encoded.cap_feats), std::move(encoded.null_cap_feats), prompts, std::move(encoded.lengths)};
}

bool sample_per_prompt(const SampleOptions& options, const CaptionFeatures& captions) {
  return !captions.lengths.empty() &&
         tim::text::parse_caption_batching(options.prompts.caption_batching) == tim::text::CaptionBatching::per_prompt;
}

tim::SampleResult<> generate_captioned(const Generator& model, const tim::SampleSettings& s, std::uint64_t seed,
                                       const std::vector<SampleSpec>& specs, const tim::Tensor<double>& noise,
                                       const StepReport& report, const CaptionFeatures& captions, bool per_prompt,
                                       bool keep_trajectory) {
  // The chunk's captions, rows in chunk order, and their lengths.
  std::vector<std::int64_t> rows, lengths;
  tim::SamplerOptions<> chunk_options{.seed = seed};
  for (const auto& spec : specs) {
    rows.push_back(spec.caption);
    lengths.push_back(captions.lengths[static_cast<std::size_t>(spec.caption)]);
    chunk_options.sample_indices.push_back(spec.index);
  }
  chunk_options.keep_trajectory = keep_trajectory && !per_prompt;  // per-prompt groups keep none
  const auto chunk_captions = tim::text::gather_captions(captions.cap_feats, rows, captions.cap_feats.dim(1));
  // Per prompt: each prompt as if sampled alone (rows grouped by caption length); released: the
  // chunk is the released script's batch, cut to its longest prompt (tim::text::sample_captions).
  return tim::text::sample_captions(
      per_prompt ? tim::text::CaptionBatching::per_prompt : tim::text::CaptionBatching::released, noise,
      chunk_captions, captions.null_cap_feats, lengths, chunk_options,
      [&](const tim::Tensor<double>& batch_noise, const tim::Tensor<float>& batch_captions,
          const tim::Tensor<float>& batch_null, const tim::SamplerOptions<>& batch_options) {
        std::vector<SampleSpec> batch_specs;
        for (std::size_t i = 0; i < batch_options.sample_indices.size(); ++i)
          batch_specs.push_back({.index = batch_options.sample_indices[i], .caption = static_cast<std::int64_t>(i)});
        return model.generate(s, seed, batch_specs, batch_noise, report, batch_options.keep_trajectory,
                              batch_captions, batch_null);
      });
}

}  // namespace tim_cli
