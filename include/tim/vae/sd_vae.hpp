// The Stable Diffusion VAE decoder (sd-vae-ft-ema, diffusers' AutoencoderKL decoder) on any
// backend (SdVaeDecoder<T, tim::cpu> by default, SdVaeDecoder<float, tim::cuda> on a GPU): turns
// the latents of the released C2I-256 model into images (SPEC 8, docs/vae.md). Loads the released
// `diffusion_pytorch_model.safetensors` under its own tensor names.
//
// Shape legend: B batch, L latent channels (4), h, w latent size, H, W image size (2^(n-1) h, with
// n up blocks: 8h for the released 4), C channels of a stage, G GroupNorm groups, P = H*W pixels.
// Activations are channels-last (B, H, W, C) inside decode, in the decoder's workspace; the
// operations are the backend's decoder operations (tim/core/backend.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/core/tensor.hpp"
#include "tim/io/safetensors.hpp"
#include "tim/nn/modules.hpp"
#include "tim/vae/modules.hpp"

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

//! The activations and scratch of one decode, reused by the next (SdVaeDecoder owns one).
template <class T, class Backend>
struct SdVaeWorkspace : ConvolutionScratch<T, Backend> {
  Scratch<T, Backend> x, y;        // the current activation and the next one (swapped after each step)
  Scratch<T, Backend> normed;      // GroupNorm outputs, the upsampled activation, z, the RGB output
  Scratch<T, Backend> hidden;      // a resnet's conv1 output, the post_quant_conv output
  Scratch<T, Backend> q, k, v;     // the mid block's attention projections
  Scratch<T, Backend> scores;      // the attention's score block (backends that need one)
  std::int64_t score_block_elements = Backend::score_block_elements;
};

//! GroupNorm weights (affine) with the group count and eps of the decoder.
template <class T, class Backend>
struct GroupNorm {
  Tensor<T, Backend> weight, bias;  // (C) each
  std::int64_t channels = 0, groups = 1;
  double eps = 1e-6;
  static auto fields(auto& self) { return std::tie(self.weight, self.bias, self.channels, self.groups, self.eps); }

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t c, const SdVaeConfig& config) {
    check(c % config.groups == 0, "checkpoint: '", prefix, "' normalises ", c, " channels, not divisible by ",
          config.groups, " groups (norm_num_groups)");
    channels = c;
    groups = config.groups;
    eps = config.eps;
    weight = reader.template take<T, Backend>(prefix + ".weight", {c});
    bias = reader.template take<T, Backend>(prefix + ".bias", {c});
  }
  //! y (B, P, C) = GroupNorm(x) [then SiLU]; y may be x.
  void forward(T* y, const T* x, std::int64_t batch, std::int64_t pixels, bool apply_silu) const {
    Backend::group_norm_forward(y, x, weight.data(), bias.data(), batch, pixels, channels, groups, eps, apply_silu);
  }
};

//! GroupNorm, SiLU, conv3x3, GroupNorm, SiLU, conv3x3, plus the input (through the 1x1
//! `conv_shortcut` when the channel count changes). No time embedding, no dropout at inference.
template <class T, class Backend>
struct ResnetBlock {
  GroupNorm<T, Backend> norm1, norm2;
  Conv2d<T, Backend> conv1, conv2, conv_shortcut;  // conv_shortcut empty when Ci == Co
  static auto fields(auto& self) {
    return std::tie(self.norm1, self.norm2, self.conv1, self.conv2, self.conv_shortcut);
  }

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

  //! y (B, H, W, Co) from x (B, H, W, Ci); y != x; ws.normed and ws.hidden are scratch.
  void forward(T* y, const T* x, std::int64_t batch, std::int64_t height, std::int64_t width,
               SdVaeWorkspace<T, Backend>& ws) const {
    const std::int64_t pixels = height * width, ci = in_channels(), co = out_channels();
    T* normed = ws.normed.reserve(batch * pixels * std::max(ci, co));
    T* hidden = ws.hidden.reserve(batch * pixels * co);
    norm1.forward(normed, x, batch, pixels, true);
    conv1.forward(hidden, normed, batch, height, width, ws);
    norm2.forward(normed, hidden, batch, pixels, true);
    if (conv_shortcut.kernel)
      conv_shortcut.forward(y, x, batch, height, width, ws);
    else
      Backend::copy(y, x, static_cast<std::size_t>(batch * pixels * co));
    conv2.forward(y, normed, batch, height, width, ws, /*accumulate=*/true);
  }
};

