// Caption batching (tim/text/conditioning.hpp) on a random T2I network conditioned by the golden
// text encoder's features of three prompts (two of one length, one longer): per-prompt batching gives every
// prompt the image of that prompt sampled alone (as the released script samples one prompt: its
// features and the null caption cut to its own length), and the released batch behaviour does
// not, which shows the comparison can tell them apart.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "compare.hpp"
#include "random_t2i_checkpoint.hpp"
#include "tim/text/conditioning.hpp"
#include "tim/text/prompts.hpp"
#include "tim/tim.hpp"

namespace {

struct Setup {
  tim::text::EncodedPrompts captions;
  tim::nn::T2IModel<float> model;
  tim::Tensor<double> noise;
  tim::SamplerOptions<> options;
};

Setup setup() {
  const auto encoder = tim::text::PromptEncoder::open(std::string(TIM_TEST_DATA_DIR) + "/golden_gemma/released_pattern");
  Setup s{encoder.encode({"a red fox", "the quick brown fox jumps over the lazy dog", "café 🤖"}, 32), {}, {}, {}};
  const auto checkpoint = tim_test::random_t2i_checkpoint(tim_test::t2i_config(16, 2, 2, 1, 4, 32, 16), 11);
  s.model = tim::nn::load_t2i<float>(checkpoint);
  s.noise = tim::initial_noise({3, 4, 4, 4}, /*seed=*/5);
  // Guided and stochastic, so both the null caption and each row's sample stream matter.
  s.options = {.cfg_scale = 2.0, .stochasticity = 0.3, .seed = 9, .first_sample_index = 20};
  return s;
}

tim::SampleResult<> run(tim::nn::T2IModel<float>& model, const tim::Tensor<double>& noise,
                        const tim::Tensor<float>& cap_feats, const tim::Tensor<float>& null_cap_feats,
                        const tim::SamplerOptions<>& options) {
  model.set_null_caption(null_cap_feats);
  tim::TransitionSampler sampler{model, tim::OtFm{}, tim::linspace_schedule(3)};
  return sampler.sample(noise, cap_feats, options);
}

//! Prompt b sampled alone, as the released script samples a single prompt.
tim::Tensor<double> alone(Setup& s, std::int64_t b) {
  const auto L = s.captions.lengths[static_cast<std::size_t>(b)];
  const auto S = s.noise.numel() / 3;
  auto noise = tim::Tensor<double>::empty({1, 4, 4, 4});
  std::copy(s.noise.data() + b * S, s.noise.data() + (b + 1) * S, noise.data());
  auto options = s.options;
  options.first_sample_index = s.options.first_sample_index + static_cast<std::uint64_t>(b);
  return run(s.model, noise, tim::text::gather_captions(s.captions.cap_feats, {b}, L),
             tim::text::gather_captions(s.captions.null_cap_feats, {0}, L), options)
      .x;
}

double row_error(const tim::Tensor<double>& batch, std::int64_t b, const tim::Tensor<double>& one) {
  const auto S = one.numel();
  return tim_test::relative_error(batch.data() + b * S, one.data(), static_cast<std::size_t>(S));
}

}  // namespace

TEST_CASE("caption batching: per-prompt gives each prompt its image sampled alone, released does not") {
  auto s = setup();
  const auto& lengths = s.captions.lengths;
  REQUIRE(lengths.size() == 3);
  CHECK(lengths[0] < lengths[1]);   // the longest in the middle,
  CHECK(lengths[0] == lengths[2]);  // the two short ones one group of two rows

  REQUIRE(s.captions.cap_feats.dim(1) == lengths[1]);

  const auto per_prompt = tim::text::sample_each_prompt_alone(
      s.noise, s.captions.cap_feats, s.captions.null_cap_feats, lengths, s.options,
      [&](const auto& noise, const auto& cap, const auto& null, const auto& options) {
        return run(s.model, noise, cap, null, options);
      });
  auto cut = s.captions.cap_feats, null_cut = s.captions.null_cap_feats;
  tim::text::cut_to_longest(cut, null_cut, lengths);
  const auto released = run(s.model, s.noise, cut, null_cut, s.options).x;

  for (std::int64_t b = 0; b < 3; ++b) {
    CAPTURE(b);
    const auto one = alone(s, b);
    const double per_prompt_error = row_error(per_prompt.x, b, one), released_error = row_error(released, b, one);
    MESSAGE("prompt ", b, " (", lengths[static_cast<std::size_t>(b)], " tokens): per-prompt vs alone ",
            per_prompt_error, ", released batch vs alone ", released_error);
    // The same arithmetic up to float rounding of batched products (the network runs in float).
    CHECK(per_prompt_error <= 1e-5);
    if (b == 1)
      CHECK(released_error <= 1e-5);  // the longest prompt sees no padding either way
    else
      CHECK(released_error > 1e-3);   // a shorter prompt attends to padding in the released batch
  }
}

