// The SD VAE decoder (tim/vae/sd_vae.hpp) against float64 golden files written by our PyTorch
// reference (tools/reference/make_vae_golden.py, itself checked against diffusers' AutoencoderKL):
// double within 1e-9, float within 1e-4, relative to the largest output value; and its loading errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "compare.hpp"
#include "golden_source.hpp"
#include "vae_golden.hpp"
#include "tim/tim.hpp"

namespace {

const std::string folder = "vae_golden";

template <class T>
double golden_error(const std::string& name) {
  auto file = tim::io::SafetensorsFile::open(tim_test::golden_path(name, folder));
  tim_test::ParametersOnly parameters(file);
  return tim_test::decoded_golden_error<T>(tim::vae::load_sd_vae_decoder<T>(parameters, tim_test::sd_vae_options_of(file)), file, name);
}

std::string load_error(const tim::io::SafetensorsFile& file, const tim::vae::SdVaeOptions& options) {
  return tim_test::error_of([&] { tim::vae::load_sd_vae_decoder<float>(file, options); });
}

}  // namespace

TEST_CASE("sd vae golden: every case in double within 1e-9") {
  const auto names = tim_test::golden_cases(folder);
  REQUIRE(names.size() >= 3);
  for (const auto& name : names) {
    CAPTURE(name);
    CHECK(golden_error<double>(name) <= 1e-9);
  }
}

TEST_CASE("sd vae golden: every case in float within 1e-4") {
  for (const auto& name : tim_test::golden_cases(folder)) {
    CAPTURE(name);
    CHECK(golden_error<float>(name) <= 1e-4);
  }
}

TEST_CASE("sd vae: configuration from shapes") {
  auto file = tim::io::SafetensorsFile::open(tim_test::golden_path("sd_layout", folder));
  tim_test::ParametersOnly parameters(file);
  auto vae = tim::vae::load_sd_vae_decoder<float>(parameters, tim_test::sd_vae_options_of(file));
  CHECK(vae.config.latent_channels == 4);
  CHECK(vae.config.out_channels == 3);
  CHECK(vae.config.block_out_channels == std::vector<std::int64_t>{16, 16, 32, 32});
  CHECK(vae.config.resnets_per_block == 3);
  CHECK(vae.config.upscale() == 8);
  CHECK(vae.up_blocks.size() == 4);
  CHECK(!vae.up_blocks.back().upsamples());
  CHECK(vae.up_blocks[2].resnets[0].conv_shortcut.kernel == 1);  // 32 -> 16 channels
  CHECK(!vae.mid_attention.older_names);
  CHECK(vae.config.ignored.empty());
  std::int64_t stored = 0;
  for (const auto& info : parameters.tensors()) stored += info.shape.numel();
  CHECK(vae.parameter_count() == stored);  // every module's fields() lists all of its tensors

  auto old = tim::io::SafetensorsFile::open(tim_test::golden_path("old_names", folder));
  tim_test::ParametersOnly old_parameters(old);
  auto old_vae = tim::vae::load_sd_vae_decoder<double>(old_parameters, tim_test::sd_vae_options_of(old));
  CHECK(old_vae.mid_attention.older_names);
  CHECK(old_vae.config.upscale() == 2);
  CHECK(old_vae.config.resnets_per_block == 2);
}

TEST_CASE("sd vae: the encoder is ignored and listed, other unknown tensors are errors") {
  auto options = tim_test::sd_vae_options_of(tim::io::SafetensorsFile::open(tim_test::golden_path("nonsquare", folder)));
  auto with_encoder = tim_test::rewritten(
      "nonsquare", {.extra = {{"encoder.conv_in.weight", {8, 3, 3, 3}}, {"quant_conv.weight", {8, 8, 1, 1}}}}, folder);
  auto vae = tim::vae::load_sd_vae_decoder<float>(with_encoder, options);
  CHECK(vae.config.ignored == std::vector<std::string>{"encoder.conv_in.weight", "quant_conv.weight"});

  auto stray = tim_test::rewritten("nonsquare", {.extra = {{"decoder.extra.weight", {2}}}}, folder);
  const std::string message = load_error(stray, options);
  CHECK(message.find("unexpected tensor 'decoder.extra.weight'") != std::string::npos);
}