//! The mid block's attention: GroupNorm, then single-head softmax attention over the P pixels
//! with C features (q, k, v, out Linear projections, scale 1/sqrt(C)), plus the input.
template <class T, class Backend>
struct AttentionBlock {
  GroupNorm<T, Backend> group_norm;
  nn::Linear<T, Backend> to_q, to_k, to_v, to_out;  // older checkpoints: query, key, value, proj_attn
  bool older_names = false;
  static auto fields(auto& self) {
    return std::tie(self.group_norm, self.to_q, self.to_k, self.to_v, self.to_out, self.older_names);
  }

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
    nn::Linear<T, Backend>* projections[] = {&to_q, &to_k, &to_v, &to_out};
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
      projection.weight = reader.template take<T, Backend>(name + ".weight", stored).reshape({channels, channels});
      projection.bias = reader.template take<T, Backend>(name + ".bias", {channels});
    }
  }

  //! y (B, P, C) = x + to_out(attention(GroupNorm(x))); y != x; ws.normed, q, k, v, scores are scratch.
  void forward(T* y, const T* x, std::int64_t batch, std::int64_t pixels, SdVaeWorkspace<T, Backend>& ws) const {
    const std::int64_t channels = group_norm.channels, rows = batch * pixels, n = rows * channels;
    T* normed = ws.normed.reserve(n);
    T* q = ws.q.reserve(n);
    T* k = ws.k.reserve(n);
    T* v = ws.v.reserve(n);
    T* scores = ws.scores.reserve(Backend::pixel_attention_scratch_elements(pixels, ws.score_block_elements));
    group_norm.forward(normed, x, batch, pixels, false);
    to_q.forward(q, normed, rows);
    to_k.forward(k, normed, rows);
    to_v.forward(v, normed, rows);
    // q, k, v (B, P, C): one head of C channels; the output (B, P, C) reuses `normed`.
    Backend::pixel_attention_forward(normed, q, k, v, batch, pixels, channels,
                                     1.0 / std::sqrt(static_cast<double>(channels)), scores, ws.score_block_elements);
    Backend::copy(y, x, static_cast<std::size_t>(n));
    to_out.forward(y, normed, rows, /*accumulate=*/true);
  }
};

//! One decoder up block: resnets, then (all but the last block) nearest 2x upsampling and a 3x3 conv.
template <class T, class Backend>
struct UpBlock {
  std::vector<ResnetBlock<T, Backend>> resnets;
  Conv2d<T, Backend> upsampler;  // checkpoint name upsamplers.0.conv; empty in the last block
  static auto fields(auto& self) { return std::tie(self.resnets, self.upsampler); }

  bool upsamples() const { return upsampler.kernel != 0; }
};

//! The SD VAE decoder. Build it with load_sd_vae_decoder / open_sd_vae_decoder.
//! Example:
//!   auto vae = tim::vae::open_sd_vae_decoder<float>("diffusion_pytorch_model.safetensors");
//!   tim::Tensor<float> images = vae.decode(latents);  // (B, 4, 32, 32) -> (B, 3, 256, 256)
//!   auto gpu = tim::vae::open_sd_vae_decoder<float, tim::cuda>(path);  // latents, images on the device
template <class T, class Backend = cpu>
struct SdVaeDecoder {
  SdVaeConfig config;
  Conv2d<T, Backend> post_quant_conv;  // 1x1, L -> L
  Conv2d<T, Backend> conv_in;          // decoder.conv_in, 3x3, L -> C_top
  ResnetBlock<T, Backend> mid_resnet_0, mid_resnet_1;  // decoder.mid_block.resnets.{0,1}
  AttentionBlock<T, Backend> mid_attention;            // decoder.mid_block.attentions.0
  std::vector<UpBlock<T, Backend>> up_blocks;          // decoder.up_blocks.{i}
  GroupNorm<T, Backend> conv_norm_out;
  Conv2d<T, Backend> conv_out;  // 3x3, C_bottom -> 3
  static auto fields(auto& self) {
    return std::tie(self.config, self.post_quant_conv, self.conv_in, self.mid_resnet_0, self.mid_resnet_1,
                    self.mid_attention, self.up_blocks, self.conv_norm_out, self.conv_out);
  }
  //! Largest im2col block (values) and block of attention scores (query rows x keys) a decode
  //! builds at once; the backend's defaults (CPU: 2^21 and unused; CUDA: 128 and 256 MiB). Tests
  //! make them small.
  std::int64_t im2col_block_elements = Backend::im2col_block_elements;
  std::int64_t score_block_elements = Backend::score_block_elements;