TEST_CASE("caption batching: argument checks") {
  auto s = setup();
  const auto never = [](const auto&, const auto&, const auto&, const auto&) -> tim::SampleResult<> {
    FAIL("not reached");
    return {};
  };
  CHECK_THROWS_WITH_AS(tim::text::sample_each_prompt_alone(s.noise, s.captions.cap_feats, s.captions.null_cap_feats,
                                                           {1, 2}, s.options, never),
                       doctest::Contains("2 lengths for 3 captions"), tim::Error);
  auto keep = s.options;
  keep.keep_trajectory = true;
  CHECK_THROWS_WITH_AS(tim::text::sample_each_prompt_alone(s.noise, s.captions.cap_feats, s.captions.null_cap_feats,
                                                           s.captions.lengths, keep, never),
                       doctest::Contains("does not keep trajectories"), tim::Error);
  CHECK_THROWS_WITH_AS(tim::text::sample_each_prompt_alone(s.noise, s.captions.cap_feats, s.captions.null_cap_feats,
                                                           {1, 99, 2}, s.options, never),
                       doctest::Contains("caption 1 has 99 tokens"), tim::Error);
  CHECK_THROWS_WITH_AS(tim::text::parse_caption_batching("grouped"), doctest::Contains("\"per-prompt\" or \"released\""),
                       tim::Error);
}

TEST_CASE("caption batching: sample_captions runs per-prompt groups or the released batch cut to its longest") {
  auto s = setup();
  const auto& lengths = s.captions.lengths;
  const auto sample = [&](const auto& noise, const auto& cap, const auto& null, const auto& options) {
    return run(s.model, noise, cap, null, options);
  };
  // Per prompt: each prompt's image is the prompt sampled alone (as above).
  const auto per_prompt = tim::text::sample_captions(tim::text::CaptionBatching::per_prompt, s.noise,
                                                     s.captions.cap_feats, s.captions.null_cap_feats, lengths,
                                                     s.options, sample);
  for (std::int64_t b = 0; b < 3; ++b) {
    CAPTURE(b);
    CHECK(row_error(per_prompt.x, b, alone(s, b)) <= 1e-5);
  }
  // Released: one call, with the features and the null caption cut to the longest prompt (here
  // already M, so a cut of a wider copy must give the same call) and the options as given.
  auto wide = tim::Tensor<float>::zeros({3, lengths[1] + 2, 32}), wide_null = tim::Tensor<float>::zeros({1, lengths[1] + 2, 32});
  const std::int64_t M = lengths[1];
  for (std::int64_t b = 0; b < 3; ++b)
    std::copy(s.captions.cap_feats.data() + b * M * 32, s.captions.cap_feats.data() + (b + 1) * M * 32,
              wide.data() + b * (M + 2) * 32);
  std::copy(s.captions.null_cap_feats.data(), s.captions.null_cap_feats.data() + M * 32, wide_null.data());
  auto options = s.options;
  options.keep_trajectory = true;
  int calls = 0;
  const auto released = tim::text::sample_captions(
      tim::text::CaptionBatching::released, s.noise, wide, wide_null, lengths, options,
      [&](const auto& noise, const auto& cap, const auto& null, const auto& batch_options) {
        ++calls;
        CHECK(cap.shape() == tim::Shape{3, M, 32});
        CHECK(null.shape() == tim::Shape{1, M, 32});
        CHECK(batch_options.keep_trajectory);
        CHECK(batch_options.first_sample_index == 20);
        return run(s.model, noise, cap, null, batch_options);
      });
  CHECK(calls == 1);
  const auto expected = run(s.model, s.noise, s.captions.cap_feats, s.captions.null_cap_feats, options);
  CHECK(tim_test::relative_error(released.x.data(), expected.x.data(), static_cast<std::size_t>(expected.x.numel())) == 0);
  CHECK(released.trajectory.numel() == expected.trajectory.numel());
  CHECK_THROWS_WITH_AS(tim::text::sample_captions(tim::text::CaptionBatching::released, s.noise, wide, wide_null,
                                                  {1, 2}, options, sample),
                       doctest::Contains("2 lengths for 3 captions"), tim::Error);
}
