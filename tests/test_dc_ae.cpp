// The DC-AE decoder (tim/vae/dc_ae.hpp) against float64 golden files written by our PyTorch
// reference (tools/reference/make_dc_ae_golden.py, itself checked against diffusers'
// AutoencoderDC): double within 1e-9, float within 1e-4, relative to the largest output value;
// its loading errors; and its operations (tim::cpu's decoder operations, tim/cpu/decoder_ops.hpp)
// against naive loops.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "compare.hpp"
#include "golden_source.hpp"
#include "vae_golden.hpp"
#include "tim/tim.hpp"

namespace {

const std::string folder = "dc_ae_golden";

tim::vae::DcAeOptions options_named(const std::string& name) {
  return tim_test::dc_ae_options_of(tim::io::SafetensorsFile::open(tim_test::golden_path(name, folder)));
}

template <class T>
double golden_error(const std::string& name) {
  auto file = tim::io::SafetensorsFile::open(tim_test::golden_path(name, folder));
  tim_test::ParametersOnly parameters(file);
  return tim_test::decoded_golden_error<T>(tim::vae::load_dc_ae_decoder<T>(parameters, tim_test::dc_ae_options_of(file)), file, name);
}

std::string load_error(const tim::io::SafetensorsFile& file, const tim::vae::DcAeOptions& options) {
  return tim_test::error_of([&] { tim::vae::load_dc_ae_decoder<float>(file, options); });
}

//! golden case `name` with tensor `name` replaced by zeros of `shape` (or dropped when shape is empty).
tim::io::SafetensorsFile replaced(const std::string& name, const std::string& tensor, const tim::Shape& shape) {
  tim_test::Edit edit{.drop = [tensor](const std::string& n) { return n == tensor; }};
  if (shape.rank() > 0) edit.extra = {{tensor, shape}};
  return tim_test::rewritten(name, edit, folder);
}

bool contains(const std::string& text, const std::string& part) {
  INFO(text);
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("dc ae golden: every case in double within 1e-9") {
  const auto names = tim_test::golden_cases(folder);
  REQUIRE(names.size() >= 3);
  for (const auto& name : names) {
    CAPTURE(name);
    CHECK(golden_error<double>(name) <= 1e-9);
  }
}

TEST_CASE("dc ae golden: every case in float within 1e-4") {
  for (const auto& name : tim_test::golden_cases(folder)) {
    CAPTURE(name);
    CHECK(golden_error<float>(name) <= 1e-4);
  }
}

TEST_CASE("dc ae: configuration from names and shapes") {
  auto file = tim::io::SafetensorsFile::open(tim_test::golden_path("sana_layout", folder));
  tim_test::ParametersOnly parameters(file);
  auto vae = tim::vae::load_dc_ae_decoder<float>(parameters, tim_test::dc_ae_options_of(file));
  const auto& c = vae.config;
  CHECK(c.latent_channels == 8);
  CHECK(c.out_channels == 3);
  CHECK(c.block_out_channels == std::vector<std::int64_t>{2, 4, 8, 8, 16, 16});
  CHECK(c.layers_per_block == std::vector<std::int64_t>{3, 3, 3, 3, 3, 3});
  CHECK(c.block_types == std::vector<std::string>{"ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock",
                                                  "EfficientViTBlock", "EfficientViTBlock"});
  CHECK(c.qkv_multiscales == std::vector<std::vector<std::int64_t>>{{}, {}, {}, {5}, {5}, {5}});
  CHECK(c.upsample_block_type == "interpolate");
  CHECK(c.in_shortcut);
  CHECK(c.upscale() == 32);
  CHECK(c.ignored.empty());
  CHECK(vae.up_blocks.size() == 6);
  CHECK(!vae.up_blocks.back().upsample.present());
  CHECK(vae.up_blocks[0].upsample.present());
  CHECK(vae.up_blocks[4].vit_blocks.size() == 3);
  CHECK(vae.up_blocks[4].vit_blocks[0].attn.heads == 2);
  CHECK(vae.up_blocks[1].res_blocks.size() == 3);
  std::int64_t stored = 0;
  for (const auto& info : parameters.tensors()) stored += info.shape.numel();
  CHECK(vae.parameter_count() == stored);
  CHECK(contains(c.describe(), "16 3xEfficientViTBlock[5]"));

  auto other = tim::io::SafetensorsFile::open(tim_test::golden_path("variants", folder));
  tim_test::ParametersOnly other_parameters(other);
  auto variants = tim::vae::load_dc_ae_decoder<double>(other_parameters, tim_test::dc_ae_options_of(other));
  CHECK(variants.config.upsample_block_type == "pixel_shuffle");
  CHECK(!variants.config.in_shortcut);
  CHECK(variants.config.qkv_multiscales[0] == std::vector<std::int64_t>{3, 5});
  CHECK(variants.config.upscale() == 2);
  CHECK(variants.up_blocks[0].vit_blocks[0].attn.heads == 2);  // 8 channels, head dim 3: 6 in heads
}

TEST_CASE("dc ae: the encoder is ignored and listed, other unknown tensors are errors") {
  const auto options = options_named("nonsquare");
  auto with_encoder = tim_test::rewritten(
      "nonsquare", {.extra = {{"encoder.conv_in.weight", {8, 3, 3, 3}}, {"encoder.conv_out.bias", {8}}}}, folder);
  auto vae = tim::vae::load_dc_ae_decoder<float>(with_encoder, options);
  CHECK(vae.config.ignored == std::vector<std::string>{"encoder.conv_in.weight", "encoder.conv_out.bias"});

  for (const char* stray : {"decoder.extra.weight", "post_quant_conv.weight", "decoder.up_blocks.1.1.attn.scale"}) {
    CAPTURE(stray);
    auto file = tim_test::rewritten("nonsquare", {.extra = {{stray, {2}}}}, folder);
    CHECK(contains(load_error(file, options), "unexpected tensor '" + std::string(stray) + "'"));
  }
}

TEST_CASE("dc ae: missing tensors and wrong shapes name the tensor and what was expected") {
  // nonsquare: stages (8 ResBlock x2, 16 EfficientViT x1, 16 EfficientViT x2), L 8, head dim 8.
  const auto options = options_named("nonsquare");
  {
    const std::string name = "decoder.up_blocks.1.1.attn.norm_out.bias";
    const std::string message = load_error(replaced("nonsquare", name, {}), options);
    CHECK(contains(message, "missing tensor '" + name + "'"));
    CHECK(contains(message, "[16]"));
  }
  {
    const std::string name = "decoder.conv_in.weight";  // [16, 8, 3, 3]
    const std::string message = load_error(replaced("nonsquare", name, {16, 8, 1, 1}), options);
    CHECK(contains(message, "tensor '" + name + "': expected shape [16, 8, 3, 3], got [16, 8, 1, 1]"));
  }
  {
    const std::string name = "decoder.up_blocks.2.0.attn.to_k.weight";  // [16, 16]
    const std::string message = load_error(replaced("nonsquare", name, {16, 8}), options);
    CHECK(contains(message, "tensor '" + name + "': expected shape [16, 16], got [16, 8]"));
  }
  {
    const std::string name = "decoder.up_blocks.2.1.conv_out.conv_depth.weight";  // [128, 1, 3, 3]
    const std::string message = load_error(replaced("nonsquare", name, {128, 1, 5, 5}), options);
    CHECK(contains(message, "tensor '" + name + "': expected shape [128, 1, 3, 3], got [128, 1, 5, 5]"));
  }
  {
    const std::string name = "decoder.up_blocks.0.0.conv.weight";  // [8, 16, 3, 3]
    const std::string message = load_error(replaced("nonsquare", name, {12, 16, 3, 3}), options);
    CHECK(contains(message, "'" + name + "' has shape [12, 16, 3, 3], expected [8, C_deeper, 3, 3] (interpolate "
                                         "upsampling) or [32, C_deeper, 3, 3] (pixel_shuffle upsampling)"));
  }
  {
    const std::string name = "decoder.up_blocks.0.1.conv1.weight";  // the stage's first block
    const std::string message = load_error(replaced("nonsquare", name, {}), options);
    CHECK(contains(message, "missing tensor '" + name + "' (a ResBlock) or 'decoder.up_blocks.0.1.attn.to_q.weight'"));
  }
  {
    auto file = tim_test::rewritten(
        "nonsquare", {.drop = [](const std::string& n) { return n.rfind("decoder.conv_in.", 0) == 0; }}, folder);
    CHECK(contains(load_error(file, options), "missing tensor 'decoder.conv_in.weight'"));
  }
  {
    auto wrong_head_dim = options;
    wrong_head_dim.attention_head_dim = 4;
    const std::string message = load_error(tim_test::rewritten("nonsquare", {}, folder), wrong_head_dim);
    CHECK(contains(message, "'decoder.up_blocks.1.1.attn.to_qkv_multiscale.0.proj_out.weight' has shape "
                            "[48, 8, 1, 1]: head dim 8, but attention_head_dim is 4"));
  }
  {
    // 6 latent channels cannot be repeated into 16: the input shortcut needs L to divide C.
    const std::string message = load_error(replaced("nonsquare", "decoder.conv_in.weight", {16, 6, 3, 3}), options);
    CHECK(contains(message, "repeats 6 latent channels to 16"));
    auto no_shortcut = options;
    no_shortcut.in_shortcut = false;
    CHECK(contains(load_error(replaced("nonsquare", "decoder.conv_in.weight", {16, 6, 3, 3}), no_shortcut),
                   "<no error>"));
  }
}

TEST_CASE("dc ae: a reused workspace, a copy and copy_to_backend decode the same; the backend's head-dim check") {
  auto file = tim::io::SafetensorsFile::open(tim_test::golden_path("variants", folder));
  tim_test::ParametersOnly parameters(file);
  auto vae = tim::vae::load_dc_ae_decoder<float>(parameters, tim_test::dc_ae_options_of(file));
  const auto latents = file.load<float>("input.latents");
  const auto first = vae.decode(latents);
  const auto n = static_cast<std::size_t>(first.numel());
  auto larger = tim::Tensor<float>::empty({2, vae.config.latent_channels, 5, 4});
  std::fill(larger.data(), larger.data() + larger.numel(), 0.25f);
  CHECK(vae.decode(larger).shape() == tim::Shape{2, 3, 10, 8});
  CHECK(tim_test::relative_error(vae.decode(latents).data(), first.data(), n) == 0.0);
  const auto copy = vae;
  CHECK(tim_test::relative_error(copy.decode(latents).data(), first.data(), n) == 0.0);
  const auto moved = tim::vae::copy_to_backend<tim::cpu>(vae);
  CHECK(moved.parameter_count() == vae.parameter_count());
  CHECK(moved.config.describe() == vae.config.describe());
  CHECK(tim_test::relative_error(moved.decode(latents).data(), first.data(), n) == 0.0);
  vae.config.attention_head_dim = 1000;  // the CPU runs any head dim
  CHECK_NOTHROW(vae.check_backend());
  vae.config.attention_head_dim = 0;
  CHECK(contains(tim_test::error_of([&] { vae.check_backend(); }), "attention_head_dim 0 must be in [1, "));
}

TEST_CASE("dc ae: decode refuses latents of the wrong shape") {
  auto file = tim::io::SafetensorsFile::open(tim_test::golden_path("nonsquare", folder));
  tim_test::ParametersOnly parameters(file);
  auto vae = tim::vae::load_dc_ae_decoder<float>(parameters, tim_test::dc_ae_options_of(file));
  auto wrong = tim::Tensor<float>::zeros({1, 4, 2, 2});
  const std::string message = tim_test::error_of([&] { vae.decode(wrong); });
  CHECK(contains(message, "latents must have shape [B, 8, h, w]"));
  CHECK(contains(message, "[1, 4, 2, 2]"));
  auto flat = tim::Tensor<float>::zeros({8, 4});
  CHECK(tim_test::error_of([&] { vae.decode(flat); }) != "<no error>");
}

TEST_CASE_TEMPLATE("dc ae ops: ReLU linear attention against the direct double sum", T, float, double) {
  const int B = 2, P = 7, heads = 2, hd = 3, row = heads * 3 * hd, stride = 2 * heads * hd, offset = heads * hd;
  const double eps = 1e-15, tolerance = sizeof(T) == 8 ? 1e-13 : 1e-5;
  const auto qkv = tim_test::random_vector<double>(B * P * row, 11);
  std::vector<double> expected(static_cast<std::size_t>(B * P * stride), -7.0);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < heads; ++h)
      for (int n = 0; n < P; ++n) {
        const auto at = [&](int p, int part, int d) { return qkv[(b * P + p) * row + h * 3 * hd + part * hd + d]; };
        double denominator = eps;
        std::vector<double> numerator(hd, 0.0);
        for (int m = 0; m < P; ++m) {
          double score = 0;  // relu(k_m) . relu(q_n)
          for (int d = 0; d < hd; ++d) score += std::max(0.0, at(m, 1, d)) * std::max(0.0, at(n, 0, d));
          denominator += score;
          for (int e = 0; e < hd; ++e) numerator[e] += at(m, 2, e) * score;
        }
        for (int e = 0; e < hd; ++e) expected[(b * P + n) * stride + offset + h * hd + e] = numerator[e] / denominator;
      }
  std::vector<T> in(qkv.begin(), qkv.end()), out(expected.size(), T(-7));
  tim::cpu::relu_linear_attention_forward(out.data() + offset, stride, in.data(), B, P, heads, hd, eps, 0);
  TIM_CHECK_CLOSE(out.data(), expected.data(), expected.size(), tolerance, tolerance);  // other channels untouched
}

TEST_CASE_TEMPLATE("dc ae ops: depthwise and grouped 1x1 convolutions, RMSNorm against naive loops", T, float, double) {
  const int B = 2, H = 4, W = 6, C = 6, k = 5, n = 3, G = C / n;
  const double tolerance = sizeof(T) == 8 ? 1e-13 : 1e-5;
  const auto x = tim_test::random_vector<double>(B * H * W * C, 21);  // (B, H, W, C)
  const auto weight = tim_test::random_vector<double>(C * k * k, 22, 0.3);  // PyTorch (C, 1, k, k)
  const auto bias = tim_test::random_vector<double>(C, 23);
  std::vector<double> expected(x.size());
  for (int b = 0; b < B; ++b)
    for (int y = 0; y < H; ++y)
      for (int xx = 0; xx < W; ++xx)
        for (int c = 0; c < C; ++c) {
          double sum = bias[c];
          for (int u = 0; u < k; ++u)
            for (int v = 0; v < k; ++v) {
              const int sy = y + u - k / 2, sx = xx + v - k / 2;
              if (sy >= 0 && sy < H && sx >= 0 && sx < W)
                sum += weight[(c * k + u) * k + v] * x[((b * H + sy) * W + sx) * C + c];
            }
          expected[((b * H + y) * W + xx) * C + c] = sum;
        }
  std::vector<T> in(x.begin(), x.end()), w(static_cast<std::size_t>(k * k * C)), bi(bias.begin(), bias.end()),
      out(x.size());
  for (int c = 0; c < C; ++c)
    for (int kk = 0; kk < k * k; ++kk) w[kk * C + c] = static_cast<T>(weight[c * k * k + kk]);
  tim::cpu::depthwise_conv2d_forward(out.data(), in.data(), w.data(), bi.data(), B, H, W, C, k);
  TIM_CHECK_CLOSE(out.data(), expected.data(), expected.size(), tolerance, tolerance);

  // Grouped 1x1: PyTorch weight (C, n, 1, 1), groups of n channels.
  const auto pointwise = tim_test::random_vector<double>(C * n, 24);
  const int rows = B * H * W;
  for (int r = 0; r < rows; ++r)
    for (int o = 0; o < C; ++o) {
      double sum = 0;
      for (int i = 0; i < n; ++i) sum += pointwise[o * n + i] * x[r * C + (o / n) * n + i];
      expected[r * C + o] = sum;
    }
  std::vector<T> transposed(pointwise.size());
  for (int g = 0; g < G; ++g)
    for (int o = 0; o < n; ++o)
      for (int i = 0; i < n; ++i) transposed[(g * n + i) * n + o] = static_cast<T>(pointwise[(g * n + o) * n + i]);
  tim::cpu::grouped_pointwise_forward(out.data(), in.data(), transposed.data(), rows, G, n);
  TIM_CHECK_CLOSE(out.data(), expected.data(), expected.size(), tolerance, tolerance);

  // RMSNorm over channels plus a residual, in place on the residual.
  const double eps = 1e-5;
  const auto residual = tim_test::random_vector<double>(x.size(), 25);
  for (int r = 0; r < rows; ++r) {
    double squares = 0;
    for (int c = 0; c < C; ++c) squares += x[r * C + c] * x[r * C + c];
    const double rstd = 1 / std::sqrt(squares / C + eps);
    for (int c = 0; c < C; ++c)
      expected[r * C + c] = x[r * C + c] * rstd * weight[c] + bias[c] + residual[r * C + c];
  }
  std::vector<T> skip(residual.begin(), residual.end()), gain(weight.begin(), weight.begin() + C);
  tim::cpu::rms_norm_channels_forward(skip.data(), in.data(), gain.data(), bi.data(), rows, C, eps, skip.data());
  TIM_CHECK_CLOSE(skip.data(), expected.data(), expected.size(), tolerance, tolerance);
}

TEST_CASE("dc ae ops: pixel shuffle and the upsampling shortcut against PyTorch's index formulas") {
  const int B = 2, H = 2, W = 3, C = 2;
  // in (B, H, W, 4C) channels-last; PyTorch: out[b, c, 2y + i, 2x + j] = in[b, 4c + 2i + j, y, x].
  std::vector<double> in(static_cast<std::size_t>(B * H * W * 4 * C)), out(static_cast<std::size_t>(B * 4 * H * W * C));
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<double>(i);
  tim::cpu::pixel_shuffle2x_forward(out.data(), in.data(), B, H, W, C);
  bool shuffled = true;
  for (int b = 0; b < B; ++b)
    for (int y = 0; y < 2 * H; ++y)
      for (int x = 0; x < 2 * W; ++x)
        for (int c = 0; c < C; ++c)
          shuffled &= out[((b * 2 * H + y) * 2 * W + x) * C + c] ==
                      in[((b * H + y / 2) * W + x / 2) * 4 * C + 4 * c + 2 * (y % 2) + x % 2];
  CHECK(shuffled);

  // Shortcut Ci -> Co: pixel_shuffle(repeat_interleave(in, r = 4 Co / Ci)), channel (4c + 2i + j) / r.
  for (auto [Ci, Co] : {std::pair{4, 4}, std::pair{8, 4}, std::pair{6, 3}}) {
    CAPTURE(Ci);
    CAPTURE(Co);
    const int r = 4 * Co / Ci;
    std::vector<double> low(static_cast<std::size_t>(B * H * W * Ci)), high(static_cast<std::size_t>(B * 4 * H * W * Co), 1.0);
    for (std::size_t i = 0; i < low.size(); ++i) low[i] = static_cast<double>(i);
    tim::cpu::upsample_shortcut_forward(high.data(), low.data(), B, H, W, Ci, Co);
    bool matches = true;
    for (int b = 0; b < B; ++b)
      for (int y = 0; y < 2 * H; ++y)
        for (int x = 0; x < 2 * W; ++x)
          for (int c = 0; c < Co; ++c) {
            const int repeated = 4 * c + 2 * (y % 2) + x % 2;  // channel of the repeated tensor
            matches &= high[((b * 2 * H + y) * 2 * W + x) * Co + c] ==
                       1.0 + low[((b * H + y / 2) * W + x / 2) * Ci + repeated / r];
          }
    CHECK(matches);
  }
  std::vector<double> small(8), big(32);
  CHECK(contains(tim_test::error_of([&] { tim::cpu::upsample_shortcut_forward(big.data(), small.data(), 1, 1, 1, 3, 2); }),
                 "3 input channels do not divide 4 x 2 output channels"));
}