TEST_CASE("sd vae: missing tensors and wrong shapes name the tensor and what was expected") {
  auto options = tim_test::sd_vae_options_of(tim::io::SafetensorsFile::open(tim_test::golden_path("nonsquare", folder)));
  {
    const std::string name = "decoder.up_blocks.1.resnets.2.conv2.bias";
    auto file = tim_test::rewritten("nonsquare", {.drop = [&](const std::string& n) { return n == name; }}, folder);
    const std::string message = load_error(file, options);
    CHECK(message.find("missing tensor '" + name + "'") != std::string::npos);
    CHECK(message.find("[16]") != std::string::npos);
  }
  {
    const std::string name = "decoder.conv_in.weight";  // (16, 4, 3, 3) in this case
    auto file = tim_test::rewritten("nonsquare",
                                    {.drop = [&](const std::string& n) { return n == name; },
                                     .extra = {{name, {16, 4, 1, 1}}}},
                                    folder);
    const std::string message = load_error(file, options);
    CHECK(message.find(name) != std::string::npos);
    CHECK(message.find("expected shape [16, 4, 3, 3], got [16, 4, 1, 1]") != std::string::npos);
  }
  {
    const std::string name = "decoder.mid_block.attentions.0.to_k.weight";
    auto file = tim_test::rewritten("nonsquare",
                                    {.drop = [&](const std::string& n) { return n == name; },
                                     .extra = {{name, {16, 16, 3, 3}}}},
                                    folder);
    const std::string message = load_error(file, options);
    CHECK(message.find("'" + name + "' has shape [16, 16, 3, 3]") != std::string::npos);
    CHECK(message.find("[16, 16, 1, 1] (1x1 convolution)") != std::string::npos);
  }
  {
    auto file = tim_test::rewritten(
        "nonsquare", {.drop = [](const std::string& n) { return n.find(".attentions.0.to_q.") != std::string::npos; }},
        folder);
    const std::string message = load_error(file, options);
    CHECK(message.find("missing tensor 'decoder.mid_block.attentions.0.to_q.weight'") != std::string::npos);
    CHECK(message.find("query.weight") != std::string::npos);
  }
  {
    auto file = tim_test::rewritten(
        "nonsquare", {.drop = [](const std::string& n) { return n.rfind("post_quant_conv.", 0) == 0; }}, folder);
    CHECK(load_error(file, options).find("missing tensor 'post_quant_conv.weight'") != std::string::npos);
  }
  {
    auto bad_groups = options;
    bad_groups.groups = 3;
    auto file = tim_test::rewritten("nonsquare", {}, folder);
    CHECK(load_error(file, bad_groups).find("not divisible by norm_num_groups 3") != std::string::npos);
  }
}

TEST_CASE("sd vae: the workspace is reused across decodes and sizes; copies and copy_to_backend decode the same") {
  auto file = tim::io::SafetensorsFile::open(tim_test::golden_path("nonsquare", folder));
  tim_test::ParametersOnly parameters(file);
  const auto vae = tim::vae::load_sd_vae_decoder<float>(parameters, tim_test::sd_vae_options_of(file));
  const auto latents = file.load<float>("input.latents");
  const auto first = vae.decode(latents);
  const auto n = static_cast<std::size_t>(first.numel());
  auto larger = tim::Tensor<float>::empty({1, 4, 6, 7});  // grows every buffer, then back to the first size
  std::fill(larger.data(), larger.data() + larger.numel(), 0.5f);
  CHECK(vae.decode(larger).shape() == tim::Shape{1, 3, 48, 56});
  CHECK(tim_test::relative_error(vae.decode(latents).data(), first.data(), n) == 0.0);
  const auto copy = vae;  // shares the weights, not the workspace
  CHECK(tim_test::relative_error(copy.decode(latents).data(), first.data(), n) == 0.0);
  const auto moved = tim::vae::copy_to_backend<tim::cpu>(vae);
  CHECK(moved.parameter_count() == vae.parameter_count());
  CHECK(moved.mid_attention.to_q.weight.data() == vae.mid_attention.to_q.weight.data());  // CPU to CPU: shared
  CHECK(tim_test::relative_error(moved.decode(latents).data(), first.data(), n) == 0.0);
  vae.release_workspace();
  CHECK(tim_test::relative_error(vae.decode(latents).data(), first.data(), n) == 0.0);
}

