// The Stable Diffusion VAE decoder (sd-vae-ft-ema, diffusers' AutoencoderKL decoder) on the CPU:
// turns the latents of the released C2I-256 model into images (SPEC 8, docs/vae.md). Loads the
// released `diffusion_pytorch_model.safetensors` under its own tensor names.
//
// Shape legend: B batch, L latent channels (4), h, w latent size, H, W image size (2^(n-1) h, with
// n up blocks: 8h for the released 4), C channels of a stage, G GroupNorm groups, P = H*W pixels.
// Activations are channels-last (B, H, W, C) inside decode (see tim/vae/ops.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/core/tensor.hpp"
#include "tim/cpu/backend.hpp"
#include "tim/io/safetensors.hpp"
#include "tim/nn/modules.hpp"
#include "tim/vae/ops.hpp"

namespace tim::vae {

//! What tensor shapes cannot tell; the defaults are sd-vae-ft-ema's config.
struct SdVaeOptions {
  std::int64_t groups = 32;         // norm_num_groups
  double eps = 1e-6;                // every GroupNorm's eps
  double scaling_factor = 0.18215;  // decode divides the latents by it first
};

//! The decoder's configuration: the options plus what the tensor shapes say.
struct SdVaeConfig {
  std::int64_t latent_channels = 4;               // L
  std::int64_t out_channels = 3;                  // image channels
  std::vector<std::int64_t> block_out_channels;   // encoder order, e.g. (128, 256, 512, 512)
  std::int64_t resnets_per_block = 3;             // layers_per_block + 1 in the decoder
  std::int64_t groups = 32;
  double eps = 1e-6;
  double scaling_factor = 0.18215;
  std::vector<std::string> ignored;               // encoder.* and quant_conv.* tensors, unused

  //! Image size per latent size: 2^(up blocks - 1), 8 for the released decoder.
  std::int64_t upscale() const {
    return block_out_channels.empty() ? 1 : std::int64_t{1} << (block_out_channels.size() - 1);
  }
  std::string describe() const {
    std::ostringstream out;
    out << "SD VAE decoder: L " << latent_channels << ", block_out_channels (";
    for (std::size_t i = 0; i < block_out_channels.size(); ++i) out << (i ? ", " : "") << block_out_channels[i];
    out << "), " << resnets_per_block << " resnets per up block, G " << groups << ", eps " << eps
        << ", scaling_factor " << scaling_factor << ", " << upscale() << "x upscale";
    return out.str();
  }
};

//! A stride-1 'same' convolution; weight stored (Co, k, k, Ci) for channels-last im2col.
template <class T>
struct Conv2d {
  Tensor<T> weight;  // (Co, k, k, Ci), from the checkpoint's (Co, Ci, k, k)
  Tensor<T> bias;    // (Co)
  std::int64_t in_channels = 0, out_channels = 0, kernel = 0;

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t in, std::int64_t out, std::int64_t k) {
    in_channels = in;
    out_channels = out;
    kernel = k;
    auto stored = reader.template take<T, cpu>(prefix + ".weight", {out, in, k, k});
    bias = reader.template take<T, cpu>(prefix + ".bias", {out});
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
    conv2d_forward(y, x, weight.data(), bias.data(), batch, height, width, in_channels, out_channels, kernel,
                   accumulate, columns);
  }
  std::int64_t parameter_count() const { return weight.numel() + bias.numel(); }
};

//! GroupNorm weights (affine) with the group count and eps of the decoder.
template <class T>
struct GroupNorm {
  Tensor<T> weight, bias;  // (C) each
  std::int64_t channels = 0, groups = 1;
  double eps = 1e-6;

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t c, const SdVaeConfig& config) {
    check(c % config.groups == 0, "checkpoint: '", prefix, "' normalises ", c, " channels, not divisible by ",
          config.groups, " groups (norm_num_groups)");
    channels = c;
    groups = config.groups;
    eps = config.eps;
    weight = reader.template take<T, cpu>(prefix + ".weight", {c});
    bias = reader.template take<T, cpu>(prefix + ".bias", {c});
  }
  //! y (B, P, C) = GroupNorm(x) [then SiLU]; y may be x.
  void forward(T* y, const T* x, std::int64_t batch, std::int64_t pixels, bool apply_silu) const {
    group_norm_forward(y, x, weight.data(), bias.data(), batch, pixels, channels, groups, eps, apply_silu);
  }
  std::int64_t parameter_count() const { return weight.numel() + bias.numel(); }
};

