// The `tim` program from prompts (docs/cli.md, docs/t2i.md): `tim encode` against the golden text
// encoder's reference features, and the whole path prompt -> Gemma-3 features -> T2I sampling ->
// DC-AE decode -> PNG with the prompt in its text chunk, on small random models, against the
// library run in this process (each prompt sampled alone, the images decoded in double).
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "compare.hpp"
#include "random_t2i_checkpoint.hpp"
#include "tim/io/png.hpp"
#include "tim/text/conditioning.hpp"
#include "tim/text/prompts.hpp"
#include "tim/tim.hpp"

namespace {

namespace fs = std::filesystem;

const std::string encoder_dir = std::string(TIM_TEST_DATA_DIR) + "/golden_gemma/released_pattern";

struct Folder {
  fs::path path = fs::temp_directory_path() / ("tim_cli_text_" + std::to_string(::getpid()) + "_" +
                                               std::to_string(counter++));
  static inline std::atomic<int> counter{0};
  Folder() { fs::create_directories(path); }
  ~Folder() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

std::string quote(const std::string& text) {
  std::string quoted = "'";
  for (char ch : text) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return quoted + "'";
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

struct Run {
  int code = -1;
  std::string err;
};

Run run_tim(const Folder& folder, const std::string& args) {
  const std::string err = folder.file("stderr.txt");
  const int status = std::system((quote(TIM_EXECUTABLE) + " " + args + " > /dev/null 2> " + quote(err)).c_str());
  return {status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_all(err)};
}

}  // namespace

TEST_CASE("cli encode: the golden prompts give the reference features, mask and ids") {
  Folder dir;
  const std::string out = dir.file("caps.safetensors");
  const auto result = run_tim(dir, "encode --text-encoder " + quote(encoder_dir) +
                                   " --prompt 'a red fox in the snow at sunset' --prompt 'café 🤖' --prompt 'the lazy "
                                   "dog' --max-length 8 --out " + quote(out));
  INFO(result.err);
  REQUIRE(result.code == 0);
  CHECK(result.err.find("prompt 0 has more than 7 tokens and was truncated") != std::string::npos);
  const auto file = tim::io::SafetensorsFile::open(out);
  const auto expected = tim::io::SafetensorsFile::open(encoder_dir + "/expected.safetensors");
  const auto ids = file.load<std::int64_t>("input_ids"), mask = file.load<std::int64_t>("cap_mask");
  const auto want_ids = expected.load<std::int64_t>("input_ids"), want_mask = expected.load<std::int64_t>("attention_mask");
  REQUIRE(ids.shape() == want_ids.shape());
  CHECK(std::equal(ids.data(), ids.data() + ids.numel(), want_ids.data()));
  CHECK(std::equal(mask.data(), mask.data() + mask.numel(), want_mask.data()));
  const auto features = file.load<float>("cap_feats");
  const auto reference = expected.load<double>("last");
  REQUIRE(features.shape() == reference.shape());
  CHECK(tim_test::relative_error(features.data(), reference.data(), static_cast<std::size_t>(features.numel())) <= 1e-4);
  CHECK(file.info("null_cap_feats").shape == tim::Shape{1, 8, 32});
  CHECK(file.metadata().at("captions") == R"(["a red fox in the snow at sunset","café 🤖","the lazy dog"])");
  CHECK(file.metadata().at("hidden_state") == "last");

  // Errors: invalid UTF-8, a blank line in a prompts file, options that do not go together.
  const auto bad = run_tim(dir, "encode --text-encoder " + quote(encoder_dir) + " --prompt \"$(printf '\\377')\" --out " + quote(out));
  CHECK(bad.code == 1);
  CHECK(bad.err.find("not valid UTF-8") != std::string::npos);
  std::ofstream(dir.file("prompts.txt")) << "a red fox\n\nthe lazy dog\n";
  const auto blank = run_tim(dir, "encode --text-encoder " + quote(encoder_dir) + " --prompts-file " +
                                  quote(dir.file("prompts.txt")) + " --out " + quote(out));
  CHECK(blank.code == 1);
  CHECK(blank.err.find("line 2 is empty") != std::string::npos);
  const auto no_encoder = run_tim(dir, "encode --prompt fox --out " + quote(out));
  CHECK(no_encoder.code == 1);
  CHECK(no_encoder.err.find("need --text-encoder DIR") != std::string::npos);
  const auto state = run_tim(dir, "encode --text-encoder " + quote(encoder_dir) + " --prompt fox --hidden-state first "
                                  "--out " + quote(out));
  CHECK(state.code == 1);
  CHECK(state.err.find("--hidden-state: expected \"last\" or \"penultimate\"") != std::string::npos);
  const auto precision = run_tim(dir, "encode --text-encoder " + quote(encoder_dir) +
                                      " --prompt fox --text-precision half --out " + quote(out));
  CHECK(precision.code == 1);
  CHECK(precision.err.find("--text-precision: expected \"float\" or \"bfloat16\", got \"half\"") != std::string::npos);
}

// --device cuda: the encoder stage on the GPU (tim_cli::CudaTextEncoder). Without a usable GPU
// (no device, or a build without -DTIM_CUDA=ON) a clear error, exit code 1 and no output file;
// with one, the file says the GPU encoded it and the features are the reference's within the
// float bound above (tests/cuda/test_cuda_text.cu compares them with the CPU's).
TEST_CASE("cli encode --device cuda: the GPU encoder, or a clear error without a GPU") {
  Folder dir;
  const std::string out = dir.file("caps.safetensors");
  const auto result = run_tim(dir, "encode --device cuda --text-encoder " + quote(encoder_dir) +
                                   " --prompt 'a red fox in the snow at sunset' --prompt 'café 🤖' --prompt 'the lazy "
                                   "dog' --max-length 8 --out " + quote(out));
  INFO(result.err);
  if (result.code == 0) {
    MESSAGE("a GPU is visible: checking the GPU encoder's file");
    const auto file = tim::io::SafetensorsFile::open(out);
    CHECK(file.metadata().at("encoder").find("(CUDA, float)") != std::string::npos);
    const auto features = file.load<float>("cap_feats");
    const auto reference = tim::io::SafetensorsFile::open(encoder_dir + "/expected.safetensors").load<double>("last");
    REQUIRE(features.shape() == reference.shape());
    CHECK(tim_test::relative_error(features.data(), reference.data(), static_cast<std::size_t>(features.numel())) <=
          1e-4);
  } else {
    CHECK(result.code == 1);
    CHECK(result.err.find("tim: error: --device cuda: ") != std::string::npos);
    CHECK((result.err.find("no CUDA device") != std::string::npos ||
           result.err.find("built without the CUDA backend") != std::string::npos));
    CHECK_FALSE(fs::exists(out));
  }
  // The CPU encoder's option is refused with the GPU one, before anything is loaded.
  const auto precision = run_tim(dir, "encode --device cuda --text-encoder " + quote(encoder_dir) +
                                      " --prompt fox --text-precision bfloat16 --out " + quote(out));
  CHECK(precision.code == 1);
  CHECK(precision.err.find("--text-precision bfloat16 is the CPU encoder's") != std::string::npos);
}

// --text-precision bfloat16: within the bound of test_text_encoder.cpp (28 bfloat16 roundings in
// sequence for this 7-layer encoder) of the float64 reference, and the program says what ran.
TEST_CASE("cli encode --text-precision bfloat16: the reference features within 28 * 2^-8, the kernel named") {
  Folder dir;
  const std::string out = dir.file("caps.safetensors");
  const auto result = run_tim(dir, "encode --text-encoder " + quote(encoder_dir) +
                                   " --prompt 'a red fox in the snow at sunset' --prompt 'café 🤖' --prompt 'the lazy "
                                   "dog' --max-length 8 --text-precision bfloat16 -v --out " + quote(out));
  INFO(result.err);
  REQUIRE(result.code == 0);
  const auto& kernel = tim::cpu_gemm::bf16_kernel();
  if (kernel.available) {
    CHECK(result.err.find("products in bfloat16 products, float sums (oneDNN") != std::string::npos);
  } else {
    MESSAGE("bfloat16 products not available here (", kernel.reason, "): checking the float fallback's note");
    CHECK(result.err.find("--text-precision bfloat16: computing in float instead") != std::string::npos);
  }
  const auto features = tim::io::SafetensorsFile::open(out).load<float>("cap_feats");
  const auto reference = tim::io::SafetensorsFile::open(encoder_dir + "/expected.safetensors").load<double>("last");
  REQUIRE(features.shape() == reference.shape());
  CHECK(tim_test::relative_error(features.data(), reference.data(), static_cast<std::size_t>(features.numel())) <=
        28 * std::ldexp(1.0, -8) + 1e-4);
}

TEST_CASE("cli sample --prompt: prompt -> features -> T2I sample -> DC-AE decode -> PNG with the prompt") {
  Folder dir;
  // A random T2I network taking the golden encoder's 32-wide features, on 4-channel latents, and the
  // `variants` DC-AE golden decoder (4 latent channels, 2x, attention head dim 3, no input shortcut).
  const std::string model = dir.file("t2i.safetensors");
  {
    const auto checkpoint = tim_test::random_t2i_checkpoint(tim_test::t2i_config(16, 2, 2, 1, 4, 32, 16), 3);
    tim::io::SafetensorsWriter writer;
    for (const auto& info : checkpoint.tensors()) writer.add(info.name, checkpoint.load<float>(info.name));
    for (const auto& [key, value] : checkpoint.metadata()) writer.set_metadata(key, value);
    writer.write(model);
  }
  fs::create_directories(dir.path / "vae");
  const std::string vae = dir.file("vae/diffusion_pytorch_model.safetensors");
  {
    const auto golden = tim::io::SafetensorsFile::open(std::string(TIM_TEST_DATA_DIR) + "/dc_ae_golden/variants.safetensors");
    tim::io::SafetensorsWriter writer;
    for (const auto& info : golden.tensors())
      if (info.name.rfind("input.", 0) != 0 && info.name.rfind("output.", 0) != 0)
        writer.add(info.name, golden.load<float>(info.name));
    writer.write(vae);
    std::ofstream(dir.file("vae/config.json"))
        << R"({"_class_name": "AutoencoderDC", "attention_head_dim": 3, "decoder_in_shortcut": false})";
  }
  const std::vector<std::string> prompts = {"a red fox in the snow at sunset", "café 🤖"};
  const std::string out = dir.file("out.safetensors"), pngs = dir.file("pngs");
  const auto result = run_tim(dir, "sample --model " + quote(model) + " --text-encoder " + quote(encoder_dir) +
                                   " --prompt " + quote(prompts[0]) + " --prompt " + quote(prompts[1]) +
                                   " --latent-height 4 --latent-width 6 --steps 2 --cfg-scale 2 --seed 3 --vae " + quote(vae) +
                                   " --out " + quote(out) + " --png-dir " + quote(pngs));
  INFO(result.err);
  REQUIRE(result.code == 0);

  // The latents: each prompt sampled alone by the library (features from the same encoder, cut to
  // the prompt's length with the null caption), with the CLI's noise rows and sample indices.
  const auto file = tim::io::SafetensorsFile::open(out);
  const auto latents = file.load<double>("latents");
  REQUIRE(latents.shape() == tim::Shape{2, 4, 4, 6});
  const auto encoded = tim::text::PromptEncoder::open(encoder_dir).encode(prompts);
  CHECK(encoded.lengths[0] != encoded.lengths[1]);
  auto network = tim::nn::load_t2i<float>(tim::io::SafetensorsFile::open(model));
  const auto noise = tim::initial_noise({2, 4, 4, 6}, 3);
  for (std::int64_t b = 0; b < 2; ++b) {
    CAPTURE(b);
    const auto L = encoded.lengths[static_cast<std::size_t>(b)];
    network.set_null_caption(tim::text::gather_captions(encoded.null_cap_feats, {0}, L));
    tim::TransitionSampler sampler{network, tim::OtFm{}, tim::linspace_schedule(2)};
    auto one = tim::Tensor<double>::empty({1, 4, 4, 6});
    std::copy(noise.data() + b * 96, noise.data() + (b + 1) * 96, one.data());
    const auto alone = sampler.sample(one, tim::text::gather_captions(encoded.cap_feats, {b}, L),
                                      {.cfg_scale = 2.0, .first_sample_index = static_cast<std::uint64_t>(b)});
    CHECK(tim_test::relative_error(latents.data() + b * 96, alone.x.data(), 96) <= 1e-5);
  }

  // The images: the library's float64 DC-AE decoder on the CLI's latents.
  const auto images = file.load<float>("images");
  REQUIRE(images.shape() == tim::Shape{2, 3, 8, 12});
  tim::vae::DcAeOptions vae_options;
  vae_options.attention_head_dim = 3;
  vae_options.in_shortcut = false;
  const auto reference = tim::vae::open_dc_ae_decoder<double>(vae, vae_options).decode(latents);
  CHECK(tim_test::relative_error(images.data(), reference.data(), static_cast<std::size_t>(images.numel())) <= 1e-4);

  // One PNG per prompt, its prompt in the text chunk; the run's parameters name the encoder.
  int found = 0;
  for (const auto& entry : fs::directory_iterator(pngs)) {
    if (entry.path().filename() == "grid.png") continue;
    const auto png = tim::io::read_png(entry.path().string());
    REQUIRE(png.find_text("parameters") != nullptr);
    const auto& text = *png.find_text("parameters");
    // Every setting is in the `tim` JSON chunk (docs/cli.md, "Images"); the prompt leads `parameters`.
    REQUIRE(png.find_text("tim") != nullptr);
    const auto record = nlohmann::json::parse(*png.find_text("tim"), nullptr, /*allow_exceptions=*/false);
    REQUIRE(record.is_object());
    CHECK(record.value("text_encoder", std::string()) == encoder_dir);
    CHECK(record.value("caption_batching", std::string()) == "per-prompt");
    found += text.rfind(prompts[0], 0) == 0 || text.rfind(prompts[1], 0) == 0;
  }
  CHECK(found == 2);

  // --caption-batching released: the shorter prompt's image changes (it now attends to padding).
  const std::string released = dir.file("released.safetensors");
  const auto run_released = run_tim(dir, "sample --model " + quote(model) + " --text-encoder " + quote(encoder_dir) +
                                         " --prompt " + quote(prompts[0]) + " --prompt " + quote(prompts[1]) +
                                         " --latent-height 4 --latent-width 6 --steps 2 --cfg-scale 2 --seed 3 --caption-batching "
                                         "released --out " + quote(released));
  REQUIRE(run_released.code == 0);
  const auto released_latents = tim::io::SafetensorsFile::open(released).load<double>("latents");
  const std::int64_t shorter = encoded.lengths[0] < encoded.lengths[1] ? 0 : 1;
  CHECK(tim_test::relative_error(released_latents.data() + shorter * 96, latents.data() + shorter * 96, 96) > 1e-3);
  CHECK(tim_test::relative_error(released_latents.data() + (1 - shorter) * 96, latents.data() + (1 - shorter) * 96,
                                 96) <= 1e-5);

  // Errors: prompts with --captions, and a text encoder whose width is not the model's cap_dim.
  const auto both = run_tim(dir, "sample --model " + quote(model) + " --text-encoder " + quote(encoder_dir) +
                                 " --prompt fox --captions " + quote(out) + " --out " + quote(dir.file("x.safetensors")));
  CHECK(both.code == 1);
  CHECK(both.err.find("cannot be used together") != std::string::npos);
  const auto wide = run_tim(dir, "sample --model " + quote(model) + " --text-encoder " +
                                 quote(std::string(TIM_TEST_DATA_DIR) + "/golden_gemma/gqa_layer_types") +
                                 " --prompt fox --out " + quote(dir.file("x.safetensors")));
  CHECK(wide.code == 1);
  CHECK(wide.err.find("missing tokenizer.model") != std::string::npos);
}