TEST_CASE("sd vae: decode refuses latents of the wrong shape") {
  auto file = tim::io::SafetensorsFile::open(tim_test::golden_path("old_names", folder));
  tim_test::ParametersOnly parameters(file);
  auto vae = tim::vae::load_sd_vae_decoder<float>(parameters, tim_test::sd_vae_options_of(file));
  auto wrong = tim::Tensor<float>::zeros({1, 3, 4, 4});
  const std::string message = tim_test::error_of([&] { vae.decode(wrong); });
  CHECK(message.find("latents must have shape [B, 4, h, w]") != std::string::npos);
  CHECK(message.find("[1, 3, 4, 4]") != std::string::npos);
  auto flat = tim::Tensor<float>::zeros({4, 4});
  CHECK(tim_test::error_of([&] { vae.decode(flat); }) != "<no error>");
}

namespace {

//! Naive double-precision 'same' convolution of x (B, Ci, H, W) with PyTorch's weight (Co, Ci, k, k).
std::vector<double> naive_conv(const std::vector<double>& x, const std::vector<double>& weight,
                               const std::vector<double>& bias, int B, int Ci, int Co, int H, int W, int k) {
  std::vector<double> y(static_cast<std::size_t>(B * Co * H * W));
  for (int b = 0; b < B; ++b)
    for (int o = 0; o < Co; ++o)
      for (int i = 0; i < H; ++i)
        for (int j = 0; j < W; ++j) {
          double sum = bias[o];
          for (int c = 0; c < Ci; ++c)
            for (int u = 0; u < k; ++u)
              for (int v = 0; v < k; ++v) {
                const int si = i + u - k / 2, sj = j + v - k / 2;
                if (si < 0 || si >= H || sj < 0 || sj >= W) continue;
                sum += weight[((o * Ci + c) * k + u) * k + v] * x[((b * Ci + c) * H + si) * W + sj];
              }
          y[((b * Co + o) * H + i) * W + j] = sum;
        }
  return y;
}

}  // namespace

TEST_CASE_TEMPLATE("sd vae ops: chunked im2col convolution against a naive loop", T, float, double) {
  const int B = 2, Ci = 3, Co = 5, H = 4, W = 7;
  const double tolerance = sizeof(T) == 8 ? 1e-13 : 1e-5;
  for (int k : {1, 3}) {
    CAPTURE(k);
    auto x = tim_test::random_vector<double>(B * Ci * H * W, 1);
    auto weight = tim_test::random_vector<double>(Co * Ci * k * k, 2, 0.3);
    auto bias = tim_test::random_vector<double>(Co, 3);
    const auto expected = naive_conv(x, weight, bias, B, Ci, Co, H, W, k);
    // The same through the library: channels-last input, weight repacked to (Co, k, k, Ci).
    std::vector<T> x_nchw(x.begin(), x.end()), x_nhwc(x.size()), w(weight.size()), b(bias.begin(), bias.end());
    tim::cpu::to_channels_last_forward(x_nhwc.data(), x_nchw.data(), B, Ci, H * W, T(1));
    for (int o = 0; o < Co; ++o)
      for (int c = 0; c < Ci; ++c)
        for (int kk = 0; kk < k * k; ++kk) w[(o * k * k + kk) * Ci + c] = static_cast<T>(weight[(o * Ci + c) * k * k + kk]);
    // Chunks of 5 pixels (the last one partial: 56 pixels), one chunk, then accumulate.
    for (std::int64_t chunk_elements : {std::int64_t{5} * k * k * Ci, tim::cpu::im2col_block_elements}) {
      CAPTURE(chunk_elements);
      const std::int64_t K = k * k * Ci, rows = tim::math::rows_per_block(B * H * W, K, chunk_elements);
      std::vector<T> y(expected.size()), y_nchw(expected.size()), columns(static_cast<std::size_t>(rows * K));
      tim::cpu::conv2d_forward(y.data(), x_nhwc.data(), w.data(), b.data(), B, H, W, Ci, Co, k, false, columns.data(),
                               chunk_elements);
      tim::cpu::to_channels_first_forward(y_nchw.data(), y.data(), B, Co, H * W);
      TIM_CHECK_CLOSE(y_nchw.data(), expected.data(), expected.size(), tolerance, tolerance);
      tim::cpu::conv2d_forward(y.data(), x_nhwc.data(), w.data(), b.data(), B, H, W, Ci, Co, k, true, columns.data(),
                               chunk_elements);
      tim::cpu::to_channels_first_forward(y_nchw.data(), y.data(), B, Co, H * W);
      std::vector<double> twice(expected.size());
      for (std::size_t i = 0; i < twice.size(); ++i) twice[i] = 2 * expected[i];
      TIM_CHECK_CLOSE(y_nchw.data(), twice.data(), twice.size(), tolerance, tolerance);
    }
  }
}