//! GroupNorm, SiLU, conv3x3, GroupNorm, SiLU, conv3x3, plus the input (through the 1x1
//! `conv_shortcut` when the channel count changes). No time embedding, no dropout at inference.
template <class T>
struct ResnetBlock {
  GroupNorm<T> norm1, norm2;
  Conv2d<T> conv1, conv2, conv_shortcut;  // conv_shortcut empty when Ci == Co

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t in, std::int64_t out, const SdVaeConfig& config) {
    norm1.load(reader, prefix + ".norm1", in, config);
    conv1.load(reader, prefix + ".conv1", in, out, 3);
    norm2.load(reader, prefix + ".norm2", out, config);
    conv2.load(reader, prefix + ".conv2", out, out, 3);
    if (in != out) conv_shortcut.load(reader, prefix + ".conv_shortcut", in, out, 1);
  }
  std::int64_t in_channels() const { return conv1.in_channels; }
  std::int64_t out_channels() const { return conv1.out_channels; }

  //! Returns y (B, H, W, Co) from x (B, H, W, Ci).
  Tensor<T> forward(const Tensor<T>& x, std::int64_t batch, std::int64_t height, std::int64_t width,
                    std::vector<T>& columns) const {
    const std::int64_t pixels = height * width, ci = in_channels(), co = out_channels();
    auto normed = Tensor<T>::empty({batch, height, width, std::max(ci, co)});
    auto hidden = Tensor<T>::empty({batch, height, width, co});
    auto y = Tensor<T>::empty({batch, height, width, co});
    norm1.forward(normed.data(), x.data(), batch, pixels, true);
    conv1.forward(hidden.data(), normed.data(), batch, height, width, columns);
    norm2.forward(normed.data(), hidden.data(), batch, pixels, true);
    if (conv_shortcut.kernel)
      conv_shortcut.forward(y.data(), x.data(), batch, height, width, columns);
    else
      cpu::copy(y.data(), x.data(), static_cast<std::size_t>(y.numel()));
    conv2.forward(y.data(), normed.data(), batch, height, width, columns, /*accumulate=*/true);
    return y;
  }
  std::int64_t parameter_count() const {
    return norm1.parameter_count() + conv1.parameter_count() + norm2.parameter_count() + conv2.parameter_count() +
           conv_shortcut.parameter_count();
  }
};

//! The mid block's attention: GroupNorm, then single-head softmax attention over the P pixels
//! with C features (q, k, v, out Linear projections, scale 1/sqrt(C)), plus the input.
template <class T>
struct AttentionBlock {
  GroupNorm<T> group_norm;
  nn::Linear<T, cpu> to_q, to_k, to_v, to_out;  // older checkpoints: query, key, value, proj_attn
  bool older_names = false;

  //! Accepts the current names (to_q, to_k, to_v, to_out.0) and the older ones (query, key,
  //! value, proj_attn), each weight either a Linear (C, C) or a 1x1 convolution (C, C, 1, 1).
  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t channels, const SdVaeConfig& config) {
    group_norm.load(reader, prefix + ".group_norm", channels, config);
    older_names = !reader.has(prefix + ".to_q.weight") && reader.has(prefix + ".query.weight");
    check(older_names || reader.has(prefix + ".to_q.weight"), "checkpoint: missing tensor '", prefix,
          ".to_q.weight' (expected shape [", channels, ", ", channels, "]; older files name it '", prefix,
          ".query.weight')");
    const char* current[] = {"to_q", "to_k", "to_v", "to_out.0"};
    const char* older[] = {"query", "key", "value", "proj_attn"};
    nn::Linear<T, cpu>* projections[] = {&to_q, &to_k, &to_v, &to_out};
    for (int i = 0; i < 4; ++i) {
      const std::string name = prefix + "." + (older_names ? older[i] : current[i]);
      check(reader.has(name + ".weight"), "checkpoint: missing tensor '", name, ".weight' (expected shape [",
            channels, ", ", channels, "])");
      const Shape stored = reader.shape(name + ".weight");
      const bool as_linear = stored == Shape{channels, channels};
      check(as_linear || stored == Shape{channels, channels, 1, 1}, "checkpoint: tensor '", name,
            ".weight' has shape ", stored, ", expected [", channels, ", ", channels, "] (Linear) or [", channels,
            ", ", channels, ", 1, 1] (1x1 convolution)");
      auto& projection = *projections[i];
      projection.in_features = projection.out_features = channels;
      projection.weight = reader.template take<T, cpu>(name + ".weight", stored).reshape({channels, channels});
      projection.bias = reader.template take<T, cpu>(name + ".bias", {channels});
    }
  }

  //! Returns y (B, P, C) = x + out_proj(attention(GroupNorm(x))).
  Tensor<T> forward(const Tensor<T>& x, std::int64_t batch, std::int64_t pixels) const {
    const std::int64_t channels = group_norm.channels, rows = batch * pixels;
    auto normed = Tensor<T>::empty({batch, pixels, channels});
    auto q = Tensor<T>::empty({batch, pixels, channels});
    auto k = Tensor<T>::empty({batch, pixels, channels});
    auto v = Tensor<T>::empty({batch, pixels, channels});
    group_norm.forward(normed.data(), x.data(), batch, pixels, false);
    to_q.forward(q.data(), normed.data(), rows);
    to_k.forward(k.data(), normed.data(), rows);
    to_v.forward(v.data(), normed.data(), rows);
    // q, k, v (B, P, C) are (B, nh = 1, N = P, hd = C); the output (B, P, 1, C) reuses `normed`.
    cpu::attention_forward(normed.data(), q.data(), k.data(), v.data(), batch, 1, pixels, channels,
                           1.0 / std::sqrt(static_cast<double>(channels)));
    auto y = x.clone();
    to_out.forward(y.data(), normed.data(), rows, /*accumulate=*/true);
    return y;
  }
  std::int64_t parameter_count() const {
    return group_norm.parameter_count() + to_q.parameter_count() + to_k.parameter_count() + to_v.parameter_count() +
           to_out.parameter_count();
  }
};

