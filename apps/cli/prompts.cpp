// The prompt options shared by `tim encode` and `tim sample` (prompts.hpp).
#include "prompts.hpp"

#include <iomanip>
#include <iostream>

#include "common.hpp"
#include "cuda_backend.hpp"
#include "tim/text/prompts_file.hpp"

namespace tim_cli {

void add_prompt_options(CLI::App& command, PromptOptions& options, bool sampling) {
  command.add_option("--text-encoder", options.text_encoder,
                     "Text-encoder folder as Hugging Face ships google/gemma-3-1b-it: config.json, model.safetensors "
                     "(bfloat16 weights stay memory-mapped) and tokenizer.model (SentencePiece)");
  options.prompt_option = command.add_option("--prompt", options.prompts,
                                             "A prompt (repeat for several; one sample per prompt)");
  command.add_option("--prompts-file", options.prompts_file, "UTF-8 text file, one prompt per line");
  command.add_option("--max-length", options.max_length,
                     "Tokens per prompt, BOS included; longer prompts are truncated (default 256, the released "
                     "max_seq_length)");
  command.add_option("--hidden-state", options.hidden_state,
                     "Which encoder state the captions are: last (the final norm's output, the released "
                     "use_last_hidden_state: True; default) or penultimate (the input of the last layer)");
  command.add_option("--text-precision", options.text_precision,
                     "Products of the encoder's bfloat16 weights: float (default: the weights widened exactly, "
                     "float sums) or bfloat16 (activations rounded to bfloat16 too, float sums; about 2x faster "
                     "where the CPU has AVX512-BF16 or AMX, float where it has not, with a note)");
  if (sampling)
    command.add_option("--caption-batching", options.caption_batching,
                       "per-prompt (default): every prompt's image is the one the released script gives for that "
                       "prompt sampled alone; released: the batch cut to its longest prompt, as the released "
                       "scripts do (a prompt's image then depends on its batch)");
}

void check_prompt_options(const PromptOptions& o) {
  if (!o.given()) {
    tim::check(o.text_encoder.empty(), "--text-encoder needs --prompt TEXT or --prompts-file FILE");
    return;
  }
  tim::check(!o.text_encoder.empty(), "--prompt and --prompts-file need --text-encoder DIR (the Gemma-3 folder)");
  tim::check(o.max_length >= 1, "--max-length must be at least 1 (room for BOS), got ", o.max_length);
  tim::text::parse_hidden_state(o.hidden_state, "--hidden-state");
  tim::parse_precision(o.text_precision, "--text-precision");
  tim::text::parse_caption_batching(o.caption_batching);
}

std::vector<std::string> read_prompts(const PromptOptions& o) {
  std::vector<std::string> prompts = o.prompts;
  if (!o.prompts_file.empty()) {
    const auto lines = tim::text::parse_prompts_file(tim::text::read_text_file(o.prompts_file, "--prompts-file"),
                                                     "--prompts-file '" + o.prompts_file + "'");
    prompts.insert(prompts.end(), lines.begin(), lines.end());
  }
  return prompts;
}

namespace {

//! The CPU encoder, or the tokenizer here and the encoder stage on the GPU.
tim::text::PromptEncoder open_encoder(const PromptOptions& o, bool cuda) {
  const auto precision = tim::parse_precision(o.text_precision, "--text-precision");
  if (!cuda) return tim::text::PromptEncoder::open(o.text_encoder, precision);
  tim::check(precision == tim::Precision::float32, "--text-precision ", o.text_precision, " is the CPU encoder's; "
             "with --device cuda the encoder keeps the folder's bfloat16 weights on the GPU and computes in float");
  tim::text::TextEncoderFolder::at(o.text_encoder);  // a missing file is named before the GPU is touched
  const auto gpu = CudaTextEncoder::load(o.text_encoder);
  return tim::text::PromptEncoder::with_encoder(
      o.text_encoder,
      [gpu](tim::Tensor<float>& out, const tim::Tensor<std::int64_t>& ids, const std::vector<std::int64_t>& lengths,
            tim::text::HiddenState which) { gpu.encode(out, ids, lengths, which); },
      gpu.weight_dtype(), "float on the GPU (" + gpu.device() + ")");
}

}  // namespace

tim::text::EncodedPrompts encode_prompts(const PromptOptions& o, const std::vector<std::string>& prompts, bool verbose,
                                         bool cuda) {
  const auto start = Clock::now();
  const auto encoder = open_encoder(o, cuda);
  const double load_seconds = seconds_since(start);
  if (encoder.precision_fell_back())
    std::cerr << "tim: note: --text-precision bfloat16: computing in float instead: "
              << tim::cpu_gemm::bf16_kernel().reason << '\n';
  const auto encode_start = Clock::now();
  auto encoded = encoder.encode(prompts, o.max_length, tim::text::parse_hidden_state(o.hidden_state, "--hidden-state"));
  for (std::size_t b = 0; b < prompts.size(); ++b)
    if (encoded.truncated[b])
      std::cerr << "tim: warning: prompt " << b << " has more than " << o.max_length - 1
                << " tokens and was truncated to --max-length " << o.max_length << ": " << truncated(prompts[b], 60)
                << '\n';
  if (verbose)
    std::cerr << std::fixed << std::setprecision(3) << "tim: text encoder " << encoder.config().describe() << ", "
              << encoder.weight_dtype() << " weights, products in " << encoder.precision_description() << ", loaded in " << load_seconds << " s; " << prompts.size()
              << " prompts of up to " << encoded.cap_feats.dim(1) << " tokens (and the empty prompt) encoded in "
              << seconds_since(encode_start) << " s\n";
  return encoded;
}

}  // namespace tim_cli
