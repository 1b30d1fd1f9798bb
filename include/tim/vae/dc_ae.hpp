// The DC-AE f32c32 decoder (dc-ae-f32c32-sana-1.1, diffusers' AutoencoderDC decoder) on the CPU:
// turns the 32-channel latents of the released C2I-512 and T2I models into images (SPEC 8,
// docs/vae.md "DC-AE f32c32"). Loads the released `diffusion_pytorch_model.safetensors` under its
// own tensor names.
//
// Shape legend: B batch, L latent channels (32), h, w latent size, H, W image size (2^(n-1) h for
// n stages: 32 h for the released 6), C channels of a stage, P = H*W pixels, nh heads, hd head
// dim (attention_head_dim), inner = nh hd, S multi-scale branches of an attention.
// Activations are channels-last (B, H, W, C) inside decode (see tim/vae/ops.hpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/core/tensor.hpp"
#include "tim/cpu/backend.hpp"
#include "tim/io/safetensors.hpp"
#include "tim/nn/modules.hpp"
#include "tim/vae/dc_ae_ops.hpp"
#include "tim/vae/ops.hpp"

namespace tim::vae {

//! What tensor shapes cannot tell; the defaults are dc-ae-f32c32-sana-1.1-diffusers' config.
struct DcAeOptions {
  std::int64_t attention_head_dim = 32;  // hd (checked against the multi-scale shapes when present)
  bool in_shortcut = true;               // decoder_in_shortcut: conv_in(z) + z with channels repeated
  double scaling_factor = 0.41407;       // decode divides the latents by it first
};

//! The decoder's configuration: the options plus what the tensor names and shapes say. Names and
//! stage order follow diffusers' config.json (stage 0 is the full-resolution one; decoding runs
//! from the last stage to the first).
struct DcAeConfig {
  std::int64_t latent_channels = 32;                  // L
  std::int64_t out_channels = 3;                      // image channels
  std::vector<std::int64_t> block_out_channels;       // C per stage, e.g. (128, 256, 512, 512, 1024, 1024)
  std::vector<std::int64_t> layers_per_block;         // blocks per stage, e.g. (3, 3, 3, 3, 3, 3)
  std::vector<std::string> block_types;               // "ResBlock" or "EfficientViTBlock" per stage
  std::vector<std::vector<std::int64_t>> qkv_multiscales;  // multi-scale kernel sizes per stage, e.g. (5)
  std::string upsample_block_type = "interpolate";    // or "pixel_shuffle"
  std::int64_t attention_head_dim = 32;
  bool in_shortcut = true;
  double scaling_factor = 0.41407;
  double norm_eps = 1e-5;        // every RMSNorm (fixed in diffusers)
  double attention_eps = 1e-15;  // the linear attention's denominator guard (fixed in diffusers)
  std::vector<std::string> ignored;  // encoder.* tensors, unused