//! One decoder up block: resnets, then (all but the last block) nearest 2x upsampling and a 3x3 conv.
template <class T>
struct UpBlock {
  std::vector<ResnetBlock<T>> resnets;
  Conv2d<T> upsampler;  // checkpoint name upsamplers.0.conv; empty in the last block

  bool upsamples() const { return upsampler.kernel != 0; }
  std::int64_t parameter_count() const {
    std::int64_t n = upsampler.parameter_count();
    for (const auto& r : resnets) n += r.parameter_count();
    return n;
  }
};

//! The SD VAE decoder. Build it with load_sd_vae_decoder / open_sd_vae_decoder.
//! Example:
//!   auto vae = tim::vae::open_sd_vae_decoder<float>("diffusion_pytorch_model.safetensors");
//!   tim::Tensor<float> images = vae.decode(latents);  // (B, 4, 32, 32) -> (B, 3, 256, 256)
template <class T>
struct SdVaeDecoder {
  SdVaeConfig config;
  Conv2d<T> post_quant_conv;  // 1x1, L -> L
  Conv2d<T> conv_in;          // decoder.conv_in, 3x3, L -> C_top
  ResnetBlock<T> mid_resnet_0, mid_resnet_1;  // decoder.mid_block.resnets.{0,1}
  AttentionBlock<T> mid_attention;            // decoder.mid_block.attentions.0
  std::vector<UpBlock<T>> up_blocks;          // decoder.up_blocks.{i}
  GroupNorm<T> conv_norm_out;
  Conv2d<T> conv_out;  // 3x3, C_bottom -> 3

