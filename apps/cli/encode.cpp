// tim encode: caption features of prompts through the Gemma-3 text encoder on the CPU, or on the
// GPU with --device cuda (docs/cli.md), in the file `tim sample --captions` reads.
#include <nlohmann/json.hpp>

#include <memory>
#include <string>

#include "common.hpp"
#include "prompts.hpp"

namespace tim_cli {

namespace {

struct EncodeOptions {
  PromptOptions prompts;
  ComputeOptions compute;
  std::string out_path;
};

void run_encode(const EncodeOptions& o) {
  apply_threads(o.compute);
  check_compute_options(o.compute);
  tim::check(!given(o.compute.precision_option), "--precision is a T2I network's storage; tim encode keeps the text "
             "encoder's weights as stored (bfloat16 stays bfloat16, on the CPU and with --device cuda)");
  tim::check(o.prompts.given(), "nothing to encode: give --prompt TEXT (repeatable) or --prompts-file FILE");
  check_prompt_options(o.prompts);
  tim::check(!o.out_path.empty(), "no output: give --out CAPS.safetensors");
  const auto prompts = read_prompts(o.prompts);
  const auto encoded = encode_prompts(o.prompts, prompts, o.compute.verbose, o.compute.cuda());

  tim::io::SafetensorsWriter writer;
  writer.add("cap_feats", encoded.cap_feats);
  writer.add("cap_mask", encoded.cap_mask);
  writer.add("input_ids", encoded.input_ids);
  writer.add("null_cap_feats", encoded.null_cap_feats);
  writer.set_metadata("captions", nlohmann::json(prompts).dump());
  writer.set_metadata("lengths", nlohmann::json(encoded.lengths).dump());
  writer.set_metadata("text_encoder", o.prompts.text_encoder);
  writer.set_metadata("max_length", std::to_string(o.prompts.max_length));
  writer.set_metadata("hidden_state", o.prompts.hidden_state);
  writer.set_metadata("encoder", "tim " + std::string(tim::version_string) +
                                     (o.compute.cuda() ? " (CUDA, float)" : " (CPU, float)"));
  writer.write(o.out_path);
}

}  // namespace

Subcommand add_encode(CLI::App& app) {
  auto options = std::make_shared<EncodeOptions>();
  auto* command = app.add_subcommand(
      "encode", "Caption features of prompts through the Gemma-3 text encoder (CPU, or the GPU with --device cuda): cap_feats [B,M,D] F32, "
                "cap_mask [B,M] I64, input_ids [B,M] I64, null_cap_feats [1,M,D] F32 (M: the longest prompt's tokens)");
  add_prompt_options(*command, options->prompts, /*sampling=*/false);
  command->add_option("-o,--out", options->out_path, "Output safetensors file (what tim sample --captions reads)");
  add_compute_options(*command, options->compute);
  return {command, [options] { run_encode(*options); }};
}

}  // namespace tim_cli
