// How caption features condition a batch of text-to-image samples, in host memory.
//
// The released T2I scripts cut the batch's features to the longest prompt's token count and the
// null caption (the empty prompt's features, for guidance) to the same count; the network's
// cross-attention has no mask, so a prompt's image depends on the other prompts of its batch.
// tim's default (`CaptionBatching::per_prompt`) samples every prompt as the released script
// samples it alone: the rows are grouped by token count, and each group runs with its features
// and the null caption cut to that count, with each row keeping its own noise and sample index.
// `CaptionBatching::released` reproduces a released batched run (tests/test_text_conditioning.cpp
// shows both).
//
// Shape legend: B prompts, M caption tokens, Dc caption feature width, S values per sample.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/core/tensor.hpp"
#include "tim/sampler/sampler.hpp"

namespace tim::text {

//! per_prompt: each prompt's image is that of the prompt sampled alone (the default);
//! released: the whole batch cut to its longest prompt, as the released scripts do.
enum class CaptionBatching : std::uint8_t { per_prompt, released };

inline CaptionBatching parse_caption_batching(std::string_view name) {
  if (name == "per-prompt") return CaptionBatching::per_prompt;
  if (name == "released") return CaptionBatching::released;
  fail("--caption-batching: expected \"per-prompt\" or \"released\", got \"", name, "\"");
}

//! Rows (B, M, Dc) -> (rows.size(), length, Dc): the given rows, their first `length` tokens.
template <class T>
Tensor<T> gather_captions(const Tensor<T>& cap_feats, const std::vector<std::int64_t>& rows, std::int64_t length) {
  const auto M = cap_feats.dim(1), Dc = cap_feats.dim(2);
  check(length >= 1 && length <= M, "captions: cannot cut ", M, " tokens to ", length);
  auto out = Tensor<T>::empty({static_cast<std::int64_t>(rows.size()), length, Dc});
  for (std::size_t i = 0; i < rows.size(); ++i)
    std::copy(cap_feats.data() + rows[i] * M * Dc, cap_feats.data() + (rows[i] * M + length) * Dc,
              out.data() + static_cast<std::int64_t>(i) * length * Dc);
  return out;
}

//! The released batch behaviour: features and null caption cut to the longest prompt's length.
template <class T>
void cut_to_longest(Tensor<T>& cap_feats, Tensor<T>& null_cap_feats, const std::vector<std::int64_t>& lengths) {
  const auto longest = *std::max_element(lengths.begin(), lengths.end());
  std::vector<std::int64_t> all(static_cast<std::size_t>(cap_feats.dim(0)));
  for (std::size_t b = 0; b < all.size(); ++b) all[b] = static_cast<std::int64_t>(b);
  cap_feats = gather_captions(cap_feats, all, longest);
  if (!null_cap_feats.empty_tensor()) null_cap_feats = gather_captions(null_cap_feats, {0}, longest);
}

//! Samples every prompt as if alone: rows grouped by lengths[b] (the real tokens of prompt b, BOS
//! included), each group through `sample_group(noise_g, cap_feats_g, null_cap_feats_g, options_g)`
//! with its rows' noise (host, (B, ...)), features cut to the group's length, the null caption cut
//! likewise (empty stays empty) and options_g.sample_indices = those rows' sample indices (the
//! options' own, or first_sample_index + b). Returns the final states in the original row order;
//! trajectories are not kept (options.keep_trajectory must be false).
template <class T, class SampleGroup>
SampleResult<> sample_each_prompt_alone(const Tensor<double>& noise, const Tensor<T>& cap_feats,
                                        const Tensor<T>& null_cap_feats, const std::vector<std::int64_t>& lengths,
                                        const SamplerOptions<>& options, SampleGroup&& sample_group) {
  const auto B = cap_feats.dim(0);
  check(noise.rank() >= 1 && noise.dim(0) == B, "captions: ", B, " captions for a noise batch of shape ", noise.shape());
  check(static_cast<std::int64_t>(lengths.size()) == B, "captions: ", lengths.size(), " lengths for ", B, " captions");
  check(!options.keep_trajectory, "per-prompt caption batching does not keep trajectories; use released batching");
  check(options.sample_indices.empty() || static_cast<std::int64_t>(options.sample_indices.size()) == B,
        "captions: ", options.sample_indices.size(), " sample indices for ", B, " captions");
  std::map<std::int64_t, std::vector<std::int64_t>> groups;
  for (std::int64_t b = 0; b < B; ++b) {
    const auto L = lengths[static_cast<std::size_t>(b)];
    check(L >= 1 && L <= cap_feats.dim(1), "captions: caption ", b, " has ", L, " tokens, expected 1 to M = ",
          cap_feats.dim(1));
    groups[L].push_back(b);
  }
  const std::int64_t S = noise.numel() / B;
  SampleResult<> result;
  result.x = Tensor<double>::empty(noise.shape());
  for (const auto& [length, rows] : groups) {
    std::vector<std::int64_t> extents = noise.shape().extents();
    extents[0] = static_cast<std::int64_t>(rows.size());
    auto group_noise = Tensor<double>::empty(Shape(extents));
    auto group_options = options;
    group_options.sample_indices.clear();
    for (std::size_t i = 0; i < rows.size(); ++i) {
      std::copy(noise.data() + rows[i] * S, noise.data() + (rows[i] + 1) * S,
                group_noise.data() + static_cast<std::int64_t>(i) * S);
      group_options.sample_indices.push_back(options.sample_indices.empty()
                                                 ? options.first_sample_index + static_cast<std::uint64_t>(rows[i])
                                                 : options.sample_indices[static_cast<std::size_t>(rows[i])]);
    }
    const auto null_group =
        null_cap_feats.empty_tensor() ? Tensor<T>{} : gather_captions(null_cap_feats, {0}, length);
    const SampleResult<> group = sample_group(group_noise, gather_captions(cap_feats, rows, length), null_group,
                                              group_options);
    for (std::size_t i = 0; i < rows.size(); ++i)
      std::copy(group.x.data() + static_cast<std::int64_t>(i) * S, group.x.data() + static_cast<std::int64_t>(i + 1) * S,
                result.x.data() + rows[i] * S);
    result.times = group.times;
    result.steps_done = group.steps_done;
    result.cancelled = result.cancelled || group.cancelled;
  }
  return result;
}

//! Samples a batch of captions whose lengths are known (lengths[b] real tokens of caption b) under
//! `batching`, through `sample_batch(noise, cap_feats, null_cap_feats, options)`, which samples
//! one batch as given: per_prompt, every caption as if sampled alone (sample_each_prompt_alone;
//! options.keep_trajectory must be false); released, the whole batch in one call with its
//! features and the null caption cut to its longest caption, as the released scripts do.
//! `tim sample` (one chunk of a run), `tim serve` and the Python package sample prompts here.
template <class T, class SampleBatch>
SampleResult<> sample_captions(CaptionBatching batching, const Tensor<double>& noise, const Tensor<T>& cap_feats,
                               const Tensor<T>& null_cap_feats, const std::vector<std::int64_t>& lengths,
                               const SamplerOptions<>& options, SampleBatch&& sample_batch) {
  if (batching == CaptionBatching::per_prompt)
    return sample_each_prompt_alone(noise, cap_feats, null_cap_feats, lengths, options, sample_batch);
  check(static_cast<std::int64_t>(lengths.size()) == cap_feats.dim(0), "captions: ", lengths.size(),
        " lengths for ", cap_feats.dim(0), " captions");
  for (std::size_t b = 0; b < lengths.size(); ++b)
    check(lengths[b] >= 1 && lengths[b] <= cap_feats.dim(1), "captions: caption ", b, " has ", lengths[b],
          " tokens, expected 1 to M = ", cap_feats.dim(1));
  Tensor<T> cut = cap_feats, null_cut = null_cap_feats;
  cut_to_longest(cut, null_cut, lengths);
  return sample_batch(noise, static_cast<const Tensor<T>&>(cut), static_cast<const Tensor<T>&>(null_cut), options);
}

}  // namespace tim::text