  //! images (B, 3, H, W) from latents (B, L, h, w), H = upscale() h: divides by the scaling
  //! factor, then runs the decoder. Values are about [-1, 1] and are NOT clamped; to get bytes,
  //! clamp(255 (x + 1) / 2, 0, 255) (SPEC 8). Throws tim::Error on a wrong latent shape.
  //! Allocates its activations per call (the convolutions dominate the time by far).
  Tensor<T> decode(const Tensor<T>& latents) const {
    check(latents.rank() == 4 && latents.dim(1) == config.latent_channels && latents.dim(0) >= 1 &&
              latents.dim(2) >= 1 && latents.dim(3) >= 1,
          "SD VAE decode: latents must have shape [B, ", config.latent_channels, ", h, w] with B, h, w >= 1, got ",
          latents.shape());
    const std::int64_t batch = latents.dim(0);
    std::int64_t height = latents.dim(2), width = latents.dim(3);
    std::vector<T> columns;  // im2col scratch, shared by every convolution

    const std::int64_t L = config.latent_channels;
    auto z = Tensor<T>::empty({batch, height, width, L});
    nchw_to_nhwc_forward(z.data(), latents.data(), batch, L, height, width);
    const T inverse_scale = T(1) / T(config.scaling_factor);
    cpu::parallel_for(z.numel(), [&](std::int64_t i) { z.data()[i] *= inverse_scale; });
    auto moments = Tensor<T>::empty({batch, height, width, L});
    post_quant_conv.forward(moments.data(), z.data(), batch, height, width, columns);
    auto x = Tensor<T>::empty({batch, height, width, conv_in.out_channels});
    conv_in.forward(x.data(), moments.data(), batch, height, width, columns);

    x = mid_resnet_0.forward(x, batch, height, width, columns);
    x = mid_attention.forward(x, batch, height * width);
    x = mid_resnet_1.forward(x, batch, height, width, columns);
    for (const auto& block : up_blocks) {
      for (const auto& resnet : block.resnets) x = resnet.forward(x, batch, height, width, columns);
      if (!block.upsamples()) continue;
      const std::int64_t channels = block.upsampler.in_channels;
      auto up = Tensor<T>::empty({batch, 2 * height, 2 * width, channels});
      upsample_nearest2x_forward(up.data(), x.data(), batch, height, width, channels);
      height *= 2;
      width *= 2;
      x = Tensor<T>::empty({batch, height, width, channels});
      block.upsampler.forward(x.data(), up.data(), batch, height, width, columns);
    }
    conv_norm_out.forward(x.data(), x.data(), batch, height * width, true);
    auto rgb = Tensor<T>::empty({batch, height, width, config.out_channels});
    conv_out.forward(rgb.data(), x.data(), batch, height, width, columns);
    auto images = Tensor<T>::empty({batch, config.out_channels, height, width});
    nhwc_to_nchw_forward(images.data(), rgb.data(), batch, config.out_channels, height, width);
    return images;
  }

  //! Parameters the decoder uses (the ignored encoder not counted).
  std::int64_t parameter_count() const {
    std::int64_t n = post_quant_conv.parameter_count() + conv_in.parameter_count() + mid_resnet_0.parameter_count() +
                     mid_attention.parameter_count() + mid_resnet_1.parameter_count() +
                     conv_norm_out.parameter_count() + conv_out.parameter_count();
    for (const auto& block : up_blocks) n += block.parameter_count();
    return n;
  }
};

namespace detail {

//! The shape of tensor `name` of an SD VAE checkpoint, required to have `rank` dimensions.
template <class Source>
Shape vae_shape(const Source& source, const std::string& name, int rank, const char* expected) {
  return checkpoint_shape(source, name, rank, expected, "an SD VAE (AutoencoderKL)");
}

inline std::string up_block_name(std::size_t i) { return "decoder.up_blocks." + std::to_string(i); }

}  // namespace detail

//! Reads the decoder's configuration from the tensor shapes (latent channels, block widths,
//! resnets per up block, image channels) plus `options` (groups, eps, scaling factor).
template <class Source>
SdVaeConfig infer_sd_vae_config(const Source& source, const SdVaeOptions& options = {}) {
  SdVaeConfig c;
  check(options.groups >= 1, "SD VAE: norm_num_groups must be >= 1, got ", options.groups);
  check(options.eps > 0, "SD VAE: GroupNorm eps must be > 0, got ", options.eps);
  check(options.scaling_factor > 0, "SD VAE: scaling_factor must be > 0, got ", options.scaling_factor);
  c.groups = options.groups;
  c.eps = options.eps;
  c.scaling_factor = options.scaling_factor;
  c.latent_channels = detail::vae_shape(source, "post_quant_conv.weight", 4, "[L, L, 1, 1]")[0];
  c.out_channels = detail::vae_shape(source, "decoder.conv_out.weight", 4, "[3, C, 3, 3]")[0];
  std::vector<std::int64_t> widths;  // decoder order (widest first)
  while (source.contains(detail::up_block_name(widths.size()) + ".resnets.0.conv1.weight")) {
    const std::string name = detail::up_block_name(widths.size()) + ".resnets.0.conv1.weight";
    widths.push_back(detail::vae_shape(source, name, 4, "[C, C_in, 3, 3]")[0]);
  }
  check(!widths.empty(), "checkpoint: missing tensor 'decoder.up_blocks.0.resnets.0.conv1.weight' (is this an SD "
                         "VAE (AutoencoderKL) checkpoint?)");
  c.block_out_channels.assign(widths.rbegin(), widths.rend());
  c.resnets_per_block = 0;
  while (source.contains("decoder.up_blocks.0.resnets." + std::to_string(c.resnets_per_block) + ".conv1.weight"))
    ++c.resnets_per_block;
  for (std::int64_t width : widths)
    check(width % c.groups == 0, "SD VAE: block width ", width, " is not divisible by norm_num_groups ", c.groups);
  return c;
}

