// `tim serve` (docs/serve.md): the body of POST /v1/images/generations, parsed and checked
// against the loaded model and the server's limits. Free of HTTP and of the network, so the
// fuzz target (fuzz/fuzz_serve_request.cpp) runs it alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tim/sampler/settings.hpp"

namespace tim_cli::serve {

//! What the server refuses (docs/serve.md, "Limits").
struct Limits {
  std::size_t max_body_bytes = 64 * 1024;  // request body
  std::int64_t max_n = 16;                 // images per request
  int max_steps = 1000;                    // sampling steps
  std::int64_t max_pixels = 1024 * 1024;   // image width x height
  std::int64_t max_queue = 256;            // images waiting or being sampled, over all requests
};

//! What the parser needs to know of the served model.
struct ModelFacts {
  std::string id;                        // the name clients give as `model` (the file's stem)
  bool text_to_image = false;            // samples from `prompt` text (else from classes)
  std::int64_t num_classes = 0;          // class-conditional: labels 0..num_classes-1, num_classes = unconditional
  std::vector<std::string> class_names;  // empty: none known
  std::int64_t channels = 1, patch = 1;  // latent channels, the network's patch size
  std::int64_t scale = 1;                // image pixels per latent pixel (the decoder's; 1 without one)
  std::map<std::string, std::string> metadata;  // the checkpoint's __metadata__ (settings defaults)
};

//! One generation request, checked: n labels (or the prompt), the resolved settings, the latent
//! size, the seed.
struct GenerationRequest {
  std::int64_t n = 1;
  std::vector<std::int64_t> labels;  // class-conditional: n entries; text-to-image: empty
  std::optional<std::uint64_t> seed;  // empty: the server's seed with fresh sample indices
  std::uint64_t first_index = 0;      // with a seed: image i is sample index first_index + i
  std::string prompt;                 // as given (empty when absent); text-to-image: non-empty, UTF-8, no NUL
  bool return_latents = false;        // also answer each image's float values (tim extra)
  tim::SampleSettings settings;
  std::int64_t height = 0, width = 0;  // latent pixels
  //! Requests with equal keys (settings, size, seed) may share a sampler call.
  std::string batch_key;
};

//! The JSON field names the settings' messages use.
tim::SampleOptionNames field_names();

//! Parses and checks `body` (a JSON object; docs/serve.md lists the fields). Throws tim::Error
//! naming the field on anything else: malformed JSON, an unknown or ill-typed field, a number
//! that is not finite, a value outside the limits or the model (class, size; `class`/`labels`
//! for a text-to-image model, a missing, empty, non-UTF-8 or NUL-holding `prompt` for one),
//! settings the library refuses (tim::resolve_sample_settings). The prompt's token count is the
//! server's to check (it has the tokenizer).
GenerationRequest parse_generation_request(std::string_view body, const ModelFacts& model, const Limits& limits);

//! The key of a request's batch: every value the sampler call shares (seed included) and, for a
//! text-to-image model, the prompt's token count (caption_tokens > 0): rows of one call are cut
//! to one caption length (tim::text::sample_each_prompt_alone), so each gets the features and the
//! null caption it has alone.
std::string batch_key_of(const tim::SampleSettings& s, std::int64_t height, std::int64_t width, std::uint64_t seed,
                         std::int64_t caption_tokens = 0);

}  // namespace tim_cli::serve