  //! Image size per latent size: 2^(stages - 1), 32 for the released decoder.
  std::int64_t upscale() const {
    return block_out_channels.empty() ? 1 : std::int64_t{1} << (block_out_channels.size() - 1);
  }
  std::string describe() const {
    std::ostringstream out;
    out << "DC-AE decoder: L " << latent_channels << ", stages (";
    for (std::size_t i = 0; i < block_out_channels.size(); ++i) {
      out << (i ? ", " : "") << block_out_channels[i] << " " << layers_per_block[i] << "x" << block_types[i];
      if (!qkv_multiscales[i].empty()) {
        out << "[";
        for (std::size_t s = 0; s < qkv_multiscales[i].size(); ++s) out << (s ? "," : "") << qkv_multiscales[i][s];
        out << "]";
      }
    }
    out << "), head dim " << attention_head_dim << ", " << upsample_block_type << " upsampling, "
        << (in_shortcut ? "" : "no ") << "input shortcut, scaling_factor " << scaling_factor << ", " << upscale()
        << "x upscale";
    return out.str();
  }
};

namespace dc_ae {

inline constexpr const char* res_block = "ResBlock";
inline constexpr const char* vit_block = "EfficientViTBlock";

//! A stride-1 'same' convolution, bias optional; weight stored (Co, k, k, Ci) for channels-last im2col.
template <class T>
struct Conv2d {
  Tensor<T> weight;  // (Co, k, k, Ci), from the checkpoint's (Co, Ci, k, k)
  Tensor<T> bias;    // (Co), empty without bias
  std::int64_t in_channels = 0, out_channels = 0, kernel = 0;

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t in, std::int64_t out, std::int64_t k,
            bool with_bias = true) {
    in_channels = in;
    out_channels = out;
    kernel = k;
    auto stored = reader.template take<T, cpu>(prefix + ".weight", {out, in, k, k});
    if (with_bias) bias = reader.template take<T, cpu>(prefix + ".bias", {out});
    if (k == 1) {
      weight = stored.reshape({out, 1, 1, in});
      return;
    }
    weight = Tensor<T>::empty({out, k, k, in});
    const T* src = stored.data();
    T* dst = weight.data();
    for (std::int64_t o = 0; o < out; ++o)
      for (std::int64_t i = 0; i < in; ++i)
        for (std::int64_t kk = 0; kk < k * k; ++kk) dst[(o * k * k + kk) * in + i] = src[(o * in + i) * k * k + kk];
  }
  //! y (B, H, W, Co) = conv(x (B, H, W, Ci)); with `accumulate`, added to y.
  void forward(T* y, const T* x, std::int64_t batch, std::int64_t height, std::int64_t width,
               std::vector<T>& columns, bool accumulate = false) const {
    conv2d_forward(y, x, weight.data(), bias.empty_tensor() ? nullptr : bias.data(), batch, height, width,
                   in_channels, out_channels, kernel, accumulate, columns);
  }
  std::int64_t parameter_count() const { return weight.numel() + bias.numel(); }
};

//! A depthwise k x k convolution (PyTorch groups = channels), bias optional; weight stored (k, k, C).
template <class T>
struct DepthwiseConv2d {
  Tensor<T> weight;  // (k, k, C), from the checkpoint's (C, 1, k, k)
  Tensor<T> bias;    // (C), empty without bias
  std::int64_t channels = 0, kernel = 0;

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t c, std::int64_t k, bool with_bias) {
    channels = c;
    kernel = k;
    auto stored = reader.template take<T, cpu>(prefix + ".weight", {c, 1, k, k});
    if (with_bias) bias = reader.template take<T, cpu>(prefix + ".bias", {c});
    weight = Tensor<T>::empty({k, k, c});
    for (std::int64_t ch = 0; ch < c; ++ch)
      for (std::int64_t kk = 0; kk < k * k; ++kk) weight.data()[kk * c + ch] = stored.data()[ch * k * k + kk];
  }
  //! y (B, H, W, C) = depthwise conv of x (B, H, W, C).
  void forward(T* y, const T* x, std::int64_t batch, std::int64_t height, std::int64_t width) const {
    depthwise_conv2d_forward(y, x, weight.data(), bias.empty_tensor() ? nullptr : bias.data(), batch, height, width,
                             channels, kernel);
  }
  std::int64_t parameter_count() const { return weight.numel() + bias.numel(); }
};

//! RMSNorm over the channels (affine, with bias), eps from the config.
template <class T>
struct RmsNorm {
  Tensor<T> weight, bias;  // (C) each
  std::int64_t channels = 0;
  double eps = 1e-5;

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t c, double norm_eps) {
    channels = c;
    eps = norm_eps;
    weight = reader.template take<T, cpu>(prefix + ".weight", {c});
    bias = reader.template take<T, cpu>(prefix + ".bias", {c});
  }
  //! y (P, C) = RMSNorm(x) [+ residual]; y may be x or residual.
  void forward(T* y, const T* x, std::int64_t rows, const T* residual = nullptr) const {
    rms_norm_channels_forward(y, x, weight.data(), bias.data(), rows, channels, eps, residual);
  }
  std::int64_t parameter_count() const { return weight.numel() + bias.numel(); }
};

//! ResBlock: x + RMSNorm(conv2(SiLU(conv1(x)))), conv1 3x3 with bias, conv2 3x3 without.
template <class T>
struct ResBlock {
  Conv2d<T> conv1, conv2;
  RmsNorm<T> norm;

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t channels, const DcAeConfig& config) {
    conv1.load(reader, prefix + ".conv1", channels, channels, 3);
    conv2.load(reader, prefix + ".conv2", channels, channels, 3, /*with_bias=*/false);
    norm.load(reader, prefix + ".norm", channels, config.norm_eps);
  }
  //! Returns y (B, H, W, C) from x (B, H, W, C).
  Tensor<T> forward(const Tensor<T>& x, std::int64_t batch, std::int64_t height, std::int64_t width,
                    std::vector<T>& columns) const {
    const std::int64_t channels = conv1.in_channels, rows = batch * height * width;
    auto hidden = Tensor<T>::empty({batch, height, width, channels});
    auto y = Tensor<T>::empty({batch, height, width, channels});
    conv1.forward(hidden.data(), x.data(), batch, height, width, columns);
    cpu::silu_forward(hidden.data(), hidden.data(), hidden.numel());
    conv2.forward(y.data(), hidden.data(), batch, height, width, columns);
    norm.forward(y.data(), y.data(), rows, x.data());
    return y;
  }
  std::int64_t parameter_count() const {
    return conv1.parameter_count() + conv2.parameter_count() + norm.parameter_count();
  }
};

