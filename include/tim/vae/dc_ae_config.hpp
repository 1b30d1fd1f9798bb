// The DC-AE f32c32 decoder's configuration (tim/vae/dc_ae.hpp): the options shapes cannot tell,
// the configuration in diffusers' config.json names, and infer_dc_ae_config, which reads it from
// the tensor names and shapes of a checkpoint.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/core/shape.hpp"
#include "tim/vae/modules.hpp"

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

}  // namespace dc_ae

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

}  // namespace tim::vae