TEST_CASE_TEMPLATE("sd vae ops: GroupNorm (+ SiLU) against a naive loop", T, float, double) {
  const int B = 2, P = 300, C = 8, G = 4, per_group = C / G;  // P above one statistics block (256)
  const double eps = 1e-6, tolerance = sizeof(T) == 8 ? 1e-13 : 1e-5;
  auto x = tim_test::random_vector<double>(B * P * C, 4, 3.0);
  for (auto& v : x) v += 1.5;  // a mean far from zero
  auto weight = tim_test::random_vector<double>(C, 5), bias = tim_test::random_vector<double>(C, 6);
  for (bool apply_silu : {false, true}) {
    std::vector<double> expected(x.size());
    for (int b = 0; b < B; ++b)
      for (int g = 0; g < G; ++g) {
        double mean = 0, var = 0;
        for (int p = 0; p < P; ++p)
          for (int c = g * per_group; c < (g + 1) * per_group; ++c) mean += x[(b * P + p) * C + c];
        mean /= P * per_group;
        for (int p = 0; p < P; ++p)
          for (int c = g * per_group; c < (g + 1) * per_group; ++c) var += std::pow(x[(b * P + p) * C + c] - mean, 2);
        var /= P * per_group;
        for (int p = 0; p < P; ++p)
          for (int c = g * per_group; c < (g + 1) * per_group; ++c) {
            const double v = (x[(b * P + p) * C + c] - mean) / std::sqrt(var + eps) * weight[c] + bias[c];
            expected[(b * P + p) * C + c] = apply_silu ? v / (1 + std::exp(-v)) : v;
          }
      }
    std::vector<T> in(x.begin(), x.end()), w(weight.begin(), weight.end()), bi(bias.begin(), bias.end());
    tim::cpu::group_norm_forward(in.data(), in.data(), w.data(), bi.data(), B, P, C, G, eps, apply_silu);  // in place
    TIM_CHECK_CLOSE(in.data(), expected.data(), expected.size(), tolerance, tolerance);
  }
  std::vector<T> data(static_cast<std::size_t>(C));
  CHECK(tim_test::error_of([&] {
          tim::cpu::group_norm_forward(data.data(), data.data(), data.data(), data.data(), 1, 1, C, 3, eps, false);
        }).find("8 channels are not divisible by 3 groups") != std::string::npos);
}

TEST_CASE("sd vae ops: nearest 2x upsampling and the byte mapping") {
  // (1, 2, 3, 1) -> (1, 4, 6, 1): every value repeated in a 2x2 square.
  const std::vector<float> in{1, 2, 3, 4, 5, 6};
  std::vector<float> out(24);
  tim::cpu::upsample_nearest2x_forward(out.data(), in.data(), 1, 2, 3, 1);
  const std::vector<float> expected{1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 4, 4, 5, 5, 6, 6};
  CHECK(out == expected);

  // clamp(255 (x + 1) / 2, 0, 255), truncated; channels interleaved per pixel.
  auto images = tim::Tensor<float>::empty({1, 2, 1, 3});
  const float values[] = {-1.5f, -1.0f, 0.0f, 0.999f, 1.0f, 2.0f};
  std::copy(values, values + 6, images.data());
  CHECK(tim::vae::image_bytes(images, 0) == std::vector<std::uint8_t>{0, 254, 0, 255, 127, 255});
  CHECK(tim_test::error_of([&] { tim::vae::image_bytes(images, 1); }).find("image_bytes") != std::string::npos);
}