//! One multi-scale branch of the attention: a depthwise k x k convolution of the 3 inner q/k/v
//! channels, then a 1x1 convolution within each group of hd channels (3 nh groups); no biases.
template <class T>
struct MultiscaleProjection {
  DepthwiseConv2d<T> proj_in;
  Tensor<T> proj_out;  // (3 nh, hd, hd) as (group, in, out), from the checkpoint's (3 inner, hd, 1, 1)
  std::int64_t groups = 0, head_dim = 0;

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t inner, std::int64_t hd, std::int64_t k) {
    proj_in.load(reader, prefix + ".proj_in", 3 * inner, k, /*with_bias=*/false);
    groups = 3 * inner / hd;
    head_dim = hd;
    auto stored = reader.template take<T, cpu>(prefix + ".proj_out.weight", {3 * inner, hd, 1, 1});
    proj_out = Tensor<T>::empty({groups, hd, hd});
    for (std::int64_t g = 0; g < groups; ++g)
      for (std::int64_t o = 0; o < hd; ++o)
        for (std::int64_t i = 0; i < hd; ++i)
          proj_out.data()[(g * hd + i) * hd + o] = stored.data()[(g * hd + o) * hd + i];
  }
  //! y (B, H, W, 3 inner) from qkv (B, H, W, 3 inner); `scratch` holds the depthwise result.
  void forward(T* y, const T* qkv, std::int64_t batch, std::int64_t height, std::int64_t width,
               std::vector<T>& scratch) const {
    const std::int64_t rows = batch * height * width, channels = groups * head_dim;
    scratch.resize(static_cast<std::size_t>(rows * channels));
    proj_in.forward(scratch.data(), qkv, batch, height, width);
    grouped_pointwise_forward(y, scratch.data(), proj_out.data(), rows, groups, head_dim);
  }
  std::int64_t parameter_count() const { return proj_in.parameter_count() + proj_out.numel(); }
};

