// tim sample --text-encoder DIR --prompt TEXT: the prompts' caption features for the T2I model
// (docs/cli.md, docs/t2i.md), and which caption batching applies.
#include <string>
#include <vector>

#include "sample.hpp"
#include "tim/text/conditioning.hpp"

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

tim::SampleResult<> generate_captioned(const Generator& model, const tim::SampleSettings& s, std::uint64_t seed,
                                       const std::vector<SampleSpec>& specs, const tim::Tensor<double>& noise,
                                       const StepReport& report, const CaptionFeatures& captions, bool per_prompt,
                                       bool keep_trajectory) {
  // The chunk's captions, rows in chunk order, and their lengths.
  std::vector<std::int64_t> rows, lengths;
  std::vector<SampleSpec> chunk_specs;
  for (const auto& spec : specs) {
    chunk_specs.push_back({.index = spec.index, .caption = static_cast<std::int64_t>(rows.size())});
    rows.push_back(spec.caption);
    lengths.push_back(captions.lengths[static_cast<std::size_t>(spec.caption)]);
  }
  auto chunk_captions = tim::text::gather_captions(captions.cap_feats, rows, captions.cap_feats.dim(1));
  if (!per_prompt) {
    // --caption-batching released: the chunk is the released script's batch, its features and
    // the null caption cut to its longest prompt.
    auto chunk_null = captions.null_cap_feats;
    tim::text::cut_to_longest(chunk_captions, chunk_null, lengths);
    return model.generate(s, seed, chunk_specs, noise, report, keep_trajectory, chunk_captions, chunk_null);
  }
  // Each prompt as if sampled alone: the chunk's rows grouped by caption length, each group with
  // its features and null caption cut to it (tim::text::sample_each_prompt_alone).
  tim::SamplerOptions<> chunk_options{.seed = seed};
  for (const auto& spec : specs) chunk_options.sample_indices.push_back(spec.index);
  return tim::text::sample_each_prompt_alone(
      noise, chunk_captions, captions.null_cap_feats, lengths, chunk_options,
      [&](const tim::Tensor<double>& group_noise, const tim::Tensor<float>& group_captions,
          const tim::Tensor<float>& group_null, const tim::SamplerOptions<>& group_options) {
        std::vector<SampleSpec> group_specs;
        for (std::size_t i = 0; i < group_options.sample_indices.size(); ++i)
          group_specs.push_back({.index = group_options.sample_indices[i], .caption = static_cast<std::int64_t>(i)});
        return model.generate(s, seed, group_specs, group_noise, report, false, group_captions, group_null);
      });
}

}  // namespace tim_cli
