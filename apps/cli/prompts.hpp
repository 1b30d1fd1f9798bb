// The prompt options of `tim encode` and `tim sample` (docs/cli.md): the text-encoder folder, the
// prompts (--prompt, --prompts-file), --max-length, --hidden-state, --text-precision and, for sampling,
// --caption-batching; and the prompts' caption features through tim::text::PromptEncoder (on the CPU, or
// its encoder stage on the GPU with --device cuda).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tim/text/conditioning.hpp"
#include "tim/text/prompts.hpp"

namespace tim_cli {

struct PromptOptions {
  std::string text_encoder;               // the Gemma-3 folder
  std::vector<std::string> prompts;       // --prompt, repeatable
  std::string prompts_file;               // --prompts-file, one prompt per line
  std::int64_t max_length = tim::text::default_max_length;
  std::string hidden_state = "last";
  std::string text_precision = "float";   // --text-precision float|bfloat16
  std::string caption_batching = "per-prompt";
  CLI::Option* prompt_option = nullptr;

  //! Whether any prompt was given (--prompt or --prompts-file).
  bool given() const { return (prompt_option != nullptr && prompt_option->count() > 0) || !prompts_file.empty(); }
};

//! Adds --text-encoder, --prompt, --prompts-file, --max-length, --hidden-state, --text-precision (and, when
//! `sampling`, --caption-batching).
void add_prompt_options(CLI::App& command, PromptOptions& options, bool sampling);

//! Checks the prompt options before anything is loaded (names the option).
void check_prompt_options(const PromptOptions& options);

//! The prompts: every --prompt, then the lines of --prompts-file.
std::vector<std::string> read_prompts(const PromptOptions& options);

//! The prompts encoded by tim::text::PromptEncoder: on the CPU, or with `cuda` (--device cuda) with
//! the encoder stage on the current GPU (tim_cli::CudaTextEncoder, bfloat16 weights stay bfloat16)
//! and the same tokenizing and trimming; `verbose` reports the encoder and the time on stderr, and
//! a warning names every truncated prompt.
tim::text::EncodedPrompts encode_prompts(const PromptOptions& options, const std::vector<std::string>& prompts,
                                         bool verbose, bool cuda = false);

}  // namespace tim_cli