//! diffusers' SanaMultiscaleLinearAttention with its residual: x + RMSNorm(to_out(heads)), where
//! the q/k/v projections (one (3 inner, C) product: to_q, to_k, to_v stacked) and their S
//! multi-scale aggregates are read as (1 + S) nh heads of 3 hd consecutive channels each
//! (q, k, v of the head), and each head runs relu_linear_attention_forward.
template <class T>
struct MultiscaleLinearAttention {
  nn::Linear<T, cpu> to_qkv;  // (3 inner, C): the checkpoint's to_q, to_k, to_v stacked; no bias
  std::vector<MultiscaleProjection<T>> to_qkv_multiscale;
  nn::Linear<T, cpu> to_out;  // ((1 + S) inner -> C), no bias
  RmsNorm<T> norm_out;
  std::int64_t heads = 0, head_dim = 0;
  double eps = 1e-15;

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t channels, const std::vector<std::int64_t>& scales,
            const DcAeConfig& config) {
    head_dim = config.attention_head_dim;
    heads = channels / head_dim;
    eps = config.attention_eps;
    const std::int64_t inner = heads * head_dim;
    to_qkv.in_features = channels;
    to_qkv.out_features = 3 * inner;
    to_qkv.weight = Tensor<T>::empty({3 * inner, channels});
    const char* names[] = {".to_q.weight", ".to_k.weight", ".to_v.weight"};
    for (int r = 0; r < 3; ++r) {
      auto part = reader.template take<T, cpu>(prefix + names[r], {inner, channels});
      cpu::copy(to_qkv.weight.data() + r * inner * channels, part.data(), static_cast<std::size_t>(inner * channels));
    }
    for (std::size_t s = 0; s < scales.size(); ++s) {
      to_qkv_multiscale.emplace_back();
      to_qkv_multiscale.back().load(reader, prefix + ".to_qkv_multiscale." + std::to_string(s), inner, head_dim,
                                    scales[s]);
    }
    to_out.load(reader, prefix + ".to_out", (1 + static_cast<std::int64_t>(scales.size())) * inner, channels,
                /*with_bias=*/false);
    norm_out.load(reader, prefix + ".norm_out", channels, config.norm_eps);
  }
  //! Returns y (B, H, W, C) from x (B, H, W, C).
  Tensor<T> forward(const Tensor<T>& x, std::int64_t batch, std::int64_t height, std::int64_t width) const {
    const std::int64_t rows = batch * height * width, pixels = height * width, inner = heads * head_dim;
    const std::int64_t branches = 1 + static_cast<std::int64_t>(to_qkv_multiscale.size());
    auto qkv = Tensor<T>::empty({batch, height, width, 3 * inner});
    auto aggregated = Tensor<T>::empty({batch, height, width, 3 * inner});
    auto attended = Tensor<T>::empty({batch, height, width, branches * inner});  // branch s: heads s nh ...
    to_qkv.forward(qkv.data(), x.data(), rows);
    relu_linear_attention_forward(attended.data(), branches * inner, qkv.data(), batch, pixels, heads, head_dim, eps);
    std::vector<T> scratch;
    for (std::size_t s = 0; s < to_qkv_multiscale.size(); ++s) {
      to_qkv_multiscale[s].forward(aggregated.data(), qkv.data(), batch, height, width, scratch);
      relu_linear_attention_forward(attended.data() + (1 + static_cast<std::int64_t>(s)) * inner, branches * inner, aggregated.data(), batch,
                                    pixels, heads, head_dim, eps);
    }
    auto y = Tensor<T>::empty({batch, height, width, to_out.out_features});
    to_out.forward(y.data(), attended.data(), rows);
    norm_out.forward(y.data(), y.data(), rows, x.data());
    return y;
  }
  std::int64_t parameter_count() const {
    std::int64_t n = to_qkv.parameter_count() + to_out.parameter_count() + norm_out.parameter_count();
    for (const auto& branch : to_qkv_multiscale) n += branch.parameter_count();
    return n;
  }
};

//! GLUMBConv: x + RMSNorm(conv_point(value * SiLU(gate))), where (value, gate) are the two halves
//! of conv_depth(SiLU(conv_inverted(x))): conv_inverted 1x1 C -> 8C, conv_depth depthwise 3x3,
//! conv_point 1x1 4C -> C without bias.
template <class T>
struct GluMbConv {
  nn::Linear<T, cpu> conv_inverted;  // 1x1 as a Linear (8C, C) + bias
  DepthwiseConv2d<T> conv_depth;     // 3x3 over 8C channels, with bias
  nn::Linear<T, cpu> conv_point;     // 1x1 as a Linear (C, 4C), no bias
  RmsNorm<T> norm;

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t channels, const DcAeConfig& config) {
    const std::int64_t hidden = 4 * channels;
    conv_inverted.in_features = channels;
    conv_inverted.out_features = 2 * hidden;
    conv_inverted.weight = reader.template take<T, cpu>(prefix + ".conv_inverted.weight", {2 * hidden, channels, 1, 1})
                               .reshape({2 * hidden, channels});
    conv_inverted.bias = reader.template take<T, cpu>(prefix + ".conv_inverted.bias", {2 * hidden});
    conv_depth.load(reader, prefix + ".conv_depth", 2 * hidden, 3, /*with_bias=*/true);
    conv_point.in_features = hidden;
    conv_point.out_features = channels;
    conv_point.weight =
        reader.template take<T, cpu>(prefix + ".conv_point.weight", {channels, hidden, 1, 1}).reshape({channels, hidden});
    norm.load(reader, prefix + ".norm", channels, config.norm_eps);
  }
  //! Returns y (B, H, W, C) from x (B, H, W, C).
  Tensor<T> forward(const Tensor<T>& x, std::int64_t batch, std::int64_t height, std::int64_t width) const {
    const std::int64_t rows = batch * height * width, hidden = conv_point.in_features;
    auto expanded = Tensor<T>::empty({batch, height, width, 2 * hidden});
    auto mixed = Tensor<T>::empty({batch, height, width, 2 * hidden});
    conv_inverted.forward(expanded.data(), x.data(), rows);
    cpu::silu_forward(expanded.data(), expanded.data(), expanded.numel());
    conv_depth.forward(mixed.data(), expanded.data(), batch, height, width);
    // value = channels [0, 4C), gate = [4C, 8C) of each row; the gated product reuses `expanded`.
    cpu::swiglu_forward(expanded.data(), mixed.data() + hidden, mixed.data(), rows, hidden, 2 * hidden, 2 * hidden);
    auto y = Tensor<T>::empty({batch, height, width, conv_point.out_features});
    conv_point.forward(y.data(), expanded.data(), rows);
    norm.forward(y.data(), y.data(), rows, x.data());
    return y;
  }
  std::int64_t parameter_count() const {
    return conv_inverted.parameter_count() + conv_depth.parameter_count() + conv_point.parameter_count() +
           norm.parameter_count();
  }
};