  //! images (B, 3, H, W) from latents (B, L, h, w), H = upscale() h, both in the backend's memory:
  //! divides by the scaling factor, then runs the decoder. Values are about [-1, 1] and are NOT
  //! clamped; to get bytes, clamp(255 (x + 1) / 2, 0, 255) (SPEC 8). Throws tim::Error on a wrong
  //! latent shape. The activations live in the decoder's workspace, which the next decode reuses
  //! (a repeated decode of the same size allocates only the returned images): not re-entrant,
  //! use one decoder per thread (a copy has its own workspace).
  Tensor<T, Backend> decode(const Tensor<T, Backend>& latents) const {
    check(latents.rank() == 4 && latents.dim(1) == config.latent_channels && latents.dim(0) >= 1 &&
              latents.dim(2) >= 1 && latents.dim(3) >= 1,
          "SD VAE decode: latents must have shape [B, ", config.latent_channels, ", h, w] with B, h, w >= 1, got ",
          latents.shape());
    auto& ws = workspace_.get();
    ws.im2col_block_elements = im2col_block_elements;
    ws.score_block_elements = score_block_elements;
    const std::int64_t batch = latents.dim(0), L = config.latent_channels;
    std::int64_t height = latents.dim(2), width = latents.dim(3);
    const auto values = [&](std::int64_t channels) { return batch * height * width * channels; };

    T* z = ws.normed.reserve(values(L));
    Backend::to_channels_last_forward(z, latents.data(), batch, L, height * width, T(1) / T(config.scaling_factor));
    T* moments = ws.hidden.reserve(values(L));
    post_quant_conv.forward(moments, z, batch, height, width, ws);
    T* x = ws.x.reserve(values(conv_in.out_channels));
    conv_in.forward(x, moments, batch, height, width, ws);
    // y = step(x) into the other activation buffer, which then becomes the current one.
    const auto step = [&](std::int64_t channels, const auto& body) {
      T* y = ws.y.reserve(values(channels));
      body(y, x);
      std::swap(ws.x, ws.y);
      x = y;
    };
    const auto resnet = [&](const ResnetBlock<T, Backend>& r) {
      step(r.out_channels(), [&](T* y, const T* in) { r.forward(y, in, batch, height, width, ws); });
    };
    resnet(mid_resnet_0);
    step(mid_attention.group_norm.channels,
         [&](T* y, const T* in) { mid_attention.forward(y, in, batch, height * width, ws); });
    resnet(mid_resnet_1);
    for (const auto& block : up_blocks) {
      for (const auto& r : block.resnets) resnet(r);
      if (!block.upsamples()) continue;
      const std::int64_t channels = block.upsampler.in_channels;
      T* up = ws.normed.reserve(4 * values(channels));
      Backend::upsample_nearest2x_forward(up, x, batch, height, width, channels);
      height *= 2;
      width *= 2;
      step(block.upsampler.out_channels,
           [&](T* y, const T*) { block.upsampler.forward(y, up, batch, height, width, ws); });
    }
    conv_norm_out.forward(x, x, batch, height * width, true);
    T* rgb = ws.normed.reserve(values(config.out_channels));
    conv_out.forward(rgb, x, batch, height, width, ws);
    auto images = Tensor<T, Backend>::empty({batch, config.out_channels, height, width});
    Backend::to_channels_first_forward(images.data(), rgb, batch, config.out_channels, height * width);
    return images;
  }

  //! Parameters the decoder uses (the ignored encoder not counted).
  std::int64_t parameter_count() const { return detail::count_parameters(*this); }
  //! Frees the workspace (the next decode allocates it again).
  void release_workspace() const { workspace_.release(); }
  //! Checks that the backend can run this decoder (every backend can run an SD VAE).
  void check_backend() const {}

 private:
  WorkspaceSlot<SdVaeWorkspace<T, Backend>> workspace_;
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
//! same reads) with the released names (decoder.*, post_quant_conv.*) onto `Backend` (read and
//! repacked on the host, then copied there). The encoder (encoder.*, quant_conv.*) is ignored and
//! listed in config.ignored; any other tensor is an error. Missing tensors and wrong shapes throw
//! tim::Error naming the tensor and the expected shape.
template <class T, class Backend = cpu, class Source>
SdVaeDecoder<T, Backend> load_sd_vae_decoder(const Source& source, const SdVaeOptions& options = {}) {
  SdVaeDecoder<T, Backend> vae;
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
    UpBlock<T, Backend> block;
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
template <class T, class Backend = cpu>
SdVaeDecoder<T, Backend> open_sd_vae_decoder(const std::string& path, const SdVaeOptions& options = {}) {
  return load_sd_vae_decoder<T, Backend>(io::SafetensorsFile::open(path), options);
}

}  // namespace tim::vae