//! Loads the decoder from a safetensors source (tim::io::SafetensorsFile, or anything with the
//! same reads) with the released names (decoder.*, post_quant_conv.*). The encoder
//! (encoder.*, quant_conv.*) is ignored and listed in config.ignored; any other tensor is an
//! error. Missing tensors and wrong shapes throw tim::Error naming the tensor and the expected shape.
template <class T, class Source>
SdVaeDecoder<T> load_sd_vae_decoder(const Source& source, const SdVaeOptions& options = {}) {
  SdVaeDecoder<T> vae;
  vae.config = infer_sd_vae_config(source, options);
  const SdVaeConfig& c = vae.config;
  nn::ParameterReader<Source> reader{source, {}};
  const std::vector<std::int64_t> widths(c.block_out_channels.rbegin(), c.block_out_channels.rend());
  const std::int64_t top = widths.front();

  vae.post_quant_conv.load(reader, "post_quant_conv", c.latent_channels, c.latent_channels, 1);
  vae.conv_in.load(reader, "decoder.conv_in", c.latent_channels, top, 3);
  vae.mid_resnet_0.load(reader, "decoder.mid_block.resnets.0", top, top, c);
  vae.mid_attention.load(reader, "decoder.mid_block.attentions.0", top, c);
  vae.mid_resnet_1.load(reader, "decoder.mid_block.resnets.1", top, top, c);
  for (std::size_t i = 0; i < widths.size(); ++i) {
    UpBlock<T> block;
    const std::string prefix = detail::up_block_name(i);
    std::int64_t in = widths[i == 0 ? 0 : i - 1];
    for (std::int64_t j = 0; j < c.resnets_per_block; ++j) {
      block.resnets.emplace_back();
      block.resnets.back().load(reader, prefix + ".resnets." + std::to_string(j), in, widths[i], c);
      in = widths[i];
    }
    if (i + 1 < widths.size()) block.upsampler.load(reader, prefix + ".upsamplers.0.conv", widths[i], widths[i], 3);
    vae.up_blocks.push_back(std::move(block));
  }
  vae.conv_norm_out.load(reader, "decoder.conv_norm_out", widths.back(), c);
  vae.conv_out.load(reader, "decoder.conv_out", widths.back(), c.out_channels, 3);

  for (const auto& info : source.tensors()) {
    if (reader.used.count(info.name)) continue;
    const bool encoder = info.name.rfind("encoder.", 0) == 0 || info.name.rfind("quant_conv.", 0) == 0;
    check(encoder, "checkpoint: unexpected tensor '", info.name, "' (not part of an ", c.describe(), ")");
    vae.config.ignored.push_back(info.name);
  }
  return vae;
}

//! The 8-bit pixels of image `index` of images (B, C, H, W) in [-1, 1], interleaved (H, W, C)
//! as tim::io::PngImage wants them: clamp(255 (x + 1) / 2, 0, 255), truncated (the released
//! C2I script's mapping, SPEC 8).
template <class T>
std::vector<std::uint8_t> image_bytes(const Tensor<T>& images, std::int64_t index) {
  check(images.rank() == 4 && index >= 0 && index < images.dim(0), "image_bytes: image ", index,
        " of images with shape ", images.shape(), " (expected [B, C, H, W] with B > ", index, ")");
  const std::int64_t channels = images.dim(1), pixels = images.dim(2) * images.dim(3);
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(channels * pixels));
  const T* image = images.data() + index * channels * pixels;
  for (std::int64_t c = 0; c < channels; ++c)
    for (std::int64_t p = 0; p < pixels; ++p) {
      const double value = std::clamp(255.0 * (static_cast<double>(image[c * pixels + p]) + 1.0) / 2.0, 0.0, 255.0);
      bytes[static_cast<std::size_t>(p * channels + c)] = static_cast<std::uint8_t>(value);
    }
  return bytes;
}

//! Opens a safetensors file (memory-mapped) and loads the decoder from it; see load_sd_vae_decoder.
template <class T>
SdVaeDecoder<T> open_sd_vae_decoder(const std::string& path, const SdVaeOptions& options = {}) {
  return load_sd_vae_decoder<T>(io::SafetensorsFile::open(path), options);
}

}  // namespace tim::vae