//! EfficientViTBlock: the multi-scale linear attention (checkpoint name attn), then GLUMBConv
//! (conv_out), each with its residual.
template <class T>
struct EfficientViTBlock {
  MultiscaleLinearAttention<T> attn;
  GluMbConv<T> conv_out;

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t channels, const std::vector<std::int64_t>& scales,
            const DcAeConfig& config) {
    attn.load(reader, prefix + ".attn", channels, scales, config);
    conv_out.load(reader, prefix + ".conv_out", channels, config);
  }
  Tensor<T> forward(const Tensor<T>& x, std::int64_t batch, std::int64_t height, std::int64_t width) const {
    return conv_out.forward(attn.forward(x, batch, height, width), batch, height, width);
  }
  std::int64_t parameter_count() const { return attn.parameter_count() + conv_out.parameter_count(); }
};

//! DCUpBlock2d: 2x upsampling Ci -> Co, conv3x3(nearest 2x(x)) ('interpolate') or
//! pixel_shuffle(conv3x3(x) to 4 Co) ('pixel_shuffle'), plus the shortcut
//! pixel_shuffle(x with channels repeated 4 Co / Ci times).
template <class T>
struct UpsampleBlock {
  Conv2d<T> conv;  // (Co or 4 Co, 3, 3, Ci)
  std::int64_t in_channels = 0, out_channels = 0;
  bool pixel_shuffle = false;

  //! Returns y (B, 2H, 2W, Co) from x (B, H, W, Ci).
  Tensor<T> forward(const Tensor<T>& x, std::int64_t batch, std::int64_t height, std::int64_t width,
                    std::vector<T>& columns) const {
    auto y = Tensor<T>::empty({batch, 2 * height, 2 * width, out_channels});
    if (pixel_shuffle) {
      auto wide = Tensor<T>::empty({batch, height, width, 4 * out_channels});
      conv.forward(wide.data(), x.data(), batch, height, width, columns);
      pixel_shuffle2x_forward(y.data(), wide.data(), batch, height, width, out_channels);
    } else {
      auto up = Tensor<T>::empty({batch, 2 * height, 2 * width, in_channels});
      upsample_nearest2x_forward(up.data(), x.data(), batch, height, width, in_channels);
      conv.forward(y.data(), up.data(), batch, 2 * height, 2 * width, columns);
    }
    upsample_shortcut_forward(y.data(), x.data(), batch, height, width, in_channels, out_channels);
    return y;
  }
  bool present() const { return conv.kernel != 0; }
  std::int64_t parameter_count() const { return conv.parameter_count(); }
};

//! One decoder stage (checkpoint decoder.up_blocks.{i}): the 2x upsampling from the next deeper
//! stage (all but the deepest stage; index 0), then its blocks, all ResBlocks or all EfficientViT.
template <class T>
struct Stage {
  UpsampleBlock<T> upsample;
  std::vector<ResBlock<T>> res_blocks;
  std::vector<EfficientViTBlock<T>> vit_blocks;

  std::int64_t parameter_count() const {
    std::int64_t n = upsample.parameter_count();
    for (const auto& block : res_blocks) n += block.parameter_count();
    for (const auto& block : vit_blocks) n += block.parameter_count();
    return n;
  }
};

}  // namespace dc_ae

//! The DC-AE decoder. Build it with load_dc_ae_decoder / open_dc_ae_decoder.
//! Example:
//!   auto vae = tim::vae::open_dc_ae_decoder<float>("diffusion_pytorch_model.safetensors");
//!   tim::Tensor<float> images = vae.decode(latents);  // (B, 32, 16, 16) -> (B, 3, 512, 512)
template <class T>
struct DcAeDecoder {
  DcAeConfig config;
  dc_ae::Conv2d<T> conv_in;                 // decoder.conv_in, 3x3, L -> C of the deepest stage
  std::vector<dc_ae::Stage<T>> up_blocks;   // decoder.up_blocks.{i}, i = 0 the full-resolution stage
  dc_ae::RmsNorm<T> norm_out;               // decoder.norm_out
  dc_ae::Conv2d<T> conv_out;                // decoder.conv_out, 3x3, C of stage 0 -> 3

  //! images (B, 3, H, W) from latents (B, L, h, w), H = upscale() h: divides by the scaling
  //! factor, then runs the decoder. Values are about [-1, 1] and are NOT clamped (SPEC 8 maps
  //! them to bytes). Throws tim::Error on a wrong latent shape. Allocates its activations per call.
  Tensor<T> decode(const Tensor<T>& latents) const {
    check(latents.rank() == 4 && latents.dim(1) == config.latent_channels && latents.dim(0) >= 1 &&
              latents.dim(2) >= 1 && latents.dim(3) >= 1,
          "DC-AE decode: latents must have shape [B, ", config.latent_channels, ", h, w] with B, h, w >= 1, got ",
          latents.shape());
    const std::int64_t batch = latents.dim(0), L = config.latent_channels;
    std::int64_t height = latents.dim(2), width = latents.dim(3);
    std::vector<T> columns;  // im2col scratch, shared by every convolution

    auto z = Tensor<T>::empty({batch, height, width, L});
    nchw_to_nhwc_forward(z.data(), latents.data(), batch, L, height, width);
    const T inverse_scale = T(1) / T(config.scaling_factor);
    cpu::parallel_for(z.numel(), [&](std::int64_t i) { z.data()[i] *= inverse_scale; });
    auto x = Tensor<T>::empty({batch, height, width, conv_in.out_channels});
    conv_in.forward(x.data(), z.data(), batch, height, width, columns);
    if (config.in_shortcut)
      repeat_channels_add_forward(x.data(), z.data(), batch * height * width, L, conv_in.out_channels / L);

    for (auto stage = up_blocks.rbegin(); stage != up_blocks.rend(); ++stage) {
      if (stage->upsample.present()) {
        x = stage->upsample.forward(x, batch, height, width, columns);
        height *= 2;
        width *= 2;
      }
      for (const auto& block : stage->res_blocks) x = block.forward(x, batch, height, width, columns);
      for (const auto& block : stage->vit_blocks) x = block.forward(x, batch, height, width);
    }
    norm_out.forward(x.data(), x.data(), batch * height * width);
    relu_inplace_forward(x.data(), x.numel());
    auto rgb = Tensor<T>::empty({batch, height, width, config.out_channels});
    conv_out.forward(rgb.data(), x.data(), batch, height, width, columns);
    auto images = Tensor<T>::empty({batch, config.out_channels, height, width});
    nhwc_to_nchw_forward(images.data(), rgb.data(), batch, config.out_channels, height, width);
    return images;
  }

  //! Parameters the decoder uses (the ignored encoder not counted): 159.2 M for the release.
  std::int64_t parameter_count() const {
    std::int64_t n = conv_in.parameter_count() + norm_out.parameter_count() + conv_out.parameter_count();
    for (const auto& stage : up_blocks) n += stage.parameter_count();
    return n;
  }
};

namespace detail {

//! The shape of tensor `name` of a DC-AE checkpoint, required to have `rank` dimensions.
template <class Source>
Shape dc_ae_shape(const Source& source, const std::string& name, int rank, const char* expected) {
  return checkpoint_shape(source, name, rank, expected, "a DC-AE (AutoencoderDC)");
}

//! For each stage i, the largest block index j of the tensors named decoder.up_blocks.{i}.{j}.*.
template <class Source>
std::map<std::int64_t, std::int64_t> dc_ae_block_indices(const Source& source) {
  const std::string prefix = "decoder.up_blocks.";
  std::map<std::int64_t, std::int64_t> last;
  const auto number = [](const std::string& text, std::size_t& at) -> std::int64_t {
    std::size_t end = at;
    while (end < text.size() && end - at < 9 && text[end] >= '0' && text[end] <= '9') ++end;
    if (end == at || end >= text.size() || text[end] != '.') return -1;
    const std::int64_t value = std::stoll(text.substr(at, end - at));
    at = end + 1;
    return value;
  };
  for (const auto& info : source.tensors()) {
    if (info.name.rfind(prefix, 0) != 0) continue;
    std::size_t at = prefix.size();
    const std::int64_t stage = number(info.name, at);
    const std::int64_t block = stage < 0 ? -1 : number(info.name, at);
    if (block < 0) continue;  // left for the unexpected-tensor check
    last[stage] = std::max(last.count(stage) ? last[stage] : 0, block);
  }
  return last;
}

}  // namespace detail

//! Reads the decoder's configuration from the tensor names and shapes (latent channels, stages,
//! their widths, block types and counts, multi-scale kernels, upsampling type, image channels)
//! plus `options` (head dim, input shortcut, scaling factor).
template <class Source>
DcAeConfig infer_dc_ae_config(const Source& source, const DcAeOptions& options = {}) {
  DcAeConfig c;
  check(options.attention_head_dim >= 1, "DC-AE: attention_head_dim must be >= 1, got ", options.attention_head_dim);
  check(options.scaling_factor > 0, "DC-AE: scaling_factor must be > 0, got ", options.scaling_factor);
  c.attention_head_dim = options.attention_head_dim;
  c.in_shortcut = options.in_shortcut;
  c.scaling_factor = options.scaling_factor;
  const Shape conv_in = detail::dc_ae_shape(source, "decoder.conv_in.weight", 4, "[C, L, 3, 3]");
  c.latent_channels = conv_in[1];
  c.out_channels = detail::dc_ae_shape(source, "decoder.conv_out.weight", 4, "[3, C, 3, 3]")[0];

  const auto last_block = detail::dc_ae_block_indices(source);
  const std::int64_t stages = last_block.empty() ? 0 : last_block.rbegin()->first + 1;
  check(stages >= 1, "checkpoint: missing tensors 'decoder.up_blocks.0.*' (is this a DC-AE (AutoencoderDC) "
                     "checkpoint?)");
  std::vector<std::string> upsample_types;
  for (std::int64_t i = 0; i < stages; ++i) {
    const std::string stage = "decoder.up_blocks." + std::to_string(i);
    const std::int64_t first = i + 1 < stages ? 1 : 0;  // index 0 is the upsampling, but in the deepest stage
    const std::int64_t layers = last_block.count(i) ? last_block.at(i) + 1 - first : 0;
    check(layers >= 1, "checkpoint: stage '", stage, "' has no blocks (expected '", stage, ".", first,
          ".conv1.weight' or '", stage, ".", first, ".attn.to_q.weight'; stages without blocks are not supported)");
    const std::string block = stage + "." + std::to_string(first);
    std::vector<std::int64_t> scales;
    if (source.contains(block + ".conv1.weight")) {
      c.block_types.push_back(dc_ae::res_block);
      c.block_out_channels.push_back(detail::dc_ae_shape(source, block + ".conv1.weight", 4, "[C, C, 3, 3]")[0]);
    } else {
      check(source.contains(block + ".attn.to_q.weight"), "checkpoint: missing tensor '", block,
            ".conv1.weight' (a ResBlock) or '", block,
            ".attn.to_q.weight' (an EfficientViTBlock); is this a DC-AE (AutoencoderDC) checkpoint?");
      c.block_types.push_back(dc_ae::vit_block);
      c.block_out_channels.push_back(detail::dc_ae_shape(source, block + ".attn.to_q.weight", 2, "[inner, C]")[1]);
      const std::string branch = block + ".attn.to_qkv_multiscale.";
      while (source.contains(branch + std::to_string(scales.size()) + ".proj_in.weight")) {
        const std::string name = branch + std::to_string(scales.size());
        const Shape kernel = detail::dc_ae_shape(source, name + ".proj_in.weight", 4, "[3 inner, 1, k, k]");
        check(kernel[2] == kernel[3] && kernel[2] % 2 == 1, "checkpoint: tensor '", name,
              ".proj_in.weight' has shape ", kernel, ", expected a square odd kernel [3 inner, 1, k, k]");
        const Shape out = detail::dc_ae_shape(source, name + ".proj_out.weight", 4, "[3 inner, hd, 1, 1]");
        check(out[1] == c.attention_head_dim, "checkpoint: tensor '", name, ".proj_out.weight' has shape ", out,
              ": head dim ", out[1], ", but attention_head_dim is ", c.attention_head_dim,
              " (set DcAeOptions::attention_head_dim)");
        scales.push_back(kernel[2]);
      }
      check(c.block_out_channels.back() >= c.attention_head_dim, "DC-AE: stage ", i, " has ",
            c.block_out_channels.back(), " channels, fewer than attention_head_dim ", c.attention_head_dim);
    }
    c.layers_per_block.push_back(layers);
    c.qkv_multiscales.push_back(scales);
    if (first) {
      const std::string name = stage + ".0.conv.weight";
      const Shape up = detail::dc_ae_shape(source, name, 4, "[C or 4 C, C_deeper, 3, 3]");
      const std::int64_t width = c.block_out_channels.back();
      check(up[0] == width || up[0] == 4 * width, "checkpoint: tensor '", name, "' has shape ", up, ", expected [",
            width, ", C_deeper, 3, 3] (interpolate upsampling) or [", 4 * width,
            ", C_deeper, 3, 3] (pixel_shuffle upsampling)");
      upsample_types.push_back(up[0] == width ? "interpolate" : "pixel_shuffle");
    }
  }
  if (!upsample_types.empty()) {
    for (const auto& type : upsample_types)
      check(type == upsample_types.front(), "checkpoint: stages mix interpolate and pixel_shuffle upsampling");
    c.upsample_block_type = upsample_types.front();
  }
  for (std::int64_t i = 0; i + 1 < stages; ++i) {
    const std::int64_t in = c.block_out_channels[i + 1], out = c.block_out_channels[i];
    check((4 * out) % in == 0, "DC-AE: stage ", i, " upsamples ", in, " channels to ", out,
          "; the shortcut needs ", in, " to divide 4 x ", out);
  }
  const std::int64_t top = c.block_out_channels.back();
  check(!c.in_shortcut || top % c.latent_channels == 0, "DC-AE: the input shortcut repeats ", c.latent_channels,
        " latent channels to ", top, ", which they do not divide (decoder_in_shortcut; set "
        "DcAeOptions::in_shortcut = false if the model has none)");
  return c;
}

//! Loads the decoder from a safetensors source (tim::io::SafetensorsFile, or anything with the
//! same reads) with the released names (decoder.*). The encoder (encoder.*) is ignored and
//! listed in config.ignored; any other tensor is an error. Missing tensors and wrong shapes throw
//! tim::Error naming the tensor and the expected shape.
template <class T, class Source>
DcAeDecoder<T> load_dc_ae_decoder(const Source& source, const DcAeOptions& options = {}) {
  DcAeDecoder<T> vae;
  vae.config = infer_dc_ae_config(source, options);
  const DcAeConfig& c = vae.config;
  nn::ParameterReader<Source> reader{source, {}};
  const auto& widths = c.block_out_channels;
  const std::size_t stages = widths.size();

  vae.conv_in.load(reader, "decoder.conv_in", c.latent_channels, widths.back(), 3);
  for (std::size_t i = 0; i < stages; ++i) {
    dc_ae::Stage<T> stage;
    const std::string prefix = "decoder.up_blocks." + std::to_string(i);
    std::int64_t j = 0;
    if (i + 1 < stages) {
      auto& up = stage.upsample;
      up.in_channels = widths[i + 1];
      up.out_channels = widths[i];
      up.pixel_shuffle = c.upsample_block_type == "pixel_shuffle";
      up.conv.load(reader, prefix + ".0.conv", widths[i + 1], up.pixel_shuffle ? 4 * widths[i] : widths[i], 3);
      j = 1;
    }
    for (std::int64_t layer = 0; layer < c.layers_per_block[i]; ++layer, ++j) {
      const std::string name = prefix + "." + std::to_string(j);
      if (c.block_types[i] == dc_ae::res_block) {
        stage.res_blocks.emplace_back();
        stage.res_blocks.back().load(reader, name, widths[i], c);
      } else {
        stage.vit_blocks.emplace_back();
        stage.vit_blocks.back().load(reader, name, widths[i], c.qkv_multiscales[i], c);
      }
    }
    vae.up_blocks.push_back(std::move(stage));
  }
  vae.norm_out.load(reader, "decoder.norm_out", widths.front(), c.norm_eps);
  vae.conv_out.load(reader, "decoder.conv_out", widths.front(), c.out_channels, 3);

  for (const auto& info : source.tensors()) {
    if (reader.used.count(info.name)) continue;
    check(info.name.rfind("encoder.", 0) == 0, "checkpoint: unexpected tensor '", info.name, "' (not part of a ",
          c.describe(), ")");
    vae.config.ignored.push_back(info.name);
  }
  return vae;
}

//! Opens a safetensors file (memory-mapped) and loads the decoder from it; see load_dc_ae_decoder.
template <class T>
DcAeDecoder<T> open_dc_ae_decoder(const std::string& path, const DcAeOptions& options = {}) {
  return load_dc_ae_decoder<T>(io::SafetensorsFile::open(path), options);
}

}  // namespace tim::vae
